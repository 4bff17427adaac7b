/// Why shared limits could not be set up. Once running, Redis failing is
/// not an error: the process paces at its local share until it is back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedError {
    /// The `--redis` URL is not one pacer can use.
    #[error("--redis {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Redis did not answer at start-up (`url` is shown without a password).
    #[error("could not reach Redis at {url} (--redis): {cause}")]
    Unreachable { url: String, cause: String },
    /// Redis answered something the scripts never return.
    #[error("Redis at {url} answered unexpectedly: {what}")]
    BadReply { url: String, what: String },
}
