//! One running worker: the request/response protocol, time limits, and killing.
//! Blocking; sessions call it from `spawn_blocking`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libc::pid_t;

use super::error::{one_line, LimitKind, PythonError};
use super::output::{self, RunOutput};
use super::spawn::{describe_status, Spawned};

/// How often a running call's CPU time is sampled.
const CPU_POLL: Duration = Duration::from_millis(50);

/// Per-call limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub wall: Duration,
    pub cpu: Duration,
    pub output: usize,
    /// How long a fresh worker may take to become ready.
    pub startup: Duration,
}

/// A live worker process and its channels.
pub(crate) struct Worker {
    pid: pid_t,
    /// Unsandboxed workers lead their own process group, killed as a whole.
    group: bool,
    req: OwnedFd,
    resp: OwnedFd,
    diag: OwnedFd,
    buf: Vec<u8>,
    next_id: u32,
    /// Whether the runner said `ready`.
    ready: bool,
    /// The pid while the process is unreaped, shared with [`KillHandle`]s.
    live: Arc<Mutex<Option<pid_t>>>,
    clock_ticks: f64,
}

enum ReadError {
    Limit(LimitKind),
    Eof,
    TooLarge(usize),
    Io(io::Error),
}

impl Worker {
    pub(crate) fn new(spawned: Spawned, group: bool) -> Worker {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Worker {
            pid: spawned.pid,
            group,
            req: spawned.req,
            resp: spawned.resp,
            diag: spawned.diag,
            buf: Vec::new(),
            next_id: 1,
            ready: false,
            live: Arc::new(Mutex::new(Some(spawned.pid))),
            clock_ticks: if ticks > 0 { ticks as f64 } else { 100.0 },
        }
    }

    /// The worker's process id on the host.
    pub(crate) fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the runner's `ready` frame.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), PythonError> {
        let deadline = Instant::now() + timeout;
        match self.read_frame(deadline, None, 4096) {
            Ok(body) => {
                let fields = output::fields(&body).map_err(|e| self.protocol(e))?;
                if fields.first().map(|f| (f.tag, f.data)) == Some((b'R', b"ready".as_slice())) {
                    self.ready = true;
                    Ok(())
                } else {
                    Err(self.protocol("no ready message".to_owned()))
                }
            }
            Err(ReadError::Limit(_)) => {
                self.kill();
                Err(PythonError::Crashed {
                    detail: format!(
                        "the interpreter did not start within {} s{}",
                        timeout.as_secs(),
                        self.diagnostics()
                    ),
                })
            }
            Err(e) => Err(self.lost(e)),
        }
    }

    /// Runs one cell. On a fresh worker the request is written at once and the
    /// runner's `ready` awaited after it (within `limits.startup`); the time limits
    /// start counting when the runner is ready.
    pub(crate) fn run(&mut self, code: &str, limits: &Limits) -> Result<RunOutput, PythonError> {
        let mut start = Instant::now();
        let mut deadline = start + limits.wall;
        if !self.ready {
            deadline += limits.startup;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let output_limit = u32::try_from(limits.output).unwrap_or(u32::MAX);
        let mut frame = Vec::with_capacity(13 + code.len());
        frame.extend_from_slice(&((9 + code.len()) as u32).to_be_bytes());
        frame.push(b'R');
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&output_limit.to_be_bytes());
        frame.extend_from_slice(code.as_bytes());
        match self.write_all(&frame, deadline) {
            Ok(()) => {}
            Err(ReadError::Limit(kind)) => {
                self.kill();
                return Err(PythonError::Timeout {
                    kind,
                    limit: limits.wall,
                });
            }
            Err(e) => return Err(self.lost(e)),
        }
        if !self.ready {
            self.wait_ready(limits.startup)?;
            start = Instant::now();
            deadline = start + limits.wall;
        }
        let cpu_start = self.cpu_ticks();
        if let Some((own, _)) = cpu_start {
            self.limit_cpu(own, limits.cpu);
        }
        let cpu_start = cpu_start.map(|(_, all)| all);
        let cpu_budget = cpu_start.map(|t| (t, limits.cpu.as_secs_f64() * self.clock_ticks));
        let max_frame = limits.output.saturating_mul(3).saturating_add(64 * 1024);
        loop {
            let body = match self.read_frame(deadline, cpu_budget, max_frame) {
                Ok(body) => body,
                Err(ReadError::Limit(kind)) => {
                    self.kill();
                    let limit = match kind {
                        LimitKind::WallTime => limits.wall,
                        LimitKind::CpuTime => limits.cpu,
                    };
                    return Err(PythonError::Timeout { kind, limit });
                }
                Err(e) => return Err(self.lost_with_cpu(e, limits.cpu)),
            };
            let fields = output::fields(&body).map_err(|e| self.protocol(e))?;
            let answered = fields
                .first()
                .is_some_and(|f| f.tag == b'I' && f.data == id.to_be_bytes());
            if !answered {
                // Written by the code itself onto the protocol fd: not the answer.
                continue;
            }
            return Ok(output::build(&fields[1..], limits.output, start.elapsed()));
        }
    }

    fn protocol(&mut self, what: String) -> PythonError {
        self.kill();
        PythonError::Protocol(one_line(&what, 200))
    }

    fn lost_with_cpu(&mut self, e: ReadError, cpu: Duration) -> PythonError {
        match self.lost(e) {
            PythonError::Timeout {
                kind: LimitKind::CpuTime,
                ..
            } => PythonError::Timeout {
                kind: LimitKind::CpuTime,
                limit: cpu,
            },
            other => other,
        }
    }

    /// The worker stopped talking: find out why, making sure it is gone.
    fn lost(&mut self, e: ReadError) -> PythonError {
        match e {
            ReadError::TooLarge(n) => {
                self.kill();
                PythonError::Protocol(format!("a {n}-byte frame is over the limit"))
            }
            ReadError::Io(e) => {
                self.kill();
                PythonError::Crashed {
                    detail: one_line(&format!("talking to it failed: {e}"), 200),
                }
            }
            ReadError::Limit(kind) => {
                self.kill();
                PythonError::Timeout {
                    kind,
                    limit: Duration::ZERO,
                }
            }
            ReadError::Eof => {
                // Give it a moment to finish dying, then make sure.
                let deadline = Instant::now() + Duration::from_millis(500);
                let mut status = None;
                while Instant::now() < deadline {
                    if let Some(s) = self.try_reap() {
                        status = Some(s);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                let detail = match status {
                    Some(s) if libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGXCPU => {
                        return PythonError::Timeout {
                            kind: LimitKind::CpuTime,
                            limit: Duration::ZERO,
                        };
                    }
                    Some(s) => describe_status(s),
                    None => {
                        self.kill();
                        "it closed its protocol channel".to_owned()
                    }
                };
                PythonError::Crashed {
                    detail: format!("{detail}{}", self.diagnostics()),
                }
            }
        }
    }

    /// The last line the interpreter wrote before the runner took over fds 1 and 2
    /// (start-up errors), prefixed for an error message.
    fn diagnostics(&self) -> String {
        let mut buf = [0u8; 4096];
        // SAFETY: non-blocking read into a local buffer.
        let n = unsafe { libc::read(self.diag.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return String::new();
        }
        let text = String::from_utf8_lossy(&buf[..n as usize]);
        match text.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => format!(": {}", one_line(line, 200)),
            None => String::new(),
        }
    }

    fn write_all(&mut self, mut data: &[u8], deadline: Instant) -> Result<(), ReadError> {
        while !data.is_empty() {
            // SAFETY: writing from a valid slice to a descriptor we own.
            let n = unsafe { libc::write(self.req.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if n >= 0 {
                data = &data[n as usize..];
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ReadError::Limit(LimitKind::WallTime));
                    }
                    poll(&self.req, libc::POLLOUT, left).map_err(ReadError::Io)?;
                }
                Some(libc::EPIPE) => return Err(ReadError::Eof),
                _ => return Err(ReadError::Io(e)),
            }
        }
        Ok(())
    }

    fn take_frame(&mut self, max: usize) -> Result<Option<Vec<u8>>, ReadError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > max {
            return Err(ReadError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }

    fn read_frame(
        &mut self,
        deadline: Instant,
        cpu: Option<(u64, f64)>,
        max: usize,
    ) -> Result<Vec<u8>, ReadError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(frame) = self.take_frame(max)? {
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::Limit(LimitKind::WallTime));
            }
            let wait = if cpu.is_some() {
                left.min(CPU_POLL)
            } else {
                left
            };
            let ready = poll(&self.resp, libc::POLLIN, wait).map_err(ReadError::Io)?;
            if ready {
                loop {
                    // SAFETY: non-blocking read into a local buffer.
                    let n = unsafe {
                        libc::read(
                            self.resp.as_raw_fd(),
                            chunk.as_mut_ptr().cast(),
                            chunk.len(),
                        )
                    };
                    if n > 0 {
                        self.buf.extend_from_slice(&chunk[..n as usize]);
                        if self.buf.len() > max.saturating_add(4) {
                            break;
                        }
                        continue;
                    }
                    if n == 0 {
                        if let Some(frame) = self.take_frame(max)? {
                            return Ok(frame);
                        }
                        return Err(ReadError::Eof);
                    }
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EAGAIN) => break,
                        _ => return Err(ReadError::Io(e)),
                    }
                }
            }
            if let Some((start, budget)) = cpu {
                if let Some((_, now)) = self.cpu_ticks() {
                    if now.saturating_sub(start) as f64 > budget {
                        return Err(ReadError::Limit(LimitKind::CpuTime));
                    }
                }
            }
        }
    }

    /// CPU time in clock ticks: of the worker itself, and of it plus its reaped
    /// children.
    fn cpu_ticks(&self) -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        let f: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|x| x.parse::<u64>().ok())
            .collect::<Option<_>>()?;
        // Fields 14..=17 of proc(5): utime stime cutime cstime; `after` starts at 3.
        let own = f.get(..2)?.iter().sum();
        Some((own, f.iter().sum()))
    }

    /// Sets the worker's soft `RLIMIT_CPU` to what it used so far plus `limit`: the
    /// host measures the call anyway, this also bounds what processes it forks
    /// during the call inherit, and an unsandboxed worker itself.
    fn limit_cpu(&self, used_ticks: u64, limit: Duration) {
        let used = (used_ticks as f64 / self.clock_ticks).ceil() as u64;
        let soft = used.saturating_add(limit.as_secs()).saturating_add(1);
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit on our own unreaped child with valid structs; a failure
        // only leaves the previous limit.
        unsafe {
            if libc::prlimit(self.pid, libc::RLIMIT_CPU, std::ptr::null(), &mut old) == 0 {
                let lim = libc::rlimit {
                    rlim_cur: soft.min(old.rlim_max),
                    rlim_max: old.rlim_max,
                };
                libc::prlimit(self.pid, libc::RLIMIT_CPU, &lim, std::ptr::null_mut());
            }
        }
    }

    fn try_reap(&mut self) -> Option<libc::c_int> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.is_none() {
            return None;
        }
        let mut status = 0;
        // SAFETY: our own child, not reaped yet (`live` is still set).
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r == self.pid {
            *live = None;
            Some(status)
        } else {
            None
        }
    }

    /// A handle that can kill the worker from elsewhere (a cancelled call).
    pub(crate) fn kill_handle(&self) -> KillHandle {
        KillHandle {
            live: self.live.clone(),
            group: self.group,
        }
    }

    /// Kills the worker and everything it started, and reaps it.
    pub(crate) fn kill(&mut self) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pid) = *live else {
            return;
        };
        // SAFETY: the pid is our unreaped child (reaping happens only here and in
        // `try_reap`, under the same lock), so it cannot have been reused; in a PID
        // namespace its death kills every process in it.
        unsafe {
            signal(pid, self.group);
            let mut status = 0;
            while libc::waitpid(pid, &mut status, 0) < 0 {
                if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
        }
        *live = None;
    }
}

/// SIGKILL to the worker (and its process group when it leads one).
///
/// # Safety
/// `pid` must be an unreaped child.
unsafe fn signal(pid: pid_t, group: bool) {
    if group {
        libc::kill(-pid, libc::SIGKILL);
    }
    libc::kill(pid, libc::SIGKILL);
}

/// Kills a worker without owning it (it stays to be reaped by its [`Worker`]).
#[derive(Clone)]
pub(crate) struct KillHandle {
    live: Arc<Mutex<Option<pid_t>>>,
    group: bool,
}

impl KillHandle {
    pub(crate) fn kill(&self) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pid) = *live {
            // SAFETY: set only while the child is unreaped, and reaping takes the
            // same lock.
            unsafe { signal(pid, self.group) };
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `fd` is ready for `events` or `timeout` passes. Returns readiness.
fn poll(fd: &OwnedFd, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}
