//! [`ModelRef`]: what a user passes as `--model`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::catalog::{Catalog, DEFAULT_MODEL};
use crate::error::{ModelError, Result};

/// The Hugging Face endpoint used when `HF_ENDPOINT` is not set.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

/// A model as named by the user: a catalog name, a local GGUF file, or a Hugging Face file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelRef {
    /// A name from the [`Catalog`], e.g. `smollm2-135m`.
    Catalog(String),
    /// A GGUF file on disk, used in place (never copied).
    Local(PathBuf),
    /// A GGUF file in a Hugging Face repository (`hf:OWNER/REPO/FILE.gguf[@REV][#sha256=HEX]`).
    Hf(HfRef),
}

/// A file in a Hugging Face model repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HfRef {
    /// The repository owner (user or organisation).
    pub owner: String,
    /// The repository name.
    pub repo: String,
    /// The file's path inside the repository; ends with `.gguf`, may contain `/`.
    pub file: String,
    /// The branch, tag or commit; `main` unless given with `@`.
    pub revision: String,
    /// The expected SHA-256 (lowercase hex), when given with `#sha256=`.
    pub sha256: Option<String>,
}

impl ModelRef {
    /// Parses `input` against the built-in catalog; see [`ModelRef::parse_with`].
    pub fn parse(input: &str) -> Result<Self> {
        Self::parse_with(input, &Catalog::builtin())
    }

    /// Parses `input`, recognising the names of `catalog`.
    ///
    /// In order: `hf:` references; anything containing a path separator or ending
    /// in `.gguf` is a local path; a catalog name (ASCII case-insensitive); an
    /// existing file or directory; otherwise [`ModelError::UnknownModel`], whose
    /// message lists the catalog's names.
    pub fn parse_with(input: &str, catalog: &Catalog) -> Result<Self> {
        if input.trim().is_empty() {
            return Err(ModelError::BadReference {
                input: input.to_string(),
                reason: format!(
                    "empty model name; known models: {}",
                    catalog.names().join(", ")
                ),
            });
        }
        if let Some(body) = input.strip_prefix("hf:") {
            return HfRef::parse_body(input, body).map(ModelRef::Hf);
        }
        if looks_like_path(input) {
            return Ok(ModelRef::Local(PathBuf::from(input)));
        }
        if let Some(entry) = catalog
            .entries()
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(input.trim()))
        {
            return Ok(ModelRef::Catalog(entry.name.clone()));
        }
        if Path::new(input).exists() {
            return Ok(ModelRef::Local(PathBuf::from(input)));
        }
        Err(ModelError::UnknownModel {
            name: input.to_string(),
            known: catalog.names(),
        })
    }

    /// The default model, [`DEFAULT_MODEL`].
    pub fn default_model() -> Self {
        ModelRef::Catalog(DEFAULT_MODEL.to_string())
    }
}

impl Default for ModelRef {
    fn default() -> Self {
        ModelRef::default_model()
    }
}

impl FromStr for ModelRef {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        ModelRef::parse(s)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Catalog(name) => f.write_str(name),
            ModelRef::Local(path) => write!(f, "{}", path.display()),
            ModelRef::Hf(hf) => hf.fmt(f),
        }
    }
}

impl fmt::Display for HfRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hf:{}/{}/{}", self.owner, self.repo, self.file)?;
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        if let Some(sha) = &self.sha256 {
            write!(f, "#sha256={sha}")?;
        }
        Ok(())
    }
}

fn looks_like_path(input: &str) -> bool {
    input.contains('/')
        || input.contains(std::path::MAIN_SEPARATOR)
        || input.to_ascii_lowercase().ends_with(".gguf")
}

impl HfRef {
    /// Parses `hf:OWNER/REPO/FILE.gguf[@REVISION][#sha256=HEX]` (the `hf:` prefix is required).
    pub fn parse(input: &str) -> Result<Self> {
        match input.strip_prefix("hf:") {
            Some(body) => Self::parse_body(input, body),
            None => Err(bad(input, "an hf reference starts with `hf:`")),
        }
    }

    fn parse_body(input: &str, body: &str) -> Result<Self> {
        let (rest, sha256) = match body.split_once('#') {
            Some((rest, fragment)) => {
                let hex = fragment.strip_prefix("sha256=").ok_or_else(|| {
                    bad(
                        input,
                        "the part after `#` must be `sha256=` and 64 hex digits",
                    )
                })?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(input, "a sha256 is 64 hex digits"));
                }
                (rest, Some(hex.to_ascii_lowercase()))
            }
            None => (body, None),
        };
        let (path, revision) = match rest.to_ascii_lowercase().find(".gguf@") {
            Some(pos) => {
                let split = pos + ".gguf".len();
                (&rest[..split], rest[split + 1..].to_string())
            }
            None => (rest, "main".to_string()),
        };
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() < 3 {
            return Err(bad(input, "expected hf:OWNER/REPO/FILE.gguf"));
        }
        for seg in &segments {
            check_segment(input, seg, "path")?;
        }
        for seg in &segments[..2] {
            if !seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(bad(
                    input,
                    "owner and repository names use only letters, digits, `-`, `_` and `.`",
                ));
            }
        }
        let file = segments[2..].join("/");
        if !file.to_ascii_lowercase().ends_with(".gguf") {
            return Err(bad(input, "the file must be a .gguf file"));
        }
        if revision.is_empty() {
            return Err(bad(input, "empty revision after `@`"));
        }
        for seg in revision.split('/') {
            check_segment(input, seg, "revision")?;
        }
        Ok(HfRef {
            owner: segments[0].to_string(),
            repo: segments[1].to_string(),
            file,
            revision,
            sha256,
        })
    }

    /// The download URL under `endpoint` (e.g. [`DEFAULT_HF_ENDPOINT`]):
    /// `{endpoint}/OWNER/REPO/resolve/REVISION/FILE`, percent-encoded.
    pub fn url(&self, endpoint: &str) -> String {
        let file: Vec<String> = self.file.split('/').map(percent_encode).collect();
        format!(
            "{}/{}/{}/resolve/{}/{}",
            endpoint.trim_end_matches('/'),
            percent_encode(&self.owner),
            percent_encode(&self.repo),
            percent_encode(&self.revision),
            file.join("/")
        )
    }
}

fn check_segment(input: &str, seg: &str, what: &str) -> Result<()> {
    if seg.is_empty() {
        return Err(bad(input, &format!("empty component in the {what}")));
    }
    if seg == "." || seg == ".." {
        return Err(bad(input, &format!("`{seg}` is not allowed in the {what}")));
    }
    if seg.chars().any(|c| c.is_control() || c == '\\' || c == ':') {
        return Err(bad(
            input,
            &format!("control characters, `\\` and `:` are not allowed in the {what}"),
        ));
    }
    Ok(())
}

fn bad(input: &str, reason: &str) -> ModelError {
    ModelError::BadReference {
        input: input.to_string(),
        reason: reason.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encodes_revision_and_file() {
        let hf = HfRef {
            owner: "o".into(),
            repo: "r".into(),
            file: "dir/a b.gguf".into(),
            revision: "refs/pr/1".into(),
            sha256: None,
        };
        assert_eq!(
            hf.url("http://127.0.0.1:9/"),
            "http://127.0.0.1:9/o/r/resolve/refs%2Fpr%2F1/dir/a%20b.gguf"
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "hf:o/r/f.gguf",
            "hf:o/r/sub/f.gguf@v1.0#sha256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "smollm2-135m",
        ] {
            let parsed = ModelRef::parse(s).map(|r| r.to_string());
            assert_eq!(parsed.ok().as_deref(), Some(s));
        }
    }
}
