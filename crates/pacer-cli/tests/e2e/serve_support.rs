//! The harness for `pacer serve`: the real gateway binary in front of the
//! simulator, the official Python SDKs as its clients, and small HTTP helpers.
//!
//! The gateway gets the simulator's URL as both upstreams and an upstream key
//! planted in `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`; its clients use other
//! keys. The simulator accepts both kinds of key, so its per-key counters show
//! which one reached it, and the planted key can be searched for in every
//! answer, header and log line.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_mock::MockConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::support::*;

/// The upstream key the gateway holds: it must reach the simulator and no one else.
pub const UPSTREAM_KEY: &str = "sk-upstream-planted-5b1e0c9d";
/// A local client's key: the gateway must never forward it.
pub const CLIENT_KEY: &str = "cl-client-own-key-77aa";

/// The simulator's name for a key in `stats().by_key` (first 4 characters + `…`).
pub fn fingerprint(key: &str) -> String {
    format!("{}…", key.chars().take(4).collect::<String>())
}

/// `config` with the simulator accepting both the upstream and the client key
/// (so a forwarded client key would be counted, not just refused).
pub fn gateway_mock(config: MockConfig) -> MockConfig {
    MockConfig {
        keys: vec![UPSTREAM_KEY.to_string(), CLIENT_KEY.to_string()],
        ..config
    }
}

/// A running `pacer serve`, killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    drains: Vec<JoinHandle<()>>,
}

/// `pacer serve --listen 127.0.0.1:0 --upstream <mock> --anthropic-upstream
/// <mock> ARGS` in `env`'s folder, with the planted upstream key and no
/// stray settings from the environment.
pub fn serve_command(env: &Env, args: &[&str]) -> tokio::process::Command {
    let upstream = env.mock.base_url();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.current_dir(env.dir.path())
        .arg("serve")
        .args(["--upstream", &upstream, "--anthropic-upstream", &upstream])
        .args(args)
        .env("OPENAI_API_KEY", UPSTREAM_KEY)
        .env("ANTHROPIC_API_KEY", UPSTREAM_KEY)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("PACER_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Copies everything `pipe` says into `buf` until it closes.
fn drain<R: AsyncRead + Unpin + Send + 'static>(
    mut pipe: R,
    buf: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    })
}

impl Gateway {
    /// Starts `pacer serve` on a free loopback port with `args` added.
    pub async fn start(env: &Env, args: &[&str]) -> Gateway {
        Self::start_with(env, args, |_| {}).await
    }

    /// Like [`Gateway::start`], with a last say on the command (env vars...).
    pub async fn start_with(
        env: &Env,
        args: &[&str],
        f: impl FnOnce(&mut tokio::process::Command),
    ) -> Gateway {
        let mut cmd = serve_command(env, &[]);
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        f(&mut cmd);
        let mut child = cmd.spawn().expect("spawn pacer serve");
        let err = Arc::new(Mutex::new(String::new()));
        let out = Arc::new(Mutex::new(String::new()));
        let err_drain = drain(child.stderr.take().expect("stderr"), err.clone());
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        let read =
            tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut first)).await;
        let addr = first
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            // Not started: say why, with whatever it printed.
            let _ = child.start_kill();
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), err_drain).await;
            panic!(
                "`pacer serve {args:?}` did not print `listening on http://ADDR` first \
                 (read: {read:?}, first line {first:?}, exit {status:?}); stderr:\n{}",
                err.lock().unwrap()
            );
        };
        out.lock().unwrap().push_str(&first);
        let out_drain = drain(stdout, out.clone());
        Gateway {
            child,
            addr,
            out,
            err,
            drains: vec![err_drain, out_drain],
        }
    }

    /// `http://ADDR` (an Anthropic SDK's base URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR/v1` (an OpenAI SDK's base URL).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Everything the gateway wrote so far, stdout then stderr.
    pub fn logs(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.out.lock().unwrap(),
            self.err.lock().unwrap()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the gateway is running")
    }

    /// Sends SIGTERM (via `kill`, to need no extra crate).
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `limit` for the gateway to exit, then for its output to be
    /// read to the end; panics (with the logs) if it does not exit.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for pacer serve"),
            Err(_) => panic!(
                "pacer serve did not exit within {limit:?}; logs:\n{}",
                self.logs()
            ),
        };
        for d in self.drains.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), d).await;
        }
        status
    }

    /// Asserts the planted upstream key appears nowhere in the gateway's output.
    pub fn assert_logs_hold_no_key(&self) {
        let logs = self.logs();
        assert!(
            !logs.contains(UPSTREAM_KEY),
            "the gateway's log holds the upstream key:\n{logs}"
        );
        assert!(
            !logs.contains(CLIENT_KEY),
            "the gateway's log holds a client's key:\n{logs}"
        );
    }
}

/// Runs a `pacer serve` command that should refuse to start; returns its output
/// (panics if it is still running after 20 s).
pub async fn serve_refused(env: &Env, args: &[&str]) -> Output {
    let mut cmd = serve_command(env, args);
    tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`pacer serve {args:?}` was expected to exit, and kept running"))
        .expect("run pacer serve")
}

// ---------------------------------------------------------------- Python SDKs

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The Python with the SDKs: `$PACER_TEST_PYTHON`, else the venv that
/// `scripts/test-deps.sh` makes at `target/test-venv`. Panics (the test fails,
/// it is not skipped) when neither exists.
pub fn test_python() -> PathBuf {
    if let Some(p) = std::env::var_os("PACER_TEST_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "PACER_TEST_PYTHON={} does not exist: run scripts/test-deps.sh (./test.sh does)",
            p.display()
        );
        return p;
    }
    let venv = workspace_root().join("target/test-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the openai and anthropic SDKs: PACER_TEST_PYTHON is unset and {} \
         does not exist; run scripts/test-deps.sh (./test.sh does) to install them",
        venv.display()
    );
    venv
}

/// A client script of `crates/pacer-cli/tests/sdk/`.
pub fn sdk_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name)
}

/// What an SDK script did: its exit status, its one JSON object, its stderr.
pub struct SdkRun {
    pub status: ExitStatus,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl SdkRun {
    /// Asserts the script exited 0 (every call succeeded).
    pub fn assert_ok(&self) {
        assert!(
            self.status.success(),
            "the SDK script failed ({}): {}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `tests/sdk/SCRIPT ARGS` with the test Python, bounded by `limit`;
/// the environment holds no provider keys or URLs (scripts get them as arguments).
pub async fn run_sdk(script: &str, args: &[&str], limit: Duration) -> SdkRun {
    let mut cmd = tokio::process::Command::new(test_python());
    cmd.arg(sdk_script(script))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "*")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("PACER_BASE_URL")
        .env_remove("PACER_API_KEY")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} {args:?} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON object ({e}; exit {}): {stdout:?}\nstderr:\n{stderr}",
            out.status
        )
    });
    SdkRun {
        status: out.status,
        json,
        stdout,
        stderr,
    }
}

// ---------------------------------------------------------------- HTTP

/// A plain HTTP client for loopback (no proxy, no pooling surprises).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

/// A chat completion body whose prompt carries `tag` (so the simulator's log,
/// by body hash, can tell it from any other).
pub fn chat_body(tag: &str) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": format!("Request {tag}: clean up this OCR text.")}],
        "max_tokens": 8
    })
}

/// What a request through the gateway got.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The whole answer as text, headers included (to search for keys).
    pub fn dump(&self) -> String {
        let mut s = format!("{}\n", self.status);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        s.push_str(&self.body);
        s
    }

    /// Asserts an OpenAI-shaped error: `{"error": {"message": "...", "type": ..., "code": ...}}`.
    pub fn assert_openai_error(&self) {
        let v = self.json();
        let e = &v["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "not an OpenAI error shape: {v}"
        );
        assert!(
            e.get("type").is_some() && e.get("code").is_some(),
            "an OpenAI error has `type` and `code`: {v}"
        );
    }
}

/// Sends `req` and reads the whole answer.
pub async fn send(req: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// POSTs a chat completion with `tag` to the gateway as `CLIENT_KEY`, with
/// extra `headers`.
pub async fn chat(
    client: &reqwest::Client,
    gw_url: &str,
    tag: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, reqwest::Error> {
    let mut req = client
        .post(format!("{gw_url}/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("x-client-request-id", tag)
        .json(&chat_body(tag));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req).await
}

/// The JSON bytes `chat` sends for `tag` (what the simulator hashes, if the
/// gateway forwards the body untouched).
pub fn chat_body_bytes(tag: &str) -> Vec<u8> {
    serde_json::to_vec(&chat_body(tag)).unwrap()
}

/// Sums the samples of metric `name` in Prometheus text (any labels).
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => continue,
        };
        if series != name {
            continue;
        }
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}').map(|(_, v)| v)
        } else {
            Some(rest)
        };
        if let Some(v) = value
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}
