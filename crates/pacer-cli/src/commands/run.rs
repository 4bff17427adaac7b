//! `pacer run`: send a batch, paced, retried and resumable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{default_base_url, endpoint, source_options, Endpoint, UsageError};
use crate::args::{ProviderArg, RunArgs, ViaArg};
use crate::progress::Reporter;
use crate::Outcome;
use pacer::engine::{BatchOptions, RunConfig, Via};
use pacer::report::{Dashboard, RunMetrics};
use pacer::transport::ApiKey;

pub async fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.input));
    let state = args.state.clone().unwrap_or_else(|| default_state(&output));
    let mut cfg = RunConfig::new(args.input.clone(), output, state);
    cfg.source = source_options(&args.input_args);
    super::apply_send(&mut cfg, &args.send)?;
    cfg.restart = args.restart;
    cfg.verify = !args.no_verify;
    if args.via == ViaArg::Live {
        for (set, flag) in [
            (args.poll_interval.is_some(), "--poll-interval"),
            (args.batch_max_lines.is_some(), "--batch-max-lines"),
        ] {
            if set {
                return Err(UsageError(format!("{flag} applies to --via batch only")).into());
            }
        }
    } else if args.send.stream {
        return Err(UsageError(
            "--stream applies to --via live only: batch APIs do not stream".into(),
        )
        .into());
    }

    let anthropic = args.input_args.provider == Some(ProviderArg::Anthropic);
    let Endpoint {
        key_env,
        key,
        base_url,
    } = endpoint(anthropic, &args.send.endpoint)?;

    // Rehearsal: no key and nowhere to send means the built-in simulator.
    let simulate = args.simulate || (key.is_none() && base_url.is_none());
    let mut _mock = None;
    let (base_url, key) = if simulate {
        let mock = pacer_mock::MockServer::start(demo_mock_config())
            .await
            .context("starting the simulated provider")?;
        let what = if args.via == ViaArg::Batch {
            "its batch APIs process 1,000 requests a second a batch"
        } else {
            "rpm 1200, tpm 400000, 2% errors, 1% overloads, ~250 ms latency"
        };
        eprintln!(
            "pacer: no ${key_env} and no --base-url: rehearsing against the built-in simulated provider at {} ({what})",
            mock.base_url()
        );
        let url = mock.base_url();
        _mock = Some(mock);
        (url, Some(pacer_mock::DEFAULT_KEY.to_string()))
    } else {
        (
            base_url.unwrap_or_else(|| default_base_url(anthropic).to_string()),
            key,
        )
    };
    if args.via == ViaArg::Batch {
        cfg.via = Via::Batch(BatchOptions {
            // The simulator finishes batches in seconds, a provider in hours.
            poll_interval: args.poll_interval.unwrap_or(if simulate {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(30)
            }),
            max_lines: args.batch_max_lines,
        });
    }
    cfg.fresh_provider = simulate;
    cfg.transport = super::transport_config(
        &args.send,
        base_url,
        key.map(|k| ApiKey::from_env(&key_env, k)),
    );
    if args.redis.is_some() && args.via == ViaArg::Batch {
        return Err(UsageError(
            "--redis applies to --via live only: batch APIs are not paced per request".into(),
        )
        .into());
    }
    cfg.shared = super::shared_limits(args.redis.as_deref(), &cfg.transport, &cfg.limits).await?;
    if let (Some(redis), Some(job)) = (&args.redis, &args.job) {
        super::worker::check_lease(args.lease)?;
        if args.via == ViaArg::Batch {
            return Err(UsageError("--job applies to --via live only".into()).into());
        }
        cfg.job = Some(pacer::engine::JobConfig {
            redis: redis.clone(),
            name: if job.is_empty() {
                None
            } else {
                Some(pacer::jobs::JobName::parse(job)?)
            },
            lease: args.lease,
        });
    }

    let cancel = CancellationToken::new();
    // First Ctrl-C (or SIGTERM): stop admitting, let in-flight work finish,
    // save. Second: leave at once (the state is safe either way).
    super::on_stop_signal(
        cancel.clone(),
        if args.via == ViaArg::Batch {
            "\npacer: stopping: saving; submitted batches keep running at the provider (Ctrl-C again to quit at once; the state is safe either way)"
        } else {
            "\npacer: stopping: finishing in-flight requests and saving (Ctrl-C again to quit at once; the state is safe either way)"
        },
        "pacer: quitting at once; rerun the same command to resume",
    );
    let dashboard = match args.dashboard {
        Some(addr) => Some(start_dashboard(addr, args.dashboard_public, &cfg.state).await?),
        None => None,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = Reporter::spawn(
        rx,
        args.send.progress,
        dashboard.as_ref().map(|d| d.1.clone()),
    );
    let result = pacer::engine::run(cfg, Some(tx), cancel.clone()).await;
    reporter.finish().await;
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            if let Some((dashboard, _)) = dashboard {
                dashboard.stop().await;
            }
            return Err(e.into());
        }
    };

    let outcome = outcome(&report);
    let s = &report.summary;
    if args.send.json {
        let mut v = serde_json::to_value(s)?;
        v["exit_code"] = serde_json::json!(outcome.code());
        println!("{v}");
    } else {
        crate::progress::print_summary(s);
    }
    if let Some(reason) = &report.stop {
        eprintln!("pacer: stopped: {reason}");
    }
    if report.open_batches > 0 && outcome == Outcome::Stopped {
        let n = report.open_batches;
        let (noun, verb) = if n == 1 {
            ("batch", "keeps")
        } else {
            ("batches", "keep")
        };
        if simulate {
            eprintln!("pacer: {n} {noun} of the built-in simulator end with this run; rerunning the same command sends their requests again");
        } else {
            eprintln!("pacer: {n} {noun} {verb} running at the provider: rerunning the same command picks them up (or `pacer cancel` cancels them)");
        }
    }
    if let Some((dashboard, _)) = dashboard {
        if let Some(linger) = args.dashboard_linger {
            eprintln!(
                "pacer: the dashboard stays up for {}s (Ctrl-C ends it)",
                linger.as_secs()
            );
            tokio::select! {
                _ = tokio::time::sleep(linger) => {}
                _ = cancel.cancelled() => {}
            }
        }
        dashboard.stop().await;
    }
    Ok(outcome)
}

/// `--dashboard`: the run's charts and its Prometheus metrics, on loopback
/// unless `--dashboard-public`.
async fn start_dashboard(
    addr: SocketAddr,
    public: bool,
    state: &Path,
) -> anyhow::Result<(Dashboard, Arc<RunMetrics>)> {
    if !addr.ip().is_loopback() && !public {
        return Err(UsageError(format!(
            "--dashboard {addr} is not a loopback address: add --dashboard-public to show the run's errors and costs to other machines"
        ))
        .into());
    }
    let metrics = Arc::new(RunMetrics::new());
    let dashboard = Dashboard::start(addr, metrics.clone(), dashboard_page(state))
        .await
        .with_context(|| format!("could not listen on {addr} (--dashboard)"))?;
    eprintln!(
        "pacer: dashboard at http://{0}/ (Prometheus metrics at http://{0}/metrics)",
        dashboard.local_addr()
    );
    Ok((dashboard, metrics))
}

/// The dashboard's page: the report of the run's state as it is now,
/// reloading itself every few seconds.
fn dashboard_page(state: &Path) -> pacer::report::dashboard::Page {
    let state = state.to_path_buf();
    let options = pacer::report::RenderOptions {
        live_refresh: Some(DASHBOARD_REFRESH),
    };
    Arc::new(move || {
        pacer::report::ReportData::from_state(&state)
            .map(|data| pacer::report::render(&data, &options))
            .map_err(|e| e.to_string())
    })
}

/// How often the dashboard's page reloads itself.
const DASHBOARD_REFRESH: Duration = Duration::from_secs(5);

pub(crate) fn outcome(report: &pacer::engine::RunReport) -> Outcome {
    if report.stop.is_some() || report.summary.pending > 0 {
        Outcome::Stopped
    } else if report.summary.failed > 0 {
        Outcome::SomeFailed
    } else {
        Outcome::Done
    }
}

/// `requests.jsonl` → `requests.results.jsonl`; a folder `docs/` → `docs.results.jsonl`.
pub(crate) fn default_output(input: &Path) -> PathBuf {
    let trimmed = input.components().as_path();
    let stem = trimmed
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pacer".into());
    let dir = trimmed.parent().unwrap_or(Path::new(""));
    dir.join(format!("{stem}.results.jsonl"))
}

/// `x.results.jsonl` → `x.results.pacer.db`, beside the output.
pub(crate) fn default_state(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pacer".into());
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    output.with_file_name(format!("{stem}.pacer.db"))
}

fn demo_mock_config() -> pacer_mock::MockConfig {
    pacer_mock::MockConfig {
        rpm: Some(1200),
        tpm: Some(400_000),
        error_rate: 0.02,
        overload_rate: 0.01,
        latency: 250,
        latency_tail: true,
        ..pacer_mock::MockConfig::default()
    }
}
