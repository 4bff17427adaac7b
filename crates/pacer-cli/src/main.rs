//! `pacer`: the command line. Parsing, dispatch and the exit status only; the
//! work is in the `pacer` library, the simulated provider in `pacer-mock`.
#![forbid(unsafe_code)]

mod args;
mod checks;
mod commands;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;

use args::{Cli, Command};
use commands::UsageError;
use pacer::cost::CostError;
use pacer::engine::EngineError;
use pacer::input::InputError;
use pacer::store::StoreError;

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
///   [`install_panic_hook`]), SQLite or file-system failures such as a full
///   disk, the HTTP client failing to start. The state is safe either way.
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
        Err(e) => return ExitCode::from(clap_error(&e)),
    };
    install_panic_hook();
    init_logging();
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
            Command::Run(args) => commands::run::run(args).await,
            Command::Mock(config) => commands::mock::mock(config).await,
            Command::Status(args) => commands::status::status(args),
            Command::Estimate(args) => commands::estimate::estimate(args),
            Command::Export(args) => commands::export::export(args),
            Command::Verify(args) => commands::verify::verify(args).await,
        }
    });
    ExitCode::from(match result {
        Ok(outcome) => outcome.code(),
        Err(e) => {
            eprintln!("pacer: {}", error_text(&e));
            error_code(&e)
        }
    })
}

/// Prints a parse error and returns its status. A flag value our checks
/// refused is one sentence naming the flag; clap's own errors keep its
/// wording and hints. (clap uses 2 for usage errors; here 2 means resumable.)
fn clap_error(e: &clap::Error) -> u8 {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !e.use_stderr() {
        let _ = e.print();
        return exit::OK;
    }
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split_whitespace().next().unwrap_or(arg),
        _ => "",
    };
    let source = std::error::Error::source(e);
    match (e.kind(), source) {
        (ErrorKind::ValueValidation, Some(why)) if !flag.is_empty() => {
            if why.is::<checks::Invalid>() {
                eprintln!("pacer: {flag} {why}");
            } else {
                let value = match e.get(ContextKind::InvalidValue) {
                    Some(ContextValue::String(v)) => v.as_str(),
                    _ => "",
                };
                let why = why.to_string();
                if why.contains(value) {
                    eprintln!("pacer: {flag}: {why}");
                } else {
                    eprintln!("pacer: {flag}: {why}, got {value}");
                }
            }
        }
        _ => {
            let _ = e.print();
        }
    }
    exit::USAGE
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
        // Each names what the user must do (--restart, --state, upgrade).
        StoreError::NoWal { .. }
        | StoreError::TooNew { .. }
        | StoreError::OutputTruncated { .. } => exit::USAGE,
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

/// An error and its causes on one line, each cause once: several library
/// errors already print their source in their own message, and anyhow's
/// `{:#}` would print it again.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// A panic anywhere (a worker, the state writer, a blocking task) is a bug:
/// say so in one sentence and leave with 70 at once. Waiting could hang (a
/// panicked worker never finishes its request), and leaving is safe: the
/// state survives `kill -9`, so a rerun resumes.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // Start a fresh line when a progress bar may be on this one.
        let newline = if std::io::stderr().is_terminal() {
            "\n"
        } else {
            ""
        };
        eprintln!(
            "{newline}pacer hit an internal error (a bug): {what}{place}; the state is safe, rerun to resume"
        );
        std::process::exit(exit::INTERNAL as i32);
    }));
}

/// Logs go to stderr, coloured only on a terminal and never under NO_COLOR
/// (https://no-color.org: set and not empty).
fn init_logging() {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PACER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .init();
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
        let text = error_text(&e);
        let os = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
        assert_eq!(text.matches(&os).count(), 1, "{text}");
        assert_eq!(error_code(&e), exit::USAGE);
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound))
            .context("reading the current folder");
        assert_eq!(error_text(&e), format!("reading the current folder: {os}"));
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
        assert_eq!(
            error_code(&anyhow::Error::new(UsageError("x".into())).context("c")),
            exit::USAGE
        );
        assert_eq!(
            error_code(&anyhow::anyhow!("something odd")),
            exit::INTERNAL
        );
        assert_eq!(Outcome::Stopped.code(), exit::STOPPED);
    }
}
