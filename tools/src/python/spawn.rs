//! Starting a worker: `clone` into fresh namespaces, build the minimal root, drop
//! privileges, set limits and filters, `execve` the interpreter.
//!
//! Everything the child needs is prepared on the host ([`Plan`]); between `clone`
//! and `execve` the child only makes system calls (no allocation, no locks), since
//! the host process is multi-threaded. The clone happens on one long-lived thread
//! (see [`submit`]) because `PR_SET_PDEATHSIG` fires when the *thread* that created
//! the child exits.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libc::{c_char, c_int, c_long, pid_t};

use super::error::{one_line, PythonError, SandboxFeature};
use super::landlock;

/// Namespaces of a sandboxed worker.
const NS_FLAGS: c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// Most bind mounts a plan may have (their sources are opened before mounting).
pub(crate) const MAX_BINDS: usize = 64;

/// A bind mount from the host into the new root.
pub(crate) struct Bind {
    /// Host source.
    pub src: CString,
    /// Mount point, under the staging directory.
    pub dst: CString,
    /// `MS_REC` (directories).
    pub recursive: bool,
    /// Shown in errors.
    pub label: String,
}

/// A tmpfs mount.
pub(crate) struct Tmpfs {
    /// Mount point, under the staging directory.
    pub dst: CString,
    /// Mount options (`size=...,mode=...`).
    pub data: CString,
    /// Shown in errors.
    pub label: String,
}

/// A path made read-only (and nosuid, nodev) after `pivot_root`, as seen inside.
pub(crate) struct ReadOnly {
    pub path: CString,
    pub recursive: bool,
}

/// What a skeleton entry is.
pub(crate) enum NodeKind {
    /// A directory (a mount point, or a parent of one).
    Dir,
    /// A regular file with these contents (a file mount point when empty).
    File(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(CString),
}

/// An entry of the new root's skeleton, created in the child on a fresh tmpfs.
pub(crate) struct Node {
    /// Path under the staging directory.
    pub path: CString,
    pub kind: NodeKind,
    /// Lies inside one of the tmpfs mounts (`/tmp`...): created after they are
    /// mounted, so it is not hidden by them.
    pub late: bool,
}

/// The namespace part of a plan.
pub(crate) struct NsPlan {
    /// An existing host directory the new root's tmpfs is mounted on (only inside
    /// the worker's private mount namespace; the host sees nothing).
    pub staging: CString,
    /// Options of the new root's tmpfs.
    pub root_data: CString,
    /// Skeleton entries, parents first.
    pub nodes: Vec<Node>,
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<Tmpfs>,
    /// The skeleton's `proc` directory, under the staging directory.
    pub proc_dir: CString,
    pub read_only: Vec<ReadOnly>,
    /// Contents for `/proc/<pid>/uid_map` and `gid_map`.
    pub uid_map: String,
    pub gid_map: String,
    /// Write `deny` to `/proc/<pid>/setgroups` (needed when not privileged).
    pub deny_setgroups: bool,
    /// Clear supplementary groups (host root: they would still count on host files).
    pub drop_groups: bool,
    /// uid and gid inside the namespace.
    pub inner_id: u32,
    pub landlock: Option<landlock::Plan>,
}

/// Everything needed to start one worker.
pub(crate) struct Plan {
    /// Interpreter path (the same inside and outside).
    pub exe: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Working directory (inside path when sandboxed).
    pub cwd: CString,
    /// `(resource, soft, hard)`, already clamped to the current hard limits.
    pub rlimits: Vec<(c_int, u64, u64)>,
    pub seccomp: Option<Vec<libc::sock_filter>>,
    /// Written to the request channel first (the runner's code), may be empty.
    pub boot: Vec<u8>,
    pub ns: Option<NsPlan>,
    /// Features the configuration pretends are missing in the child (Landlock).
    pub skip_landlock: bool,
}

/// A started worker's host-side ends.
pub(crate) struct Spawned {
    pub pid: pid_t,
    /// Request channel (the worker's fd 3), non-blocking.
    pub req: OwnedFd,
    /// Response channel (the worker's fd 4), non-blocking.
    pub resp: OwnedFd,
    /// The worker's fds 1 and 2 until the runner takes them over, non-blocking.
    pub diag: OwnedFd,
    /// Degraded layers, one line each.
    pub warnings: Vec<String>,
    /// Whether Landlock was applied.
    pub landlock: bool,
    /// Whether /proc was mounted.
    pub proc: bool,
}

// Child stages, reported with errno when they fail.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Stage {
    Sync = 0,
    Fds,
    MountPrivate,
    NewRoot,
    Skeleton,
    Bind,
    Tmpfs,
    Proc,
    Pivot,
    Umount,
    ReadOnly,
    Hostname,
    Groups,
    SetGid,
    SetUid,
    Setsid,
    Chdir,
    Rlimit,
    NoNewPrivs,
    Landlock,
    Seccomp,
    DeathSig,
    Exec,
}

const STAGES: [&str; 23] = [
    "waiting for the parent",
    "arranging file descriptors",
    "making mounts private",
    "mounting the new root",
    "creating the root skeleton",
    "bind-mounting",
    "mounting a tmpfs",
    "mounting /proc",
    "pivoting into the new root",
    "detaching the host root",
    "remounting read-only",
    "setting the host name",
    "clearing supplementary groups",
    "setting the group id",
    "setting the user id",
    "creating a session",
    "entering the working directory",
    "setting resource limits",
    "setting no_new_privs",
    "applying Landlock",
    "installing the seccomp filter",
    "setting the parent-death signal",
    "executing the interpreter",
];

const FATAL: u8 = 0;
const WARN: u8 = 1;
const RECORD: usize = 8;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const AT_RECURSIVE: c_int = 0x8000;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Writes one record to the parent.
unsafe fn report(fd: RawFd, kind: u8, stage: Stage, index: usize, err: i32) {
    let idx = (index.min(u16::MAX as usize) as u16).to_le_bytes();
    let e = err.to_le_bytes();
    let rec: [u8; RECORD] = [kind, stage as u8, idx[0], idx[1], e[0], e[1], e[2], e[3]];
    let _ = libc::write(fd, rec.as_ptr().cast(), RECORD);
}

unsafe fn fail(fd: RawFd, stage: Stage, index: usize) -> ! {
    report(fd, FATAL, stage, index, errno());
    libc::_exit(126)
}

/// The child's file descriptors, before rearrangement.
struct ChildFds {
    stdin: RawFd,
    diag: RawFd,
    req: RawFd,
    resp: RawFd,
    err: RawFd,
    sync: RawFd,
}

/// Runs in the cloned child. Never returns.
///
/// # Safety
/// Only async-signal-safe system calls; every pointer comes from `plan`, `argv` and
/// `envp`, which the parent keeps alive (the child has a copy of its memory).
unsafe fn child(plan: &Plan, argv: &[*const c_char], envp: &[*const c_char], fds: &ChildFds) -> ! {
    let mut err = fds.err;
    // Signals: nothing blocked, default dispositions (the host may ignore SIGPIPE or
    // have handlers that make no sense here).
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);

    // Wait until the parent has written the id maps.
    let mut go = 0u8;
    loop {
        let r = libc::read(fds.sync, (&mut go as *mut u8).cast(), 1);
        if r == 1 {
            break;
        }
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        if r < 0 {
            report(err, FATAL, Stage::Sync, 0, errno());
        }
        libc::_exit(125);
    }

    // fds: 0 /dev/null, 1+2 diagnostics, 3 requests, 4 responses, 5 errors, 6 sync.
    let src = [fds.stdin, fds.diag, fds.req, fds.resp, fds.err, fds.sync];
    let mut high = [0; 6];
    for (i, fd) in src.iter().enumerate() {
        high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64);
        if high[i] < 0 {
            fail(err, Stage::Fds, i);
        }
    }
    let targets: [(usize, c_int, c_int); 7] = [
        (0, 0, 0),
        (1, 1, 0),
        (1, 2, 0),
        (2, 3, 0),
        (3, 4, 0),
        (4, 5, libc::O_CLOEXEC),
        (5, 6, libc::O_CLOEXEC),
    ];
    for (i, (from, to, flags)) in targets.iter().enumerate() {
        if libc::dup3(high[*from], *to, *flags) < 0 {
            fail(err, Stage::Fds, i);
        }
    }
    err = 5;
    let sync = 6;
    if libc::syscall(libc::SYS_close_range, 7u32, u32::MAX, 0u32) < 0 {
        let max = libc::sysconf(libc::_SC_OPEN_MAX);
        let max = if max <= 0 { 65536 } else { max.min(1 << 20) } as c_int;
        for fd in 7..max {
            libc::close(fd);
        }
    }

    let mut inner_id = None;
    if let Some(ns) = &plan.ns {
        inner_id = Some(ns.inner_id);
        mount_root(ns, err);
        if libc::sethostname(c"sandbox".as_ptr(), 7) < 0 {
            report(err, WARN, Stage::Hostname, 0, errno());
        }
        // Raw system calls: glibc's wrappers for set*id and setgroups synchronise
        // every thread of the process, and the threads it remembers do not exist
        // in this child (it could wait on a lock held at clone time forever).
        if ns.drop_groups
            && libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) < 0
        {
            fail(err, Stage::Groups, 0);
        }
    }
    // A session and process group of its own: `kill(0, sig)` addresses the caller's
    // process group directly, not through the PID namespace, so inheriting the
    // host's group would let the code signal the host.
    if libc::setsid() < 0 {
        fail(err, Stage::Setsid, 0);
    }
    if let Some(id) = inner_id {
        if libc::syscall(libc::SYS_setresgid, id, id, id) < 0 {
            fail(err, Stage::SetGid, 0);
        }
        if libc::syscall(libc::SYS_setresuid, id, id, id) < 0 {
            fail(err, Stage::SetUid, 0);
        }
    }
    if libc::chdir(plan.cwd.as_ptr()) < 0 {
        fail(err, Stage::Chdir, 0);
    }
    for (i, (res, soft, hard)) in plan.rlimits.iter().enumerate() {
        let lim = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        if libc::setrlimit(*res as _, &lim) < 0 {
            fail(err, Stage::Rlimit, i);
        }
    }
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
        fail(err, Stage::NoNewPrivs, 0);
    }
    if let Some(ll) = plan.ns.as_ref().and_then(|ns| ns.landlock.as_ref()) {
        if !plan.skip_landlock {
            if let Err(e) = ll.apply() {
                report(err, WARN, Stage::Landlock, 0, e);
            }
        }
    }
    if let Some(prog) = &plan.seccomp {
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
            0,
            0,
        ) < 0
        {
            fail(err, Stage::Seccomp, 0);
        }
    }
    // Changing the uid cleared the parent-death signal: set it again, then make sure
    // the parent did not die in between (it holds the sync pipe until we exec).
    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
        fail(err, Stage::DeathSig, 0);
    }
    let mut pfd = libc::pollfd {
        fd: sync,
        events: 0,
        revents: 0,
    };
    if libc::poll(&mut pfd, 1, 0) < 0 || pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
        libc::_exit(125);
    }
    libc::execve(plan.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
    fail(err, Stage::Exec, 0)
}

/// `/proc/self/fd/<fd>` into `buf`, NUL-terminated, without allocating.
fn fd_path(fd: c_int, buf: &mut [u8; 32]) -> *const c_char {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    buf.as_ptr().cast()
}

unsafe fn write_file(path: &CString, data: &[u8]) -> Result<(), ()> {
    let fd = libc::open(
        path.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
        0o644,
    );
    if fd < 0 {
        return Err(());
    }
    let mut rest = data;
    while !rest.is_empty() {
        let n = libc::write(fd, rest.as_ptr().cast(), rest.len());
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            libc::close(fd);
            return Err(());
        }
        rest = &rest[n as usize..];
    }
    libc::close(fd);
    Ok(())
}

/// Creates the skeleton entries that lie inside the tmpfs mounts (`late`) or not.
unsafe fn create_nodes(ns: &NsPlan, late: bool, err: RawFd) {
    for (i, node) in ns.nodes.iter().enumerate() {
        if node.late != late {
            continue;
        }
        let ok = match &node.kind {
            NodeKind::Dir => libc::mkdir(node.path.as_ptr(), 0o755) == 0 || errno() == libc::EEXIST,
            NodeKind::File(data) => write_file(&node.path, data).is_ok(),
            NodeKind::Symlink(target) => libc::symlink(target.as_ptr(), node.path.as_ptr()) == 0,
        };
        if !ok {
            fail(err, Stage::Skeleton, i);
        }
    }
}

/// Builds the new root on a tmpfs and pivots into it.
unsafe fn mount_root(ns: &NsPlan, err: RawFd) {
    let null = std::ptr::null::<c_char>();
    // Open the bind sources first, with the caller's own rights (host root can
    // traverse mode-0700 directories like /root; the skeleton is then built as the
    // mapped sandbox user). The kernel resolves /proc/self/fd links directly.
    let mut sources = [-1 as c_int; MAX_BINDS];
    for (i, b) in ns.binds.iter().enumerate().take(MAX_BINDS) {
        sources[i] = libc::open(b.src.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if sources[i] < 0 {
            fail(err, Stage::Bind, i);
        }
    }
    if libc::mount(
        null,
        c"/".as_ptr(),
        null,
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ) < 0
    {
        fail(err, Stage::MountPrivate, 0);
    }
    if libc::mount(
        c"tmpfs".as_ptr(),
        ns.staging.as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV,
        ns.root_data.as_ptr().cast(),
    ) < 0
    {
        fail(err, Stage::NewRoot, 0);
    }
    // Files on a tmpfs of this user namespace need an owner mapped in it.
    libc::syscall(libc::SYS_setfsgid, ns.inner_id);
    libc::syscall(libc::SYS_setfsuid, ns.inner_id);
    create_nodes(ns, false, err);
    for (i, t) in ns.tmpfs.iter().enumerate() {
        if libc::mount(
            c"tmpfs".as_ptr(),
            t.dst.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            t.data.as_ptr().cast(),
        ) < 0
        {
            fail(err, Stage::Tmpfs, i);
        }
    }
    create_nodes(ns, true, err);
    let mut path = [0u8; 32];
    for (i, b) in ns.binds.iter().enumerate().take(MAX_BINDS) {
        let flags = libc::MS_BIND | if b.recursive { libc::MS_REC } else { 0 };
        let src = fd_path(sources[i], &mut path);
        if libc::mount(src, b.dst.as_ptr(), null, flags, std::ptr::null()) < 0 {
            fail(err, Stage::Bind, i);
        }
        libc::close(sources[i]);
    }
    // Before the host root goes: the kernel only allows a new proc mount in a user
    // namespace whose mount namespace shows a fully visible one.
    if libc::mount(
        c"proc".as_ptr(),
        ns.proc_dir.as_ptr(),
        c"proc".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        std::ptr::null(),
    ) < 0
    {
        report(err, WARN, Stage::Proc, 0, errno());
    }
    if libc::chdir(ns.staging.as_ptr()) < 0 {
        fail(err, Stage::Pivot, 0);
    }
    if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0 {
        fail(err, Stage::Pivot, 1);
    }
    if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0 {
        fail(err, Stage::Umount, 0);
    }
    if libc::chdir(c"/".as_ptr()) < 0 {
        fail(err, Stage::Pivot, 2);
    }
    for (i, ro) in ns.read_only.iter().enumerate() {
        if make_read_only(ro).is_err() {
            fail(err, Stage::ReadOnly, i);
        }
    }
}

/// The kernel's `struct statfs` on 64-bit targets (libc hides `f_flags`).
#[repr(C)]
struct KernelStatfs {
    counts: [u64; 7],
    fsid: [i32; 2],
    namelen: i64,
    frsize: i64,
    flags: i64,
    spare: [i64; 4],
}

unsafe fn make_read_only(ro: &ReadOnly) -> Result<(), ()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if ro.recursive { AT_RECURSIVE } else { 0 };
    let r = libc::syscall(
        libc::SYS_mount_setattr,
        libc::AT_FDCWD,
        ro.path.as_ptr(),
        flags as libc::c_uint,
        &attr as *const MountAttr,
        std::mem::size_of::<MountAttr>(),
    );
    if r == 0 {
        return Ok(());
    }
    if errno() != libc::ENOSYS {
        return Err(());
    }
    // Before Linux 5.12: remount the top mount, keeping the flags the kernel locked.
    // (statfs, not glibc's statvfs, which may read /proc/mounts with malloc.)
    let mut st: KernelStatfs = std::mem::zeroed();
    if libc::syscall(
        libc::SYS_statfs,
        ro.path.as_ptr(),
        &mut st as *mut KernelStatfs,
    ) < 0
    {
        return Err(());
    }
    let mut keep: libc::c_ulong = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.flags as libc::c_ulong & st_flag != 0 {
            keep |= ms_flag;
        }
    }
    let null = std::ptr::null::<c_char>();
    let flags = libc::MS_BIND
        | libc::MS_REMOUNT
        | libc::MS_RDONLY
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | keep;
    if libc::mount(null, ro.path.as_ptr(), null, flags, std::ptr::null()) < 0 {
        return Err(());
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Largest runner frame written before the child exists (below the default pipe
/// capacity, so the write cannot block).
const PREWRITE_MAX: usize = 60 * 1024;

fn write_blocking(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writing from a valid slice to a descriptor we own.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

pub(crate) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn spawn_err(stage: &'static str, source: io::Error) -> PythonError {
    PythonError::Spawn { stage, source }
}

/// `clone(2)` without a new stack: the child continues like after `fork`.
///
/// # Safety
/// The child must only make async-signal-safe calls until it execs or exits.
unsafe fn raw_clone(flags: c_int) -> c_long {
    libc::syscall(
        libc::SYS_clone,
        (flags | libc::SIGCHLD) as libc::c_ulong,
        0usize,
        0usize,
        0usize,
        0usize,
    )
}

/// Kills and reaps a child that never became a worker.
pub(crate) fn kill_and_reap(pid: pid_t) {
    // SAFETY: `pid` is our unreaped child, so the number cannot have been reused.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 && errno() == libc::EINTR {}
    }
}

/// Starts a worker according to `plan`. Blocking; call on the spawner thread.
pub(crate) fn spawn(plan: &Plan) -> Result<Spawned, PythonError> {
    let (sync_r, sync_w) = pipe().map_err(|e| spawn_err("creating pipes", e))?;
    let (err_r, err_w) = pipe().map_err(|e| spawn_err("creating pipes", e))?;
    let (req_r, req_w) = pipe().map_err(|e| spawn_err("creating pipes", e))?;
    let (resp_r, resp_w) = pipe().map_err(|e| spawn_err("creating pipes", e))?;
    let (diag_r, diag_w) = pipe().map_err(|e| spawn_err("creating pipes", e))?;
    // SAFETY: plain open of a constant path.
    let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if devnull < 0 {
        return Err(spawn_err("opening /dev/null", io::Error::last_os_error()));
    }
    // SAFETY: a descriptor we just opened.
    let devnull = unsafe { OwnedFd::from_raw_fd(devnull) };

    // The runner's code goes into the request pipe before the child exists, so the
    // interpreter can read it without waiting for this thread (a pipe holds 64 KiB;
    // larger code is written after the exec).
    let mut boot_left: &[u8] = &plan.boot;
    if boot_left.len() <= PREWRITE_MAX {
        write_blocking(&req_w, boot_left).map_err(|e| spawn_err("writing the runner", e))?;
        boot_left = &[];
    }
    let mut argv: Vec<*const c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const c_char> = plan.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let fds = ChildFds {
        stdin: devnull.as_raw_fd(),
        diag: diag_w.as_raw_fd(),
        req: req_r.as_raw_fd(),
        resp: resp_w.as_raw_fd(),
        err: err_w.as_raw_fd(),
        sync: sync_r.as_raw_fd(),
    };
    let flags = if plan.ns.is_some() { NS_FLAGS } else { 0 };
    // SAFETY: the child branch only runs `child`, which never returns and only makes
    // system calls on data prepared above.
    let pid = unsafe { raw_clone(flags) };
    if pid == 0 {
        // SAFETY: see `child`.
        unsafe { child(plan, &argv, &envp, &fds) }
    }
    if pid < 0 {
        let e = io::Error::last_os_error();
        return Err(if plan.ns.is_some() {
            diagnose_clone(e)
        } else {
            spawn_err("forking", e)
        });
    }
    let pid = pid as pid_t;
    drop((sync_r, err_w, req_r, resp_w, diag_w, devnull));

    if let Some(ns) = &plan.ns {
        if let Err(e) = write_maps(pid, ns) {
            kill_and_reap(pid);
            return Err(e);
        }
    }
    // SAFETY: writing one byte from a local to a pipe we own.
    let wrote = unsafe { libc::write(sync_w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
    if wrote != 1 {
        let e = io::Error::last_os_error();
        kill_and_reap(pid);
        return Err(spawn_err("signalling the child", e));
    }
    let records = match read_records(&err_r, Instant::now() + Duration::from_secs(10)) {
        Ok(r) => r,
        Err(e) => {
            kill_and_reap(pid);
            return Err(spawn_err("waiting for the child to start", e));
        }
    };
    drop(sync_w);
    let mut warnings = Vec::new();
    let mut landlock =
        plan.ns.as_ref().is_some_and(|ns| ns.landlock.is_some()) && !plan.skip_landlock;
    let mut proc = plan.ns.is_some();
    for rec in &records {
        let (kind, stage, index, err) = (
            rec[0],
            rec[1] as usize,
            u16::from_le_bytes([rec[2], rec[3]]) as usize,
            i32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]),
        );
        let what = STAGES.get(stage).copied().unwrap_or("starting");
        let os = io::Error::from_raw_os_error(err);
        if kind == WARN {
            if stage == Stage::Landlock as usize {
                landlock = false;
            }
            if stage == Stage::Proc as usize {
                proc = false;
            }
            warnings.push(format!("{what}: {os}"));
            continue;
        }
        kill_and_reap(pid);
        return Err(child_error(plan, stage, index, what, os));
    }
    // No fatal record and the pipe closed: exec succeeded, unless the child died.
    let mut status = 0;
    // SAFETY: our own unreaped child.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        return Err(PythonError::Crashed {
            detail: format!(
                "the worker died while starting ({})",
                describe_status(status)
            ),
        });
    }
    if let Err(e) = write_blocking(&req_w, boot_left) {
        kill_and_reap(pid);
        return Err(spawn_err("writing the runner", e));
    }
    for fd in [&req_w, &resp_r, &diag_r] {
        if let Err(e) = set_nonblocking(fd) {
            kill_and_reap(pid);
            return Err(spawn_err("configuring pipes", e));
        }
    }
    Ok(Spawned {
        pid,
        req: req_w,
        resp: resp_r,
        diag: diag_r,
        warnings,
        landlock,
        proc,
    })
}

fn child_error(plan: &Plan, stage: usize, index: usize, what: &str, os: io::Error) -> PythonError {
    let label = plan.ns.as_ref().and_then(|ns| {
        if stage == Stage::Bind as usize {
            ns.binds.get(index).map(|b| b.label.clone())
        } else if stage == Stage::Skeleton as usize {
            ns.nodes
                .get(index)
                .map(|n| n.path.to_string_lossy().into_owned())
        } else if stage == Stage::Tmpfs as usize {
            ns.tmpfs.get(index).map(|t| t.label.clone())
        } else if stage == Stage::ReadOnly as usize {
            ns.read_only
                .get(index)
                .map(|r| r.path.to_string_lossy().into_owned())
        } else {
            None
        }
    });
    let reason = match label {
        Some(l) => format!("{what} {l}: {os}"),
        None => format!("{what}: {os}"),
    };
    let feature = match stage {
        s if (Stage::MountPrivate as usize..=Stage::ReadOnly as usize).contains(&s) => {
            Some(SandboxFeature::MountNamespace)
        }
        s if (Stage::Groups as usize..=Stage::SetUid as usize).contains(&s) => {
            Some(SandboxFeature::UserNamespace)
        }
        s if s == Stage::Seccomp as usize => Some(SandboxFeature::Seccomp),
        _ => None,
    };
    match feature {
        Some(feature) if plan.ns.is_some() || feature == SandboxFeature::Seccomp => {
            PythonError::SandboxUnavailable {
                feature,
                reason: one_line(&reason, 300),
            }
        }
        _ if stage == Stage::Exec as usize => PythonError::Interpreter {
            path: std::path::PathBuf::from(plan.exe.to_string_lossy().into_owned()),
            reason: one_line(&reason, 300),
        },
        _ => PythonError::Spawn {
            stage: STAGES.get(stage).copied().unwrap_or("starting"),
            source: os,
        },
    }
}

fn read_records(fd: &OwnedFd, deadline: Instant) -> io::Result<Vec<[u8; RECORD]>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer within 10 s",
            ));
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as c_int) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            continue;
        }
        // SAFETY: reading into a local buffer of the given size.
        let n = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n as usize]);
    }
    Ok(buf
        .chunks_exact(RECORD)
        .map(|c| {
            let mut rec = [0u8; RECORD];
            rec.copy_from_slice(c);
            rec
        })
        .collect())
}

fn write_maps(pid: pid_t, ns: &NsPlan) -> Result<(), PythonError> {
    let unavailable = |what: &str, e: io::Error| PythonError::SandboxUnavailable {
        feature: SandboxFeature::UserNamespace,
        reason: one_line(&format!("writing {what}: {e}"), 300),
    };
    let proc = format!("/proc/{pid}");
    if ns.deny_setgroups {
        std::fs::write(format!("{proc}/setgroups"), "deny")
            .map_err(|e| unavailable("setgroups", e))?;
    }
    std::fs::write(format!("{proc}/uid_map"), &ns.uid_map)
        .map_err(|e| unavailable("uid_map", e))?;
    std::fs::write(format!("{proc}/gid_map"), &ns.gid_map)
        .map_err(|e| unavailable("gid_map", e))?;
    Ok(())
}

/// Finds which namespace a failed clone could not create, by trying them one by
/// one in throw-away children.
fn diagnose_clone(e: io::Error) -> PythonError {
    let steps = [
        (libc::CLONE_NEWUSER, SandboxFeature::UserNamespace),
        (libc::CLONE_NEWNS, SandboxFeature::MountNamespace),
        (libc::CLONE_NEWPID, SandboxFeature::PidNamespace),
        (libc::CLONE_NEWNET, SandboxFeature::NetworkNamespace),
    ];
    let mut flags = 0;
    for (flag, feature) in steps {
        flags |= flag;
        // SAFETY: the child exits immediately.
        let pid = unsafe { raw_clone(flags) };
        if pid == 0 {
            // SAFETY: leave without running any host code.
            unsafe { libc::_exit(0) }
        }
        if pid < 0 {
            return PythonError::SandboxUnavailable {
                feature,
                reason: format!("clone failed: {}", io::Error::last_os_error()),
            };
        }
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid as pid_t, &mut status, 0) };
    }
    PythonError::SandboxUnavailable {
        feature: SandboxFeature::UserNamespace,
        reason: format!("clone with IPC, UTS and cgroup namespaces failed: {e}"),
    }
}

/// Describes a wait status in words.
pub(crate) fn describe_status(status: c_int) -> String {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        format!("killed by signal {sig} ({})", signal_name(sig))
    } else if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else {
        format!("wait status {status}")
    }
}

fn signal_name(sig: c_int) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the spawner thread, which lives as long as the process (workers get
/// `PR_SET_PDEATHSIG`, which fires when the creating thread exits).
pub(crate) fn submit(job: Job) -> Result<(), PythonError> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let _ = std::thread::Builder::new()
            .name("jielong-python-spawner".to_owned())
            .spawn(move || {
                for job in rx {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        Mutex::new(tx)
    });
    let gone = || {
        spawn_err(
            "handing over to the spawner thread",
            io::Error::other("the spawner thread is gone"),
        )
    };
    let tx = tx.lock().map_err(|_| gone())?;
    tx.send(job).map_err(|_| gone())
}
