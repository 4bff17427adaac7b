use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::checks;

/// pacer: make large jobs against LLM APIs finish — paced under every limit,
/// retried the right way, resumable after any crash, with the bill known.
#[derive(Debug, Parser)]
#[command(name = "pacer", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on stderr as text, or as one JSON object a line (tracing's fields). Which lines: $PACER_LOG, else $RUST_LOG, else warnings.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// Parses the command line. `pacer mock`'s flags live in pacer-mock; they
    /// get the same leading-hyphen treatment here, so `--rpm -5` reaches its
    /// value parser instead of reading as an unknown flag.
    pub fn parse_checked() -> Result<Cli, clap::Error> {
        let mut matches = Cli::command()
            .mut_subcommand("mock", |mock| {
                mock.mut_args(|a| {
                    if a.get_action().takes_values() {
                        a.allow_negative_numbers(true)
                    } else {
                        a
                    }
                })
            })
            .try_get_matches()?;
        Cli::from_arg_matches_mut(&mut matches)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send every request of a batch file, paced, retried and resumable.
    Run(Box<RunArgs>),
    /// Run the simulated OpenAI/Anthropic-compatible provider.
    Mock(pacer_mock::MockConfig),
    /// Print a run's progress from its state file.
    Status(StatusArgs),
    /// Count requests, tokens, cost and minimum duration without sending anything.
    Estimate(EstimateArgs),
    /// Rebuild documents from the results of a split folder run.
    Export(ExportArgs),
    /// Check the API key, whether a model exists, and the limits the provider reports.
    Verify(VerifyArgs),
    /// A local OpenAI- and Anthropic-compatible gateway that queues instead of answering 429.
    Serve(ServeArgs),
    /// Cancel a job's batches running at the provider (sent with `run --via batch`).
    Cancel(CancelArgs),
    /// Write a run's report: one self-contained HTML page of charts and tables.
    Report(ReportArgs),
    /// Join a shared job on Redis from another machine and work on it until it is done.
    Worker(Box<WorkerArgs>),
}

/// How `pacer run` sends requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ViaArg {
    /// One HTTP request each, paced: results as they come.
    Live,
    /// Through OpenAI's Batch API and Anthropic's Message Batches: half price, results within 24 h.
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    Bar,
    Plain,
    None,
}

/// Where requests go and which key they carry.
#[derive(Debug, Clone, Args)]
pub struct EndpointArgs {
    /// API base URL (default: $OPENAI_BASE_URL, then https://api.openai.com/v1).
    #[arg(long, value_parser = checks::base_url)]
    pub base_url: Option<String>,
    /// The environment variable holding the API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
}

/// Rate limits (hard ceilings; learned from the provider when absent).
#[derive(Debug, Clone, Args)]
pub struct RateArgs {
    /// Requests per minute.
    #[arg(long, value_parser = checks::positive_number, allow_negative_numbers = true)]
    pub rpm: Option<f64>,
    /// Requests per second.
    #[arg(long, value_parser = checks::positive_number, allow_negative_numbers = true)]
    pub rps: Option<f64>,
    /// Tokens per minute (prompt + max_tokens × n, as providers charge).
    #[arg(long, value_parser = checks::positive_number, allow_negative_numbers = true)]
    pub tpm: Option<f64>,
}

/// Options that shape requests from prompts and documents.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Model for prompt JSONL and folder inputs.
    #[arg(long)]
    pub model: Option<String>,
    /// `max_tokens` for prompt JSONL and folder inputs.
    #[arg(long, value_parser = checks::positive_int::<u64>, allow_negative_numbers = true)]
    pub max_tokens: Option<u64>,
    /// `temperature` for prompt JSONL and folder inputs.
    #[arg(long, value_parser = checks::non_negative_number, allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Prompt template for a folder of documents: fills {text}, {name}, {path}.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Split documents longer than this many tokens into chunks.
    #[arg(long, value_parser = checks::positive_int::<u64>, allow_negative_numbers = true)]
    pub split_tokens: Option<u64>,
    /// Tokens repeated from the end of one chunk at the start of the next.
    #[arg(long, default_value_t = 0, value_parser = checks::count::<u64>, allow_negative_numbers = true)]
    pub overlap: u64,
    /// Build Anthropic Messages requests from prompts and documents.
    #[arg(long, value_enum)]
    pub provider: Option<ProviderArg>,
}

/// How requests are sent, paced and retried: `run`'s and `worker`'s.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    #[command(flatten)]
    pub rates: RateArgs,
    /// Largest burst of requests under --rpm (default: one minute's worth).
    #[arg(long, value_parser = checks::positive_number, allow_negative_numbers = true)]
    pub burst: Option<f64>,
    /// Most requests in flight at once (default: sized from the pace and the latency, 50 while no rate is known).
    #[arg(long, value_parser = checks::positive_int::<usize>, allow_negative_numbers = true)]
    pub concurrency: Option<usize>,
    /// Retries per request before its last answer becomes its result.
    #[arg(long, default_value_t = 10, value_parser = checks::count::<u32>, allow_negative_numbers = true)]
    pub max_retries: u32,
    /// While the provider is down (a run of 5xx, 529, timeouts), a request is
    /// failed for good only after failing this long.
    #[arg(long, default_value = "30m", value_parser = checks::duration, allow_hyphen_values = true)]
    pub max_retry_time: Duration,
    /// Total time for one attempt.
    #[arg(long, default_value = "10m", value_parser = checks::duration, allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Longest silence between chunks of a streamed answer.
    #[arg(long, default_value = "60s", value_parser = checks::duration, allow_hyphen_values = true)]
    pub idle_timeout: Duration,
    /// Largest answer read, in bytes; a larger one fails its request for good.
    #[arg(long, default_value_t = pacer::transport::DEFAULT_MAX_RESPONSE_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_response_bytes: u64,
    /// Stream answers (`stream: true`) and reassemble them.
    #[arg(long)]
    pub stream: bool,
    /// Stop (resumably) before spending more than this many USD.
    #[arg(long, value_parser = checks::positive_number, allow_negative_numbers = true)]
    pub max_cost: Option<f64>,
    /// A TOML price table overriding the built-in one.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Input: OpenAI Batch JSONL, prompt JSONL, or a folder of documents.
    pub input: PathBuf,
    /// Output JSONL (default: the input's name with .results.jsonl).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub send: SendArgs,
    /// State file (default: beside the output, with .pacer.db).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Discard the state and the output and start over.
    #[arg(long)]
    pub restart: bool,
    /// Serve a live dashboard on this address: the run's charts at `/`, Prometheus metrics at `/metrics` (e.g. 127.0.0.1:9100; port 0: a free port). Loopback only unless --dashboard-public.
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<std::net::SocketAddr>,
    /// Let --dashboard listen off loopback: whoever reaches it sees the run's errors and costs.
    #[arg(long, requires = "dashboard")]
    pub dashboard_public: bool,
    /// Keep the dashboard up this long after the run ends, for a last look or scrape (a signal ends the wait).
    #[arg(long, value_parser = checks::duration, allow_hyphen_values = true, requires = "dashboard")]
    pub dashboard_linger: Option<Duration>,
    /// Skip the key check (`GET /v1/models`) before the first request.
    #[arg(long)]
    pub no_verify: bool,
    /// Run against the built-in simulated provider (the default when no API key is set and no base URL is given).
    #[arg(long)]
    pub simulate: bool,
    /// Send live (one request each, paced) or through the providers' batch APIs (half price, results within 24 h).
    #[arg(long, value_enum, default_value_t = ViaArg::Live)]
    pub via: ViaArg,
    /// With --via batch: the first wait between polls of a batch; it grows ×1.5 to 5m while nothing changes (default 30s; 1s against the built-in simulator).
    #[arg(long, value_parser = checks::duration, allow_hyphen_values = true)]
    pub poll_interval: Option<Duration>,
    /// With --via batch: at most N requests a batch (below the provider's own limit).
    #[arg(long, hide = true, value_parser = checks::positive_int::<usize>, allow_negative_numbers = true)]
    pub batch_max_lines: Option<usize>,
    /// Share the rate limits with every pacer on this Redis that uses the same upstream and key (redis://host:port).
    #[arg(long, value_name = "URL", value_parser = checks::redis_url)]
    pub redis: Option<String>,
    /// With --redis: share the work too, as the job NAME (default: named after the input). Other machines join with `pacer worker`; a run of the same input joins.
    #[arg(long, value_name = "NAME", requires = "redis", num_args = 0..=1, default_missing_value = "")]
    pub job: Option<String>,
    /// With --job: how long a request taken by a worker that stops (a crash, a lost machine) stays its own before others take it over.
    #[arg(long, default_value = "60s", value_parser = checks::duration, allow_hyphen_values = true)]
    pub lease: Duration,
    #[command(flatten)]
    pub input_args: InputArgs,
}

/// `pacer worker`: one more machine on a shared job.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The Redis holding the job (redis://host:port).
    #[arg(long, value_name = "URL", value_parser = checks::redis_url, required = true)]
    pub redis: String,
    /// The job's name (`pacer run INPUT --redis URL --job NAME` printed it).
    #[arg(long, value_name = "NAME", required = true)]
    pub job: String,
    /// How long a request taken by a worker that stops stays its own before others take it over.
    #[arg(long, default_value = "60s", value_parser = checks::duration, allow_hyphen_values = true)]
    pub lease: Duration,
    #[command(flatten)]
    pub send: SendArgs,
    /// The job's requests go to Anthropic ($ANTHROPIC_API_KEY, https://api.anthropic.com/v1).
    #[arg(long, value_enum)]
    pub provider: Option<ProviderArg>,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The state file (default: the only *.pacer.db in the current folder).
    #[arg(conflicts_with = "redis")]
    pub state: Option<PathBuf>,
    /// A shared job's progress instead: the Redis holding it (with --job).
    #[arg(long, value_name = "URL", value_parser = checks::redis_url, requires = "job")]
    pub redis: Option<String>,
    /// The shared job's name (with --redis).
    #[arg(long, value_name = "NAME", requires = "redis")]
    pub job: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The state file, or the run's input or output (its state is found
    /// beside it); default: the only *.pacer.db in the current folder.
    pub state: Option<PathBuf>,
    /// Where to write the page (default: the state's name with .report.html).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// The state file (default: the only *.pacer.db in the current folder).
    pub state: Option<PathBuf>,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// The batches went to Anthropic ($ANTHROPIC_API_KEY, https://api.anthropic.com/v1).
    #[arg(long, value_enum)]
    pub provider: Option<ProviderArg>,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EstimateArgs {
    /// Input: OpenAI Batch JSONL, prompt JSONL, or a folder of documents.
    pub input: PathBuf,
    /// A TOML price table overriding the built-in one.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    #[command(flatten)]
    pub rates: RateArgs,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub input_args: InputArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// A results JSONL written by `pacer run`.
    #[arg(required_unless_present = "redis", conflicts_with = "redis")]
    pub results: Option<PathBuf>,
    /// Join each document's chunk results in order (one line per document).
    #[arg(long, required_unless_present = "redis", conflicts_with = "redis")]
    pub by_document: bool,
    /// Instead: every result a shared job has so far, in input order (with --job).
    #[arg(long, value_name = "URL", value_parser = checks::redis_url, requires = "job")]
    pub redis: Option<String>,
    /// The shared job's name (with --redis).
    #[arg(long, value_name = "NAME", requires = "redis")]
    pub job: Option<String>,
    /// Where to write (default: stdout).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// A model that should exist.
    #[arg(long)]
    pub model: Option<String>,
    /// Anthropic's API (x-api-key, $ANTHROPIC_API_KEY, https://api.anthropic.com/v1).
    #[arg(long, value_enum)]
    pub provider: Option<ProviderArg>,
    /// Print as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: a free port). Off loopback, --client-keys is required.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: std::net::SocketAddr,
    /// The OpenAI-compatible upstream (default: $OPENAI_BASE_URL, then https://api.openai.com/v1); key from $OPENAI_API_KEY.
    #[arg(long, value_parser = checks::base_url)]
    pub upstream: Option<String>,
    /// The Anthropic upstream for /v1/messages (default: $ANTHROPIC_BASE_URL, then https://api.anthropic.com/v1); key from $ANTHROPIC_API_KEY.
    #[arg(long, value_parser = checks::base_url)]
    pub anthropic_upstream: Option<String>,
    #[command(flatten)]
    pub rates: RateArgs,
    /// Share the rate limits with every pacer on this Redis that uses the same upstream and key (redis://host:port).
    #[arg(long, value_name = "URL", value_parser = checks::redis_url)]
    pub redis: Option<String>,
    /// Most requests in flight upstream (default: sized from the pace and the latency).
    #[arg(long, value_parser = checks::positive_int::<usize>, allow_negative_numbers = true)]
    pub concurrency: Option<usize>,
    /// Client keys, lines `name key [budget_usd]`: clients must present one (Bearer or x-api-key).
    #[arg(long, value_name = "FILE")]
    pub client_keys: Option<PathBuf>,
    /// Longest a request may wait for its turn, retries included (a client may set its own with x-pacer-max-wait: SECONDS).
    #[arg(long, default_value = "10m", value_parser = checks::duration, allow_hyphen_values = true)]
    pub max_wait: Duration,
    /// Most requests waiting; one more gets 429 with the expected wait (each waiting client costs the gateway ~40 KB).
    #[arg(long, default_value_t = 10_000, value_parser = checks::positive_int::<usize>, allow_negative_numbers = true)]
    pub max_queue: usize,
    /// The gateway's budget in USD: past it, requests get 429 insufficient_quota.
    #[arg(long, value_parser = checks::positive_number, allow_negative_numbers = true)]
    pub max_cost: Option<f64>,
    /// A TOML price table overriding the built-in one.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// A file keeping the money spent (in all and by client) across restarts.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Longest wait for an upstream answer's head, per attempt.
    #[arg(long, default_value = "10m", value_parser = checks::duration, allow_hyphen_values = true)]
    pub timeout: Duration,
    /// Retries per request for failures that are the request's own (429s and outages count only against --max-wait).
    #[arg(long, default_value_t = 10, value_parser = checks::count::<u32>, allow_negative_numbers = true)]
    pub max_retries: u32,
    /// Largest request body accepted, in bytes (larger: 413).
    #[arg(long, default_value_t = pacer::gateway::DEFAULT_MAX_BODY_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    pub max_body_bytes: u64,
    /// Largest upstream answer passed on, in bytes.
    #[arg(long, default_value_t = pacer::transport::DEFAULT_MAX_RESPONSE_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_response_bytes: u64,
}
