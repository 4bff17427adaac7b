use std::path::PathBuf;

/// What can go wrong with prices: reading or parsing a `--prices` file.
///
/// Every variant names the file, so the CLI can print it as one sentence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CostError {
    /// The prices file could not be read.
    #[error("cannot read the prices file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The prices file is not valid TOML of the expected shape.
    #[error("{}{}: {message}", path.display(), location(*line, *column))]
    Parse {
        path: PathBuf,
        /// 1-based line of the fault, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the fault, when the parser knows it.
        column: Option<usize>,
        message: String,
    },
    /// A price that cannot be right (negative, not a number).
    #[error("{}: model \"{model}\": {reason}", path.display())]
    InvalidPrice {
        path: PathBuf,
        model: String,
        reason: String,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" line {l}, column {c}"),
        (Some(l), None) => format!(" line {l}"),
        _ => String::new(),
    }
}
