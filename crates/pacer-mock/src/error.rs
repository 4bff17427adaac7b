//! The simulator's own failures (not the faults it simulates).

use std::net::SocketAddr;

/// Why the simulated provider could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The server stopped on an I/O error.
    #[error("the simulated provider stopped: {0}")]
    Serve(#[from] std::io::Error),
    /// The server task panicked or was cancelled.
    #[error("the simulated provider's task ended abnormally: {0}")]
    Task(String),
}
