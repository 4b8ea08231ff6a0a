//! The model store's own file handling: partial-file and temp-dir guards, the
//! verification marker, the per-model lock, file hashing, and blocking work with
//! progress. Atomic writes, directory syncs and hex come from `jielong-util`.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{ModelError, Result};
use crate::progress::Progress;

/// A file being written; removed on drop unless [`PartialFile::commit`] renamed it.
pub(crate) struct PartialFile {
    path: PathBuf,
    committed: bool,
}

impl PartialFile {
    /// Guards `path` (which need not exist yet).
    pub(crate) fn new(path: PathBuf) -> Self {
        PartialFile {
            path,
            committed: false,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Atomically renames the partial file to `dest`, then syncs the directory.
    pub(crate) fn commit(mut self, dest: &Path) -> Result<()> {
        std::fs::rename(&self.path, dest).map_err(|e| ModelError::io(dest, e))?;
        self.committed = true;
        sync_dir(dest);
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove partial file");
                }
            }
        }
    }
}

/// A directory removed with its contents on drop.
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `path` afresh, removing whatever a crashed earlier run left there.
    pub(crate) fn create(path: PathBuf) -> Result<Self> {
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(ModelError::io(&path, e)),
        }
        std::fs::create_dir_all(&path).map_err(|e| ModelError::io(&path, e))?;
        Ok(TempDir { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove temp dir");
            }
        }
    }
}

/// Best-effort fsync of the directory holding `path`, so a rename survives a crash.
pub(crate) fn sync_dir(path: &Path) {
    let _ = jielong_util::sync_dir(jielong_util::parent_dir(path));
}

/// `FILE.verified`, beside `FILE`.
pub(crate) fn marker_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    file.with_file_name(name)
}

/// What a `.verified` marker records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

pub(crate) fn read_marker(file: &Path) -> Option<Marker> {
    let text = std::fs::read_to_string(marker_path(file)).ok()?;
    let mut sha256 = None;
    let mut size = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("sha256=") {
            sha256 = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("size=") {
            size = v.trim().parse().ok();
        }
    }
    Some(Marker {
        sha256: sha256?,
        size: size?,
    })
}

pub(crate) fn write_marker(file: &Path, marker: &Marker) -> Result<()> {
    let text = format!("sha256={}\nsize={}\n", marker.sha256, marker.size);
    jielong_util::write_atomic(&marker_path(file), text.as_bytes())
        .map_err(|failure| ModelError::io(failure.path, failure.source))
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ModelError::io(path, e)),
    }
}

pub(crate) use jielong_util::hex;

/// An exclusive advisory lock on a file, held until dropped.
pub(crate) struct FileLock {
    _file: File,
}

/// Takes the exclusive lock `path`, polling until `timeout`.
pub(crate) async fn lock(
    path: &Path,
    timeout: Duration,
    what: &str,
    progress: &dyn Progress,
) -> Result<FileLock> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| ModelError::io(dir, e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| ModelError::io(path, e))?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match fs4::fs_std::FileExt::try_lock_exclusive(&file) {
            Ok(true) => return Ok(FileLock { _file: file }),
            Ok(false) => {}
            Err(e) => return Err(ModelError::io(path, e)),
        }
        if start.elapsed() >= timeout {
            return Err(ModelError::Locked {
                path: path.to_path_buf(),
            });
        }
        if !told {
            progress.message(&format!(
                "waiting for another process that is fetching {what}"
            ));
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets the flag when dropped: tells blocking work that its caller went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What blocking work gets: a channel for byte counts and a cancellation flag.
pub(crate) struct BlockingCtx {
    tx: UnboundedSender<u64>,
    cancel: Arc<AtomicBool>,
    pending: u64,
}

impl BlockingCtx {
    /// Reports `n` bytes of progress (batched).
    pub(crate) fn advance(&mut self, n: u64) {
        self.pending += n;
        if self.pending >= 1 << 20 {
            let _ = self.tx.send(self.pending);
            self.pending = 0;
        }
    }

    /// Whether the caller was dropped (the fetch was interrupted).
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

impl Drop for BlockingCtx {
    fn drop(&mut self) {
        if self.pending > 0 {
            let _ = self.tx.send(self.pending);
        }
    }
}

/// Runs `work` on the blocking pool, forwarding its byte counts to `progress`.
/// If the returned future is dropped, `work` sees [`BlockingCtx::cancelled`].
pub(crate) async fn blocking_with_progress<T, F>(progress: &dyn Progress, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut BlockingCtx) -> Result<T> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let handle = tokio::task::spawn_blocking(move || {
        let mut ctx = BlockingCtx {
            tx,
            cancel,
            pending: 0,
        };
        work(&mut ctx)
    });
    while let Some(n) = rx.recv().await {
        progress.advance(n);
    }
    match handle.await {
        Ok(result) => result,
        Err(e) => Err(ModelError::io(
            PathBuf::new(),
            std::io::Error::other(format!("background task failed: {e}")),
        )),
    }
}

/// SHA-256 and size of a file, reporting bytes to `ctx`.
pub(crate) fn hash_file(path: &Path, ctx: &mut BlockingCtx) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        if ctx.cancelled() {
            return Err(ModelError::Interrupted {
                what: path.display().to_string(),
            });
        }
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(ModelError::io(path, e)),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        ctx.advance(n as u64);
    }
    Ok((hex(&hasher.finalize()), total))
}
