//! `pacer worker`: one more machine on a shared job in Redis.

use tokio_util::sync::CancellationToken;

use super::{endpoint, Endpoint, UsageError};
use crate::args::{ProviderArg, WorkerArgs};
use crate::progress::Reporter;
use crate::Outcome;
use pacer::engine::{JobConfig, RunConfig};
use pacer::transport::ApiKey;

pub async fn worker(args: WorkerArgs) -> anyhow::Result<Outcome> {
    check_lease(args.lease)?;
    let name = pacer::jobs::JobName::parse(&args.job)?;
    let anthropic = args.provider == Some(ProviderArg::Anthropic);
    let Endpoint {
        key_env,
        key,
        base_url,
    } = endpoint(anthropic, &args.send.endpoint)?;
    if key.is_none() && base_url.is_none() {
        return Err(UsageError(format!(
            "pacer worker sends the job's requests itself: set ${key_env} (or --api-key-env) and, for another provider than the default, --base-url"
        ))
        .into());
    }
    // A worker has no input and no state of its own: the paths are unused.
    let mut cfg = RunConfig::new(Default::default(), Default::default(), Default::default());
    super::apply_send(&mut cfg, &args.send)?;
    cfg.transport = super::transport_config(
        &args.send,
        base_url.unwrap_or_else(|| super::default_base_url(anthropic).to_string()),
        key.map(|k| ApiKey::from_env(&key_env, k)),
    );
    cfg.shared = super::shared_limits(Some(&args.redis), &cfg.transport, &cfg.limits).await?;
    cfg.job = Some(JobConfig {
        redis: args.redis.clone(),
        name: Some(name.clone()),
        lease: args.lease,
    });
    eprintln!(
        "pacer: working on the shared job \"{name}\" in Redis at {}",
        pacer::shared::display_redis_url(&args.redis)
    );

    let cancel = CancellationToken::new();
    super::on_stop_signal(
        cancel.clone(),
        "\npacer: stopping: finishing in-flight requests; what this worker holds goes back to the job (Ctrl-C again to quit at once: its leases then run out)",
        "pacer: quitting at once; the job's other workers take over this one's requests after the lease",
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = Reporter::spawn(rx, args.send.progress, None);
    let result = pacer::engine::work(cfg, Some(tx), cancel).await;
    reporter.finish().await;
    let report = result?;
    let s = &report.summary;
    let outcome = if report.stop.is_some() || s.pending > 0 {
        Outcome::Stopped
    } else if s.failed > 0 {
        Outcome::SomeFailed
    } else {
        Outcome::Done
    };
    if args.send.json {
        let mut v = serde_json::to_value(s)?;
        v["exit_code"] = serde_json::json!(outcome.code());
        v["job"] = serde_json::to_value(&report.job)?;
        println!("{v}");
    } else {
        crate::progress::print_summary(s);
    }
    if let Some(reason) = &report.stop {
        eprintln!("pacer: stopped: {reason}");
    }
    Ok(outcome)
}

/// A lease shorter than a second would be renewed more often than work is
/// done, and reclaimed from a worker that is merely busy.
pub(crate) fn check_lease(lease: std::time::Duration) -> Result<(), UsageError> {
    if lease < std::time::Duration::from_secs(1) {
        return Err(UsageError(
            "--lease must be at least 1s (a request's lease is renewed three times a lease while it runs)".into(),
        ));
    }
    Ok(())
}
