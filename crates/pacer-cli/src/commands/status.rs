//! `pacer status`: a run's progress from its state file, safe while it runs.

use std::path::PathBuf;

use anyhow::Context;

use super::UsageError;
use crate::args::StatusArgs;
use crate::Outcome;

pub async fn status(args: StatusArgs) -> anyhow::Result<Outcome> {
    if let (Some(redis), Some(job)) = (&args.redis, &args.job) {
        let name = pacer::jobs::JobName::parse(job)?;
        let f = pacer::engine::job_status(redis, name).await?;
        if args.json {
            println!("{}", serde_json::to_string(&f)?);
        } else {
            println!(
                "job:       {} (Redis at {})",
                f.name,
                pacer::shared::display_redis_url(redis)
            );
            println!("total:     {}", f.total);
            println!("done:      {}", f.finished.saturating_sub(f.failed));
            println!("failed:    {}", f.failed);
            println!("pending:   {}", f.total.saturating_sub(f.finished));
            println!("in flight: {}", f.in_flight);
            println!(
                "tokens:    {} prompt, {} completion",
                f.prompt_tokens, f.completion_tokens
            );
            println!("spent:     {}", pacer::cost::format_usd(f.cost_usd));
            if let Some(stop) = &f.stop {
                println!("stopped:   {stop}");
            }
        }
        return Ok(Outcome::Done);
    }
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
        if !report.batches.is_empty() {
            println!("batches:");
            for b in &report.batches {
                println!("  {}", batch_line(b));
            }
        }
    }
    Ok(Outcome::Done)
}

/// `3  openai  gpt-4o-mini  500 requests  submitted (in_progress)  batch_abc  since 2026-12-01 17:16:13 UTC`
fn batch_line(b: &pacer::store::BatchRow) -> String {
    let status = b
        .status
        .as_deref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let since = pacer::store::format_time(b.updated_at);
    let error = b
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    format!(
        "{:>4}  {:<9}  {:<24}  {:>7} requests  {}{status}  {}  since {since}{error}",
        b.id,
        b.api,
        b.model.as_deref().unwrap_or("(none)"),
        b.lines,
        b.state,
        b.batch_id.as_deref().unwrap_or("-"),
    )
}

/// The only `*.pacer.db` in the current folder.
pub(crate) fn default_state() -> anyhow::Result<PathBuf> {
    find_state()
}

/// The only `*.pacer.db` in the current folder, for `pacer report`.
pub(crate) fn state_for_report() -> anyhow::Result<PathBuf> {
    find_state_for("report")
}

/// The only `*.pacer.db` in the current folder.
fn find_state() -> anyhow::Result<PathBuf> {
    find_state_for("status")
}

/// The only `*.pacer.db` in the current folder; errors name `pacer CMD STATE`.
fn find_state_for(cmd: &str) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(".").context("reading the current folder")? {
        let path = entry.context("reading the current folder")?.path();
        if path.to_string_lossy().ends_with(".pacer.db") {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(UsageError(format!(
            "no *.pacer.db state file in the current folder; name one: pacer {cmd} STATE"
        ))
        .into()),
        _ => Err(UsageError(format!(
            "several state files in the current folder; name one: pacer {cmd} STATE"
        ))
        .into()),
    }
}
