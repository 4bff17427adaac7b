//! A real `redis-server` for the shared-limits tests: on a free loopback
//! port, nothing saved, killed on drop. `scripts/test-deps.sh` installs it;
//! without it the tests fail with one sentence, never skip.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// With persistence: the append-only file's folder (every write synced).
    aof: Option<tempfile::TempDir>,
}

/// Fails (never skips) when `redis-server` is missing.
fn ensure_installed() {
    let found = Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "redis-server is not installed: run scripts/test-deps.sh (./test.sh does)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        ensure_installed();
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            aof: None,
        };
        server.restart();
        server
    }

    /// A Redis that persists every write (AOF, `appendfsync always`): a
    /// SIGKILL loses nothing.
    pub fn start_persistent() -> RedisServer {
        ensure_installed();
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            aof: Some(tempfile::tempdir().expect("temp dir")),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""]);
        match &self.aof {
            None => cmd.args(["--appendonly", "no"]),
            Some(dir) => cmd
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir.path()),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING in 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it (SIGKILL: a crash; nothing is saved).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to the test redis")
    }

    /// Every key and every value in Redis, as text.
    pub fn dump(&self) -> String {
        let mut conn = self.connection();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        let mut text = String::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
            let value: Vec<Vec<u8>> = match kind.as_str() {
                "string" => vec![redis::cmd("GET").arg(&key).query(&mut conn).unwrap()],
                "hash" => redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap(),
                "zset" => redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(&mut conn)
                    .unwrap(),
                "stream" => redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query::<Vec<(String, Vec<Vec<u8>>)>>(&mut conn)
                    .unwrap()
                    .into_iter()
                    .flat_map(|(id, fields)| std::iter::once(id.into_bytes()).chain(fields))
                    .collect(),
                "none" => vec![],
                other => panic!("pacer wrote a {other} at {key}"),
            };
            text.push_str(&format!("{key} ({kind}):"));
            for v in value {
                text.push(' ');
                text.push_str(&String::from_utf8_lossy(&v));
            }
            text.push('\n');
        }
        text
    }

    /// Each worker's clock offset as recorded (milliseconds).
    pub fn clock_offsets(&self) -> Vec<i64> {
        let mut conn = self.connection();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("pacer:*:clock")
            .query(&mut conn)
            .unwrap();
        let mut all = Vec::new();
        for key in keys {
            let v: Vec<(String, i64)> = redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
            all.extend(v.into_iter().map(|(_, s)| s));
        }
        all
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
