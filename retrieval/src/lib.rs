//! # jielong-retrieval
//!
//! Jielong's retrieval: a [tantivy] index on disk with incremental ingestion and BM25
//! search over chunks of local documents, independent of the model runtime.
//!
//! - **Formats**: plain text (`.txt`, `.text`, `.log`, `.rst`), Markdown (`.md`,
//!   `.markdown`, split at headings first), HTML (`.html`, `.htm`, visible text only),
//!   PDF (the text layer; the title from its metadata) and JSON Lines (`.jsonl`, one
//!   document per record). Binary, unsupported and unreadable files are skipped with a
//!   warning.
//! - **Chunks** are overlapping character windows snapped to line or word boundaries
//!   (see [`chunk`]); each keeps its source, title, line and byte span and the file's
//!   content hash.
//! - **Incremental**: the list of ingested files (hash, size, mtime) is the payload of
//!   each tantivy commit, so it changes atomically with the chunks. Unchanged files are
//!   skipped, changed ones replaced, vanished ones removed, and an ingest killed midway
//!   resumes from its last commit without duplicates.
//! - **One writer**: ingest and remove hold the directory's lock; a second writer gets
//!   [`RetrievalError::Locked`]. Searching is lock-free and `Index` is `Send + Sync`.
//! - **Search**: BM25 over text and (boosted) title with an English analyzer (Lucene's
//!   stop words, Snowball stemming); any user text is a valid query; hits carry a
//!   snippet with the matched words marked `**like this**`.
//!
//! An index directory holds tantivy's files plus [`MARKER_FILE`] (format name and
//! version), which is how [`Index::open`] tells a Jielong index from a foreign folder.
//!
//! ```
//! use jielong_retrieval::{Index, IngestOptions, NoProgress, SearchRequest};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let work = tempfile::tempdir()?;
//! let notes = work.path().join("notes.md");
//! std::fs::write(&notes, "# Garden\n\n## Tomatoes\n\nWater tomatoes every morning.\n")?;
//!
//! let index = Index::open_or_create(&work.path().join("index"))?;
//! let report = index.ingest(&[notes], &IngestOptions::default(), &NoProgress)?;
//! assert_eq!(report.added, 1);
//!
//! let hits = index.search(&SearchRequest::new("watering tomato", 5))?;
//! assert_eq!(hits[0].title, "Garden › Tomatoes");
//! assert_eq!(hits[0].line_start, 3);
//! assert!(hits[0].snippet.contains("**tomatoes**"));
//! # Ok(())
//! # }
//! ```

pub mod chunk;
mod error;
mod extract;
mod index;
mod manifest;
mod types;

pub use error::RetrievalError;
pub use index::{Index, DEFAULT_COMMIT_BYTES, DEFAULT_TITLE_BOOST, FORMAT_VERSION, MARKER_FILE};
pub use types::{
    Hit, IndexStats, IngestOptions, IngestProgress, IngestReport, NoProgress, SearchRequest,
};
