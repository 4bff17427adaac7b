//! `pacer`: the command line. Parsing, dispatch and the exit status only; the
//! work is in the `pacer` library, the simulated provider in `pacer-mock`.
#![forbid(unsafe_code)]

mod args;
mod checks;
mod commands;
mod diagnostics;
mod progress;

use std::process::ExitCode;

use args::{Cli, Command};
use commands::UsageError;
use pacer::cost::CostError;
use pacer::engine::EngineError;
use pacer::input::InputError;
use pacer::store::StoreError;

/// mimalloc: glibc's malloc/free were ~13% of a request's CPU (many small,
/// short-lived allocations across threads), mimalloc's thread-local heaps
/// cost a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit statuses, the only place they are decided:
///
/// - `0` every request succeeded (or the command did what it was asked);
/// - `1` some requests failed for good (they are in the output);
/// - `2` the run stopped early and rerunning resumes it: a stop reason (bad
///   key, quota, budget, Ctrl-C), work still pending, or `verify` refused;
/// - `64` (EX_USAGE) a usage or input problem the user can fix: a flag or
///   environment value (rejected at parse time, before anything is sent), an
///   invalid input line, a prices file, a changed input, an output or state
///   pacer will not touch, a path that does not exist or may not be used
///   ([`InputError`], [`CostError`], [`UsageError`], the usage variants of
///   [`EngineError`] and [`StoreError`], `NotFound`/`PermissionDenied` I/O);
/// - `70` (EX_SOFTWARE) anything unexpected: a panic (a bug; see
///   [`diagnostics::install_panic_hook`]), SQLite or file-system failures
///   such as a full disk, the HTTP client failing to start, an error no
///   library type claims. The state is safe either way.
///
/// Parse errors are decided in [`diagnostics::clap_error`] (64, or 0 for
/// `--help`); errors by [`error_code`], whose first cause pacer knows wins.
pub mod exit {
    pub const OK: u8 = 0;
    pub const SOME_FAILED: u8 = 1;
    pub const STOPPED: u8 = 2;
    pub const USAGE: u8 = 64;
    pub const INTERNAL: u8 = 70;
}

/// How a command ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    SomeFailed,
    Stopped,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Done => exit::OK,
            Outcome::SomeFailed => exit::SOME_FAILED,
            Outcome::Stopped => exit::STOPPED,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::parse_checked() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(diagnostics::clap_error(&e)),
    };
    diagnostics::install_panic_hook();
    diagnostics::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pacer: could not start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run::run(*args).await,
            Command::Mock(config) => commands::mock::mock(config).await,
            Command::Status(args) => commands::status::status(args).await,
            Command::Estimate(args) => commands::estimate::estimate(args),
            Command::Export(args) => commands::export::export(args).await,
            Command::Verify(args) => commands::verify::verify(args).await,
            Command::Serve(args) => commands::serve::serve(args).await,
            Command::Cancel(args) => commands::cancel::cancel(args).await,
            Command::Report(args) => commands::report::report(args),
            Command::Worker(args) => commands::worker::worker(*args).await,
        }
    });
    ExitCode::from(match result {
        Ok(outcome) => outcome.code(),
        Err(e) => {
            eprintln!("pacer: {}", diagnostics::error_text(&e));
            error_code(&e)
        }
    })
}

/// The status for an error: the first cause pacer knows decides.
fn error_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<UsageError>() || cause.is::<InputError>() || cause.is::<CostError>() {
            return exit::USAGE;
        }
        if let Some(e) = cause.downcast_ref::<EngineError>() {
            return match e {
                EngineError::Store(s) => store_code(s),
                EngineError::Transport(_) => exit::INTERNAL,
                e if e.is_usage() => exit::USAGE,
                _ => exit::INTERNAL,
            };
        }
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return store_code(s);
        }
        if let Some(r) = cause.downcast_ref::<pacer::report::ReportError>() {
            return match r {
                r if r.is_usage() => exit::USAGE,
                pacer::report::ReportError::Store(s) => store_code(s),
                _ => exit::INTERNAL,
            };
        }
        if let Some(g) = cause.downcast_ref::<pacer::gateway::GatewayError>() {
            return if g.is_usage() {
                exit::USAGE
            } else {
                exit::INTERNAL
            };
        }
        if let Some(pacer_mock::MockError::Bind { source, .. }) = cause.downcast_ref() {
            // The --listen address is taken or not ours to use.
            return match source.kind() {
                std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable => exit::USAGE,
                _ => io_code(source),
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io_code(io);
        }
    }
    exit::INTERNAL
}

fn store_code(e: &StoreError) -> u8 {
    match e {
        // Another run holds the job: nothing was touched, try again later.
        StoreError::Locked { .. } => exit::STOPPED,
        // Each names what the user must do (--restart, --state, upgrade).
        e if e.is_usage() => exit::USAGE,
        StoreError::NoWal { .. } | StoreError::TooNew { .. } => exit::USAGE,
        StoreError::Io { source, .. } => io_code(source),
        _ => exit::INTERNAL,
    }
}

/// A path the user named that does not exist or may not be used is theirs to
/// fix; a full disk or a failing device is not.
fn io_code(e: &std::io::Error) -> u8 {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound | PermissionDenied | AlreadyExists | IsADirectory | NotADirectory
        | InvalidInput | InvalidFilename => exit::USAGE,
        _ => exit::INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_prints_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(EngineError::Input(InputError::Io {
            path: "/nonexistent.jsonl".into(),
            source: io,
        }));
        let text = diagnostics::error_text(&e);
        let os = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
        assert_eq!(text.matches(&os).count(), 1, "{text}");
        assert_eq!(error_code(&e), exit::USAGE);
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound))
            .context("reading the current folder");
        assert_eq!(
            diagnostics::error_text(&e),
            format!("reading the current folder: {os}")
        );
    }

    #[test]
    fn every_flag_has_help() {
        use clap::CommandFactory;
        let cli = Cli::command();
        cli.clone().debug_assert();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "pacer {} {} has no help text",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn exit_codes_by_error() {
        let full = || std::io::Error::from(std::io::ErrorKind::StorageFull);
        let store_io = |source| {
            anyhow::Error::new(EngineError::Store(StoreError::Io {
                path: "out.jsonl".into(),
                source,
            }))
        };
        assert_eq!(error_code(&store_io(full())), exit::INTERNAL);
        assert_eq!(
            error_code(&store_io(std::io::ErrorKind::NotFound.into())),
            exit::USAGE
        );
        assert_eq!(
            error_code(&anyhow::Error::new(EngineError::Config("x".into()))),
            exit::USAGE
        );
        assert_eq!(
            error_code(&anyhow::Error::new(StoreError::WriterGone("x".into()))),
            exit::INTERNAL
        );
        let locked = StoreError::Locked {
            state: "x.pacer.db".into(),
            holder: None,
        };
        assert_eq!(
            error_code(&anyhow::Error::new(EngineError::Store(locked))),
            exit::STOPPED
        );
        let changed = StoreError::OutputChanged {
            path: "out.jsonl".into(),
            len: 10,
        };
        assert_eq!(error_code(&anyhow::Error::new(changed)), exit::USAGE);
        assert_eq!(
            error_code(&anyhow::Error::new(UsageError("x".into())).context("c")),
            exit::USAGE
        );
        assert_eq!(
            error_code(&anyhow::anyhow!("something odd")),
            exit::INTERNAL
        );
        assert_eq!(Outcome::Stopped.code(), exit::STOPPED);
        let not_a_state = pacer::report::ReportError::NotAState("x.db".into());
        assert_eq!(error_code(&anyhow::Error::new(not_a_state)), exit::USAGE);
    }
}
