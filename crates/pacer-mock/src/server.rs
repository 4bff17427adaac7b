//! Binding, routing and stopping the simulated provider.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::config::MockConfig;
use crate::error::MockError;
use crate::error_body;
use crate::handler::api;
use crate::reply::Endpoint;
use crate::state::MockState;
use crate::stats::{LogEntry, Stats};

/// Largest request body accepted (long documents are the point of batch jobs).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A cheap, cloneable view of a running simulator's records.
#[derive(Clone)]
pub struct MockHandle(Arc<MockState>);

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle").finish_non_exhaustive()
    }
}

impl MockHandle {
    /// The counters `GET /mock/stats` returns.
    pub fn stats(&self) -> Stats {
        self.0.stats()
    }

    /// The request log `GET /mock/log` returns, in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.0.recorder.log(0, usize::MAX)
    }
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

fn endpoint_route(endpoint: Endpoint) -> axum::routing::MethodRouter<Arc<MockState>> {
    let handler = move |State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes| {
        api(state, endpoint, headers, body)
    };
    if endpoint == Endpoint::Models {
        get(handler)
    } else {
        post(handler)
    }
}

/// The simulator's routes and a handle on its records, for callers that serve
/// it themselves. Its clock starts now.
pub fn router(config: MockConfig) -> (Router, MockHandle) {
    let state = Arc::new(MockState::new(config));
    let mut app = Router::new();
    for endpoint in [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::Models,
    ] {
        app = app.route(endpoint.path(), endpoint_route(endpoint));
    }
    let app = app
        .merge(crate::batch::routes())
        .route(
            "/mock/stats",
            get(|State(s): State<Arc<MockState>>| async move { Json(s.stats()) }),
        )
        .route(
            "/mock/log",
            get(
                |State(s): State<Arc<MockState>>, Query(q): Query<LogQuery>| async move {
                    Json(
                        s.recorder
                            .log(q.since.unwrap_or(0), q.limit.unwrap_or(usize::MAX)),
                    )
                },
            ),
        )
        .fallback(|method: Method, uri: Uri| async move {
            let body = error_body::not_found(method.as_str(), uri.path());
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state.clone());
    (app, MockHandle(state))
}

/// A simulated provider running on the current tokio runtime.
pub struct MockServer {
    addr: SocketAddr,
    handle: MockHandle,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Bind `config.listen` (port 0 picks a free port), start serving in a
    /// background task, and return once the socket is bound.
    pub async fn start(config: MockConfig) -> Result<MockServer, MockError> {
        let wanted = config.listen;
        let listener = tokio::net::TcpListener::bind(wanted)
            .await
            .map_err(|source| MockError::Bind {
                addr: wanted,
                source,
            })?;
        let addr = listener.local_addr()?;
        let (app, handle) = router(config);
        let mut stop = handle.0.shutdown.subscribe();
        // Small answers must not wait for Nagle's algorithm.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                })
                .await
        });
        Ok(MockServer {
            addr,
            handle,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL, `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The counters `GET /mock/stats` returns.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// The request log, in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.handle.log()
    }

    /// A handle on the records that outlives the server.
    pub fn handle(&self) -> MockHandle {
        self.handle.clone()
    }

    /// Stop accepting, answer hung requests with 503, let in-flight answers
    /// finish, and wait for the server task.
    pub async fn shutdown(mut self) -> Result<(), MockError> {
        self.handle.0.shutdown.send_replace(true);
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(MockError::Serve),
                Err(e) => Err(MockError::Task(e.to_string())),
            },
            None => Ok(()),
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // A dropped server stops too (gracefully, in the background).
        self.handle.0.shutdown.send_replace(true);
    }
}

/// What `pacer mock` does: start, print `listening on http://ADDR` as the
/// first line of stdout, serve until Ctrl-C, then stop gracefully.
pub async fn run_until_ctrl_c(config: MockConfig) -> Result<(), MockError> {
    let server = MockServer::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", server.addr())?;
        out.flush()?;
    }
    tokio::signal::ctrl_c().await?;
    let stats = server.stats();
    server.shutdown().await?;
    eprintln!(
        "pacer mock: {} requests, {} accepted, by status {:?}",
        stats.requests, stats.accepted, stats.by_status
    );
    Ok(())
}
