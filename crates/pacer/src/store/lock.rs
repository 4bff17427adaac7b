//! One job, one runner: an OS file lock beside the state file.
//!
//! The lock is `flock`-style (std's `File::try_lock`), so the kernel drops it
//! when the holder dies, even by SIGKILL: a crashed run never blocks the next.
//! The file holds the owner's PID, host and start time only to name it in the
//! refusal; the lock itself is the OS lock, never the file's existence.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::StoreError;

/// Who holds a job's lock, as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    pub host: String,
    /// When the holder took the lock, e.g. "2026-12-01 17:16:13 UTC".
    pub started: String,
}

impl LockHolder {
    /// "process 1234 on host h (started …)", or a vaguer phrase when unknown.
    pub fn describe(holder: Option<&LockHolder>) -> String {
        match holder {
            Some(h) => format!(
                "process {} on host {} (started {})",
                h.pid, h.host, h.started
            ),
            None => "another pacer process".to_string(),
        }
    }
}

/// The exclusive lock on a job, held for a whole run; released on drop (or
/// by the OS when the process dies).
#[derive(Debug)]
pub struct JobLock {
    file: File,
    path: PathBuf,
}

impl JobLock {
    /// The lock file of the state file `state`: `STATE.lock`.
    pub fn path_for(state: &Path) -> PathBuf {
        let mut s = state.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Takes the job's lock at once or fails with [`StoreError::Locked`]
    /// naming the holder. `now` is recorded as the start time.
    pub fn acquire(state: &Path, now: DateTime<Utc>) -> Result<JobLock, StoreError> {
        let path = Self::path_for(state);
        let io = |e| StoreError::Io {
            path: path.clone(),
            source: e,
        };
        // A few rounds: the previous holder removes the file as it lets go,
        // so a lock won on a file that is no longer at `path` is worthless.
        for _ in 0..20 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked {
                        state: state.to_path_buf(),
                        holder: read_holder(&mut file),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
            if !same_file(&file, &path) {
                continue;
            }
            let holder = LockHolder {
                pid: std::process::id(),
                host: host_name(),
                started: now.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            };
            let text = serde_json::to_string(&holder).unwrap_or_default();
            file.set_len(0).map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            return Ok(JobLock { file, path });
        }
        Err(io(std::io::Error::other(
            "the lock file kept being replaced while taking it",
        )))
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock (so no one can hold a
        // lock on it by then), and only if it is still ours.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// Whether `file` is the file now at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The holder's record; retried briefly, since a holder that just won the
/// lock may not have written it yet.
fn read_holder(file: &mut File) -> Option<LockHolder> {
    for _ in 0..5 {
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(holder) = serde_json::from_str(&text) {
                return Some(holder);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// This machine's name, from the kernel (std has no `gethostname`).
pub(crate) fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_second_lock_on_the_same_job_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("x.pacer.db");
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let lock = JobLock::acquire(&state, now).unwrap();
        let mode = std::fs::metadata(JobLock::path_for(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = JobLock::acquire(&state, now).unwrap_err();
        let msg = err.to_string();
        let pid = std::process::id();
        assert!(
            msg.contains(&format!("process {pid} on host "))
                && msg.contains("started 2023-11-14 22:13:20 UTC")
                && msg.contains("x.pacer.db"),
            "{msg}"
        );
        match err {
            StoreError::Locked {
                holder: Some(h), ..
            } => assert_eq!(h.host, host_name()),
            other => panic!("{other:?}"),
        }
        drop(lock);
        assert!(!JobLock::path_for(&state).exists());
        // Released: the next run takes it.
        let _again = JobLock::acquire(&state, now).unwrap();
    }

    #[test]
    fn a_stale_lock_file_left_by_a_dead_run_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("x.pacer.db");
        std::fs::write(
            JobLock::path_for(&state),
            r#"{"pid":1,"host":"gone","started":"then"}"#,
        )
        .unwrap();
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let _lock = JobLock::acquire(&state, now).unwrap();
        let text = std::fs::read_to_string(JobLock::path_for(&state)).unwrap();
        assert!(
            text.contains(&format!("\"pid\":{}", std::process::id())),
            "{text}"
        );
    }
}
