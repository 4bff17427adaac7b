use std::path::PathBuf;

/// Options that turn prompts and documents into requests (`pacer run` flags).
///
/// OpenAI Batch files are complete requests and are never modified: these
/// options only shape prompt JSONL and folder inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceOptions {
    /// `--model`: required for prompt JSONL and folders.
    pub model: Option<String>,
    /// `--max-tokens`: the reply limit of each generated request.
    pub max_tokens: Option<u64>,
    /// `--temperature`.
    pub temperature: Option<f64>,
    /// `--template`: the prompt file for folders; fills `{text}`, `{name}`, `{path}`.
    pub template: Option<PathBuf>,
    /// `--split-tokens N`: documents longer than N tokens are split into chunks.
    pub split_tokens: Option<u64>,
    /// `--overlap N`: tokens of the previous chunk repeated at the start of the next.
    pub overlap: u64,
    /// `--provider`: the API shape generated requests take.
    pub provider: Option<ProviderHint>,
}

/// Which API generated requests are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProviderHint {
    /// `/v1/chat/completions`.
    #[default]
    OpenAi,
    /// Anthropic's `/v1/messages` (top-level `system`, `max_tokens` required).
    Anthropic,
}

/// What an input is, sniffed by [`Source::open`](super::Source::open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// OpenAI Batch JSONL: `custom_id`, `method`, `url`, `body`.
    BatchJsonl,
    /// Prompt JSONL: `id`, `prompt`, and optionally `system`, `priority`, `max_tokens`.
    PromptJsonl,
    /// A folder of text documents and a prompt template.
    Folder,
}
