//! # jielong-tools
//!
//! Jielong's built-in tools: `python` (sandboxed Program-of-Thought), `web_search`
//! and `fetch_url`. The crate is laid out now so the workspace has its final shape;
//! the tools arrive with the tool-calling and built-in-tools work and are not usable
//! yet.
