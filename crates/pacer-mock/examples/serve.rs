//! Run the simulated provider with `pacer mock`'s flags, without the CLI:
//! `cargo run --release -p pacer-mock --example serve -- --listen 127.0.0.1:0 --rpm 60`.

use clap::Parser;
use pacer_mock::MockConfig;

#[derive(Parser)]
#[command(
    name = "serve",
    about = "A simulated OpenAI- and Anthropic-compatible provider"
)]
struct Args {
    #[command(flatten)]
    mock: MockConfig,
}

#[tokio::main]
async fn main() -> Result<(), pacer_mock::MockError> {
    pacer_mock::run_until_ctrl_c(Args::parse().mock).await
}
