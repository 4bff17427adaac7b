//! One function a subcommand: turn arguments into library calls, print, and
//! return the exit status.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::args::{EstimateArgs, ExportArgs, InputArgs, ProviderArg, RunArgs, StatusArgs};
use crate::exit;
use crate::progress::Reporter;
use pacer::cost::{EstimateLimits, PriceTable};
use pacer::engine::{EngineError, Limits, RunConfig};
use pacer::input::{ProviderHint, Source, SourceOptions};
use pacer::retry::RetryPolicy;
use pacer::transport::{ApiKey, TransportConfig};

/// Prints an error (with its causes) as one paragraph on stderr.
fn report_error(e: &anyhow::Error) {
    eprintln!("pacer: {e:#}");
}

fn source_options(a: &InputArgs) -> SourceOptions {
    SourceOptions {
        model: a.model.clone(),
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        template: a.template.clone(),
        split_tokens: a.split_tokens,
        overlap: a.overlap,
        provider: a.provider.map(|p| match p {
            ProviderArg::Openai => ProviderHint::OpenAi,
            ProviderArg::Anthropic => ProviderHint::Anthropic,
        }),
    }
}

fn prices(file: Option<&Path>) -> anyhow::Result<PriceTable> {
    let mut table = PriceTable::builtin();
    if let Some(file) = file {
        table.load_overrides(file)?;
    }
    Ok(table)
}

/// `requests.jsonl` → `requests.results.jsonl`; a folder `docs/` → `docs.results.jsonl`.
fn default_output(input: &Path) -> PathBuf {
    let trimmed = input.components().as_path();
    let stem = trimmed
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pacer".into());
    let dir = trimmed.parent().unwrap_or(Path::new(""));
    dir.join(format!("{stem}.results.jsonl"))
}

/// `x.results.jsonl` → `x.results.pacer.db`, beside the output.
fn default_state(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pacer".into());
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    output.with_file_name(format!("{stem}.pacer.db"))
}

pub async fn run(args: RunArgs) -> u8 {
    match run_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            report_error(&e);
            match e.downcast_ref::<EngineError>() {
                Some(ee) if !ee.is_usage() => exit::STOPPED,
                _ => exit::USAGE,
            }
        }
    }
}

async fn run_inner(args: RunArgs) -> anyhow::Result<u8> {
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.input));
    let state = args.state.clone().unwrap_or_else(|| default_state(&output));
    let mut cfg = RunConfig::new(args.input.clone(), output, state);
    cfg.source = source_options(&args.input_args);
    cfg.prices = prices(args.prices.as_deref())
        .map_err(|e| anyhow::Error::new(EngineError::Config(format!("{e:#}"))))?;
    cfg.limits = Limits {
        rpm: args.rates.rpm,
        rps: args.rates.rps,
        tpm: args.rates.tpm,
        burst: args.burst,
        concurrency: args.concurrency,
    };
    if args.concurrency == Some(0) {
        anyhow::bail!(EngineError::Config(
            "--concurrency must be at least 1".into()
        ));
    }
    cfg.retry = RetryPolicy {
        max_retries: args.max_retries,
        ..RetryPolicy::default()
    };
    cfg.restart = args.restart;
    cfg.max_cost = args.max_cost;
    cfg.verify = !args.no_verify;
    cfg.max_retry_time = args.max_retry_time;

    let anthropic = args.input_args.provider == Some(ProviderArg::Anthropic);
    let Endpoint {
        key_env,
        key,
        base_url,
    } = endpoint(anthropic, &args.endpoint);

    // Rehearsal: no key and nowhere to send means the built-in simulator.
    let simulate = args.simulate || (key.is_none() && base_url.is_none());
    let mut _mock = None;
    let (base_url, key) = if simulate {
        let mock = pacer_mock::MockServer::start(demo_mock_config())
            .await
            .context("starting the simulated provider")?;
        eprintln!(
            "pacer: no ${key_env} and no --base-url: rehearsing against the built-in simulated provider at {} (rpm 1200, tpm 400000, 2% errors, 1% overloads, ~250 ms latency)",
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
    cfg.transport = TransportConfig {
        base_url,
        api_key: key.map(ApiKey::new),
        timeout: args.timeout,
        idle_timeout: args.idle_timeout,
        stream: args.stream,
        max_response_bytes: args.max_response_bytes,
        ..TransportConfig::default()
    };

    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = Reporter::spawn(rx, args.progress);
    let result = pacer::engine::run(cfg, Some(tx), cancel).await;
    reporter.finish().await;
    let report = result?;

    let s = &report.summary;
    if args.json {
        let mut v = serde_json::to_value(s)?;
        v["exit_code"] = serde_json::json!(exit_code(&report));
        println!("{v}");
    } else {
        crate::progress::print_summary(s);
    }
    if let Some(reason) = &report.stop {
        eprintln!("pacer: stopped: {reason}");
    }
    Ok(exit_code(&report))
}

/// Where requests go and with which key, from flags and the environment.
struct Endpoint {
    key_env: String,
    key: Option<String>,
    base_url: Option<String>,
}

fn endpoint(anthropic: bool, args: &crate::args::EndpointArgs) -> Endpoint {
    let api_key_env = args.api_key_env.as_str();
    let key_env = if anthropic && api_key_env == "OPENAI_API_KEY" {
        "ANTHROPIC_API_KEY"
    } else {
        api_key_env
    }
    .to_string();
    let key = std::env::var(&key_env)
        .ok()
        .filter(|k| !k.trim().is_empty());
    let base_env = if anthropic {
        "ANTHROPIC_BASE_URL"
    } else {
        "OPENAI_BASE_URL"
    };
    let base_url = args
        .base_url
        .clone()
        .or_else(|| std::env::var(base_env).ok().filter(|b| !b.is_empty()));
    Endpoint {
        key_env,
        key,
        base_url,
    }
}

fn default_base_url(anthropic: bool) -> &'static str {
    if anthropic {
        "https://api.anthropic.com/v1"
    } else {
        "https://api.openai.com/v1"
    }
}

pub async fn verify(args: crate::args::VerifyArgs) -> u8 {
    use pacer::engine::VerifyVerdict;
    let anthropic = args.provider == Some(ProviderArg::Anthropic);
    let Endpoint {
        key_env,
        key,
        base_url,
    } = endpoint(anthropic, &args.endpoint);
    let Some(key) = key else {
        eprintln!("pacer: ${key_env} is not set; export the API key there (or name another variable with --api-key-env)");
        return exit::STOPPED;
    };
    let base_url = base_url.unwrap_or_else(|| default_base_url(anthropic).to_string());
    let transport = match pacer::transport::Transport::new(TransportConfig {
        base_url: base_url.clone(),
        api_key: Some(ApiKey::new(key)),
        timeout: std::time::Duration::from_secs(30),
        ..TransportConfig::default()
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pacer: {e}");
            return exit::STOPPED;
        }
    };
    let models: Vec<String> = args.model.iter().cloned().collect();
    let verdict = pacer::engine::verify(&transport, anthropic, &models).await;
    let (code, sentence, limits) = match &verdict {
        VerifyVerdict::Refused(reason) | VerifyVerdict::Unreachable(reason) => {
            (exit::STOPPED, reason.to_string(), None)
        }
        VerifyVerdict::Inconclusive(why) => (
            exit::STOPPED,
            format!("could not check the key at {base_url}: {why}"),
            None,
        ),
        VerifyVerdict::KeyAccepted { models, limits } => match models.first() {
            Some((m, Some(false))) => (
                exit::STOPPED,
                format!("the key works, but {base_url} does not list model \"{m}\""),
                Some(limits),
            ),
            Some((m, Some(true))) => (
                exit::OK,
                format!("the key works and model \"{m}\" exists at {base_url}"),
                Some(limits),
            ),
            Some((m, None)) => (
                exit::OK,
                format!(
                    "the key works at {base_url} (it gave no model list to look for \"{m}\" in)"
                ),
                Some(limits),
            ),
            None => (
                exit::OK,
                format!("the key works at {base_url}"),
                Some(limits),
            ),
        },
    };
    if args.json {
        let limits = limits.map(limits_json);
        println!(
            "{}",
            serde_json::json!({"ok": code == exit::OK, "message": sentence, "limits": limits})
        );
    } else {
        println!("{sentence}");
        if let Some(l) = limits {
            print_limits(l);
        }
    }
    code
}

fn window_json(w: &pacer::provider::RateWindow) -> serde_json::Value {
    serde_json::json!({
        "limit": w.limit,
        "remaining": w.remaining,
        "reset_s": w.reset.map(|d| d.as_secs_f64()),
    })
}

fn limits_json(l: &pacer::provider::RateLimitSnapshot) -> serde_json::Value {
    serde_json::json!({
        "requests": window_json(&l.requests),
        "tokens": window_json(&l.tokens),
        "input_tokens": window_json(&l.input_tokens),
        "output_tokens": window_json(&l.output_tokens),
    })
}

fn print_limits(l: &pacer::provider::RateLimitSnapshot) {
    if l.is_empty() {
        println!("limits: none in the provider's headers (pacer will learn them from 429s)");
        return;
    }
    for (name, w) in [
        ("requests", &l.requests),
        ("tokens", &l.tokens),
        ("input tokens", &l.input_tokens),
        ("output tokens", &l.output_tokens),
    ] {
        if w.is_empty() {
            continue;
        }
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
        let reset = w
            .reset
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_else(|| "?".into());
        println!(
            "limits: {name}: {} per minute, {} remaining, full again in {reset}",
            opt(w.limit),
            opt(w.remaining)
        );
    }
}

fn exit_code(report: &pacer::engine::RunReport) -> u8 {
    if report.stop.is_some() || report.summary.pending > 0 {
        exit::STOPPED
    } else if report.summary.failed > 0 {
        exit::SOME_FAILED
    } else {
        exit::OK
    }
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

/// First Ctrl-C (or SIGTERM): stop admitting, let in-flight work finish, save.
/// Second: leave at once (the state is safe either way).
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        match term.as_mut() {
            Some(t) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = t.recv() => {},
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        eprintln!("\npacer: stopping: finishing in-flight requests and saving (Ctrl-C again to quit at once; the state is safe either way)");
        cancel.cancel();
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("pacer: quitting at once; rerun the same command to resume");
        std::process::exit(exit::STOPPED as i32);
    });
}

pub async fn mock(config: pacer_mock::MockConfig) -> u8 {
    match pacer_mock::run_until_ctrl_c(config).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("pacer mock: {e}");
            exit::USAGE
        }
    }
}

pub fn status(args: StatusArgs) -> u8 {
    let state = match args.state {
        Some(s) => s,
        None => match find_state() {
            Ok(s) => s,
            Err(e) => {
                report_error(&e);
                return exit::USAGE;
            }
        },
    };
    match pacer::engine::status(&state) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                let c = &report.counts;
                println!("state:     {}", report.state.display());
                println!("total:     {}", c.total);
                println!("done:      {}", c.done);
                println!("failed:    {}", c.failed);
                println!("pending:   {}", c.pending);
                println!("in flight: {}", c.in_flight);
                println!("re-sent:   {}", c.resent);
                println!(
                    "tokens:    {} prompt, {} completion",
                    c.prompt_tokens, c.completion_tokens
                );
                println!("spent:     {}", pacer::cost::format_usd(c.spent_usd));
            }
            exit::OK
        }
        Err(e) => {
            report_error(&anyhow::Error::new(e));
            exit::USAGE
        }
    }
}

fn find_state() -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(".").context("reading the current folder")? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(".pacer.db") {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => anyhow::bail!(
            "no *.pacer.db state file in the current folder; name one: pacer status STATE"
        ),
        _ => {
            anyhow::bail!("several state files in the current folder; name one: pacer status STATE")
        }
    }
}

pub fn estimate(args: EstimateArgs) -> u8 {
    let run = || -> anyhow::Result<()> {
        let table = prices(args.prices.as_deref())?;
        let source = Source::open(&args.input, &source_options(&args.input_args))?;
        let mut first_error = None;
        let specs = source.requests()?.map_while(|r| match r {
            Ok(spec) => Some(spec),
            Err(e) => {
                first_error = Some(e);
                None
            }
        });
        let limits = EstimateLimits {
            rpm: args.rates.rpm,
            rps: args.rates.rps,
            tpm: args.rates.tpm,
        };
        let report = pacer::cost::estimate(specs, &table, &limits);
        if let Some(e) = first_error {
            return Err(e.into());
        }
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.to_text());
        }
        Ok(())
    };
    match run() {
        Ok(()) => exit::OK,
        Err(e) => {
            report_error(&e);
            exit::USAGE
        }
    }
}

pub fn export(args: ExportArgs) -> u8 {
    let run = || -> anyhow::Result<u64> {
        let mut out: Box<dyn Write> = match &args.output {
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        };
        let n = pacer::input::export_by_document(&args.results, &mut out)?;
        out.flush()?;
        Ok(n)
    };
    match run() {
        Ok(n) => {
            eprintln!("pacer: exported {n} documents");
            exit::OK
        }
        Err(e) => {
            report_error(&e);
            exit::USAGE
        }
    }
}
