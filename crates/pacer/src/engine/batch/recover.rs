//! Start-up and crash repair decisions for batches. Pure: the state and
//! the provider's lists come in, decisions go out, times are passed in.
//!
//! The one dangerous moment is between a create call and the commit of the
//! id it returns: a crash there leaves a batch at the provider that the
//! state does not know. Before every create a marker (`creating_at`) is
//! committed; a batch with a marker and no id is looked for before it is
//! created again. OpenAI's batches carry pacer's metadata (`pacer_job`,
//! `pacer_batch`) and their input file's id, so the search is exact.
//! Anthropic's carry no metadata: the batch adopted is one created after
//! the marker (give or take clock skew) with the same number of requests
//! and not already this job's. Another client creating a batch of exactly
//! that size in that minute could be mistaken for it; nothing better is
//! offered by the API.

use std::collections::HashSet;
use std::time::Duration;

use super::api::{Page, Remote};
use crate::store::{BatchApi, BatchRow, BatchState};

/// How far the provider's clock may be behind pacer's.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(120);
/// The most list pages read while looking for a lost batch (100 a page).
pub(crate) const MAX_LIST_PAGES: usize = 50;

/// What a recorded batch needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// OpenAI: upload its input file.
    Upload,
    /// Create it at the provider (no create call has gone out).
    Create,
    /// A create call went out but its answer was not recorded: look for
    /// the batch first, create it only if it is not there.
    FindOrCreate,
    /// Poll it until it ends.
    Poll,
    /// It ended: write its results (again, for those not written yet).
    Collect,
    /// Nothing: it is over.
    Nothing,
}

/// The next step for `row`, from its recorded state alone.
pub(crate) fn next_step(row: &BatchRow) -> Next {
    let create = if row.creating_at.is_some() {
        Next::FindOrCreate
    } else {
        Next::Create
    };
    match row.state {
        BatchState::Planned => match row.api {
            BatchApi::OpenAi => Next::Upload,
            BatchApi::Anthropic => create,
        },
        BatchState::Uploaded => create,
        BatchState::Submitted => Next::Poll,
        BatchState::Ended => Next::Collect,
        BatchState::Done | BatchState::Deferred | BatchState::Failed => Next::Nothing,
    }
}

/// The OpenAI batch that is local batch `local` of job `job`: by its
/// metadata, or by its input file (each local batch uploads its own).
pub(crate) fn adopt_openai<'a>(
    candidates: &'a [Remote],
    job: &str,
    local: i64,
    file_id: Option<&str>,
) -> Option<&'a Remote> {
    let local = local.to_string();
    candidates.iter().find(|r| {
        (r.pacer_job.as_deref() == Some(job) && r.pacer_batch.as_deref() == Some(local.as_str()))
            || (file_id.is_some() && r.input_file_id.as_deref() == file_id)
    })
}

/// The Anthropic batch created by a create call made at `marker_ms` (unix
/// ms) with `lines` requests: created within `window` after the marker
/// (less [`CLOCK_SKEW`]), of that size, not one of the job's own batches
/// (`taken`); the earliest such.
pub(crate) fn adopt_anthropic<'a>(
    candidates: &'a [Remote],
    marker_ms: i64,
    window: Duration,
    lines: u64,
    taken: &HashSet<String>,
) -> Option<&'a Remote> {
    let skew = CLOCK_SKEW.as_millis() as i64;
    let from = marker_ms.saturating_sub(skew);
    let until = marker_ms.saturating_add(window.as_millis().min(i64::MAX as u128) as i64 + skew);
    candidates
        .iter()
        .filter(|r| !taken.contains(&r.id) && r.counts.total == lines)
        .filter(|r| r.created_at.is_some_and(|t| t >= from && t <= until))
        .min_by_key(|r| r.created_at)
}

/// Whether to read the page after `page` while looking for a batch
/// created at `marker_ms`: lists are newest first, so once a page reaches
/// batches older than the marker (less skew) the rest are older still.
pub(crate) fn keep_listing(page: &Page, pages_read: usize, marker_ms: Option<i64>) -> bool {
    if page.next_after.is_none() || pages_read >= MAX_LIST_PAGES {
        return false;
    }
    let Some(marker) = marker_ms else {
        return true;
    };
    let from = marker.saturating_sub(CLOCK_SKEW.as_millis() as i64);
    page.batches
        .iter()
        .filter_map(|b| b.created_at)
        .min()
        .is_none_or(|oldest| oldest >= from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::batch::api::{Phase, RemoteCounts};

    fn row(api: BatchApi, state: BatchState, creating: bool) -> BatchRow {
        BatchRow {
            id: 3,
            api,
            endpoint: "/v1/chat/completions".into(),
            model: Some("gpt-4o-mini".into()),
            state,
            file_id: None,
            creating_at: creating.then_some(1_000),
            batch_id: None,
            status: None,
            output_file_id: None,
            error_file_id: None,
            results_url: None,
            lines: 10,
            est_tokens: 100,
            worst_usd: None,
            error: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn remote(id: &str, created_s: i64, total: u64) -> Remote {
        Remote {
            id: id.into(),
            status: "in_progress".into(),
            phase: Phase::Running,
            counts: RemoteCounts {
                total,
                ..Default::default()
            },
            created_at: Some(created_s * 1000),
            input_file_id: None,
            output_file_id: None,
            error_file_id: None,
            results_url: None,
            errors: vec![],
            pacer_job: None,
            pacer_batch: None,
        }
    }

    #[test]
    fn every_phase_resumes_where_it_was() {
        use BatchApi::*;
        use BatchState::*;
        assert_eq!(next_step(&row(OpenAi, Planned, false)), Next::Upload);
        assert_eq!(next_step(&row(OpenAi, Uploaded, false)), Next::Create);
        assert_eq!(next_step(&row(OpenAi, Uploaded, true)), Next::FindOrCreate);
        assert_eq!(next_step(&row(Anthropic, Planned, false)), Next::Create);
        assert_eq!(
            next_step(&row(Anthropic, Planned, true)),
            Next::FindOrCreate
        );
        assert_eq!(next_step(&row(OpenAi, Submitted, true)), Next::Poll);
        assert_eq!(next_step(&row(Anthropic, Ended, true)), Next::Collect);
        for over in [Done, Deferred, Failed] {
            assert_eq!(next_step(&row(OpenAi, over, true)), Next::Nothing);
        }
    }

    #[test]
    fn an_openai_batch_is_found_by_its_metadata_or_its_file() {
        let mut mine = remote("batch_mine", 100, 10);
        mine.pacer_job = Some("job1".into());
        mine.pacer_batch = Some("3".into());
        let mut other_job = remote("batch_other", 100, 10);
        other_job.pacer_job = Some("job2".into());
        other_job.pacer_batch = Some("3".into());
        let mut other_local = remote("batch_4", 100, 10);
        other_local.pacer_job = Some("job1".into());
        other_local.pacer_batch = Some("4".into());
        let list = vec![other_job.clone(), other_local.clone(), mine.clone()];
        assert_eq!(
            adopt_openai(&list, "job1", 3, None).map(|r| r.id.as_str()),
            Some("batch_mine")
        );
        assert!(adopt_openai(&[other_job, other_local.clone()], "job1", 3, None).is_none());
        let mut by_file = remote("batch_f", 100, 10);
        by_file.input_file_id = Some("file-3".into());
        assert_eq!(
            adopt_openai(&[other_local, by_file], "job1", 3, Some("file-3")).map(|r| r.id.as_str()),
            Some("batch_f")
        );
    }

    #[test]
    fn an_anthropic_batch_is_found_by_its_time_and_size() {
        let marker = 1_000_000; // ms
        let window = Duration::from_secs(600);
        let taken: HashSet<String> = ["msgbatch_taken".to_string()].into();
        let list = vec![
            remote("msgbatch_late", 1000 + 3600, 10), // an hour after: not ours
            remote("msgbatch_size", 1001, 11),        // another size
            remote("msgbatch_taken", 1001, 10),       // already the job's
            remote("msgbatch_ours", 1002, 10),
            remote("msgbatch_before", 1000 - 600, 10), // long before the marker
        ];
        assert_eq!(
            adopt_anthropic(&list, marker, window, 10, &taken).map(|r| r.id.as_str()),
            Some("msgbatch_ours")
        );
        // A provider clock a minute behind still matches.
        let skewed = vec![remote("msgbatch_skewed", 1000 - 60, 10)];
        assert!(adopt_anthropic(&skewed, marker, window, 10, &taken).is_some());
        assert!(adopt_anthropic(&list[..3], marker, window, 10, &taken).is_none());
    }

    #[test]
    fn listing_stops_at_batches_older_than_the_marker_or_after_enough_pages() {
        let page = |oldest_s: i64, more: bool| Page {
            batches: vec![remote("b1", oldest_s + 10, 1), remote("b2", oldest_s, 1)],
            next_after: more.then(|| "b2".to_string()),
        };
        assert!(keep_listing(&page(1000, true), 1, Some(1_000_000)));
        assert!(!keep_listing(&page(500, true), 1, Some(1_000_000)));
        assert!(!keep_listing(&page(1000, false), 1, Some(1_000_000)));
        assert!(keep_listing(&page(0, true), 1, None));
        assert!(!keep_listing(&page(1000, true), MAX_LIST_PAGES, None));
    }
}
