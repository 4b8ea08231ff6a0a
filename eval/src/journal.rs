//! The resumable JSON-lines cache both evaluations keep (an eval run's rows, a needle
//! grid's cells): a header line naming what wrote the file and its configuration, then
//! one record per line, each synced before the next starts.
//!
//! Opening reads the records back (a run killed mid-way resumes from them), refuses a
//! file written by another system or configuration ([`EvalError::CacheMismatch`]) and
//! one that is not such a cache (an error naming the line), and cuts off a corrupt last
//! line (a write cut short) with a warning, so appending continues on a clean line.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{io_err, EvalError};
use jielong_util::{parent_dir, sync_dir};

/// What kind of journal a file is: the header's key and the words errors use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kind {
    /// The header's key naming the writer (`system`, `needle_grid`).
    pub(crate) key: &'static str,
    /// The file, in errors ("an eval cache").
    pub(crate) file: &'static str,
    /// One record, in errors ("row").
    pub(crate) record: &'static str,
}

/// An open journal, appending.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
}

/// What opening a journal found.
pub(crate) struct Opened<T> {
    pub(crate) journal: Journal,
    /// The records, in file order (a later one for a key replaces an earlier one for
    /// the caller that keys them).
    pub(crate) records: Vec<T>,
    /// Lines ignored (a corrupt last line).
    pub(crate) ignored: usize,
    /// What to tell the user about ignored lines.
    pub(crate) warnings: Vec<String>,
}

impl Journal {
    /// Opens (or creates) the journal at `path` of `kind`, written by `name` with
    /// `config`: checks the header, reads the records and cuts off a corrupt last line.
    pub(crate) fn open<T: DeserializeOwned>(
        path: &Path,
        kind: Kind,
        name: &str,
        config: &Value,
    ) -> Result<Opened<T>, EvalError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let mut records = Vec::new();
        let mut warnings = Vec::new();
        let mut ignored = 0;
        // Where the usable content ends, and whether it lacks its final newline.
        let mut keep = 0;
        let mut unterminated = false;
        let mut header_found = false;
        let lines = split_lines(&bytes);
        let last_content = lines.iter().rposition(|l| !l.text.trim_ascii().is_empty());
        let not_this_kind =
            || format!("not {} (no {{\"{}\": …}} header line)", kind.file, kind.key);
        for (index, line) in lines.iter().enumerate() {
            let line_no = index + 1;
            let text = line.text.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let is_last = Some(index) == last_content;
            let value: Option<Value> = serde_json::from_slice(text).ok();
            let corrupt_last = |ignored: &mut usize, warnings: &mut Vec<String>| {
                *ignored += 1;
                warnings.push(format!(
                    "{}:{line_no}: ignored a corrupt last line (cut short?)",
                    path.display()
                ));
            };
            if !header_found {
                match value {
                    Some(header) if is_header(&header, kind) => {
                        check_header(path, &header, kind, name, config)?;
                        header_found = true;
                    }
                    None if is_last => {
                        corrupt_last(&mut ignored, &mut warnings);
                        break;
                    }
                    _ => return Err(EvalError::line(path, line_no, not_this_kind())),
                }
            } else {
                match value.map(serde_json::from_value::<T>) {
                    Some(Ok(record)) => records.push(record),
                    _ if is_last => {
                        corrupt_last(&mut ignored, &mut warnings);
                        break;
                    }
                    Some(Err(e)) => {
                        return Err(EvalError::line(
                            path,
                            line_no,
                            format!("not a {}: {e}", kind.record),
                        ))
                    }
                    None => return Err(EvalError::line(path, line_no, "invalid JSON")),
                }
            }
            keep = line.end;
            unterminated = !line.terminated;
        }

        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err("open", path))?;
        if keep < bytes.len() || !header_found {
            file.set_len(if header_found { keep as u64 } else { 0 })
                .map_err(io_err("truncate", path))?;
        }
        let mut journal = Journal {
            path: path.to_owned(),
            file,
        };
        if !header_found {
            let mut header = serde_json::Map::new();
            header.insert(kind.key.to_string(), Value::String(name.to_string()));
            header.insert("config".to_string(), config.clone());
            journal.write_line(Value::Object(header).to_string().as_bytes())?;
            sync_dir(parent_dir(path))?;
        } else if unterminated {
            journal.write_line(b"")?;
        }
        Ok(Opened {
            journal,
            records,
            ignored,
            warnings,
        })
    }

    /// Appends `record` (`what` names it in an error) as one line, synced before this
    /// returns.
    pub(crate) fn append<T: Serialize>(&mut self, record: &T, what: &str) -> Result<(), EvalError> {
        let line = serde_json::to_vec(record)
            .map_err(|e| EvalError::file(&self.path, format!("cannot encode {what}: {e}")))?;
        self.write_line(&line)
    }

    fn write_line(&mut self, bytes: &[u8]) -> Result<(), EvalError> {
        let mut line = Vec::with_capacity(bytes.len() + 1);
        line.extend_from_slice(bytes);
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(io_err("write", &self.path))?;
        self.file.sync_data().map_err(io_err("sync", &self.path))
    }
}

/// Whether a JSON line is a header of `kind` (its key, and no record's `id`).
pub(crate) fn is_header(value: &Value, kind: Kind) -> bool {
    value.get(kind.key).is_some() && value.get("id").is_none()
}

/// The header must name this writer and configuration.
fn check_header(
    path: &Path,
    header: &Value,
    kind: Kind,
    name: &str,
    config: &Value,
) -> Result<(), EvalError> {
    let found_name = header.get(kind.key).and_then(Value::as_str).unwrap_or("");
    let found_config = header.get("config").unwrap_or(&Value::Null);
    if found_name == name && found_config == config {
        return Ok(());
    }
    Err(EvalError::CacheMismatch {
        path: path.to_owned(),
        found_system: found_name.to_owned(),
        found_config: found_config.to_string(),
        system: name.to_owned(),
        config: config.to_string(),
    })
}

/// One line of a file: its bytes (without the newline), where it ends (after the
/// newline, if any) and whether it had one.
struct Line<'a> {
    text: &'a [u8],
    end: usize,
    terminated: bool,
}

fn split_lines(bytes: &[u8]) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let (text, end, terminated) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(n) => (&bytes[start..start + n], start + n + 1, true),
            None => (&bytes[start..], bytes.len(), false),
        };
        lines.push(Line {
            text,
            end,
            terminated,
        });
        start = end;
    }
    lines
}
