//! The plain data types of the public API: options, progress, reports, requests, hits.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// How files are turned into chunks.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The field of a JSON Lines record holding its text (default `"text"`).
    pub jsonl_text_field: String,
    /// The field of a JSON Lines record holding its title (default `"title"`); records
    /// without it are titled by the file name.
    pub jsonl_title_field: String,
    /// Target chunk length in characters (default 1000).
    pub chunk_chars: usize,
    /// Characters shared by consecutive chunks (default 200; must be below
    /// `chunk_chars`, and at most half a chunk is used).
    pub overlap_chars: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            jsonl_text_field: "text".to_string(),
            jsonl_title_field: "title".to_string(),
            chunk_chars: 1000,
            overlap_chars: 200,
        }
    }
}

/// Receives ingest progress. Implementations must be cheap: they run on the ingest path.
pub trait IngestProgress: Send + Sync {
    /// The ingest found `files` files totalling `bytes` bytes to look at.
    fn start(&self, files: usize, bytes: u64);
    /// One file was handled (ingested, unchanged or skipped); `bytes` is its size.
    fn file_done(&self, path: &Path, bytes: u64);
    /// A file was skipped or partly read; the ingest goes on.
    fn warn(&self, path: &Path, message: &str);
}

/// An [`IngestProgress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl IngestProgress for NoProgress {
    fn start(&self, _files: usize, _bytes: u64) {}
    fn file_done(&self, _path: &Path, _bytes: u64) {}
    fn warn(&self, _path: &Path, _message: &str) {}
}

/// What one ingest did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Files indexed for the first time.
    pub added: usize,
    /// Files whose content changed and were re-indexed.
    pub updated: usize,
    /// Files skipped because the index already holds their current content.
    pub unchanged: usize,
    /// Files removed from the index: gone from an ingested folder, given but missing,
    /// or no longer readable as a supported format.
    pub removed: usize,
    /// Files not indexed, with the reason (binary, unsupported, unreadable, …).
    pub skipped: Vec<(PathBuf, String)>,
    /// Chunks written for added and updated files.
    pub chunks: usize,
    /// Bytes of the added and updated files.
    pub bytes: u64,
}

/// A search: free text, a result count and an optional source path prefix.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The user's query. Any text is accepted: `"quoted phrases"` are phrases, every
    /// other punctuation (colons, operators, brackets) is treated as a word separator.
    pub query: String,
    /// The maximum number of hits (chunks) returned.
    pub limit: usize,
    /// Only chunks whose source path starts with this. A prefix naming an existing
    /// path is canonicalized first, and a directory matches only the files under it.
    pub path_prefix: Option<String>,
}

impl SearchRequest {
    /// A request for the `limit` best chunks for `query`, over the whole index.
    pub fn new(query: impl Into<String>, limit: usize) -> Self {
        SearchRequest {
            query: query.into(),
            limit,
            path_prefix: None,
        }
    }

    /// The same request restricted to sources starting with `prefix`.
    pub fn with_path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }
}

/// One matching chunk.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// The canonical path of the file, followed by `#id` for a JSON Lines record with an
    /// `_id` or `id` field.
    pub source: String,
    /// The document title, then the Markdown section path (`"Guide › Install"`).
    pub title: String,
    /// First line of the chunk (1-based; the record's line for JSON Lines; a line of the
    /// extracted text for HTML and PDF).
    pub line_start: u64,
    /// Last line of the chunk.
    pub line_end: u64,
    /// Byte offset of the chunk in the file (in the extracted text for HTML and PDF; the
    /// record's line for JSON Lines).
    pub byte_start: u64,
    /// Byte offset just past the chunk.
    pub byte_end: u64,
    /// BM25 score (higher is better).
    pub score: f32,
    /// The whole chunk text.
    pub text: String,
    /// A short passage of the chunk with matched words marked `**like this**`.
    pub snippet: String,
}

/// Size of an index.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStats {
    /// The index directory.
    pub dir: PathBuf,
    /// Files ingested.
    pub files: usize,
    /// Chunks searchable.
    pub chunks: usize,
    /// Total size of the ingested files in bytes.
    pub bytes: u64,
}
