//! `syncline watch`: the long-running service. It owns the schedule (a worker thread
//! per link: every `every`, and as soon as a change feed reports changes, after a
//! debounce), the process's signals (SIGTERM/SIGINT finish the cycle in hand and exit,
//! SIGHUP reloads the config), the metrics, and the operator endpoints and dashboard
//! (`server`, `dashboard`).
//!
//! Two watchers may share a PostgreSQL state store: the store's link holds keep them
//! from running one link at once (the second finds it busy and waits for its next turn).

mod dashboard;
pub mod metrics;
mod server;
mod worker;

use crate::Error;
use crate::config::{Config, LinkSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// What `watch` is started with.
pub struct WatchOptions {
    /// Read again on SIGHUP.
    pub config_path: PathBuf,
    pub config: Config,
    /// Overrides `[watch] listen`.
    pub listen: Option<std::net::SocketAddr>,
    pub only_link: Option<String>,
}

/// What the service knows of a link, for the API, the dashboard and `/readyz`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LinkStatus {
    pub link: String,
    pub shape: String,
    pub every_seconds: f64,
    pub running: bool,
    pub cycles: u64,
    pub last_started: Option<String>,
    pub last_finished: Option<String>,
    /// `ok`, `attention`, `refused`, `busy` or `failed`.
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub last_duration_seconds: Option<f64>,
    pub last_reading: Option<String>,
    /// Per side with a change feed: slot, WAL held back, seconds behind.
    pub feeds: Vec<FeedLag>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedLag {
    pub side: String,
    pub slot: String,
    pub retained_bytes: u64,
    pub lag_seconds: f64,
}

/// State shared by the workers, the server and the supervisor.
pub(crate) struct Shared {
    config: RwLock<Arc<Config>>,
    links: Mutex<BTreeMap<String, LinkStatus>>,
    /// Set on SIGTERM/SIGINT: every worker stops after its cycle.
    stopping: AtomicBool,
    wake: (Mutex<()>, Condvar),
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl Shared {
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn update(&self, link: &str, f: impl FnOnce(&mut LinkStatus)) {
        let mut links = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(status) = links.get_mut(link) {
            f(status);
        }
    }

    pub(crate) fn statuses(&self) -> Vec<LinkStatus> {
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Wakes every waiting worker (to stop, or to look at its flags again).
    fn wake_all(&self) {
        let _guard = self.wake.0.lock();
        self.wake.1.notify_all();
    }

    /// Sleeps until `deadline`, a wake-up, or the stop of `generation`'s workers.
    fn sleep_until(&self, deadline: std::time::Instant, stop: &AtomicBool) {
        let mut guard = self
            .wake
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if stop.load(Ordering::SeqCst) || self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            guard = match self.wake.1.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// The workers of one config: stopped together on a reload.
struct Generation {
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

fn start_workers(shared: &Arc<Shared>, only_link: Option<&str>) -> Generation {
    let config = shared.config();
    let stop = Arc::new(AtomicBool::new(false));
    let mut links = BTreeMap::new();
    let chosen: Vec<&LinkSpec> = config
        .links
        .iter()
        .filter(|l| only_link.is_none_or(|n| n == l.name))
        .collect();
    for link in &chosen {
        links.insert(
            link.name.clone(),
            LinkStatus {
                link: link.name.clone(),
                shape: link.shape(),
                every_seconds: link.every.unwrap_or(config.watch.every).as_secs_f64(),
                ..LinkStatus::default()
            },
        );
    }
    *shared
        .links
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = links;
    let workers = chosen
        .iter()
        .map(|link| {
            let (shared, stop, name) = (shared.clone(), stop.clone(), link.name.clone());
            std::thread::Builder::new()
                .name(format!("link {name}"))
                .spawn(move || worker::run(&shared, &name, &stop))
                .expect("a thread can be started")
        })
        .collect();
    Generation { stop, workers }
}

impl Generation {
    fn finish(self, shared: &Shared) {
        self.stop.store(true, Ordering::SeqCst);
        shared.wake_all();
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// Runs until SIGTERM or SIGINT; each worker stops at the next batch boundary of the
/// cycle in hand (what it wrote committed), and the process exits 0. A second signal exits at once: a cycle cut
/// short is finished by the next run, as after a crash.
///
/// # Errors
/// The address cannot be listened on; the signal handlers cannot be installed.
pub fn watch(opts: WatchOptions) -> Result<(), Error> {
    if let Some(name) = &opts.only_link
        && opts.config.link(name).is_none()
    {
        return Err(Error::NotFound(format!("no link named `{name}`")));
    }
    let listen = opts.listen.or(opts.config.watch.listen);
    let shared = Arc::new(Shared {
        config: RwLock::new(Arc::new(opts.config)),
        links: Mutex::new(BTreeMap::new()),
        stopping: AtomicBool::new(false),
        wake: (Mutex::new(()), Condvar::new()),
        metrics: metrics::install(),
    });
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| Error::Refused(format!("cannot install signal handlers: {e}")))?;
    let server = match listen {
        Some(addr) => Some(server::start(addr, shared.clone())?),
        None => None,
    };
    let mut generation = start_workers(&shared, opts.only_link.as_deref());
    tracing::info!(
        links = shared.statuses().len(),
        listen = listen.map(|a| a.to_string()),
        "watching"
    );
    for signal in signals.forever() {
        match signal {
            signal_hook::consts::SIGHUP => match Config::load(&opts.config_path) {
                Ok(config) => {
                    tracing::info!(file = %opts.config_path.display(), "config reloaded; links restart after the cycle in hand");
                    if config.watch.listen != shared.config().watch.listen {
                        tracing::warn!(
                            "[watch] listen changed: the endpoints move on a restart, not a reload"
                        );
                    }
                    generation.finish(&shared);
                    *shared
                        .config
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
                    generation = start_workers(&shared, opts.only_link.as_deref());
                }
                Err(e) => {
                    tracing::error!("config not reloaded, the one running is kept: {e}");
                }
            },
            _ => {
                tracing::info!("stopping: finishing the cycles in hand");
                shared.stopping.store(true, Ordering::SeqCst);
                crate::engine::request_stop();
                break;
            }
        }
    }
    // A second SIGTERM or SIGINT (one already queued too) ends the process at once: a
    // cycle cut short is finished by the next run, as after a crash.
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal != signal_hook::consts::SIGHUP {
                tracing::warn!("second signal: exiting now, mid-cycle");
                std::process::exit(1);
            }
        }
    });
    generation.finish(&shared);
    if let Some(server) = server {
        server.stop();
    }
    tracing::info!("stopped; every cycle committed");
    Ok(())
}

fn now_text() -> String {
    chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A delay of `base` stretched by a random factor in [0.5, 1.5): workers that failed
/// together do not retry together.
fn jitter(base: Duration) -> Duration {
    use rand::{Rng, SeedableRng};
    // Seeded from the clock and the thread: enough to spread retries, nothing secret.
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ xxhash_rust::xxh3::xxh3_64(format!("{:?}", std::thread::current().id()).as_bytes());
    base.mul_f64(rand::rngs::StdRng::seed_from_u64(seed).random_range(0.5..1.5))
}
