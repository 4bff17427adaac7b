//! `pacer report`: a run's history as one self-contained HTML page. Safe on
//! a run still going (the state is read read-only) and on stopped runs.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::run::{default_output, default_state};
use super::status::state_for_report as only_state_here;
use super::UsageError;
use crate::args::ReportArgs;
use crate::Outcome;
use pacer::report::{html, ReportData};

pub fn report(args: ReportArgs) -> anyhow::Result<Outcome> {
    let state = match &args.state {
        Some(p) => resolve(p)?,
        None => only_state_here()?,
    };
    let output = args.output.clone().unwrap_or_else(|| page_path(&state));
    let data = ReportData::from_state(&state)?;
    let page = html::render(&data, &html::RenderOptions::default());
    std::fs::write(&output, &page).with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "pacer: wrote {} ({} KB, {} attempts)",
        output.display(),
        page.len().div_ceil(1024),
        data.attempts
    );
    Ok(Outcome::Done)
}

/// The state named, or the state of the run whose input or output is named.
fn resolve(p: &Path) -> anyhow::Result<PathBuf> {
    let name = p.to_string_lossy();
    if name.ends_with(".pacer.db") || p.is_file() && !name.ends_with(".jsonl") {
        return Ok(p.to_path_buf());
    }
    // `x.results.jsonl` (an output) or `x.jsonl` / `docs/` (an input).
    let candidates = [default_state(p), default_state(&default_output(p))];
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    Err(UsageError(format!(
        "{} is not a state file and no state was found beside it (looked for {}); name the run's *.pacer.db",
        p.display(),
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    ))
    .into())
}

/// `x.results.pacer.db` → `x.results.report.html`, beside it.
fn page_path(state: &Path) -> PathBuf {
    let name = state
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pacer".into());
    let stem = name
        .strip_suffix(".pacer.db")
        .or_else(|| name.strip_suffix(".db"))
        .unwrap_or(&name);
    state.with_file_name(format!("{stem}.report.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_goes_beside_the_state() {
        assert_eq!(
            page_path(Path::new("out/x.results.pacer.db")),
            PathBuf::from("out/x.results.report.html")
        );
        assert_eq!(page_path(Path::new("s.db")), PathBuf::from("s.report.html"));
    }
}
