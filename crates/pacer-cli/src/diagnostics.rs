//! What pacer writes to stderr when something goes wrong, and the log
//! set-up. Which exit status goes with it is decided in main.rs.

use std::io::IsTerminal;

use crate::args::LogFormat;
use crate::{checks, exit};

/// Prints a parse error and returns its status. A flag value our checks
/// refused is one sentence naming the flag; clap's own errors keep its
/// wording and hints. (clap uses 2 for usage errors; here 2 means resumable.)
pub fn clap_error(e: &clap::Error) -> u8 {
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

/// An error and its causes on one line, each cause once: several library
/// errors already print their source in their own message, and anyhow's
/// `{:#}` would print it again.
pub fn error_text(e: &anyhow::Error) -> String {
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
pub fn install_panic_hook() {
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

/// Logs go to stderr: text coloured only on a terminal and never under
/// NO_COLOR (https://no-color.org: set and not empty), or JSON lines. Which
/// lines: `PACER_LOG`, else `RUST_LOG`, else warnings and errors.
pub fn init_logging(format: LogFormat) {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let filter = ["PACER_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| tracing_subscriber::EnvFilter::try_from_env(var).ok())
        .unwrap_or_else(|| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal() && !no_color)
            .init(),
        LogFormat::Json => logs.json().with_ansi(false).with_current_span(false).init(),
    }
}
