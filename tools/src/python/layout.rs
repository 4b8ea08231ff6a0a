//! The host side of a worker: the [`Plan`] it starts from (the paths it sees and
//! the skeleton of its root, limits, environment, filters) and, for an
//! unsandboxed worker, the scratch directory on the host.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{PythonError, SandboxFeature};
use super::interp::{Interpreter, BOOT, RUNNER};
use super::landlock::{self, Access};
use super::spawn::{Bind, Node, NodeKind, NsPlan, Plan, ReadOnly, Tmpfs, MAX_BINDS};
use super::{seccomp, PythonSandbox};

/// The uid and gid the code runs as inside the sandbox.
pub(crate) const INNER_ID: u32 = 1000;
/// Scratch directory inside the sandbox (also `$HOME` and the working directory).
pub(crate) const SCRATCH: &str = "/scratch";

/// A session's host directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct SessionDir {
    pub path: PathBuf,
}

impl SessionDir {
    pub(crate) fn create() -> io::Result<SessionDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!(
                "jielong-python-{}-{n}-{nanos:08x}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(SessionDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary directory name",
        ))
    }
}

impl Drop for SessionDir {
    fn drop(&mut self) {
        if std::fs::remove_dir_all(&self.path).is_err() {
            // Unsandboxed code may have left directories without permissions.
            make_writable(&self.path);
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove the python session directory");
            }
        }
    }
}

fn make_writable(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                make_writable(&entry.path());
            }
        }
    }
}

fn cstr(path: &Path) -> Result<CString, PythonError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| PythonError::Spawn {
        stage: "preparing paths",
        source: io::Error::new(io::ErrorKind::InvalidInput, "a path contains a NUL byte"),
    })
}

fn cstring(s: &str) -> Result<CString, PythonError> {
    cstr(Path::new(s))
}

fn prep_err(source: io::Error) -> PythonError {
    PythonError::Spawn {
        stage: "preparing the sandbox root",
        source,
    }
}

/// `root` joined with the absolute `inside` path.
fn under(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

fn interpreter_args(
    interp: &Interpreter,
    config: &PythonSandbox,
) -> Result<Vec<CString>, PythonError> {
    let mut argv = vec![
        cstr(&interp.exe)?,
        cstring("-I")?,
        cstring("-S")?,
        cstring("-B")?,
        cstring("-c")?,
    ];
    if interp.runner_code.is_empty() {
        argv.push(CString::new(RUNNER).map_err(|_| PythonError::Spawn {
            stage: "preparing the runner",
            source: io::Error::new(io::ErrorKind::InvalidData, "NUL in the runner"),
        })?);
    } else {
        argv.push(cstring(BOOT)?);
    }
    if config.site_packages {
        for dir in &interp.site_packages {
            argv.push(cstr(dir)?);
        }
    }
    Ok(argv)
}

/// The frame [`BOOT`] reads from fd 3: the runner's code object, length-prefixed.
fn boot_frame(interp: &Interpreter) -> Vec<u8> {
    let code = &interp.runner_code;
    if code.is_empty() {
        return Vec::new();
    }
    let mut frame = Vec::with_capacity(4 + code.len());
    frame.extend_from_slice(&(code.len() as u32).to_be_bytes());
    frame.extend_from_slice(code);
    frame
}

fn environment(home: &str) -> Result<Vec<CString>, PythonError> {
    [
        "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
        format!("HOME={home}"),
        "TMPDIR=/tmp".to_owned(),
        "LANG=C.UTF-8".to_owned(),
        "LC_ALL=C.UTF-8".to_owned(),
        "USER=sandbox".to_owned(),
        "LOGNAME=sandbox".to_owned(),
        "PYTHONDONTWRITEBYTECODE=1".to_owned(),
        "PYTHONHASHSEED=0".to_owned(),
        "PYTHONUNBUFFERED=1".to_owned(),
        "PYTHONIOENCODING=utf-8".to_owned(),
        "OMP_NUM_THREADS=1".to_owned(),
        "OPENBLAS_NUM_THREADS=1".to_owned(),
        "MKL_NUM_THREADS=1".to_owned(),
        "MPLBACKEND=Agg".to_owned(),
    ]
    .iter()
    .map(|s| cstring(s))
    .collect()
}

fn rlimits(config: &PythonSandbox, sandboxed: bool) -> Vec<(libc::c_int, u64, u64)> {
    let inf = libc::RLIM_INFINITY;
    let cpu = config.cpu_time.as_secs().saturating_add(1);
    let mut wanted: Vec<(libc::__rlimit_resource_t, u64, u64)> = vec![
        (libc::RLIMIT_AS, config.memory, config.memory),
        (
            libc::RLIMIT_FSIZE,
            config.max_file_size,
            config.max_file_size,
        ),
        (libc::RLIMIT_NOFILE, 256, 256),
        (libc::RLIMIT_CORE, 0, 0),
        (libc::RLIMIT_CPU, cpu, inf),
    ];
    if sandboxed {
        // Counted per user in the worker's own user namespace. Unsandboxed it would
        // count every process of the host user, so it is left alone there.
        let n = u64::from(config.max_processes);
        wanted.push((libc::RLIMIT_NPROC, n, n));
    }
    wanted
        .into_iter()
        .map(|(res, soft, hard)| {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: inf,
            };
            // SAFETY: getrlimit fills a local struct.
            unsafe { libc::getrlimit(res, &mut cur) };
            let hard = hard.min(cur.rlim_max);
            (res as libc::c_int, soft.min(hard), hard)
        })
        .collect()
}

/// Whether `id` is mapped in the current user namespace (`/proc/self/{uid,gid}_map`).
fn id_mapped(map: &str, id: u32) -> bool {
    std::fs::read_to_string(map)
        .map(|text| {
            text.lines().any(|line| {
                let f: Vec<u64> = line
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                f.len() == 3 && (f[0]..f[0] + f[2]).contains(&u64::from(id))
            })
        })
        .unwrap_or(false)
}

/// What the sandbox will use, decided on the host.
pub(crate) struct Features {
    pub landlock_abi: Option<u32>,
}

/// Checks the features the host can see without starting anything, and the ones
/// the configuration pretends are missing. Fails with the first missing required
/// feature.
pub(crate) fn check_features(config: &PythonSandbox) -> Result<Features, PythonError> {
    for feature in SandboxFeature::ALL {
        if feature.required() && config.disabled.contains(&feature) {
            return Err(PythonError::SandboxUnavailable {
                feature,
                reason: "disabled by configuration".to_owned(),
            });
        }
    }
    if !seccomp::available() || seccomp::filter().is_none() {
        return Err(PythonError::SandboxUnavailable {
            feature: SandboxFeature::Seccomp,
            reason: "the kernel does not support seccomp filters on this architecture".to_owned(),
        });
    }
    let landlock_abi = if config.disabled.contains(&SandboxFeature::Landlock) {
        None
    } else {
        landlock::abi()
    };
    Ok(Features { landlock_abi })
}

/// The new root's skeleton as it is planned on the host.
struct Skeleton {
    staging: PathBuf,
    nodes: Vec<Node>,
    dirs: HashSet<PathBuf>,
    binds: Vec<Bind>,
    read_only: Vec<ReadOnly>,
}

impl Skeleton {
    /// Whether `inside` lies within one of the tmpfs mounts.
    fn late(inside: &Path) -> bool {
        [SCRATCH, "/tmp", "/dev/shm"]
            .iter()
            .any(|m| inside != Path::new(m) && inside.starts_with(m))
    }

    fn at(&self, inside: &Path) -> Result<CString, PythonError> {
        cstr(&under(&self.staging, inside))
    }

    /// Adds `inside` and its missing ancestors as directories.
    fn dir(&mut self, inside: &Path) -> Result<(), PythonError> {
        let mut missing = Vec::new();
        for a in inside.ancestors() {
            if a == Path::new("/") || a.as_os_str().is_empty() || self.dirs.contains(a) {
                break;
            }
            missing.push(a.to_path_buf());
        }
        for d in missing.into_iter().rev() {
            self.nodes.push(Node {
                path: self.at(&d)?,
                kind: NodeKind::Dir,
                late: Self::late(&d),
            });
            self.dirs.insert(d);
        }
        Ok(())
    }

    fn node(&mut self, inside: &Path, kind: NodeKind) -> Result<(), PythonError> {
        if let Some(parent) = inside.parent() {
            self.dir(parent)?;
        }
        self.nodes.push(Node {
            path: self.at(inside)?,
            kind,
            late: Self::late(inside),
        });
        Ok(())
    }

    /// Binds the host path `src` at the same path inside.
    fn bind(&mut self, src: &Path, read_only: bool) -> Result<(), PythonError> {
        let is_dir = src.is_dir();
        if is_dir {
            self.dir(src)?;
        } else {
            self.node(src, NodeKind::File(Vec::new()))?;
        }
        self.binds.push(Bind {
            src: cstr(src)?,
            dst: self.at(src)?,
            recursive: is_dir,
            label: src.display().to_string(),
        });
        if read_only {
            self.read_only.push(ReadOnly {
                path: cstr(src)?,
                recursive: is_dir,
            });
        }
        Ok(())
    }
}

/// An existing host directory to stage the new root on: the worker mounts a tmpfs
/// over it in its own mount namespace (after opening every bind source).
fn staging_dir() -> PathBuf {
    ["/tmp", "/mnt", "/run", "/var/tmp"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.is_dir())
                .unwrap_or(false)
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// Plans a sandboxed worker. Nothing is written on the host: the root's skeleton
/// is created by the worker on a tmpfs in its own mount namespace.
pub(crate) fn sandboxed_plan(
    config: &PythonSandbox,
    interp: &Interpreter,
    features: &Features,
) -> Result<Plan, PythonError> {
    let mut sk = Skeleton {
        staging: staging_dir(),
        nodes: Vec::new(),
        dirs: HashSet::new(),
        binds: Vec::new(),
        read_only: vec![ReadOnly {
            path: cstring("/")?,
            recursive: false,
        }],
    };
    // System directories; symlinks like /lib -> usr/lib are recreated.
    for name in ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(name);
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(target) = std::fs::read_link(&host) {
                sk.node(&host, NodeKind::Symlink(cstr(&target)?))?;
            }
        } else if meta.is_dir() {
            sk.bind(&host, true)?;
        }
    }
    let covered = system_dirs();
    sk.dir(Path::new("/etc"))?;
    for file in system_files() {
        sk.bind(&file, true)?;
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime") {
        sk.node(
            Path::new("/etc/localtime"),
            NodeKind::Symlink(cstr(&target)?),
        )?;
    }
    let passwd = format!(
        "sandbox:x:{INNER_ID}:{INNER_ID}:sandbox:{SCRATCH}:/bin/sh\n\
         nobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n"
    );
    for (name, contents) in [
        ("passwd", passwd),
        (
            "group",
            format!("sandbox:x:{INNER_ID}:\nnogroup:x:65534:\n"),
        ),
        ("hostname", "sandbox\n".to_owned()),
        ("hosts", "127.0.0.1 localhost sandbox\n".to_owned()),
    ] {
        sk.node(
            &Path::new("/etc").join(name),
            NodeKind::File(contents.into_bytes()),
        )?;
    }
    for dir in exposed_dirs(config, interp, &covered) {
        sk.bind(&dir, true)?;
    }
    for dev in DEVICES {
        sk.bind(&Path::new("/dev").join(dev), false)?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sk.node(
            &Path::new("/dev").join(name),
            NodeKind::Symlink(cstring(target)?),
        )?;
    }
    for dir in ["/proc", SCRATCH, "/tmp", "/dev/shm"] {
        sk.dir(Path::new(dir))?;
    }
    let mut tmpfs = Vec::new();
    let size = config.scratch_size;
    let inodes = (size / 4096).clamp(1024, 65536);
    match &config.scratch_dir {
        Some(host) => {
            let host = std::fs::canonicalize(host).map_err(prep_err)?;
            sk.binds.push(Bind {
                src: cstr(&host)?,
                dst: sk.at(Path::new(SCRATCH))?,
                recursive: false,
                label: host.display().to_string(),
            });
        }
        None => tmpfs.push(Tmpfs {
            dst: sk.at(Path::new(SCRATCH))?,
            data: cstring(&format!(
                "size={size},nr_inodes={inodes},mode=0700,uid={INNER_ID},gid={INNER_ID}"
            ))?,
            label: SCRATCH.to_owned(),
        }),
    }
    tmpfs.push(Tmpfs {
        dst: sk.at(Path::new("/tmp"))?,
        data: cstring(&format!("size={size},nr_inodes={inodes},mode=1777"))?,
        label: "/tmp".to_owned(),
    });
    // POSIX semaphores and shared memory (multiprocessing).
    let shm = (size / 4).max(1024 * 1024);
    tmpfs.push(Tmpfs {
        dst: sk.at(Path::new("/dev/shm"))?,
        data: cstring(&format!("size={shm},nr_inodes=1024,mode=1777"))?,
        label: "/dev/shm".to_owned(),
    });
    if sk.binds.len() > MAX_BINDS {
        return Err(PythonError::Spawn {
            stage: "preparing the sandbox root",
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("more than {MAX_BINDS} paths to expose"),
            ),
        });
    }

    let landlock = features.landlock_abi.and_then(|abi| {
        let mut paths: Vec<(String, Access)> = vec![
            ("/".to_owned(), Access::ReadExec),
            (SCRATCH.to_owned(), Access::ReadWrite),
            ("/tmp".to_owned(), Access::ReadWrite),
            ("/dev/shm".to_owned(), Access::ReadWrite),
        ];
        for dev in DEVICES {
            paths.push((format!("/dev/{dev}"), Access::Device));
        }
        let refs: Vec<(&str, Access)> = paths.iter().map(|(p, a)| (p.as_str(), *a)).collect();
        landlock::Plan::new(abi, &refs)
    });

    // Host root maps the worker to `nobody`: RLIMIT_NPROC does not apply to uid 0 of
    // the host, and host files then only grant what they grant everybody.
    // SAFETY: geteuid/getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let nobody = 65534;
    let as_nobody = euid == 0
        && id_mapped("/proc/self/uid_map", nobody)
        && id_mapped("/proc/self/gid_map", nobody);
    let (uid_map, gid_map) = if as_nobody {
        (
            format!("{INNER_ID} {nobody} 1\n"),
            format!("{INNER_ID} {nobody} 1\n"),
        )
    } else {
        (
            format!("{INNER_ID} {euid} 1\n"),
            format!("{INNER_ID} {egid} 1\n"),
        )
    };

    Ok(Plan {
        exe: cstr(&interp.exe)?,
        argv: interpreter_args(interp, config)?,
        envp: environment(SCRATCH)?,
        cwd: cstring(SCRATCH)?,
        rlimits: rlimits(config, true),
        seccomp: seccomp::filter(),
        boot: boot_frame(interp),
        ns: Some(NsPlan {
            staging: cstr(&sk.staging)?,
            root_data: cstring(&format!(
                "size=1048576,nr_inodes=1024,mode=0755,uid={INNER_ID},gid={INNER_ID}"
            ))?,
            proc_dir: sk.at(Path::new("/proc"))?,
            nodes: sk.nodes,
            binds: sk.binds,
            tmpfs,
            read_only: sk.read_only,
            uid_map,
            gid_map,
            deny_setgroups: !as_nobody,
            drop_groups: as_nobody,
            inner_id: INNER_ID,
            landlock,
        }),
        skip_landlock: features.landlock_abi.is_none(),
    })
}

/// Plans an unsandboxed worker (explicit opt-out): its own process group and a
/// scratch directory on the host, limits, no_new_privs and the seccomp filter.
pub(crate) fn unsandboxed_plan(
    config: &PythonSandbox,
    interp: &Interpreter,
    dir: &Path,
) -> Result<Plan, PythonError> {
    let scratch = match &config.scratch_dir {
        Some(host) => host.clone(),
        None => {
            let s = dir.join("scratch");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&s)
                .map_err(prep_err)?;
            s
        }
    };
    let home = scratch.to_string_lossy().into_owned();
    let seccomp = if seccomp::available() && !config.disabled.contains(&SandboxFeature::Seccomp) {
        seccomp::filter()
    } else {
        None
    };
    let mut envp = environment(&home)?;
    // /tmp of the host; the scratch directory is the better place.
    envp.retain(|e| !e.as_bytes().starts_with(b"TMPDIR="));
    envp.push(cstring(&format!("TMPDIR={home}"))?);
    Ok(Plan {
        exe: cstr(&interp.exe)?,
        argv: interpreter_args(interp, config)?,
        envp,
        cwd: cstr(&scratch)?,
        rlimits: rlimits(config, false),
        seccomp,
        boot: boot_frame(interp),
        ns: None,
        skip_landlock: true,
    })
}

const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// Top-level system directories bound read-only (symlinks like `/lib -> usr/lib`
/// are recreated instead).
fn system_dirs() -> Vec<PathBuf> {
    [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| {
        std::fs::symlink_metadata(p)
            .map(|m| m.is_dir())
            .unwrap_or(false)
    })
    .collect()
}

/// Files of /etc the interpreter and libc want.
fn system_files() -> Vec<PathBuf> {
    ["/etc/ld.so.cache", "/etc/localtime"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.is_file())
                .unwrap_or(false)
        })
        .collect()
}

/// The interpreter's directories and the configured read-only paths that the
/// system directories do not already cover.
fn exposed_dirs(config: &PythonSandbox, interp: &Interpreter, covered: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let extra = config
        .read_only_paths
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok());
    for dir in interp.dirs.iter().cloned().chain(extra) {
        if dir == Path::new("/") || dir.starts_with("/proc") || dir.starts_with("/dev") {
            continue;
        }
        if covered.iter().any(|c| dir.starts_with(c)) || out.iter().any(|o| dir.starts_with(o)) {
            continue;
        }
        out.retain(|o| !o.starts_with(&dir));
        out.push(dir);
    }
    out
}
