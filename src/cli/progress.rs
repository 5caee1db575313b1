//! Progress of a long `run` on a terminal: per link, records read from each side and
//! pairs written, with the rate. Drawn on stderr, and only when stdout is a terminal and
//! the output is not `--json`: a script or a pipe sees nothing of it.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use syncline::engine::progress::{Progress, on_progress};
use syncline::model::Side;

#[derive(Default)]
struct Shown {
    bar: Option<ProgressBar>,
    link: String,
    read: [u64; 2],
    written: u64,
    started: Option<Instant>,
}

impl Shown {
    fn message(&self) -> String {
        let seconds = self
            .started
            .map_or(0.0, |s| s.elapsed().as_secs_f64())
            .max(0.001);
        let rate = (self.read[0] + self.read[1] + self.written) as f64 / seconds;
        format!(
            "{}: read {} left, {} right · wrote {} · {:.0} records/s",
            self.link, self.read[0], self.read[1], self.written, rate
        )
    }
}

pub fn show_if_terminal(json: bool) {
    if json || !std::io::stdout().is_terminal() {
        return;
    }
    let shown = Mutex::new(Shown::default());
    on_progress(Box::new(move |event| {
        let mut s = shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Progress::Link(name) => {
                let bar = ProgressBar::new_spinner();
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(120));
                *s = Shown {
                    bar: Some(bar),
                    link: name.to_string(),
                    started: Some(Instant::now()),
                    ..Shown::default()
                };
            }
            Progress::Read(side, n) => s.read[if side == Side::Left { 0 } else { 1 }] += n,
            Progress::Written(n) => s.written += n,
            Progress::Done => {
                if let Some(bar) = s.bar.take() {
                    bar.finish_and_clear();
                }
                return;
            }
        }
        let message = s.message();
        if let Some(bar) = &s.bar {
            bar.set_message(message);
        }
    }));
}
