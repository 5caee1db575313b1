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

mod cli;

// mimalloc: a run hands millions of small values between its reader, planner and writer
// threads, and glibc's malloc spends a third of the run's CPU on them (locking arenas
// to free across threads). Version 2 without transparent huge pages keeps peak memory
// where glibc's was (see the README's benchmarks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SYNCLINE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Args::parse();
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
