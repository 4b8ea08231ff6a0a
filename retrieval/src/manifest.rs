//! The manifest: which files the index holds, stored as the payload of each tantivy
//! commit so that it changes atomically with the chunks it describes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the manifest layout inside the commit payload.
pub(crate) const MANIFEST_VERSION: u32 = 1;

/// What the index knows about one ingested file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    /// sha256 of the file's bytes, hex.
    pub hash: String,
    /// Size in bytes when ingested.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 if unknown).
    pub mtime_ns: u64,
    /// Number of chunks the file produced.
    pub chunks: usize,
}

/// Every ingested file, keyed by canonical path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub version: u32,
    pub files: BTreeMap<String, FileEntry>,
}

impl Manifest {
    /// An empty manifest of the current version.
    pub(crate) fn new() -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            files: BTreeMap::new(),
        }
    }

    /// Parses a commit payload; `None` (a fresh index) is an empty manifest.
    pub(crate) fn from_payload(payload: Option<&str>) -> Result<Self, String> {
        let Some(payload) = payload else {
            return Ok(Manifest::new());
        };
        let manifest: Manifest = serde_json::from_str(payload)
            .map_err(|e| format!("the file manifest in meta.json is unreadable: {e}"))?;
        if manifest.version != MANIFEST_VERSION {
            return Err(format!(
                "the file manifest has version {}, this build reads {MANIFEST_VERSION}",
                manifest.version
            ));
        }
        Ok(manifest)
    }

    /// The payload stored with a commit.
    pub(crate) fn to_payload(&self) -> String {
        // Serializing a map of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Keys equal to `path` or under it as a folder.
    pub(crate) fn under(&self, path: &str) -> Vec<String> {
        let folder = format!("{}/", path.trim_end_matches('/'));
        self.files
            .keys()
            .filter(|k| k.as_str() == path || k.starts_with(&folder))
            .cloned()
            .collect()
    }
}
