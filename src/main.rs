//! The `syncline` command line. Maps library errors and run outcomes to the documented
//! exit codes:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done, and everything is in sync |
//! | 1 | failure (a system or the state store could not be read or written) |
//! | 2 | config error (file, line, column and reason are printed) |
//! | 3 | done, but something needs a person (conflicts, quarantine, rejected writes) |
//! | 4 | refused by a safety valve; nothing was written |
//! | 5 | a link was left alone: another run was running it |

mod cli;

// mimalloc: a run hands millions of small values between its reader, planner and writer
// threads, and glibc's malloc spends a third of the run's CPU on them (locking arenas
// to free across threads). Version 2 without transparent huge pages keeps peak memory
// where glibc's was (see the README's benchmarks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands the calling thread's freed memory back. A batch's records are allocated on the
/// reader's thread and freed on the planner's and writer's; mimalloc keeps such pages
/// with their owner thread until it collects, which with wide rows (1 MiB values) held
/// 265 MB at the peak of a load that needs 84 MB (glibc's figure). Called by each
/// pipeline thread once per batch: 112 MB, at no measurable cost for narrow rows.
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: `mi_collect` has no preconditions: it only frees the calling thread's empty
    // pages and processes frees other threads made of its blocks.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// Lets a closed stdout end the program quietly, as it ends `cat` or `ls`: Rust ignores
/// SIGPIPE, so `syncline log | head -3` would otherwise panic on the next print. Every
/// command prints after its work is committed, so nothing is left half-done.
#[allow(unsafe_code)]
fn end_quietly_on_closed_stdout() {
    // SAFETY: restoring a signal's default disposition at start-up, before any other
    // thread exists, has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    end_quietly_on_closed_stdout();
    let args = cli::Args::parse();
    // `watch` is a service: what it does is worth a line each; a command says it on stdout.
    let level = if matches!(args.command, cli::Command::Watch { .. }) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYNCLINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_format == "json" {
        logs.json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        logs.init();
    }
    syncline::engine::on_batch_done(release_freed_memory);
    let json = args.json;
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = cli::exit_code_for(&err);
            let message = cli::describe_error(&err);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": message, "exit_code": code })
                );
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::from(code)
        }
    }
}
