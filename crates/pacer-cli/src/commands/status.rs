//! `pacer status`: a run's progress from its state file, safe while it runs.

use std::path::PathBuf;

use anyhow::Context;

use super::UsageError;
use crate::args::StatusArgs;
use crate::Outcome;

pub fn status(args: StatusArgs) -> anyhow::Result<Outcome> {
    let state = match args.state {
        Some(s) => s,
        None => find_state()?,
    };
    let report = pacer::engine::status(&state)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let c = &report.counts;
        println!("state:     {}", report.state.display());
        println!("total:     {}", c.total);
        println!("done:      {}", c.done);
        println!("failed:    {}", c.failed);
        println!("pending:   {}", c.pending);
        println!("in flight: {}", c.in_flight);
        println!("re-sent:   {}", c.resent);
        println!(
            "tokens:    {} prompt, {} completion",
            c.prompt_tokens, c.completion_tokens
        );
        println!("spent:     {}", pacer::cost::format_usd(c.spent_usd));
    }
    Ok(Outcome::Done)
}

/// The only `*.pacer.db` in the current folder.
fn find_state() -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(".").context("reading the current folder")? {
        let path = entry.context("reading the current folder")?.path();
        if path.to_string_lossy().ends_with(".pacer.db") {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(UsageError(
            "no *.pacer.db state file in the current folder; name one: pacer status STATE".into(),
        )
        .into()),
        _ => Err(UsageError(
            "several state files in the current folder; name one: pacer status STATE".into(),
        )
        .into()),
    }
}
