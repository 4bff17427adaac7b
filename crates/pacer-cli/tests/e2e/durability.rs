//! One job, one runner; an output changed outside pacer is refused; files
//! holding prompts and answers are owner-only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use pacer_mock::MockConfig;

/// Waits (up to 20 s) until `ok()` holds.
async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lines_in(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_a_running_job_is_refused_naming_the_first() {
    let env = Env::new(MockConfig {
        latency: 30,
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 120);
    let results = env.path("jobs.results.jsonl");
    let first = env
        .pacer()
        .args(["run", "jobs.jsonl", "--concurrency", "4", "--json"])
        .spawn()
        .expect("spawn pacer");
    let pid = first.id().expect("pid");
    wait_for("the first run's first results", || lines_in(&results) > 0).await;

    let started = Instant::now();
    let second = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not refused at once"
    );
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    let err = stderr(&second);
    assert!(
        err.contains("jobs.results.pacer.db is being run by process")
            && err.contains(&format!("process {pid} on host "))
            && err.contains("wait for it to finish or stop it"),
        "{err}"
    );
    // Nor may --restart wipe a running job.
    let restart = env.run(&["run", "jobs.jsonl", "--restart"]).await;
    assert_eq!(restart.status.code(), Some(2), "{}", stderr(&restart));

    // Status only reads: it works while the run holds the job.
    let status = env
        .run(&["status", "jobs.results.pacer.db", "--json"])
        .await;
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    assert_eq!(summary(&status)["total"].as_u64(), Some(120));

    let out = tokio::time::timeout(Duration::from_secs(60), first.wait_with_output())
        .await
        .expect("the first run finished")
        .expect("pacer ran");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &results);
    assert_eq!(env.chats(), 120, "each request sent once");
    // The lock went with the run: the same command now resumes (nothing left).
    let again = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(env.chats(), 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_line_edited_in_place_after_a_crash_is_refused_and_left_alone() {
    let env = Env::new(MockConfig {
        latency: 30,
        ..MockConfig::default()
    })
    .await;
    write_batch(env.dir.path(), "jobs.jsonl", 200);
    let results = env.path("jobs.results.jsonl");
    let mut child = env
        .pacer()
        .args(["run", "jobs.jsonl", "--concurrency", "4"])
        .spawn()
        .expect("spawn pacer");
    // Many small batches: the first line is long recorded by then.
    wait_for("20 results", || lines_in(&results) >= 20).await;
    child.kill().await.expect("SIGKILL");
    let sent = env.chats();

    let text = std::fs::read_to_string(&results).unwrap();
    let edited = text.replacen("\"status_code\":200", "\"status_code\":201", 1);
    assert_ne!(edited, text);
    assert_eq!(edited.len(), text.len());
    std::fs::write(&results, &edited).unwrap();

    let out = env.run(&["run", "jobs.jsonl"]).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("jobs.results.jsonl was changed since pacer wrote it (its first ")
            && err.contains(
                "bytes differ from what was written): restore it, or rerun with --restart"
            ),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&results).unwrap(),
        edited,
        "output untouched"
    );
    assert_eq!(env.chats(), sent, "nothing sent");

    // Restored, the job resumes (cutting the crash's partial tail).
    std::fs::write(&results, &text).unwrap();
    let out = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&env.path("jobs.jsonl"), &results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_appended_to_the_output_by_someone_else_are_refused_not_cut() {
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 10);
    let results = env.path("jobs.results.jsonl");
    let out = env.run(&["run", "jobs.jsonl"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The input grows (a resume), and someone else wrote to the output.
    let mut input = std::fs::read_to_string(env.path("jobs.jsonl")).unwrap();
    input.push_str(&chat_line("late", 50));
    input.push('\n');
    std::fs::write(env.path("jobs.jsonl"), input).unwrap();
    let mut text = std::fs::read_to_string(&results).unwrap();
    let len = text.len();
    text.push_str("{\"mine\":true}\n");
    std::fs::write(&results, &text).unwrap();

    let out = env.run(&["run", "jobs.jsonl"]).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("has 14 bytes after the {len} pacer wrote")),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&results).unwrap(), text);
    assert_eq!(env.chats(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_state_and_lock_files_are_owner_only() {
    let env = Env::new(MockConfig {
        latency: 30,
        ..MockConfig::default()
    })
    .await;
    write_batch(env.dir.path(), "jobs.jsonl", 60);
    let results = env.path("jobs.results.jsonl");
    let db = env.path("jobs.results.pacer.db");
    let files = [
        results.clone(),
        db.clone(),
        env.path("jobs.results.pacer.db-wal"),
        env.path("jobs.results.pacer.db-shm"),
        env.path("jobs.results.pacer.db.lock"),
    ];
    let child = env
        .pacer()
        .args(["run", "jobs.jsonl", "--concurrency", "4"])
        .spawn()
        .expect("spawn pacer");
    wait_for("the run's files", || {
        lines_in(&results) > 0 && files.iter().all(|f| f.exists())
    })
    .await;
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the run finished")
        .expect("pacer ran");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(mode(&results), 0o600);
    assert_eq!(mode(&db), 0o600);
    assert!(!files[4].exists(), "the lock file is removed at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_changed_under_a_running_job_stops_it_naming_the_request() {
    // The state keeps a Batch body as its place in the input: a body edited
    // while the job runs must stop it, not be sent as something else.
    let env = Env::new(MockConfig {
        latency: 20,
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 1500);
    let results = env.path("jobs.results.jsonl");
    let run = env
        .pacer()
        .args(["run", "jobs.jsonl", "--concurrency", "4", "--json"])
        .spawn()
        .expect("spawn pacer");
    wait_for("the run's first results", || lines_in(&results) > 0).await;
    // Same length, other bytes: only the hash can tell.
    let original = std::fs::read_to_string(&input).unwrap();
    let edited = original.replace("document r01400.", "document R01400.");
    assert_ne!(edited, original);
    std::fs::write(&input, &edited).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(90), run.wait_with_output())
        .await
        .expect("the run stopped")
        .expect("pacer ran");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("jobs.jsonl was changed while the job ran")
            && err.contains("r01400")
            && err.contains("--restart"),
        "{err}"
    );
    let sent = |id: &str| {
        env.mock
            .log()
            .iter()
            .filter(|e| e.client_request_id.as_deref() == Some(id))
            .count()
    };
    assert_eq!(sent("r01400"), 0, "the edited request was sent");
    let done = lines_in(&results);
    assert!(done < 1500, "the run did not stop early ({done} results)");

    // The input restored, the same command finishes the job; nothing that
    // was answered is sent again.
    std::fs::write(&input, &original).unwrap();
    let again = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_complete_and_matching(&input, &results);
    assert_eq!(sent("r01400"), 1);
    assert!(env.chats() <= 1500 + 4, "{} chats", env.chats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_during_its_import_starts_over_cleanly() {
    // A first import goes through a rollback journal (not the WAL): a kill
    // in the middle of it must leave a state the next run opens, rolls back
    // and imports again, with nothing sent twice.
    let env = Env::new(MockConfig::default()).await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 8_000);
    let results = env.path("jobs.results.jsonl");
    let journal = env.path("jobs.results.pacer.db-journal");
    let mut child = env
        .pacer()
        .args(["run", "jobs.jsonl", "--json"])
        .spawn()
        .expect("spawn pacer");
    wait_for("the import's journal", || journal.exists()).await;
    child.kill().await.expect("SIGKILL");
    let _ = child.wait().await;
    assert_eq!(env.chats(), 0, "nothing is sent before the import ends");

    let out = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &results);
    assert_eq!(env.chats(), 8_000, "each request sent once");
    assert!(!journal.exists());
    // And the state is in WAL mode for the run's writer: the header's
    // read and write versions (bytes 18 and 19) are 2 in WAL mode, 1 not.
    let header = std::fs::read(env.path("jobs.results.pacer.db")).unwrap();
    assert_eq!(&header[18..20], &[2, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_whose_path_is_not_text_keeps_its_bodies_in_the_state() {
    // Bodies are read back from the input by its recorded path; a path that
    // is not UTF-8 cannot be recorded as text, so the bodies are copied and
    // the job runs and resumes as any other.
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new(MockConfig::default()).await;
    let written = write_batch(env.dir.path(), "plain.jsonl", 40);
    let name = std::ffi::OsStr::from_bytes(b"jobs-\xff.jsonl");
    let input = env.dir.path().join(name);
    std::fs::rename(&written, &input).unwrap();
    let out = env
        .pacer()
        .arg("run")
        .arg(name)
        .args(["-o", "jobs.results.jsonl", "--json"])
        .output()
        .await
        .expect("pacer ran");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = env.path("jobs.results.jsonl");
    assert_complete_and_matching(&input, &results);
    assert_eq!(env.chats(), 40);
}
