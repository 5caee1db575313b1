//! Command definitions and their output (text for people, `--json` for scripts).

mod demo;
mod output;
mod progress;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use syncline::config::Config;
use syncline::decide::Decision;
use syncline::engine::{self, RunOptions};
use syncline::model::Value;
use syncline::state::StateStore;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_ATTENTION: u8 = 3;
pub const EXIT_REFUSED: u8 = 4;
pub const EXIT_BUSY: u8 = 5;

#[derive(Parser)]
#[command(
    name = "syncline",
    version,
    about = "Keeps records in step between systems of record: one-way, two-way or hybrid"
)]
pub struct Args {
    /// The config file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "syncline.toml",
        env = "SYNCLINE_CONFIG"
    )]
    pub config: PathBuf,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log lines as people read them (`human`) or one JSON object each (`json`).
    #[arg(long, global = true, value_parser = ["human", "json"], default_value = "human")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Propose a config by looking at two collections: `init KIND:LOCATION#COLLECTION …`.
    Init {
        /// The left collection, e.g. `sqlite:crm.db#contacts` or `postgres:${CRM_URL}#contacts`.
        left: String,
        /// The right collection.
        right: String,
        /// The link's name.
        #[arg(long, default_value = "main")]
        link: String,
        /// Write the proposal to the config file (never over an existing one).
        #[arg(long)]
        write: bool,
    },
    /// Lint the config: load it, look at the systems, and apply the design rules.
    Check,
    /// Show what a run would change. Writes nothing, anywhere.
    Plan {
        #[arg(long)]
        link: Option<String>,
        /// How many planned operations to list (all are counted).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Run one cycle of every link (or one).
    Run {
        #[arg(long)]
        link: Option<String>,
        /// Run even if more than max_delete_fraction of a collection would be deleted.
        #[arg(long)]
        allow_mass_delete: bool,
        /// Start over on purpose: forget the link's id map and bases (after pointing a
        /// system at another database) and pair records again by match_on, right_ref /
        /// left_ref or a carried key.
        #[arg(long)]
        relink: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Recent runs, open conflicts and quarantine per link.
    Status,
    /// List or resolve conflicts.
    Conflicts {
        #[command(subcommand)]
        action: Option<ConflictAction>,
    },
    /// List or release quarantined records.
    Quarantine {
        #[command(subcommand)]
        action: Option<QuarantineAction>,
    },
    /// The journal of planned and applied writes, newest first.
    Log {
        #[arg(long)]
        link: Option<String>,
        /// A record key (left or right) as shown by `plan` or `explain`.
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        run: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Where each field's value of one record came from: `explain LINK left:KEY`.
    Explain { link: String, key: String },
    /// Compare both sides record by record and report what differs, per field. Writes
    /// nothing. Exit 0 when they hold the same, 3 when not.
    Verify {
        #[arg(long)]
        link: Option<String>,
        /// How many differing records to show per field (all are counted).
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Run every link on its schedule (`every`) and as soon as change feeds report
    /// changes, until SIGTERM or SIGINT; serve health, metrics, an API and a dashboard
    /// on `[watch] listen`. SIGHUP reloads the config.
    Watch {
        /// Serve on this address instead of `[watch] listen` (e.g. 127.0.0.1:9187).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Only this link.
        #[arg(long)]
        link: Option<String>,
    },
    /// Create a demo CRM and billing database with a config, then plan and run it.
    Demo {
        /// Folder to create the demo in.
        #[arg(long, default_value = "syncline-demo")]
        dir: PathBuf,
        /// Contacts in the CRM.
        #[arg(long, default_value_t = 3000)]
        contacts: usize,
    },
}

#[derive(Subcommand)]
pub enum ConflictAction {
    /// List open and resolved conflicts.
    List {
        #[arg(long)]
        link: Option<String>,
    },
    /// Decide a conflict; the next run writes the decision to whichever side differs.
    Resolve {
        link: String,
        /// The record's key: `left:KEY`, `right:KEY` or a bare left key.
        key: String,
        /// The field (or field group) in conflict.
        field: String,
        /// Take this side's value.
        #[arg(long, value_parser = ["left", "right"], conflicts_with = "value")]
        take: Option<String>,
        /// Use this value instead (`NULL` for null; numbers are numbers).
        #[arg(long)]
        value: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum QuarantineAction {
    List {
        #[arg(long)]
        link: Option<String>,
    },
    /// Release a record (or one field of it): the next run handles it again.
    Release {
        link: String,
        key: String,
        #[arg(long)]
        field: Option<String>,
    },
}

/// The error and each cause that adds something (library errors often repeat their
/// cause in their own message).
pub fn describe_error(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<syncline::Error>() {
            return if e.is_config() {
                EXIT_CONFIG
            } else {
                EXIT_FAILURE
            };
        }
        if cause
            .downcast_ref::<syncline::config::ConfigError>()
            .is_some()
        {
            return EXIT_CONFIG;
        }
    }
    EXIT_FAILURE
}

fn open_state(config: &Config, read_only: bool) -> Result<StateStore> {
    StateStore::for_config(&config.state, read_only).context("cannot open the state store")
}

pub fn run(args: Args) -> Result<u8> {
    if let Command::Demo { dir, contacts } = &args.command {
        return demo::run_demo(dir, *contacts, args.json);
    }
    if let Command::Init {
        left,
        right,
        link,
        write,
    } = &args.command
    {
        return init(&args.config, left, right, link, *write, args.json);
    }
    let config = Config::load(&args.config)?;
    let store = match &config.state {
        syncline::config::StateLocation::Sqlite(path) => path.display().to_string(),
        // Never the URL: it may hold a password.
        syncline::config::StateLocation::Postgres(_) => "the PostgreSQL state store".into(),
    };
    // An error about the store's own rows names the store, so a person knows which
    // file (or database) to look at.
    run_command(args, &config).map_err(|e| {
        let corrupt = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<syncline::state::StateError>(),
                Some(syncline::state::StateError::Corrupt(_))
            ) || matches!(
                c.downcast_ref::<syncline::Error>(),
                Some(syncline::Error::State(
                    syncline::state::StateError::Corrupt(_)
                ))
            )
        });
        if corrupt {
            e.context(format!("in {store}"))
        } else {
            e
        }
    })
}

fn run_command(args: Args, config: &Config) -> Result<u8> {
    let config = config.clone();
    let out = output::Output { json: args.json };
    match args.command {
        Command::Demo { .. } | Command::Init { .. } => unreachable!("handled above"),
        Command::Watch { listen, link } => {
            syncline::daemon::watch(syncline::daemon::WatchOptions {
                config_path: args.config.clone(),
                config,
                listen,
                only_link: link,
            })?;
            Ok(EXIT_OK)
        }
        Command::Check => {
            let mut findings = syncline::check::check(&config);
            for link in &config.links {
                match syncline::engine::check_against_systems(&config, link) {
                    Ok(warnings) => {
                        let (line, column) = config.source.line_col(link.span.start);
                        for (rule, message) in warnings {
                            findings.push(syncline::check::Finding {
                                severity: syncline::check::Severity::Warning,
                                link: link.name.clone(),
                                line,
                                column,
                                rule,
                                message,
                            });
                        }
                    }
                    Err(e) => {
                        let (line, column) = match &e {
                            syncline::Error::Config(c) => c.location.unwrap_or((0, 0)),
                            _ => config.source.line_col(link.span.start),
                        };
                        findings.push(syncline::check::Finding {
                            severity: syncline::check::Severity::Error,
                            link: link.name.clone(),
                            line,
                            column,
                            rule: "systems",
                            message: match &e {
                                syncline::Error::Config(c) => c.message.clone(),
                                other => other.to_string(),
                            },
                        });
                    }
                }
            }
            out.findings(&config, &findings);
            Ok(
                if findings
                    .iter()
                    .any(|f| f.severity == syncline::check::Severity::Error)
                {
                    EXIT_CONFIG
                } else {
                    EXIT_OK
                },
            )
        }
        Command::Plan { link, limit } => {
            let mut state = open_state(&config, true)?;
            let report = engine::run_cycle(
                &config,
                &mut state,
                RunOptions {
                    apply: false,
                    only_link: link,
                    list_limit: limit,
                    ..Default::default()
                },
            )?;
            out.report(&report, true);
            Ok(outcome_code(&report))
        }
        Command::Verify { link, limit } => {
            let mut state = open_state(&config, true)?;
            let report = engine::verify(&config, &mut state, link.as_deref(), limit)?;
            out.verify(&report);
            Ok(if report.in_step() {
                EXIT_OK
            } else {
                EXIT_ATTENTION
            })
        }
        Command::Run {
            link,
            allow_mass_delete,
            relink,
            limit,
        } => {
            progress::show_if_terminal(args.json);
            let mut state = open_state(&config, false)?;
            let report = engine::run_cycle(
                &config,
                &mut state,
                RunOptions {
                    apply: true,
                    only_link: link,
                    allow_mass_delete,
                    list_limit: limit,
                    between_plan_and_apply: None,
                    relink,
                    changes_only: false,
                    session: None,
                },
            )?;
            out.report(&report, false);
            Ok(outcome_code(&report))
        }
        Command::Status => {
            let mut state = open_state(&config, true)?;
            out.status(&config, &mut state)?;
            let attention = !state
                .conflicts(None)?
                .iter()
                .all(|c| c.status == "resolved")
                || !state.quarantine(None)?.is_empty();
            Ok(if attention { EXIT_ATTENTION } else { EXIT_OK })
        }
        Command::Conflicts { action } => {
            match action.unwrap_or(ConflictAction::List { link: None }) {
                ConflictAction::List { link } => {
                    let mut state = open_state(&config, true)?;
                    let conflicts = state.conflicts(link.as_deref())?;
                    out.conflicts(&conflicts);
                    Ok(if conflicts.iter().any(|c| c.status == "open") {
                        EXIT_ATTENTION
                    } else {
                        EXIT_OK
                    })
                }
                ConflictAction::Resolve {
                    link,
                    key,
                    field,
                    take,
                    value,
                } => {
                    let mut state = open_state(&config, false)?;
                    let decision = match (take.as_deref(), value) {
                        (Some("left"), None) => Decision::Take(syncline::model::Side::Left),
                        (Some("right"), None) => Decision::Take(syncline::model::Side::Right),
                        (None, Some(v)) => Decision::Value(v),
                        _ => bail!("say --take left, --take right or --value V"),
                    };
                    let chosen = syncline::decide::resolve_conflict(
                        &config,
                        &mut state,
                        &link,
                        &key,
                        &field,
                        &decision,
                        &syncline::decide::cli_user(),
                    )?;
                    out.message(&format!(
                    "resolved {link} {key} {field} = {}; the next `syncline run` writes it where it differs",
                    chosen.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ), serde_json::json!({"resolved": true, "link": link, "key": key, "field": field, "value": chosen.iter().map(Value::to_json).collect::<Vec<_>>()}));
                    Ok(EXIT_OK)
                }
            }
        }
        Command::Quarantine { action } => {
            match action.unwrap_or(QuarantineAction::List { link: None }) {
                QuarantineAction::List { link } => {
                    let mut state = open_state(&config, true)?;
                    let rows = state.quarantine(link.as_deref())?;
                    out.quarantine(&rows);
                    Ok(if rows.is_empty() {
                        EXIT_OK
                    } else {
                        EXIT_ATTENTION
                    })
                }
                QuarantineAction::Release { link, key, field } => {
                    let mut state = open_state(&config, false)?;
                    let n = syncline::decide::release_quarantine(
                        &mut state,
                        &link,
                        &key,
                        field.as_deref(),
                        &syncline::decide::cli_user(),
                    )?;
                    out.message(
                        &format!(
                            "released {n} quarantine entr{} for {link} {key}",
                            if n == 1 { "y" } else { "ies" }
                        ),
                        serde_json::json!({"released": n}),
                    );
                    Ok(EXIT_OK)
                }
            }
        }
        Command::Log {
            link,
            key,
            run,
            limit,
        } => {
            let mut state = open_state(&config, true)?;
            let key_enc = key
                .as_deref()
                .map(|k| syncline::decide::journal_key(&mut state, link.as_deref(), k))
                .transpose()?;
            let entries = state.journal(link.as_deref(), key_enc.as_deref(), run, limit)?;
            out.journal(&entries);
            Ok(EXIT_OK)
        }
        Command::Explain { link, key } => {
            let mut state = open_state(&config, true)?;
            let spec = config.link(&link).with_context(|| {
                format!(
                    "no link named `{link}` (links: {})",
                    config
                        .links
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            let explanation = engine::explain(&config, spec, &mut state, &key)?;
            out.explain(&explanation);
            Ok(EXIT_OK)
        }
    }
}

fn init(
    config_path: &std::path::Path,
    left: &str,
    right: &str,
    link: &str,
    write: bool,
    json: bool,
) -> Result<u8> {
    use syncline::init::{Target, propose};
    let targets = [
        Target::parse(left).map_err(anyhow::Error::msg)?,
        Target::parse(right).map_err(anyhow::Error::msg)?,
    ];
    let dir = std::env::current_dir()?;
    let mut columns = Vec::new();
    let mut conns = Vec::new();
    for (name, t) in ["left", "right"].iter().zip(&targets) {
        let spec = t.system(&dir).map_err(anyhow::Error::msg)?;
        let mut conn = syncline::connectors::open(name, &spec)?;
        columns.push(
            conn.describe(&t.collection)
                .with_context(|| format!("{name}: {}", t.collection))?,
        );
        conns.push(conn);
    }
    // The shared columns' values, where few: columns that hold the same number of
    // values under different names get a value map suggested.
    let shared = syncline::init::shared_columns(&columns[0], &columns[1]);
    let mut lists = Vec::new();
    for (side, (conn, t)) in conns.iter_mut().zip(&targets).enumerate() {
        let cols: Vec<String> = shared
            .iter()
            .map(|(l, r)| if side == 0 { l.clone() } else { r.clone() })
            .collect();
        let key = syncline::init::key_of(&columns[side]);
        lists.push(if cols.is_empty() || key.is_empty() {
            vec![None; cols.len()]
        } else {
            syncline::init::picklists(conn.as_mut(), &t.collection, key, &cols)
                .with_context(|| format!("reading {}", t.collection))?
        });
    }
    let picklists: std::collections::BTreeMap<String, _> = shared
        .iter()
        .zip(lists[0].iter().zip(&lists[1]))
        .filter_map(|((l, _), (lp, rp))| Some((l.clone(), (lp.clone()?, rp.clone()?))))
        .collect();
    let text = propose(
        link,
        &targets[0],
        &columns[0],
        &targets[1],
        &columns[1],
        &picklists,
    );
    if write {
        if config_path.exists() {
            bail!(
                "{} exists; not overwriting it (print the proposal without --write)",
                config_path.display()
            );
        }
        std::fs::write(config_path, &text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "config": text, "written": write.then(|| config_path.display().to_string()) })
        );
    } else if write {
        println!(
            "wrote {}; next: syncline check, then syncline plan",
            config_path.display()
        );
    } else {
        print!("{text}");
    }
    Ok(EXIT_OK)
}

fn outcome_code(report: &engine::RunReport) -> u8 {
    if report.refused() {
        EXIT_REFUSED
    } else if report.needs_attention() {
        EXIT_ATTENTION
    } else if report.busy() {
        EXIT_BUSY
    } else {
        EXIT_OK
    }
}
