//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong opening, ingesting into or searching an index.
///
/// Messages are one line and name what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    /// Another writer (another process, or another [`crate::Index`] in this one) holds
    /// the index's writer lock.
    #[error("index at {} is locked by another process ({})", dir.display(), Holder(*holder))]
    Locked {
        /// The index directory.
        dir: PathBuf,
        /// The process id recorded by the lock holder, when it could be read.
        holder: Option<u32>,
    },
    /// The directory exists but is not a Jielong index (or not one this version reads).
    #[error("{} is not a Jielong index: {reason}", dir.display())]
    NotAnIndex {
        /// The directory given as index.
        dir: PathBuf,
        /// Why it was not recognised.
        reason: String,
    },
    /// The directory is a Jielong index but its files cannot be read back.
    #[error("index at {} is corrupt: {detail}", dir.display())]
    Corrupt {
        /// The index directory.
        dir: PathBuf,
        /// What was found broken.
        detail: String,
    },
    /// A file or directory could not be read or written.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The search request is unusable (for example a zero limit).
    #[error("invalid search request {query:?}: {detail}")]
    Query {
        /// The query as given.
        query: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The ingest options are unusable.
    #[error("invalid ingest options: {0}")]
    Options(String),
    /// tantivy failed while reading or writing the index.
    #[error("index error at {}: {source}", dir.display())]
    Tantivy {
        /// The index directory.
        dir: PathBuf,
        /// The underlying tantivy error.
        #[source]
        source: tantivy::TantivyError,
    },
}

/// Displays a lock holder's pid, or says it is unknown.
struct Holder(Option<u32>);

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid unknown"),
        }
    }
}
