use crate::endpoint::Endpoint;
use crate::tokens::TokenEstimate;

/// One request of a job, validated and ready to be stored and sent.
///
/// Every input kind (OpenAI Batch JSONL, prompt JSONL, a folder of documents)
/// turns into these; the store keeps them and the engine sends them.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// The caller's key for this request; unique within a job.
    pub custom_id: String,
    /// HTTP method; `POST` for every endpoint pacer supports today.
    pub method: String,
    /// Endpoint path as in OpenAI's batch files, e.g. `/v1/chat/completions`.
    pub url: String,
    /// The JSON request body, as text, sent as is.
    pub body: String,
    /// Where `body`'s bytes start in the input file, when they are the
    /// file's own (Batch JSONL): the store then keeps where the body is
    /// rather than a copy of it.
    pub body_at: Option<u64>,
    /// Higher goes first; input order within a priority.
    pub priority: i64,
    /// The token charge a provider will count at admission.
    pub estimate: TokenEstimate,
    /// The body's `model`, when it names one (for prices and token counting).
    pub model: Option<String>,
    /// 1-based line number (or chunk ordinal for folders) in the input, for messages.
    pub line: u64,
}

impl RequestSpec {
    /// The kind of endpoint `url` names (a pure function of the path, so
    /// the store keeps only the path).
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_path(&self.url)
    }
}
