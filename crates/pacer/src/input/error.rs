use std::fmt;
use std::path::PathBuf;

/// Where in the input a problem is: a file, and a line when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file as the user named it (or a document inside a folder).
    pub file: String,
    /// 1-based line number, for JSONL inputs.
    pub line: Option<u64>,
}

impl Place {
    pub(crate) fn line(file: &str, line: u64) -> Place {
        Place {
            file: file.to_owned(),
            line: Some(line),
        }
    }

    pub(crate) fn file(file: impl Into<String>) -> Place {
        Place {
            file: file.into(),
            line: None,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// Where the first of two equal ids was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSeen {
    /// A line of a JSONL input.
    Line(u64),
    /// The n-th request of a folder input.
    Request(u64),
    /// A request already in the job's state (the input grew since).
    EarlierRun,
}

impl fmt::Display for FirstSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FirstSeen::Line(n) => write!(f, "line {n}"),
            FirstSeen::Request(n) => write!(f, "request {n}"),
            FirstSeen::EarlierRun => write!(f, "in the part of the input already run"),
        }
    }
}

/// Why an input cannot be run. Each message is one plain sentence that names
/// the place (file and line), so a user can fix the input without guessing.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file or folder could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line is not JSON at all.
    #[error("{place}: not valid JSON: {detail}")]
    NotJson { place: Place, detail: String },
    /// A line is JSON but not an object.
    #[error("{place}: a line must be a JSON object")]
    NotObject { place: Place },
    /// A line or document is not UTF-8 text.
    #[error("{place}: not valid UTF-8 text")]
    NotUtf8 { place: Place },
    /// A required field is absent (or null).
    #[error("{place}: missing field `{field}`")]
    MissingField { place: Place, field: &'static str },
    /// A field has the wrong type or shape; `expected` completes "`field` must be ...".
    #[error("{place}: `{field}` must be {expected}")]
    InvalidField {
        place: Place,
        field: &'static str,
        expected: &'static str,
    },
    /// A Batch line asks for a method other than POST.
    #[error("{place}: method {method:?} is not supported (pacer sends POST requests)")]
    UnsupportedMethod { place: Place, method: String },
    /// Two requests share an id; results are keyed by it, so it must be unique.
    #[error("{place}: duplicate {field} {id:?} (first at {first})")]
    DuplicateId {
        place: Place,
        field: &'static str,
        id: String,
        first: FirstSeen,
    },
    /// The first line is neither a Batch line nor a prompt line.
    #[error(
        "{place}: cannot tell the input kind: an OpenAI Batch line needs `custom_id`, a prompt line needs `id` and `prompt`"
    )]
    UnknownKind { place: Place },
    /// The file has no non-blank line, or the folder no document.
    #[error("{}: the input holds no requests", path.display())]
    Empty { path: PathBuf },
    /// An option this kind of input needs was not given.
    #[error("{input} needs {option}")]
    MissingOption {
        input: &'static str,
        option: &'static str,
    },
    /// An option's value cannot work.
    #[error("{message}")]
    BadOption { message: String },
    /// The template file cannot be used.
    #[error("{}: {problem}", path.display())]
    Template {
        path: PathBuf,
        problem: &'static str,
    },
}

impl InputError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> InputError {
        InputError::Io {
            path: path.into(),
            source,
        }
    }

    /// A serde_json parse error, located by column only (the line is the place's).
    pub(crate) fn json(place: Place, err: &serde_json::Error) -> InputError {
        let text = err.to_string();
        // serde_json appends " at line L column C"; the line is always 1 here.
        let message = match text.rfind(" at line ") {
            Some(at) => &text[..at],
            None => &text[..],
        };
        let detail = if err.column() > 0 {
            format!("{message} at column {}", err.column())
        } else {
            message.to_owned()
        };
        InputError::NotJson { place, detail }
    }
}
