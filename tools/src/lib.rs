//! # jielong-tools
//!
//! Jielong's built-in tools: `python` (sandboxed Program-of-Thought), `web_search`,
//! `fetch_url` and `rag_search` (passages from a local index, numbered for citation).

pub mod builtin;
pub mod python;
pub mod rag;
pub mod web;
