//! The one writer of trace files: JSON lines of events, each stamped with the time
//! it was written ([`TIMESTAMP_FIELD`], milliseconds since the UNIX epoch).
//!
//! `jielong run --trace`, `jielong workflow run --trace` and a workflow run's
//! `trace.jsonl` all write through a [`TraceWriter`], so every trace line looks the same:
//! the event's own JSON object (an [`AgentEvent`](super::AgentEvent) with its `type`
//! tag, or a workflow event) plus `ts_ms`.
//!
//! Every event is one `write` of the whole line (`json\n`, nothing buffered in the
//! process), so writers on several threads never interleave and a killed process
//! loses at most the line being written.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// The field every trace line carries: when it was written, in milliseconds since the
/// UNIX epoch.
pub const TIMESTAMP_FIELD: &str = "ts_ms";

/// A trace line could not be written. Messages are one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The file could not be opened or written.
    #[error("cannot {action} the trace {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `open`, `append to`, `sync`).
        action: &'static str,
        /// The trace file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The event could not be encoded as JSON.
    #[error("cannot encode an event for the trace {}: {source}", path.display())]
    Encode {
        /// The trace file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The event is not a JSON object, so it cannot carry [`TIMESTAMP_FIELD`].
    #[error("a trace event must be a JSON object, not {found} (trace {})", path.display())]
    NotAnObject {
        /// The trace file.
        path: PathBuf,
        /// What the event was (`a list`, `a number`, …).
        found: &'static str,
    },
}

/// Appends events to a JSON-lines trace, each stamped with [`TIMESTAMP_FIELD`].
/// Cheap to clone; clones share the file, and every [`TraceWriter::write`] is one whole
/// line, flushed.
#[derive(Debug, Clone)]
pub struct TraceWriter {
    path: Arc<PathBuf>,
    file: Arc<Mutex<File>>,
}

impl TraceWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, TraceError> {
        let path = path.into();
        let file = File::create(&path).map_err(|source| TraceError::Io {
            action: "create",
            path: path.clone(),
            source,
        })?;
        Ok(Self::from_file(path, file))
    }

    /// Opens `path` for appending (creating it when missing).
    pub fn append(path: impl Into<PathBuf>) -> Result<Self, TraceError> {
        let path = path.into();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|source| TraceError::Io {
                action: "open",
                path: path.clone(),
                source,
            })?;
        Ok(Self::from_file(path, file))
    }

    /// Writes to `file`, already open for writing (in append mode, for a file that
    /// others may have written), which is at `path`.
    pub fn from_file(path: impl Into<PathBuf>, file: File) -> Self {
        TraceWriter {
            path: Arc::new(path.into()),
            file: Arc::new(Mutex::new(file)),
        }
    }

    /// Appends `event` as one line of compact JSON, with [`TIMESTAMP_FIELD`] set to
    /// now ([`now_ms`]); `event` must serialize to a JSON object. The line goes out in
    /// a single write; if that fails part-way, the partial line is cut off again (best
    /// effort).
    pub fn write<T: Serialize + ?Sized>(&self, event: &T) -> Result<(), TraceError> {
        let value = serde_json::to_value(event).map_err(|source| self.encode_error(source))?;
        let Value::Object(mut map) = value else {
            return Err(TraceError::NotAnObject {
                path: self.path.to_path_buf(),
                found: kind_of(&value),
            });
        };
        map.insert(TIMESTAMP_FIELD.to_string(), Value::from(now_ms()));
        let mut line =
            serde_json::to_vec(&Value::Object(map)).map_err(|source| self.encode_error(source))?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let before = file.metadata().map(|m| m.len());
        if let Err(source) = file.write_all(&line).and_then(|()| file.flush()) {
            if let Ok(len) = before {
                let _ = file.set_len(len);
            }
            return Err(TraceError::Io {
                action: "append to",
                path: self.path.to_path_buf(),
                source,
            });
        }
        Ok(())
    }

    /// Forces the lines written so far to disk.
    pub fn sync(&self) -> Result<(), TraceError> {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.sync_data().map_err(|source| TraceError::Io {
            action: "sync",
            path: self.path.to_path_buf(),
            source,
        })
    }

    /// The trace file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn encode_error(&self, source: serde_json::Error) -> TraceError {
        TraceError::Encode {
            path: self.path.to_path_buf(),
            source,
        }
    }
}

/// Milliseconds since the UNIX epoch (0 for a clock set before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_stamped_and_whole() {
        let dir = std::env::temp_dir().join(format!("jielong-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl");
        let before = now_ms();
        let trace = TraceWriter::create(&path).unwrap();
        trace
            .write(&serde_json::json!({"type": "a", "step": 1}))
            .unwrap();
        trace
            .clone()
            .write(&serde_json::json!({"type": "b"}))
            .unwrap();
        let err = trace.write(&serde_json::json!([1, 2])).unwrap_err();
        assert!(
            matches!(
                err,
                TraceError::NotAnObject {
                    found: "a list",
                    ..
                }
            ),
            "{err}"
        );
        drop(trace);
        let again = TraceWriter::append(&path).unwrap();
        again.write(&serde_json::json!({"type": "c"})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        for line in &lines {
            let ts = line[TIMESTAMP_FIELD].as_u64().unwrap();
            assert!(ts >= before && ts <= now_ms(), "{line}");
        }
        assert_eq!(lines[0]["step"], 1);
        assert_eq!(
            lines.iter().map(|l| l["type"].clone()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
