//! # jielong-util
//!
//! The small helpers several crates need, one copy of each:
//! - [`fs`]: whole-or-nothing writes, directory syncs, what a reader skips;
//! - [`hash`]: SHA-256 digests as lower-case hex (content hashes, cache keys);
//! - [`duration`]: durations in settings (`30`, `"500ms"`, `"2m"`): serde and schema;
//! - [`date`]: UTC timestamps as RFC 3339 and HTTP dates, through the `time` and
//!   `httpdate` crates (no calendar arithmetic of our own).

#![warn(missing_docs)]

pub mod date;
pub mod duration;
pub mod fs;
pub mod hash;

pub use fs::{is_temporary, parent_dir, sync_dir, write_atomic, IoFailure};
pub use hash::{hex, sha256_hex};
