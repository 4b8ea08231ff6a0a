//! File-system helpers: [`write_atomic`] (a file written whole or not at all),
//! [`sync_dir`] (an entry created or renamed survives a power loss), [`parent_dir`]
//! and [`is_temporary`] (what a reader skips). Errors are [`IoFailure`]s that say
//! what was being done to which path; each crate turns them into its own error type.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An I/O operation that failed: what was being done (`"create"`, `"write"`,
/// `"sync"`), on which path, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot {action}: {source}", path.display())]
pub struct IoFailure {
    /// What was being done.
    pub action: &'static str,
    /// The file or folder.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: io::Error,
}

fn failure<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IoFailure + 'a {
    move |source| IoFailure {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Distinguishes the temporary files of concurrent writes in one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` whole or not at all: a synced temporary file in the same
/// folder (`.NAME.tmp-PID-N`, see [`is_temporary`]) renamed over `path`, then the
/// folder synced. On failure the temporary file is removed and `path` is as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoFailure> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(failure("create", &tmp))?;
        file.write_all(bytes).map_err(failure("write", &tmp))?;
        file.sync_all().map_err(failure("sync", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(failure("write", path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// Whether a file name is one of [`write_atomic`]'s temporary files
/// (`.NAME.tmp-…`): left behind only by a process killed mid-write, never data.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Syncs a folder, so entries created or renamed in it survive a power loss.
/// Filesystems that cannot sync a folder (`EINVAL`) are accepted as they are.
pub fn sync_dir(dir: &Path) -> Result<(), IoFailure> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.kind() != ErrorKind::InvalidInput => Err(failure("sync", dir)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.json"]);
        assert!(is_temporary(".state.json.tmp-12-0"));
        assert!(!is_temporary("state.json"));
        assert_eq!(parent_dir(Path::new("bare.txt")), Path::new("."));
    }

    #[test]
    fn a_failed_write_says_what_and_where_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-folder").join("f.txt");
        let err = write_atomic(&missing, b"x").unwrap_err();
        assert_eq!(err.action, "create");
        assert!(err.to_string().contains("cannot create: "), "{err}");
        // A folder in the way of the rename: the rename fails, no temporary is left.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"kept").unwrap();
        let err = write_atomic(&blocked, b"x").unwrap_err();
        assert_eq!(err.action, "write");
        assert_eq!(fs::read(blocked.join("inside")).unwrap(), b"kept");
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| is_temporary(&e.as_ref().unwrap().file_name().to_string_lossy()))
            .count();
        assert_eq!(leftovers, 0);
    }
}
