//! When to look again: the poll backoff and the hold on a model refused for
//! OpenAI's enqueued-token limit. Pure: `now` is passed in.

use std::time::Duration;

use tokio::time::Instant;

/// The longest the poll interval grows to (unless `--poll-interval` is longer).
pub(crate) const MAX_POLL: Duration = Duration::from_secs(300);
/// How long a group held back by the enqueued-token limit waits for
/// another of its batches to end before trying again anyway.
pub(crate) const HOLD_FOR_END: Duration = Duration::from_secs(600);
/// The longest wait before a group held back with nothing of it open tries again.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(300);

/// The wait before the next poll of a batch: back to `base` when its
/// status moved (things are happening), else ×1.5 up to [`MAX_POLL`].
pub(crate) fn next_poll_interval(
    current: Duration,
    status_changed: bool,
    base: Duration,
) -> Duration {
    if status_changed {
        base
    } else {
        current.mul_f64(1.5).min(MAX_POLL.max(base))
    }
}

/// A group (API, endpoint, model) held back after the provider refused one
/// of its batches for its enqueued-token limit: that limit counts the
/// model's unfinished batches, so the next batch waits for one of them to
/// end; with none open, the refused batch alone was too big, so the next
/// is smaller and comes after a growing wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hold {
    pub until: Instant,
    /// Until another open batch of the group ends (or `until`).
    pub for_end: bool,
    /// At most this many requests a batch of the group from now on.
    pub max_lines: Option<usize>,
    /// Refusals in a row.
    pub strikes: u32,
}

impl Hold {
    /// The hold after a batch of `lines` requests was refused at `now`;
    /// `others_open`: other batches of the group are at the provider.
    pub fn after_refusal(
        before: Option<Hold>,
        others_open: bool,
        lines: u64,
        poll: Duration,
        now: Instant,
    ) -> Hold {
        let strikes = before.map_or(0, |h| h.strikes).saturating_add(1);
        if others_open {
            return Hold {
                until: now + HOLD_FOR_END,
                for_end: true,
                max_lines: before.and_then(|h| h.max_lines),
                strikes,
            };
        }
        let wait = poll
            .saturating_mul(1u32 << (strikes - 1).min(16))
            .min(MAX_HOLD.max(poll));
        Hold {
            until: now + wait,
            for_end: false,
            max_lines: Some((usize::try_from(lines).unwrap_or(usize::MAX) / 2).max(1)),
            strikes,
        }
    }

    /// Whether the group waits at `now`; `group_open`: a batch of it is at
    /// the provider.
    pub fn holds(&self, now: Instant, group_open: bool) -> bool {
        now < self.until && (!self.for_end || group_open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn polls_back_off_while_nothing_changes_and_start_over_when_it_does() {
        let base = Duration::from_secs(30);
        let mut i = base;
        let mut waits = Vec::new();
        for _ in 0..8 {
            i = next_poll_interval(i, false, base);
            waits.push(i.as_secs());
        }
        assert_eq!(waits, vec![45, 67, 101, 151, 227, 300, 300, 300]);
        assert_eq!(next_poll_interval(MAX_POLL, true, base), base);
        // A base above the cap is kept.
        let long = Duration::from_secs(600);
        assert_eq!(next_poll_interval(long, false, long), long);
    }

    #[test]
    fn a_refused_model_waits_for_its_open_batches_to_end() {
        let now = Instant::now();
        let h = Hold::after_refusal(None, true, 100, S, now);
        assert!(h.for_end && h.max_lines.is_none() && h.strikes == 1);
        assert!(h.holds(now + 60 * S, true));
        // Another of its batches ended: go.
        assert!(!h.holds(now + 60 * S, false));
        // Not for ever, even if they never end.
        assert!(!h.holds(now + HOLD_FOR_END, true));
    }

    #[test]
    fn a_batch_refused_alone_is_tried_again_smaller_after_a_growing_wait() {
        let now = Instant::now();
        let h1 = Hold::after_refusal(None, false, 100, S, now);
        assert_eq!(
            (h1.for_end, h1.max_lines, h1.until),
            (false, Some(50), now + S)
        );
        assert!(h1.holds(now, false) && !h1.holds(now + S, false));
        let h2 = Hold::after_refusal(Some(h1), false, 50, S, now);
        assert_eq!(
            (h2.max_lines, h2.until, h2.strikes),
            (Some(25), now + 2 * S, 2)
        );
        let mut h = h2;
        for _ in 0..20 {
            h = Hold::after_refusal(Some(h), false, 1, S, now);
        }
        assert_eq!((h.max_lines, h.until), (Some(1), now + MAX_HOLD));
        // With others open the smaller size is kept.
        let h3 = Hold::after_refusal(Some(h2), true, 25, S, now);
        assert_eq!(h3.max_lines, Some(25));
    }
}
