//! The live dashboard of a run: `/` its charts, `/metrics` Prometheus.
//!
//! A small axum server beside the run (`pacer run --dashboard ADDR`). The
//! page is whatever the caller's [`Page`] renders (the report of the run's
//! state); rendering reads SQLite, so it runs on a blocking thread, one at a
//! time, and a page is served again instead of rendered again while it is
//! younger than [`PAGE_FRESH`] or four times what it took to render: a
//! dozen open browser tabs cost one render every few seconds, never one
//! each, and a job so large that a render takes seconds spends at most a
//! fifth of a core on its dashboard. `/metrics` reads atomics only.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{RunMetrics, OPENMETRICS_CONTENT_TYPE};

/// Renders the dashboard's page: the HTML, or one sentence saying why not.
pub type Page = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// How long a rendered page is served again before it is rendered anew.
pub const PAGE_FRESH: Duration = Duration::from_secs(2);

/// A running dashboard server; [`Dashboard::stop`] ends it.
#[derive(Debug)]
pub struct Dashboard {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct App {
    metrics: Arc<RunMetrics>,
    page: Page,
    rendering: Semaphore,
    last: Mutex<Option<Rendered>>,
}

/// A page and how long it stays fresh.
struct Rendered {
    at: Instant,
    fresh_for: Duration,
    html: Arc<String>,
}

impl Dashboard {
    /// Binds `addr` and serves until stopped. Whether `addr` may be off
    /// loopback is the caller's decision.
    pub async fn start(
        addr: SocketAddr,
        metrics: Arc<RunMetrics>,
        page: Page,
    ) -> std::io::Result<Dashboard> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App {
            metrics,
            page,
            rendering: Semaphore::new(1),
            last: Mutex::new(None),
        });
        let router = Router::new()
            .route("/", get(page_route))
            .route("/metrics", get(metrics_route))
            .with_state(app);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!("the dashboard stopped: {e}");
            }
        });
        Ok(Dashboard { addr, stop, task })
    }

    /// Where it listens (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving; open connections end with their current answer.
    pub async fn stop(self) {
        self.stop.cancel();
        // A browser may keep a connection open: do not wait on it for long.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

async fn metrics_route(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        app.metrics.render(),
    )
        .into_response()
}

async fn page_route(State(app): State<Arc<App>>) -> Response {
    match page(&app).await {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html.as_str().to_owned(),
        )
            .into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("pacer: the dashboard cannot show the run yet: {why}\n"),
        )
            .into_response(),
    }
}

/// The page, rendered at most once per [`PAGE_FRESH`].
async fn page(app: &Arc<App>) -> Result<Arc<String>, String> {
    let fresh = |app: &App| {
        let last = app.last.lock().expect("page cache lock");
        last.as_ref()
            .filter(|r| r.at.elapsed() < r.fresh_for)
            .map(|r| r.html.clone())
    };
    if let Some(html) = fresh(app) {
        return Ok(html);
    }
    // One render at a time; whoever waited here finds the page just made.
    let _turn = app
        .rendering
        .acquire()
        .await
        .map_err(|_| "the dashboard is stopping".to_string())?;
    if let Some(html) = fresh(app) {
        return Ok(html);
    }
    let render = app.page.clone();
    let began = Instant::now();
    let html = tokio::task::spawn_blocking(move || render())
        .await
        .map_err(|_| "rendering the page failed".to_string())??;
    let html = Arc::new(html);
    let at = Instant::now();
    *app.last.lock().expect("page cache lock") = Some(Rendered {
        at,
        fresh_for: PAGE_FRESH.max(4 * (at - began)),
        html: html.clone(),
    });
    Ok(html)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn app(renders: Arc<AtomicUsize>) -> Arc<App> {
        Arc::new(App {
            metrics: Arc::new(RunMetrics::new()),
            page: Arc::new(move || {
                let n = renders.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(format!("<p>{n}</p>"))
            }),
            rendering: Semaphore::new(1),
            last: Mutex::new(None),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_is_rendered_again_only_once_stale() {
        let renders = Arc::new(AtomicUsize::new(0));
        let app = app(renders.clone());
        assert_eq!(*page(&app).await.unwrap(), "<p>1</p>");
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(*page(&app).await.unwrap(), "<p>1</p>");
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(*page(&app).await.unwrap(), "<p>2</p>");
        assert_eq!(renders.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_that_cannot_render_says_why() {
        let app = Arc::new(App {
            metrics: Arc::new(RunMetrics::new()),
            page: Arc::new(|| Err("no state yet".into())),
            rendering: Semaphore::new(1),
            last: Mutex::new(None),
        });
        assert_eq!(page(&app).await.unwrap_err(), "no state yet");
    }
}
