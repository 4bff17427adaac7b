//! `pacer export`: a split folder run's chunk results joined per document.

use std::io::Write;

use anyhow::Context;

use crate::args::ExportArgs;
use crate::Outcome;

pub async fn export(args: ExportArgs) -> anyhow::Result<Outcome> {
    if let (Some(redis), Some(job)) = (&args.redis, &args.job) {
        return export_job(redis, job, args.output.as_deref()).await;
    }
    let Some(results) = &args.results else {
        return Err(super::UsageError(
            "pacer export needs a results file, or --redis and --job".into(),
        )
        .into());
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let n = pacer::input::export_by_document(results, &mut out)?;
    out.flush().context("writing the export")?;
    eprintln!("pacer: exported {n} documents");
    Ok(Outcome::Done)
}

/// `pacer export --redis URL --job NAME [-o OUT]`: a shared job's results so
/// far, in input order (written to a temporary file and renamed: an
/// interrupted export leaves no half file).
async fn export_job(
    redis: &str,
    job: &str,
    output: Option<&std::path::Path>,
) -> anyhow::Result<Outcome> {
    let name = pacer::jobs::JobName::parse(job)?;
    let n = match output {
        Some(p) => {
            let tmp = p.with_extension("export-tmp");
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let n = pacer::engine::job_export(redis, name, &mut w).await?;
            w.flush().context("writing the export")?;
            w.get_ref().sync_all().context("writing the export")?;
            std::fs::rename(&tmp, p).with_context(|| format!("writing {}", p.display()))?;
            n
        }
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout());
            let n = pacer::engine::job_export(redis, name, &mut w).await?;
            w.flush().context("writing the export")?;
            n
        }
    };
    eprintln!("pacer: exported {n} results");
    Ok(Outcome::Done)
}
