//! The sandboxed Python engine behind the `python` tool (Program-of-Thought).
//!
//! The model writes Python; a [`PythonSession`] runs it in a persistent worker (so
//! variables survive between calls, like a notebook) and returns a [`RunOutput`]:
//! printed output, the `repr` of a trailing expression, and the traceback if the
//! code raised.
//!
//! ```no_run
//! # async fn demo() -> Result<(), jielong_tools::python::PythonError> {
//! use jielong_tools::python::PythonSandbox;
//! let mut session = PythonSandbox::new().start().await?;
//! session.run("x = 41").await?;
//! assert_eq!(session.run("x + 1").await?.value.as_deref(), Some("42"));
//! # Ok(()) }
//! ```
//!
//! # Threat model
//!
//! The code is **hostile**: the model may have been prompt-injected by a web page or
//! a document, so the code may try to read secrets (files, environment, other
//! processes' memory), reach the network, modify the host, exhaust resources, or
//! outlive the session. The engine must keep all of that inside the worker, and
//! keep the host (the Jielong process and its machine) unaffected except for a
//! bounded use of CPU, memory and time.
//!
//! Out of scope: kernel exploits through the system calls that remain allowed (the
//! seccomp list narrows the surface, it does not close it), side channels, and the
//! *content* of the output (the code decides what it prints; the caller must treat
//! it as untrusted text).
//!
//! # Layers
//!
//! Each worker is `clone`d straight into new **user, mount, PID, network, IPC, UTS
//! and cgroup namespaces** (no setuid helper, no util-linux):
//!
//! - **Identity.** Inside, the code runs as uid/gid 1000 with no capabilities. On the
//!   host that is the calling user, or `nobody` when the host runs as root (so
//!   `RLIMIT_NPROC` applies and host files grant only what they grant everybody).
//!   Supplementary groups are dropped (root) or frozen (`setgroups` denied).
//! - **File system.** A minimal root that the worker builds on a tmpfs in its own
//!   mount namespace before `pivot_root` (nothing is written on the host): `/usr`,
//!   `/bin`, `/lib*` (or their symlinks), the interpreter's
//!   prefix, `/etc/ld.so.cache` and `/etc/localtime`, all read-only, nosuid, nodev;
//!   a synthetic `/etc/passwd`; `/dev` with only null, zero, full, random, urandom;
//!   a private `/proc` of the PID namespace (so `/proc/1` is the worker, host
//!   processes are invisible); `/scratch` (working directory and `$HOME`), `/tmp`
//!   and `/dev/shm` as size-limited tmpfs. The host root is detached: nothing else
//!   exists inside.
//! - **Network.** A fresh network namespace has only a loopback that is down; the
//!   seccomp filter additionally refuses every socket family but `AF_UNIX`, and
//!   Landlock (ABI ≥ 4) every TCP bind and connect.
//! - **Processes.** The worker is PID 1 of its namespace: when it dies the kernel
//!   kills every process in it, so double-forked daemons die with the session.
//!   Workers get `PR_SET_PDEATHSIG` (tied to a spawner thread that lives as long as
//!   the host process), so they die with the host too.
//! - **seccomp** deny list: ptrace and process_vm_*, mount and the new mount API,
//!   pivot_root/chroot/unshare/setns and namespace flags to clone (clone3 answers
//!   ENOSYS so libc falls back to the inspectable clone), keyrings, bpf,
//!   perf_event_open, userfaultfd, io_uring, module/kexec loading, clock and host
//!   settings, TIOCSTI, x32 system calls; foreign architectures are killed.
//! - **Landlock** (when the kernel has it, otherwise a warning): read/execute on `/`,
//!   read/write only on `/scratch`, `/tmp`, `/dev/shm` and the device nodes; signal
//!   and abstract socket scoping (ABI ≥ 6).
//! - **Limits** (`setrlimit`): address space, processes/threads, file size,
//!   open files, no core dumps; per call a wall-time limit and a CPU-time limit
//!   measured by the host (the worker is killed, the session restarts on the next
//!   call); output is cut to a byte limit. `PR_SET_NO_NEW_PRIVS` is set.
//! - **Environment** is rebuilt from scratch (`PATH`, `HOME`, locale, a few
//!   `PYTHON*`/thread-count variables): nothing of the host's leaks.
//!
//! The sandbox **fails closed**: if user, mount, PID or network namespaces or
//! seccomp are unavailable, [`PythonSession::start`] returns
//! [`PythonError::SandboxUnavailable`] naming the feature, unless
//! [`PythonSandbox::allow_unsandboxed`] is set; then the worker runs as a plain
//! child in its own process group (with `PR_SET_PDEATHSIG`), with the limits,
//! no_new_privs and (if available) seccomp (so still no network sockets), and
//! [`SandboxLayers::unsandboxed`] says so. There, the file system is the host's,
//! and a descendant that leaves the process group can outlive the session.
//!
//! Known limits: memory is bounded per process (`RLIMIT_AS`), so the total is up to
//! `max_processes × memory` plus the tmpfs sizes (no cgroup is required); the CPU
//! limit of subprocesses is `RLIMIT_CPU`, which they may raise (the wall-time limit
//! still ends them); output captured at the file-descriptor level (subprocesses,
//! `os.write`) is ordered with `print` output at each `print`, not byte by byte;
//! output of background threads or processes between calls is dropped or shows up
//! in the next call; a process forked by the code that returns into the runner
//! exits silently instead of answering.
//!
//! # Worker protocol
//!
//! The runner script (`runner.py`, embedded) is compiled once per interpreter (when
//! the interpreter is first resolved, on the host) and sent as the first frame to a
//! tiny `python -I -S -B -c` bootstrap; compiling it at every start would cost more
//! than the interpreter's own start. It speaks length-prefixed frames on dedicated
//! pipes (fd 3 in, fd 4 out). `sys.stdout`
//! and `sys.stderr` are captured in-process; fds 1 and 2 point to memory files read
//! after each write, so `os.write(1, …)` or a subprocess cannot reach the protocol.
//! Code can still write to fd 4 itself: the host matches each answer to its request
//! id, bounds frame sizes and restarts the worker on garbage.

mod bench;
mod error;
mod interp;
mod landlock;
mod layout;
mod output;
mod seccomp;
mod session;
mod spawn;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

pub use bench::{bench_overhead, BenchReport};
pub use error::{LimitKind, PythonError, SandboxFeature};
pub use output::RunOutput;
pub use session::{PythonSession, SandboxLayers, MAX_CODE_BYTES};

const MIB: u64 = 1024 * 1024;

/// Configuration of the Python engine (a builder). [`start`](Self::start) opens a
/// [`PythonSession`].
#[derive(Debug, Clone)]
pub struct PythonSandbox {
    python: PathBuf,
    wall_time: Duration,
    cpu_time: Duration,
    memory: u64,
    max_processes: u32,
    max_file_size: u64,
    max_output: usize,
    scratch_size: u64,
    scratch_dir: Option<PathBuf>,
    read_only_paths: Vec<PathBuf>,
    site_packages: bool,
    allow_unsandboxed: bool,
    disabled: Vec<SandboxFeature>,
    startup_timeout: Duration,
}

impl Default for PythonSandbox {
    fn default() -> Self {
        PythonSandbox {
            python: PathBuf::from("python3"),
            wall_time: Duration::from_secs(10),
            cpu_time: Duration::from_secs(10),
            memory: 512 * MIB,
            max_processes: 16,
            max_file_size: 16 * MIB,
            max_output: 16 * 1024,
            scratch_size: 64 * MIB,
            scratch_dir: None,
            read_only_paths: Vec::new(),
            site_packages: true,
            allow_unsandboxed: false,
            disabled: Vec::new(),
            startup_timeout: Duration::from_secs(20),
        }
    }
}

impl PythonSandbox {
    /// The defaults: `python3` from `PATH`, 10 s wall and CPU time per call,
    /// 512 MiB address space, 16 processes/threads, 16 MiB files, 16 KiB output,
    /// 64 MiB tmpfs scratch, sandbox required.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens a session with this configuration.
    pub async fn start(&self) -> Result<PythonSession, PythonError> {
        PythonSession::start(self.clone()).await
    }

    /// The interpreter: a name looked up in `PATH` when the session starts, or a
    /// path. Shims (pyenv) are resolved to the real executable.
    pub fn python(mut self, python: impl Into<PathBuf>) -> Self {
        self.python = python.into();
        self
    }

    /// Wall-clock limit per call (default 10 s).
    pub fn wall_time(mut self, limit: Duration) -> Self {
        self.wall_time = limit;
        self
    }

    /// CPU-time limit per call (default 10 s), measured on the worker by the host.
    pub fn cpu_time(mut self, limit: Duration) -> Self {
        self.cpu_time = limit;
        self
    }

    /// Address-space limit per process in bytes (default 512 MiB).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// Maximum processes and threads of the sandbox user (default 16).
    pub fn max_processes(mut self, n: u32) -> Self {
        self.max_processes = n.max(1);
        self
    }

    /// Largest file the code may write, in bytes (default 16 MiB).
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// Output bytes returned per call (default 16 KiB); the rest is replaced by a
    /// `…[output truncated: N more bytes]` marker. The value's `repr` and the
    /// traceback are cut to the same size.
    pub fn max_output(mut self, bytes: usize) -> Self {
        self.max_output = bytes.max(64);
        self
    }

    /// Size of each of the `/scratch` and `/tmp` tmpfs mounts (default 64 MiB;
    /// `/dev/shm` gets a quarter).
    pub fn scratch_size(mut self, bytes: u64) -> Self {
        self.scratch_size = bytes.max(MIB);
        self
    }

    /// Use a host directory as `/scratch` (read-write, kept after the session,
    /// shared by its workers) instead of a private tmpfs. It must be writable by
    /// the sandbox's host uid (the calling user, or `nobody` when running as root),
    /// and it has no size quota beyond the per-file limit.
    pub fn scratch_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scratch_dir = Some(dir.into());
        self
    }

    /// Also expose a host path read-only, at the same path (a data set, say).
    pub fn read_only_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.read_only_paths.push(path.into());
        self
    }

    /// Put the interpreter's site-packages on `sys.path` (default true; `.pth` files
    /// are not processed since `site` does not run).
    pub fn site_packages(mut self, on: bool) -> Self {
        self.site_packages = on;
        self
    }

    /// Run without the sandbox when a required layer is missing (default false:
    /// fail with [`PythonError::SandboxUnavailable`]).
    pub fn allow_unsandboxed(mut self, allow: bool) -> Self {
        self.allow_unsandboxed = allow;
        self
    }

    /// Treat a kernel feature as unavailable, as if the kernel lacked it (to test
    /// the fail-closed path, or to avoid a feature that misbehaves on a host).
    pub fn disable_feature(mut self, feature: SandboxFeature) -> Self {
        if !self.disabled.contains(&feature) {
            self.disabled.push(feature);
        }
        self
    }

    /// How long a fresh worker may take to become ready (default 20 s).
    pub fn startup_timeout(mut self, limit: Duration) -> Self {
        self.startup_timeout = limit;
        self
    }

    /// The configured wall-time limit per call.
    pub fn wall_time_limit(&self) -> Duration {
        self.wall_time
    }

    /// The configured CPU-time limit per call.
    pub fn cpu_time_limit(&self) -> Duration {
        self.cpu_time
    }

    /// The configured output limit in bytes.
    pub fn output_limit(&self) -> usize {
        self.max_output
    }
}
