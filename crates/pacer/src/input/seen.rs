use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// The ids seen so far in one pass over an input, to refuse duplicates.
///
/// It keeps a 128-bit hash of each id and the line it was first seen on, not
/// the id itself: 20 bytes an entry whatever the id's length. Two distinct
/// ids collide with odds of about 2^-128 per pair, far below the odds of a
/// disk error.
///
/// Recent ids sit in a small hash map; every [`RUN`] of them is sorted into
/// a packed run searched by bisection. A map alone took 44 MB at a million
/// ids (its buckets are a power of two, at most 7/8 full) and its last
/// doubling briefly held 66 MB: the peak of a million-line import. Runs take
/// 20 MB and never move.
#[derive(Default)]
pub(crate) struct SeenIds {
    recent: HashMap<IdKey, u32, BuildHasherDefault<KeyHasher>>,
    runs: Vec<Vec<(IdKey, u32)>>,
}

/// Ids kept in the hash map before they are sorted into a run.
const RUN: usize = 1 << 16;

impl SeenIds {
    /// Ids already in the job, recorded at "line 0" (an earlier run).
    pub(crate) fn with_known(ids: impl IntoIterator<Item = String>) -> SeenIds {
        let mut seen = SeenIds::default();
        for id in ids {
            seen.first_seen(&id, 0);
        }
        seen
    }

    /// Records `id` as seen at `at`; returns where it was first seen if it is a duplicate.
    pub(crate) fn first_seen(&mut self, id: &str, at: u64) -> Option<u64> {
        let hash = blake3::hash(id.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&hash.as_bytes()[..16]);
        let key = IdKey(key);
        // Line numbers past 4 billion saturate: only the message would suffer.
        let at = u32::try_from(at).unwrap_or(u32::MAX);
        for run in &self.runs {
            if let Ok(i) = run.binary_search_by(|(k, _)| k.0.cmp(&key.0)) {
                return Some(u64::from(run[i].1));
            }
        }
        match self.recent.entry(key) {
            std::collections::hash_map::Entry::Occupied(first) => {
                return Some(u64::from(*first.get()))
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(at);
            }
        }
        if self.recent.len() >= RUN {
            let mut run: Vec<(IdKey, u32)> = self.recent.drain().collect();
            run.sort_unstable_by_key(|e| e.0 .0);
            run.shrink_to_fit();
            self.runs.push(run);
        }
        None
    }
}

/// A 128-bit id hash; byte-aligned so a map entry is 20 bytes, not 32.
#[derive(Clone, Copy, PartialEq, Eq)]
struct IdKey([u8; 16]);

impl Hash for IdKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut low = [0u8; 8];
        low.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(low));
    }
}

/// The key is already a uniform hash: hashing it again would only cost time.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sighting_reports_the_first() {
        let mut seen = SeenIds::default();
        assert_eq!(seen.first_seen("doc-7", 3), None);
        assert_eq!(seen.first_seen("doc-8", 4), None);
        assert_eq!(seen.first_seen("doc-7", 40), Some(3));
        // The first sighting stays the reference.
        assert_eq!(seen.first_seen("doc-7", 41), Some(3));
    }

    #[test]
    fn ids_sorted_into_runs_are_still_found() {
        let mut seen = SeenIds::default();
        let n = 2 * RUN as u64 + 10;
        for i in 1..=n {
            assert_eq!(seen.first_seen(&format!("id-{i}"), i), None);
        }
        assert_eq!(seen.runs.len(), 2);
        assert_eq!(seen.first_seen("id-1", n + 1), Some(1));
        assert_eq!(
            seen.first_seen(&format!("id-{}", RUN + 7), n + 2),
            Some(RUN as u64 + 7)
        );
        assert_eq!(seen.first_seen(&format!("id-{n}"), n + 3), Some(n));
        assert_eq!(seen.first_seen("id-new", n + 4), None);
    }

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<(IdKey, u32)>(), 20);
    }
}
