//! `pacer export`: a split folder run's chunk results joined per document.

use std::io::Write;

use anyhow::Context;

use crate::args::ExportArgs;
use crate::Outcome;

pub fn export(args: ExportArgs) -> anyhow::Result<Outcome> {
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let n = pacer::input::export_by_document(&args.results, &mut out)?;
    out.flush().context("writing the export")?;
    eprintln!("pacer: exported {n} documents");
    Ok(Outcome::Done)
}
