use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::batch::parse_batch_line;
use super::error::{FirstSeen, InputError, Place};
use super::folder::{list_documents, Document, FolderRequests, Template};
use super::lines::JsonlLines;
use super::options::{InputKind, ProviderHint, SourceOptions};
use super::prompt::{parse_prompt_line, PromptRequests};
use super::seen::SeenIds;
use super::spec::RequestSpec;

/// A job's input: a Batch JSONL file, a prompt JSONL file, or a folder of
/// documents, opened and checked but not yet read.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    name: String,
    kind: InputKind,
    opts: SourceOptions,
    /// Prompt and folder inputs: `--model`.
    model: String,
    /// Folder inputs: the template and the documents, listed once at open so
    /// the fingerprint and the requests see the same files.
    template: Option<Template>,
    docs: Vec<Document>,
}

/// The iterator [`Source::requests`] returns.
pub type Requests<'a> = Box<dyn Iterator<Item = Result<RequestSpec, InputError>> + Send + 'a>;

impl Source {
    /// Opens the input (file or folder) and sniffs its kind: a directory is a
    /// folder input; otherwise the first non-blank line decides (`custom_id`:
    /// OpenAI Batch; `id` and `prompt`: prompt JSONL). Checks the options the
    /// kind needs (`--model` for prompts, `--model` and `--template` for folders).
    pub fn open(path: &Path, opts: &SourceOptions) -> Result<Source, InputError> {
        let meta = std::fs::metadata(path).map_err(|e| InputError::io(path, e))?;
        let mut source = Source {
            path: path.to_owned(),
            name: path.display().to_string(),
            kind: InputKind::BatchJsonl,
            opts: opts.clone(),
            model: String::new(),
            template: None,
            docs: Vec::new(),
        };
        if meta.is_dir() {
            source.kind = InputKind::Folder;
            source.model = require_model(opts, "a folder of documents")?;
            let template_path = opts.template.as_deref().ok_or(InputError::MissingOption {
                input: "a folder of documents",
                option: "--template (a prompt file containing {text})",
            })?;
            source.template = Some(Template::read(template_path)?);
            check_split(opts)?;
            source.docs = list_documents(path, Some(template_path))?;
            if source.docs.is_empty() {
                return Err(InputError::Empty {
                    path: path.to_owned(),
                });
            }
        } else {
            source.kind = sniff(path)?;
            if source.kind == InputKind::PromptJsonl {
                source.model = require_model(opts, "prompt JSONL")?;
            }
        }
        if let Some(t) = opts.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(InputError::BadOption {
                    message: format!("--temperature must be a number of 0 or more, not {t}"),
                });
            }
        }
        if opts.max_tokens == Some(0) {
            return Err(InputError::BadOption {
                message: "--max-tokens must be at least 1".to_owned(),
            });
        }
        Ok(source)
    }

    /// What the input is.
    pub fn kind(&self) -> InputKind {
        self.kind
    }

    /// The input's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of documents, for folder inputs (0 otherwise).
    pub fn document_count(&self) -> usize {
        self.docs.len()
    }

    /// A content hash of the input (blake3, hex), in one streaming pass that
    /// does not parse: it is what tells a resumed run whether its input
    /// changed, and resuming must start fast even on a million-line file.
    ///
    /// It covers the bytes and everything else that shapes the requests: for
    /// prompt JSONL the generating options (model, max tokens, temperature,
    /// provider); for folders the sorted relative paths, each file's content,
    /// the template and the splitting options too. Batch lines are complete
    /// requests, so for them the bytes alone count.
    pub fn fingerprint(&self) -> Result<String, InputError> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"pacer input v1\0");
        match self.kind {
            InputKind::BatchJsonl => {
                hasher.update(b"batch\0");
                hash_file(&mut hasher, &self.path)?;
            }
            InputKind::PromptJsonl => {
                hasher.update(b"prompt\0");
                self.hash_options(&mut hasher);
                hash_file(&mut hasher, &self.path)?;
            }
            InputKind::Folder => {
                hasher.update(b"folder\0");
                self.hash_options(&mut hasher);
                let template = self.template.as_ref().map_or("", |t| t.text.as_str());
                field(&mut hasher, template.as_bytes());
                hasher.update(&(self.docs.len() as u64).to_le_bytes());
                for doc in &self.docs {
                    // Each file hashed on its own: path and content can never
                    // run into each other.
                    let mut file = blake3::Hasher::new();
                    hash_file(&mut file, &doc.abs)?;
                    field(&mut hasher, doc.rel.as_bytes());
                    hasher.update(file.finalize().as_bytes());
                }
            }
        }
        Ok(hasher.finalize().to_hex().to_string())
    }

    /// The input's length in bytes (JSONL kinds; 0 for folders), recorded
    /// with the fingerprint so that a later run can tell an appended input
    /// from a changed one.
    pub fn len(&self) -> Result<u64, InputError> {
        match self.kind {
            InputKind::Folder => Ok(0),
            _ => Ok(std::fs::metadata(&self.path)
                .map_err(|e| InputError::io(&self.path, e))?
                .len()),
        }
    }

    /// Whether the input is empty (never: opening refuses an empty input).
    pub fn is_empty(&self) -> Result<bool, InputError> {
        Ok(self.len()? == 0 && self.kind != InputKind::Folder)
    }

    /// The fingerprint the input had when it was `len` bytes long, and how
    /// many lines those bytes hold, if the file still starts with them and
    /// they end with a whole line: that is, if lines were only appended.
    /// `None` for folders and for files that are not longer.
    pub fn fingerprint_prefix(&self, len: u64) -> Result<Option<(String, u64)>, InputError> {
        if self.kind == InputKind::Folder || self.len()? <= len || len == 0 {
            return Ok(None);
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"pacer input v1\0");
        if self.kind == InputKind::BatchJsonl {
            hasher.update(b"batch\0");
        } else {
            hasher.update(b"prompt\0");
            self.hash_options(&mut hasher);
        }
        let mut file = File::open(&self.path).map_err(|e| InputError::io(&self.path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut left, mut lines, mut last) = (len, 0u64, 0u8);
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(InputError::io(&self.path, e)),
            };
            hasher.update(&buf[..n]);
            lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
            last = buf[n - 1];
            left -= n as u64;
        }
        if last != b'\n' {
            return Ok(None); // the old last line was completed or changed
        }
        Ok(Some((hasher.finalize().to_hex().to_string(), lines)))
    }

    /// Streams the requests after byte `offset` (which follows `lines_before`
    /// lines), refusing ids among `known` (the job's requests so far) as
    /// duplicates. For JSONL inputs that grew; folders have no such part.
    pub fn requests_after(
        &self,
        offset: u64,
        lines_before: u64,
        known: impl IntoIterator<Item = String>,
    ) -> Result<Requests<'_>, InputError> {
        let prompts = (self.kind == InputKind::PromptJsonl)
            .then(|| PromptRequests::new(&self.opts, &self.model));
        let lines = JsonlLines::open_at(&self.path, offset, lines_before)?;
        Ok(Box::new(JsonlRequests {
            name: lines.name().to_owned(),
            lines,
            prompts,
            seen: SeenIds::with_known(known),
            finished: false,
            parsed: VecDeque::new(),
            helpers: None,
        }))
    }

    fn hash_options(&self, hasher: &mut blake3::Hasher) {
        let o = &self.opts;
        field(hasher, self.model.as_bytes());
        option_u64(hasher, o.max_tokens);
        option_u64(hasher, o.temperature.map(f64::to_bits));
        let provider: &[u8] = match o.provider.unwrap_or_default() {
            ProviderHint::OpenAi => b"openai",
            ProviderHint::Anthropic => b"anthropic",
        };
        field(hasher, provider);
        if self.kind == InputKind::Folder {
            option_u64(hasher, o.split_tokens);
            option_u64(hasher, o.split_tokens.map(|_| o.overlap));
        }
    }

    /// Streams every request in input order, validating each and refusing
    /// duplicate ids. The first error ends the iteration.
    pub fn requests(&self) -> Result<Requests<'_>, InputError> {
        match self.kind {
            InputKind::BatchJsonl | InputKind::PromptJsonl => {
                let prompts = (self.kind == InputKind::PromptJsonl)
                    .then(|| PromptRequests::new(&self.opts, &self.model));
                let lines = JsonlLines::open(&self.path)?;
                Ok(Box::new(JsonlRequests {
                    name: lines.name().to_owned(),
                    lines,
                    prompts,
                    seen: SeenIds::default(),
                    finished: false,
                    parsed: VecDeque::new(),
                    helpers: None,
                }))
            }
            InputKind::Folder => Ok(Box::new(FolderRequests {
                docs: &self.docs,
                root_name: self.name.clone(),
                template: self
                    .template
                    .as_ref()
                    .expect("a folder source has a template"),
                prompts: PromptRequests::new(&self.opts, &self.model),
                model: &self.model,
                split_tokens: self.opts.split_tokens,
                overlap: self.opts.overlap,
                next_doc: 0,
                ordinal: 0,
                ready: VecDeque::new(),
                seen: SeenIds::default(),
                finished: false,
            })),
        }
    }
}

fn require_model(opts: &SourceOptions, input: &'static str) -> Result<String, InputError> {
    match opts.model.as_deref() {
        Some(m) if !m.trim().is_empty() => Ok(m.to_owned()),
        _ => Err(InputError::MissingOption {
            input,
            option: "--model",
        }),
    }
}

fn check_split(opts: &SourceOptions) -> Result<(), InputError> {
    match opts.split_tokens {
        Some(0) => Err(InputError::BadOption {
            message: "--split-tokens must be at least 1".to_owned(),
        }),
        Some(n) if opts.overlap >= n => Err(InputError::BadOption {
            message: format!(
                "--overlap ({}) must be smaller than --split-tokens ({n})",
                opts.overlap
            ),
        }),
        _ => Ok(()),
    }
}

/// The kind of a JSONL file, from its first non-blank line.
fn sniff(path: &Path) -> Result<InputKind, InputError> {
    let mut lines = JsonlLines::open(path)?;
    let name = lines.name().to_owned();
    let Some((line, text)) = lines.next_line()? else {
        return Err(InputError::Empty {
            path: path.to_owned(),
        });
    };
    let place = || Place::line(&name, line);
    let obj = super::batch::parse_object(text, place)?;
    if obj.contains_key("custom_id") {
        Ok(InputKind::BatchJsonl)
    } else if obj.contains_key("id") && obj.contains_key("prompt") {
        Ok(InputKind::PromptJsonl)
    } else {
        Err(InputError::UnknownKind { place: place() })
    }
}

fn hash_file(hasher: &mut blake3::Hasher, path: &Path) -> Result<(), InputError> {
    let mut file = File::open(path).map_err(|e| InputError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(InputError::io(path, e)),
        };
        hasher.update(&buf[..n]);
    }
}

/// A length-prefixed field, so adjacent fields cannot be confused.
fn field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

fn option_u64(hasher: &mut blake3::Hasher, value: Option<u64>) {
    match value {
        Some(v) => hasher.update(&[1]).update(&v.to_le_bytes()),
        None => hasher.update(&[0]),
    };
}

/// The requests of a Batch or prompt JSONL file, one line at a time.
struct JsonlRequests {
    lines: JsonlLines,
    name: String,
    /// `Some` for prompt JSONL.
    prompts: Option<PromptRequests>,
    seen: SeenIds,
    finished: bool,
    /// Lines parsed ahead, in input order, not yet checked for duplicates.
    parsed: VecDeque<Result<RequestSpec, InputError>>,
    /// Helper threads, started on the first chunk; they end with `self`.
    helpers: Option<Vec<Helper>>,
}

type Parsed = Vec<Result<RequestSpec, InputError>>;

/// A long-lived parsing thread (the tokenizer keeps per-thread state that a
/// fresh thread would build again).
struct Helper {
    jobs: std::sync::mpsc::Sender<Vec<LineText>>,
    done: std::sync::mpsc::Receiver<Parsed>,
}

/// A line of the file: its number, where it starts, its text.
type LineText = (u64, u64, String);

fn parse_one(
    prompts: Option<&PromptRequests>,
    name: &str,
    (line, at, text): &LineText,
) -> Result<RequestSpec, InputError> {
    match prompts {
        None => parse_batch_line(text, name, *line, Some(*at)),
        Some(p) => parse_prompt_line(text, name, *line, p),
    }
}

/// Lines read and parsed together. Parsing (token counting above all) is
/// most of an import's CPU, and is spread over the cores a chunk at a time;
/// the duplicate check and the order stay sequential.
const PARSE_CHUNK: usize = 512;
/// Fewer lines than this are parsed on the calling thread alone.
const MIN_SHARED: usize = 64;
/// Most threads parsing one chunk (this one included).
const PARSE_THREADS: usize = 4;

impl JsonlRequests {
    /// Reads up to [`PARSE_CHUNK`] lines and parses them on several threads
    /// into `parsed`, in input order; a read error ends the chunk.
    fn parse_chunk(&mut self) {
        let mut texts: Vec<LineText> = Vec::with_capacity(PARSE_CHUNK);
        let mut read_error = None;
        while texts.len() < PARSE_CHUNK {
            match self.lines.next_line() {
                Ok(Some((line, text))) => {
                    let text = text.to_owned();
                    texts.push((line, self.lines.last_offset(), text));
                }
                Ok(None) => break,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
        let name = self.name.as_str();
        let prompts = self.prompts.as_ref();
        if texts.len() < MIN_SHARED && self.helpers.is_none() {
            // A small input is not worth a thread.
            self.parsed
                .extend(texts.iter().map(|t| parse_one(prompts, name, t)));
            self.parsed.extend(read_error.map(Err));
            return;
        }
        let helpers = self.helpers.get_or_insert_with(|| {
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(PARSE_THREADS);
            (1..threads)
                .filter_map(|_| {
                    let (jobs, job_rx) = std::sync::mpsc::channel::<Vec<LineText>>();
                    let (done_tx, done) = std::sync::mpsc::channel();
                    let name = self.name.clone();
                    let prompts = self.prompts.clone();
                    std::thread::Builder::new()
                        .name("pacer-parse".into())
                        .spawn(move || {
                            for texts in job_rx {
                                let parsed: Parsed = texts
                                    .iter()
                                    .map(|t| parse_one(prompts.as_ref(), &name, t))
                                    .collect();
                                if done_tx.send(parsed).is_err() {
                                    return;
                                }
                            }
                        })
                        .ok()
                        .map(|_| Helper { jobs, done })
                })
                .collect()
        });
        // The first part is parsed here, the others by the helpers; a helper
        // that is gone (it cannot fail short of a panic) leaves its part here.
        let per = texts.len().div_ceil(helpers.len() + 1).max(1);
        let mut parts: Vec<Vec<LineText>> = Vec::new();
        while texts.len() > per {
            let rest = texts.split_off(texts.len() - per);
            parts.push(rest);
        }
        parts.reverse(); // parts[i] follows `texts` in input order
        let mut sent = Vec::new();
        for (part, helper) in parts.into_iter().zip(helpers.iter()) {
            sent.push(
                helper
                    .jobs
                    .send(part)
                    .map(|()| helper)
                    .map_err(|back| back.0),
            );
        }
        let name = self.name.as_str();
        let prompts = self.prompts.as_ref();
        self.parsed
            .extend(texts.iter().map(|t| parse_one(prompts, name, t)));
        for part in sent {
            match part {
                Ok(helper) => self.parsed.extend(
                    helper
                        .done
                        .recv()
                        .expect("an input parsing thread panicked"),
                ),
                Err(kept) => self
                    .parsed
                    .extend(kept.iter().map(|t| parse_one(prompts, name, t))),
            }
        }
        self.parsed.extend(read_error.map(Err));
    }

    fn next_request(&mut self) -> Result<Option<RequestSpec>, InputError> {
        if self.parsed.is_empty() {
            self.parse_chunk();
        }
        let Some(parsed) = self.parsed.pop_front() else {
            return Ok(None);
        };
        let spec = parsed?;
        let line = spec.line;
        let field = if self.prompts.is_some() {
            "id"
        } else {
            "custom_id"
        };
        if let Some(first) = self.seen.first_seen(&spec.custom_id, line) {
            return Err(InputError::DuplicateId {
                place: Place::line(&self.name, line),
                field,
                id: spec.custom_id,
                first: if first == 0 {
                    FirstSeen::EarlierRun
                } else {
                    FirstSeen::Line(first)
                },
            });
        }
        Ok(Some(spec))
    }
}

impl Iterator for JsonlRequests {
    type Item = Result<RequestSpec, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.next_request() {
            Ok(Some(spec)) => Some(Ok(spec)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(e) => {
                self.finished = true;
                self.parsed.clear();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::fmt::Write as _;

    fn batch_line(id: &str) -> String {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"say {id}"}}]}}}}"#
        )
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn all(source: &Source) -> Result<Vec<RequestSpec>, InputError> {
        source.requests()?.collect()
    }

    fn first_error(path: &Path) -> String {
        let source = Source::open(path, &SourceOptions::default()).unwrap();
        let mut iter = source.requests().unwrap();
        let err = iter.find_map(Result::err).expect("an error").to_string();
        assert!(iter.next().is_none(), "iteration ends at the first error");
        err
    }

    fn prompt_opts() -> SourceOptions {
        SourceOptions {
            model: Some("gpt-4o-mini".into()),
            ..SourceOptions::default()
        }
    }

    #[test]
    fn an_appended_input_keeps_its_old_fingerprint_as_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"b\",\"prompt\":\"y\"}\n",
        )
        .unwrap();
        let opts = SourceOptions {
            model: Some("gpt-4o-mini".into()),
            ..SourceOptions::default()
        };
        let before = Source::open(&path, &opts).unwrap();
        let (fp, len) = (before.fingerprint().unwrap(), before.len().unwrap());
        std::fs::write(&path, "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"b\",\"prompt\":\"y\"}\n{\"id\":\"c\",\"prompt\":\"z\"}\n").unwrap();
        let after = Source::open(&path, &opts).unwrap();
        assert_ne!(after.fingerprint().unwrap(), fp);
        assert_eq!(after.fingerprint_prefix(len).unwrap(), Some((fp, 2)));
        let new: Vec<_> = after
            .requests_after(len, 2, vec!["a".to_string()])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(new.len(), 1);
        assert_eq!((new[0].custom_id.as_str(), new[0].line), ("c", 3));
    }

    #[test]
    fn a_batch_bodys_place_in_the_file_is_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.jsonl");
        let line = |i: usize| {
            format!(
                r#"{{"custom_id":"c{i}", "method":"POST","url":"/v1/chat/completions","body": {{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"é {i}"}}]}} }}"#
            )
        };
        // A byte-order mark, CRLF endings, blank lines, and enough lines for
        // the parsing threads; then lines appended later.
        let mut text = String::from("\u{feff}");
        for i in 0..700 {
            text.push_str(&line(i));
            text.push_str(if i % 2 == 0 { "\r\n" } else { "\n\n  \n" });
        }
        std::fs::write(&path, &text).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let source = Source::open(&path, &SourceOptions::default()).unwrap();
        let check = |spec: RequestSpec| {
            let at = spec.body_at.expect("a batch body has a place") as usize;
            assert_eq!(&bytes[at..at + spec.body.len()], spec.body.as_bytes());
        };
        let mut n = 0;
        for spec in source.requests().unwrap() {
            check(spec.unwrap());
            n += 1;
        }
        assert_eq!(n, 700);
        let old_len = bytes.len() as u64;
        std::fs::write(&path, format!("{text}{}\n", line(700))).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let source = Source::open(&path, &SourceOptions::default()).unwrap();
        let check = |spec: RequestSpec| {
            let at = spec.body_at.unwrap() as usize;
            assert_eq!(&bytes[at..at + spec.body.len()], spec.body.as_bytes());
        };
        let appended: Vec<_> = source
            .requests_after(old_len, 1400, Vec::new())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(appended.len(), 1);
        appended.into_iter().for_each(check);
    }

    #[test]
    fn a_bad_line_in_a_long_file_is_named_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let bad_lines = [
            (
                r#"{"custom_id":"x" "method":"POST"}"#,
                "not valid JSON: expected `,` or `}` at column 18",
            ),
            (
                r#"{"method":"POST","url":"/v1/x","body":{}}"#,
                "missing field `custom_id`",
            ),
            (
                r#"{"custom_id":"x","method":"GET","url":"/v1/x","body":{}}"#,
                "method \"GET\" is not supported (pacer sends POST requests)",
            ),
            (
                r#"{"custom_id":"x","method":"POST","url":"/v1/x","body":[]}"#,
                "`body` must be a JSON object",
            ),
            (
                r#"{"custom_id":"x","method":"POST","url":"v1/x","body":{}}"#,
                "`url` must be an endpoint path like /v1/chat/completions",
            ),
        ];
        for (bad, sentence) in bad_lines {
            let mut text = String::new();
            for i in 1..=10_000 {
                if i == 5000 {
                    text.push_str(bad);
                } else {
                    text.push_str(&batch_line(&format!("doc-{i}")));
                }
                text.push('\n');
            }
            let path = write(&dir, "requests.jsonl", &text);
            let want = format!("{}:5000: {sentence}", path.display());
            assert_eq!(first_error(&path), want);
        }
    }

    #[test]
    fn a_duplicate_names_both_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 1..=39 {
            let id = if i == 3 {
                "doc-7".to_owned()
            } else {
                format!("other-{i}")
            };
            writeln!(text, "{}", batch_line(&id)).unwrap();
        }
        writeln!(text, "{}", batch_line("doc-7")).unwrap();
        let path = write(&dir, "requests.jsonl", &text);
        assert_eq!(
            first_error(&path),
            format!(
                "{}:40: duplicate custom_id \"doc-7\" (first at line 3)",
                path.display()
            )
        );
    }

    #[test]
    fn blank_lines_count_and_a_bom_is_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "\u{FEFF}{}\r\n\n   \n{}\n\n",
            batch_line("a"),
            batch_line("b").replace("\"POST\"", "\"Post\"")
        );
        let path = write(&dir, "requests.jsonl", &text);
        let source = Source::open(&path, &SourceOptions::default()).unwrap();
        assert_eq!(source.kind(), InputKind::BatchJsonl);
        let specs = all(&source).unwrap();
        let got: Vec<_> = specs
            .iter()
            .map(|s| (s.custom_id.as_str(), s.line))
            .collect();
        assert_eq!(got, [("a", 1), ("b", 4)]);
        assert!(specs
            .iter()
            .all(|s| s.method == "POST" && s.model.as_deref() == Some("gpt-4o-mini")));
        assert!(specs[0].estimate.prompt > 0);
    }

    #[test]
    fn the_kind_is_sniffed_and_its_options_checked() {
        let dir = tempfile::tempdir().unwrap();
        let prompts = write(&dir, "p.jsonl", "\n{\"id\":\"a\",\"prompt\":\"hi\"}\n");
        let err = Source::open(&prompts, &SourceOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "prompt JSONL needs --model");
        assert_eq!(
            Source::open(&prompts, &prompt_opts()).unwrap().kind(),
            InputKind::PromptJsonl
        );

        let other = write(&dir, "o.jsonl", "{\"text\":\"hi\"}\n");
        let err = Source::open(&other, &SourceOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{}:1: cannot tell the input kind",
                other.display()
            )),
            "{err}"
        );

        let empty = write(&dir, "e.jsonl", "\n\n");
        let err = Source::open(&empty, &SourceOptions::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("{}: the input holds no requests", empty.display())
        );

        let missing = dir.path().join("nope.jsonl");
        let err = Source::open(&missing, &SourceOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}: ", missing.display())),
            "{err}"
        );
    }

    #[test]
    fn prompt_jsonl_streams_chat_and_anthropic_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "p.jsonl",
            "{\"id\":\"a\",\"prompt\":\"hi\",\"system\":\"s\",\"priority\":2}\n{\"id\":\"b\",\"prompt\":\"yo\"}\n{\"id\":\"a\",\"prompt\":\"again\"}\n",
        );
        let source = Source::open(&path, &prompt_opts()).unwrap();
        let mut iter = source.requests().unwrap();
        let a = iter.next().unwrap().unwrap();
        assert_eq!(
            (a.custom_id.as_str(), a.priority, a.url.as_str()),
            ("a", 2, "/v1/chat/completions")
        );
        let body: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(iter.next().unwrap().unwrap().custom_id, "b");
        let err = iter.next().unwrap().unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}:3: duplicate id \"a\" (first at line 1)", path.display())
        );

        let anthropic = SourceOptions {
            provider: Some(ProviderHint::Anthropic),
            model: Some("claude-sonnet-4".into()),
            ..SourceOptions::default()
        };
        let source = Source::open(&path, &anthropic).unwrap();
        let a = source.requests().unwrap().next().unwrap().unwrap();
        assert_eq!(a.url, "/v1/messages");
        let body: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(body["system"], "s");
        assert_eq!(body["max_tokens"], 1024);
    }

    fn folder_opts(dir: &tempfile::TempDir, template: &str, split: Option<u64>) -> SourceOptions {
        let template_path = dir.path().join("prompt.txt");
        std::fs::write(&template_path, template).unwrap();
        SourceOptions {
            model: Some("gpt-4o-mini".into()),
            template: Some(template_path),
            split_tokens: split,
            overlap: split.map_or(0, |_| 20),
            ..SourceOptions::default()
        }
    }

    fn long_document(paragraphs: usize) -> String {
        (0..paragraphs)
            .map(|i| format!("Paragraph {i} of the scanned report. It has a second sentence, and a third one here.\n\n"))
            .collect()
    }

    #[test]
    fn a_folder_becomes_templated_requests_with_stable_chunk_ids() {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir_all(docs.join("sub")).unwrap();
        std::fs::write(docs.join("short.txt"), "A short note.").unwrap();
        std::fs::write(docs.join("sub/long.txt"), long_document(60)).unwrap();
        std::fs::write(docs.join(".DS_Store"), [0xff, 0xfe]).unwrap();
        let opts = folder_opts(&dir, "Summarize {name} ({path}):\n{text}", Some(200));

        let source = Source::open(&docs, &opts).unwrap();
        assert_eq!(source.kind(), InputKind::Folder);
        let specs = all(&source).unwrap();
        assert_eq!(specs[0].custom_id, "short.txt");
        let body: Value = serde_json::from_str(&specs[0].body).unwrap();
        assert_eq!(
            body["messages"][0]["content"],
            "Summarize short.txt (short.txt):\nA short note."
        );
        let chunks = &specs[1..];
        assert!(chunks.len() >= 4, "{} chunks", chunks.len());
        for (k, spec) in chunks.iter().enumerate() {
            assert_eq!(spec.custom_id, format!("sub/long.txt#{}", k + 1));
            assert_eq!(spec.line, k as u64 + 2);
            let body: Value = serde_json::from_str(&spec.body).unwrap();
            let content = body["messages"][0]["content"].as_str().unwrap();
            let text = content
                .strip_prefix("Summarize long.txt (sub/long.txt):\n")
                .unwrap();
            assert!(crate::tokens::count_text("gpt-4o-mini", text) <= 200);
        }
        let again: Vec<_> = all(&Source::open(&docs, &opts).unwrap()).unwrap();
        assert_eq!(again, specs, "the same folder gives the same requests");
    }

    #[test]
    fn folder_inputs_need_their_options_and_utf8_documents() {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("a.txt"), "fine").unwrap();
        std::fs::write(docs.join("b.txt"), [b'o', b'k', 0xff]).unwrap();
        let err = Source::open(&docs, &prompt_opts()).unwrap_err().to_string();
        assert_eq!(
            err,
            "a folder of documents needs --template (a prompt file containing {text})"
        );
        let no_text = folder_opts(&dir, "no placeholder", None);
        let err = Source::open(&docs, &no_text).unwrap_err().to_string();
        assert!(
            err.ends_with("prompt.txt: the template must contain {text}, where each document goes"),
            "{err}"
        );
        let bad_overlap = SourceOptions {
            overlap: 100,
            ..folder_opts(&dir, "{text}", Some(100))
        };
        let err = Source::open(&docs, &bad_overlap).unwrap_err().to_string();
        assert_eq!(
            err,
            "--overlap (100) must be smaller than --split-tokens (100)"
        );

        let source = Source::open(&docs, &folder_opts(&dir, "{text}", None)).unwrap();
        let mut iter = source.requests().unwrap();
        assert_eq!(iter.next().unwrap().unwrap().custom_id, "a.txt");
        let err = iter.next().unwrap().unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}/b.txt: not valid UTF-8 text", docs.display())
        );
        assert!(iter.next().is_none());
    }

    #[test]
    fn the_fingerprint_is_stable_and_follows_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "requests.jsonl", &format!("{}\n", batch_line("a")));
        let open = |p: &Path, o: &SourceOptions| Source::open(p, o).unwrap().fingerprint().unwrap();
        let first = open(&path, &SourceOptions::default());
        assert_eq!(first.len(), 64);
        assert_eq!(open(&path, &SourceOptions::default()), first);
        std::fs::write(&path, format!("{}\n", batch_line("b"))).unwrap();
        assert_ne!(open(&path, &SourceOptions::default()), first);

        let prompts = write(&dir, "p.jsonl", "{\"id\":\"a\",\"prompt\":\"hi\"}\n");
        let base = open(&prompts, &prompt_opts());
        assert_eq!(open(&prompts, &prompt_opts()), base);
        let other_model = SourceOptions {
            model: Some("gpt-4.1".into()),
            ..prompt_opts()
        };
        assert_ne!(open(&prompts, &other_model), base);

        let docs = dir.path().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("a.txt"), "one").unwrap();
        let opts = folder_opts(&dir, "{text}", Some(100));
        let base = open(&docs, &opts);
        assert_eq!(open(&docs, &opts), base);
        assert_ne!(
            open(&docs, &folder_opts(&dir, "Read: {text}", Some(100))),
            base
        );
        assert_ne!(open(&docs, &folder_opts(&dir, "{text}", Some(101))), base);
        std::fs::rename(docs.join("a.txt"), docs.join("b.txt")).unwrap();
        let renamed = open(&docs, &opts);
        assert_ne!(renamed, base);
        std::fs::write(docs.join("b.txt"), "two").unwrap();
        assert_ne!(open(&docs, &opts), renamed);
    }
}
