//! The harness: each test gets its own temp folder and its own simulated
//! provider on a free port, and runs the real `pacer` binary against it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use pacer_mock::{MockConfig, MockServer, Stats, DEFAULT_KEY};
use serde_json::{json, Value};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_pacer");

pub struct Env {
    pub dir: TempDir,
    pub mock: MockServer,
}

impl Env {
    pub async fn new(config: MockConfig) -> Env {
        let mock = MockServer::start(config)
            .await
            .expect("start the simulated provider");
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
            mock,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `pacer` command with the simulator's URL and key and no progress display.
    pub fn pacer(&self) -> tokio::process::Command {
        pacer_command(self.dir.path(), &self.mock.base_url(), DEFAULT_KEY)
    }

    /// Runs `pacer ARGS` to the end (bounded by `limit`).
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, |_| {}).await
    }

    pub async fn run_with(
        &self,
        args: &[&str],
        f: impl FnOnce(&mut tokio::process::Command),
    ) -> Output {
        let mut cmd = self.pacer();
        cmd.args(args);
        f(&mut cmd);
        tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("pacer finished within 2 minutes")
            .expect("pacer ran")
    }

    pub fn stats(&self) -> Stats {
        self.mock.stats()
    }

    /// Requests the simulator received on `path` (the key check's
    /// `GET /v1/models` is not one of them).
    pub fn sent(&self, path: &str) -> usize {
        self.mock.log().iter().filter(|e| e.path == path).count()
    }

    /// Chat completions the simulator received.
    pub fn chats(&self) -> usize {
        self.sent("/v1/chat/completions")
    }
}

/// A chat request line for `custom_id` (a distinct prompt each).
/// A `pacer` command in `dir` against `base_url` with `key`: piped output,
/// no input, no stray keys or log settings from the environment.
pub fn pacer_command(dir: &Path, base_url: &str, key: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.current_dir(dir)
        .env("OPENAI_API_KEY", key)
        .env("OPENAI_BASE_URL", base_url)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("PACER_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

pub fn chat_line(custom_id: &str, max_tokens: u64) -> String {
    json!({
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": format!("Clean up the OCR text of document {custom_id}.")}],
            "max_tokens": max_tokens
        }
    })
    .to_string()
}

/// Writes a Batch JSONL of `n` chat requests `r00000`.. and returns its path.
pub fn write_batch(dir: &Path, name: &str, n: usize) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&chat_line(&format!("r{i:05}"), 50));
        text.push('\n');
    }
    std::fs::write(&path, text).expect("write input");
    path
}

/// Reads a results file; every line must be complete JSON. Returns custom_id → line.
pub fn read_results(path: &Path) -> HashMap<String, Value> {
    let text = std::fs::read_to_string(path).expect("read results");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the output ends with a partial line"
    );
    let mut by_id = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", i + 1));
        let id = v["custom_id"].as_str().expect("custom_id").to_string();
        assert!(
            by_id.insert(id.clone(), v).is_none(),
            "{id} appears twice in the output"
        );
    }
    by_id
}

/// The input lines by custom_id.
pub fn read_input(path: &Path) -> HashMap<String, Value> {
    std::fs::read_to_string(path)
        .expect("read input")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("input line");
            (v["custom_id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Asserts every input request has exactly one successful result carrying
/// the simulator's reply to that very request.
pub fn assert_complete_and_matching(input: &Path, results: &Path) {
    let inputs = read_input(input);
    let results = read_results(results);
    assert_eq!(results.len(), inputs.len(), "one result per request");
    for (id, req) in &inputs {
        let res = results
            .get(id)
            .unwrap_or_else(|| panic!("{id} has no result"));
        assert_eq!(res["response"]["status_code"], 200, "{id}: {res}");
        let expected = pacer_mock::expected_reply(req["url"].as_str().unwrap(), &req["body"]);
        let body = &res["response"]["body"];
        // Chat completions put the text in a choice; Anthropic in a content block.
        let got = body["choices"][0]["message"]["content"]
            .as_str()
            .or_else(|| body["content"][0]["text"].as_str())
            .unwrap_or_default();
        assert!(!got.is_empty(), "{id}: empty reply: {res}");
        assert_eq!(
            got, expected,
            "{id}: the reply does not belong to this request"
        );
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn summary(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}) in {stdout:?}; stderr: {}",
            stderr(out)
        )
    })
}

pub fn status_count(stats: &Stats, code: u16) -> u64 {
    stats.by_status.get(&code.to_string()).copied().unwrap_or(0)
}
