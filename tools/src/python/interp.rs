//! Finding the real interpreter behind a name like `python3` (which may be a
//! version-manager shim that cannot run inside the sandbox), once per process.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::error::{one_line, PythonError};

/// A resolved interpreter.
#[derive(Debug, Clone)]
pub(crate) struct Interpreter {
    /// `sys.executable`: what the worker runs (not canonicalised, so a virtual
    /// environment's `pyvenv.cfg` is still found next to it).
    pub exe: PathBuf,
    /// Directories the interpreter needs, canonical: prefix, base prefix and the
    /// directory of the executable's final target.
    pub dirs: Vec<PathBuf>,
    /// site-packages directories (added to `sys.path` without running `site`).
    pub site_packages: Vec<PathBuf>,
    /// `major.minor.micro`.
    pub version: String,
    /// The runner compiled and marshalled by this interpreter (empty if that
    /// failed: the source is passed then).
    pub runner_code: Vec<u8>,
}

const PROBE: &str = "import sys, sysconfig\n\
p = sysconfig.get_paths()\n\
print(sys.executable)\n\
print(sys.prefix)\n\
print(sys.base_prefix)\n\
print(p.get('purelib', ''))\n\
print(p.get('platlib', ''))\n\
print('%d.%d.%d' % sys.version_info[:3])\n\
import marshal\n\
src = sys.stdin.read()\n\
print(marshal.dumps(compile(src, '<jielong-runner>', 'exec')).hex() if src else '')\n";

/// The worker's runner script.
pub(crate) const RUNNER: &str = include_str!("runner.py");

/// Starts the runner from its precompiled code object, which the host writes as a
/// length-prefixed frame on fd 3 (read exactly: the first request may follow it) (compiling the script at every start would cost
/// more than the interpreter's own start, and so would a large argument).
pub(crate) const BOOT: &str = "import marshal, os\n\
def _jielong_read(n):\n    \
b = b''\n    \
while len(b) < n:\n        \
c = os.read(3, n - len(b))\n        \
if not c:\n            \
raise SystemExit(1)\n        \
b += c\n    \
return b\n\
exec(marshal.loads(_jielong_read(int.from_bytes(_jielong_read(4), 'big'))))\n";

fn cache() -> &'static Mutex<HashMap<PathBuf, Arc<Interpreter>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Interpreter>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Resolves `python` (a name looked up in `PATH`, or a path), caching the result.
/// Blocking: runs the interpreter once.
pub(crate) fn resolve(python: &Path) -> Result<Arc<Interpreter>, PythonError> {
    if let Some(found) = cache().lock().ok().and_then(|c| c.get(python).cloned()) {
        return Ok(found);
    }
    let interp = Arc::new(probe(python)?);
    if let Ok(mut c) = cache().lock() {
        c.insert(python.to_path_buf(), interp.clone());
    }
    Ok(interp)
}

fn bad(python: &Path, reason: impl AsRef<str>) -> PythonError {
    PythonError::Interpreter {
        path: python.to_path_buf(),
        reason: one_line(reason.as_ref(), 300),
    }
}

/// Looks `name` up in `PATH` (paths with a slash are taken as they are).
pub(crate) fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 || name.is_absolute() {
        return Some(name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn probe(python: &Path) -> Result<Interpreter, PythonError> {
    let found = which(python).ok_or_else(|| bad(python, "not found in PATH"))?;
    let mut child = Command::new(&found)
        .args(["-I", "-c", PROBE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| bad(python, format!("cannot run {}: {e}", found.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A failure shows up as a missing code object: the source is used then.
        let _ = stdin.write_all(RUNNER.as_bytes());
    }
    // Read both pipes while the probe runs: its output (the compiled runner) is larger
    // than a pipe buffer, so waiting for the exit first would deadlock.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout_reader = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr_reader = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(bad(python, "did not answer within 30 s"));
            }
            Err(e) => return Err(bad(python, format!("waiting for it failed: {e}"))),
        }
    };
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(bad(python, format!("probe failed ({status}): {stderr}")));
    }
    let lines: Vec<&str> = stdout.lines().collect();
    if lines.len() < 6 || lines[0].is_empty() {
        return Err(bad(python, format!("unexpected probe output: {stdout}")));
    }
    let exe = PathBuf::from(lines[0]);
    let mut dirs: Vec<PathBuf> = Vec::new();
    let target =
        std::fs::canonicalize(&exe).map_err(|e| bad(python, format!("{}: {e}", exe.display())))?;
    let candidates = [
        PathBuf::from(lines[1]),
        PathBuf::from(lines[2]),
        target.parent().map(Path::to_path_buf).unwrap_or_default(),
        exe.parent().map(Path::to_path_buf).unwrap_or_default(),
    ];
    for dir in candidates {
        if let Ok(dir) = std::fs::canonicalize(&dir) {
            if dir == Path::new("/") {
                return Err(bad(
                    python,
                    "its prefix is `/`, which cannot be exposed read-only",
                ));
            }
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    let site_packages = [lines[3], lines[4]]
        .iter()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .fold(Vec::new(), |mut acc, p| {
            if !acc.contains(&p) {
                acc.push(p);
            }
            acc
        });
    Ok(Interpreter {
        exe,
        dirs,
        site_packages,
        version: lines[5].to_owned(),
        runner_code: lines.get(6).and_then(|h| unhex(h)).unwrap_or_default(),
    })
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    let digits = hex.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}
