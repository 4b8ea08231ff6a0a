//! [`EvalError`]: why a dataset, a cache or a report could not be used.

use std::path::PathBuf;

/// Why an evaluation could not be loaded, run or written. Every message is one line
/// and names the file (and line) or the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written, or holds nothing usable.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// One line of a JSONL file is wrong.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A split such as `50:150` could not be parsed.
    #[error("split `{text}`: {message}")]
    Split {
        /// The text given.
        text: String,
        /// What is wrong with it.
        message: String,
    },
    /// A metric name such as `regex:PATTERN` could not be parsed.
    #[error("metric `{name}`: {message}")]
    Metric {
        /// The name given.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// One example cannot be evaluated (a duplicate id, a bad per-example metric).
    #[error("example `{id}`: {message}")]
    Example {
        /// The example's id.
        id: String,
        /// What is wrong with it.
        message: String,
    },
    /// A setting (a list of lengths or depths, a needle's keys) is unusable.
    #[error("{}", setting_message(name, text, message))]
    Setting {
        /// What the setting is (`lengths`, `depths`, `variants`, `key`, …).
        name: String,
        /// The text given (empty when there is none to show).
        text: String,
        /// What is wrong with it.
        message: String,
    },
    /// The cache file was written for another system or configuration.
    #[error(
        "{}: the cache was written for system `{found_system}` with config {found_config}, not `{system}` with config {config}; use another cache file or remove it",
        path.display()
    )]
    CacheMismatch {
        /// The cache file.
        path: PathBuf,
        /// The system named in its header.
        found_system: String,
        /// The configuration in its header (compact JSON).
        found_config: String,
        /// The system being evaluated.
        system: String,
        /// Its configuration (compact JSON).
        config: String,
    },
}

/// `NAME `TEXT`: MESSAGE`, or `NAME: MESSAGE` without a text.
fn setting_message(name: &str, text: &str, message: &str) -> String {
    if text.is_empty() {
        format!("{name}: {message}")
    } else {
        format!("{name} `{text}`: {message}")
    }
}

impl EvalError {
    /// A [`EvalError::File`] for `path`.
    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EvalError::File {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A [`EvalError::Line`] for `path` at 1-based `line`.
    pub(crate) fn line(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        EvalError::Line {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

/// Maps an I/O error on `path` to an [`EvalError::File`] saying what was being done.
pub(crate) fn io_err<'a>(
    action: &'a str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> EvalError + 'a {
    move |e| EvalError::file(path, format!("cannot {action}: {e}"))
}

impl From<jielong_util::IoFailure> for EvalError {
    fn from(failure: jielong_util::IoFailure) -> Self {
        EvalError::file(
            failure.path,
            format!("cannot {}: {}", failure.action, failure.source),
        )
    }
}
