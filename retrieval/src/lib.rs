//! # jielong-retrieval
//!
//! Jielong's retrieval: a tantivy index on disk with incremental ingestion and BM25
//! search, independent of the model runtime. The crate is laid out now so the
//! workspace has its final shape; the index arrives with the retrieval work and is not
//! usable yet.
