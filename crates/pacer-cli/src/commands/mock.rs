//! `pacer mock`: the simulated provider, until Ctrl-C.

use crate::Outcome;

pub async fn mock(config: pacer_mock::MockConfig) -> anyhow::Result<Outcome> {
    pacer_mock::run_until_ctrl_c(config).await?;
    Ok(Outcome::Done)
}
