//! # jielong-tools
//!
//! Jielong's built-in tools: `python` (sandboxed Program-of-Thought), `web_search`
//! and `fetch_url`.

pub mod builtin;
pub mod python;
pub mod web;
