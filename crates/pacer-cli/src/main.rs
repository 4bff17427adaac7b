//! `pacer`: the command line. Parsing and dispatch only; the work is in the
//! `pacer` library, the simulated provider in `pacer-mock`.
#![forbid(unsafe_code)]

mod args;
mod commands;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Exit statuses (DESIGN.md): 0 all succeeded, 1 some failed for good, 2 the
/// run stopped early and can be resumed, 64 usage or input error.
pub mod exit {
    pub const OK: u8 = 0;
    pub const SOME_FAILED: u8 = 1;
    pub const STOPPED: u8 = 2;
    pub const USAGE: u8 = 64;
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap uses 2 for usage errors; here 2 means "resumable".
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PACER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pacer: could not start the async runtime: {e}");
            return ExitCode::from(exit::STOPPED);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run(args).await,
            Command::Mock(config) => commands::mock(config).await,
            Command::Status(args) => commands::status(args),
            Command::Estimate(args) => commands::estimate(args),
            Command::Export(args) => commands::export(args),
            Command::Verify(args) => commands::verify(args).await,
        }
    });
    ExitCode::from(code)
}
