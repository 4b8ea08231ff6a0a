//! Adversarial payloads against the Python sandbox, each proven contained with
//! evidence gathered on the host: canary files the code tries to read, change or
//! delete (in a temporary directory and in `$HOME`), a secret in this process's
//! environment, and TCP/UDP listeners on loopback that must see no traffic.

use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use jielong_tools::python::{PythonError, PythonSandbox, PythonSession, RunOutput};

type Outcome = Result<RunOutput, PythonError>;

/// Host-side bait and witnesses.
struct Host {
    canary_dir: tempfile::TempDir,
    canary: PathBuf,
    file_secret: String,
    home_canary: Option<PathBuf>,
    home_secret: String,
    env_secret: String,
    tcp: TcpListener,
    tcp6: Option<TcpListener>,
    udp: UdpSocket,
    host_tmp_file: PathBuf,
    passwd_line: Option<String>,
}

impl Host {
    fn new() -> Host {
        let id = format!(
            "{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let canary_dir = tempfile::tempdir().expect("temp dir");
        let canary = canary_dir.path().join("canary.txt");
        let file_secret = format!("FILE-SECRET-{id}");
        std::fs::write(&canary, &file_secret).expect("write canary");
        let home_secret = format!("HOME-SECRET-{id}");
        let home_canary = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(format!(".jielong-canary-{id}")))
            .filter(|p| std::fs::write(p, &home_secret).is_ok());
        let env_secret = format!("ENV-SECRET-{id}");
        // Set before any session exists; workers get a rebuilt environment.
        std::env::set_var("JIELONG_TEST_SECRET", &env_secret);
        let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp listener");
        tcp.set_nonblocking(true).expect("nonblocking");
        let tcp6 = TcpListener::bind("[::1]:0").ok();
        if let Some(l) = &tcp6 {
            l.set_nonblocking(true).expect("nonblocking");
        }
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
        udp.set_nonblocking(true).expect("nonblocking");
        let passwd_line = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
            p.lines()
                .find(|l| l.starts_with("root:"))
                .map(str::to_owned)
        });
        Host {
            host_tmp_file: std::env::temp_dir().join(format!("jielong-host-file-{id}")),
            canary_dir,
            canary,
            file_secret,
            home_canary,
            home_secret,
            env_secret,
            tcp,
            tcp6,
            udp,
            passwd_line,
        }
    }

    /// Replaces placeholders in a payload.
    fn fill(&self, code: &str) -> String {
        code.replace("CANARY_DIR", &self.canary_dir.path().display().to_string())
            .replace("CANARY", &self.canary.display().to_string())
            .replace(
                "HOME_CANARY",
                &self
                    .home_canary
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "/nonexistent".to_owned()),
            )
            .replace(
                "HOST_HOME",
                &std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned()),
            )
            .replace("HOST_TMP_FILE", &self.host_tmp_file.display().to_string())
            .replace(
                "TCP_PORT",
                &self
                    .tcp
                    .local_addr()
                    .map(|a| a.port())
                    .unwrap_or(1)
                    .to_string(),
            )
            .replace(
                "TCP6_PORT",
                &self
                    .tcp6
                    .as_ref()
                    .and_then(|l| l.local_addr().ok())
                    .map(|a| a.port())
                    .unwrap_or(1)
                    .to_string(),
            )
            .replace(
                "UDP_PORT",
                &self
                    .udp
                    .local_addr()
                    .map(|a| a.port())
                    .unwrap_or(1)
                    .to_string(),
            )
            .replace("HOST_PID", &std::process::id().to_string())
    }

    fn secrets(&self) -> [&str; 3] {
        [&self.file_secret, &self.home_secret, &self.env_secret]
    }

    /// Evidence that nothing on the host was touched or contacted.
    fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(&self.canary).expect("canary still exists"),
            self.file_secret,
            "canary modified"
        );
        let entries: Vec<_> = std::fs::read_dir(self.canary_dir.path())
            .expect("canary dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            entries.len(),
            1,
            "files appeared in the canary dir: {entries:?}"
        );
        if let Some(home) = &self.home_canary {
            assert_eq!(
                std::fs::read_to_string(home).expect("home canary exists"),
                self.home_secret
            );
        }
        assert!(
            !self.host_tmp_file.exists(),
            "a file appeared in the host's /tmp"
        );
        assert!(!Path::new("/usr/jielong-pwned").exists());
        match self.tcp.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the TCP listener saw a connection: {other:?}"),
        }
        if let Some(l) = &self.tcp6 {
            match l.accept() {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                other => panic!("the TCP6 listener saw a connection: {other:?}"),
            }
        }
        let mut buf = [0u8; 64];
        match self.udp.recv_from(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the UDP socket received: {other:?}"),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(p) = &self.home_canary {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_file(&self.host_tmp_file);
    }
}

/// What a payload must produce besides leaking nothing.
enum Expect {
    /// The code raised this exception (by class name).
    Raises(&'static str),
    /// The output contains this text (the code reports its own failure).
    Prints(&'static str),
    /// The output does not contain this text.
    Lacks(&'static str),
    /// The engine reported an error (a limit), the session recovers.
    EngineError,
}

struct Payload {
    name: &'static str,
    code: &'static str,
    expect: Expect,
}

const fn p(name: &'static str, code: &'static str, expect: Expect) -> Payload {
    Payload { name, code, expect }
}

fn payloads() -> Vec<Payload> {
    use Expect::*;
    vec![
        p("read /etc/passwd", "print(open('/etc/passwd').read())", Prints("sandbox:x:1000")),
        p("read /etc/shadow", "open('/etc/shadow').read()", Raises("FileNotFoundError")),
        p("read the canary by absolute path", "open('CANARY').read()", Raises("FileNotFoundError")),
        p("read the home canary", "open('HOME_CANARY').read()", Raises("FileNotFoundError")),
        p(
            "read /proc/self/environ",
            "print(open('/proc/self/environ','rb').read())",
            Prints("HOME=/scratch"),
        ),
        p("read /proc/1/environ", "print(open('/proc/1/environ','rb').read())", Lacks("JIELONG")),
        p("env var leakage", "import os; print(dict(os.environ))", Lacks("JIELONG_TEST_SECRET")),
        p(
            "list /",
            "import os; names = sorted(os.listdir('/')); print(names)\n\
             assert not {'work', 'home', 'var', 'opt', 'boot', 'srv', 'mnt'} & set(names), names",
            Prints("scratch"),
        ),
        p(
            "list the host home",
            "import os\nfor d in ['HOST_HOME', os.path.expanduser('~')]:\n    try:\n        \
             print(d, os.listdir(d))\n    except OSError as e:\n        print(d, type(e).__name__)",
            Lacks(".jielong-canary"),
        ),
        p(
            "write the host /tmp",
            "open('HOST_TMP_FILE', 'w').write('pwned'); print('wrote the sandbox /tmp only')",
            Prints("sandbox /tmp only"),
        ),
        p(
            "write into the canary dir",
            "open('CANARY_DIR/evil.txt', 'w').write('pwned')",
            Raises("FileNotFoundError"),
        ),
        p("overwrite the canary", "open('CANARY', 'w').write('pwned')", Raises("FileNotFoundError")),
        p("delete the canary", "import os; os.remove('CANARY')", Raises("FileNotFoundError")),
        p("write into /usr", "open('/usr/jielong-pwned', 'w').write('x')", Raises("OSError")),
        p(
            "symlink to the canary",
            "import os; os.symlink('CANARY', '/scratch/link'); print(open('/scratch/link').read())",
            Raises("FileNotFoundError"),
        ),
        p("hard link to the canary", "import os; os.link('CANARY', '/scratch/hard')", Raises("FileNotFoundError")),
        p(
            "TCP connect to the host listener",
            "import socket; socket.create_connection(('127.0.0.1', TCP_PORT), timeout=2)",
            Raises("OSError"),
        ),
        p(
            "TCP6 connect to ::1",
            "import socket; s = socket.socket(socket.AF_INET6); s.settimeout(2); s.connect(('::1', TCP6_PORT))",
            Raises("OSError"),
        ),
        p(
            "UDP send",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.sendto(b'leak', ('127.0.0.1', UDP_PORT))",
            Raises("OSError"),
        ),
        p("DNS resolution", "import socket; socket.getaddrinfo('example.com', 80)", Raises("gaierror")),
        p(
            "raw and netlink sockets",
            "import socket\nfor fam, kind in [(socket.AF_PACKET, socket.SOCK_RAW), (socket.AF_NETLINK, socket.SOCK_RAW)]:\n    \
             try:\n        socket.socket(fam, kind)\n        print('OPENED', fam)\n    except OSError as e:\n        print('refused', e.errno)",
            Lacks("OPENED"),
        ),
        p(
            "subprocess cat of the canary",
            "import subprocess; r = subprocess.run(['cat', 'CANARY'], capture_output=True); print(r.returncode, r.stdout, r.stderr)",
            Prints("No such file"),
        ),
        p(
            "os.system",
            "import os; os.system('cat CANARY HOME_CANARY; echo env=$JIELONG_TEST_SECRET; ls CANARY_DIR')",
            Prints("env="),
        ),
        p(
            "ctypes libc system()",
            "import ctypes; libc = ctypes.CDLL(None); print(libc.system(b'cat CANARY; echo done'))",
            Prints("done"),
        ),
        p(
            "ctypes socket + connect()",
            "import ctypes, socket, struct\nlibc = ctypes.CDLL(None, use_errno=True)\n\
             fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)\nprint('fd', fd, ctypes.get_errno())\n\
             addr = struct.pack('!HH4s8x', socket.AF_INET, TCP_PORT, bytes([127,0,0,1]))\n\
             addr = bytes([addr[1], addr[0]]) + addr[2:]\n\
             print('connect', libc.connect(fd, addr, len(addr)))",
            Prints("fd -1"),
        ),
        p(
            "__subclasses__ escape to os.system",
            "w = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]\n\
             sysf = w.__init__.__globals__['system']\nprint('rc', sysf('cat CANARY'))",
            Prints("rc"),
        ),
        p(
            "fork bomb",
            "import os\nwhile True:\n    os.fork()",
            Raises("BlockingIOError"),
        ),
        p("huge output", "print('x' * 10**8)", Prints("…[output truncated: 99983617 more bytes]")),
        p("memory bomb: bytearray", "bytearray(10**10)", Raises("MemoryError")),
        p(
            "memory bomb: list growth",
            "l = []\ntry:\n    while True:\n        l.append(bytearray(10**7))\nfinally:\n    del l",
            Raises("MemoryError"),
        ),
        p(
            "fill the disk with one file",
            "with open('/scratch/big', 'wb') as f:\n    for i in range(100):\n        f.write(b'\\0' * 2**20)",
            Raises("OSError"),
        ),
        p(
            "fill the disk with many files",
            "import os\ntry:\n    for i in range(100):\n        with open('/scratch/f%d' % i, 'wb') as f:\n            f.write(b'\\0' * 15 * 2**20)\n\
             finally:\n    print(len(os.listdir('/scratch')), 'files')\n    for n in os.listdir('/scratch'): os.remove('/scratch/' + n)",
            Raises("OSError"),
        ),
        p(
            "kill init, the parent and everyone",
            "import os, signal\nos.kill(1, signal.SIGKILL)\nos.kill(os.getppid(), signal.SIGTERM)\n\
             try:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError as e:\n    print('kill -1:', e)\nprint('still here', os.getppid())",
            Prints("still here 0"),
        ),
        p(
            "kill the host test process by pid",
            "import os\ntry:\n    os.kill(HOST_PID, 9)\n    print('KILLED')\nexcept OSError as e:\n    print('refused', type(e).__name__)",
            Lacks("KILLED"),
        ),
        p(
            "ptrace attach",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
             print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())",
            Prints("ptrace -1 1"),
        ),
        p(
            "mount a tmpfs",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
             print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())",
            Prints("mount -1 1"),
        ),
        p(
            "new user namespace",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
             print('unshare', libc.unshare(0x10000000), ctypes.get_errno())",
            Prints("unshare -1 1"),
        ),
        p(
            "read the host test process memory",
            "import os\nfor path in ['/proc/HOST_PID/mem', '/proc/HOST_PID/environ']:\n    \
             try:\n        print(open(path, 'rb').read(100))\n    except OSError as e:\n        print('denied', type(e).__name__)",
            Prints("denied FileNotFoundError"),
        ),
        p(
            "parent memory via /proc/<ppid>/mem",
            "import os\nppid = os.getppid()\ntry:\n    print(open('/proc/%d/mem' % ppid, 'rb').read(10))\n\
             except OSError as e:\n    print('denied', ppid, type(e).__name__)",
            Prints("denied 0"),
        ),
        p(
            "io_uring and bpf",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
             print('uring', libc.syscall(425, 8, ctypes.create_string_buffer(120)), ctypes.get_errno())\n\
             print('bpf', libc.syscall(321, 0, None, 0), ctypes.get_errno())",
            Prints("uring -1 1"),
        ),
        p(
            "/dev and /sys",
            "import os; print(sorted(os.listdir('/dev')), os.path.exists('/sys/kernel'))",
            Lacks("sda"),
        ),
        p("CPU loop", "while True: pass", EngineError),
    ]
}

fn leaks(host: &Host, text: &str) -> Option<&'static str> {
    let names = ["file canary", "home canary", "environment secret"];
    for (secret, name) in host.secrets().iter().zip(names) {
        if text.contains(secret) {
            return Some(name);
        }
    }
    if let Some(line) = &host.passwd_line {
        if text.contains(line.as_str()) {
            return Some("host /etc/passwd");
        }
    }
    None
}

/// Runs one payload and checks it: nothing leaks, the expectation holds, and the
/// session still works afterwards.
async fn check(
    session: &mut PythonSession,
    host: &Host,
    payload: &Payload,
) -> Result<String, String> {
    let code = host.fill(payload.code);
    let outcome: Outcome = session.run(&code).await;
    let text = match &outcome {
        Ok(out) => out.to_text(),
        Err(e) => e.to_string(),
    };
    if let Some(what) = leaks(host, &text) {
        return Err(format!("leaked the {what}: {text}"));
    }
    let verdict = match (&payload.expect, &outcome) {
        (Expect::Raises(class), Ok(out)) => {
            let tb = out.traceback.as_deref().unwrap_or_default();
            if out.error_type.as_deref() == Some(class)
                || tb.contains(&format!("{class}:"))
                || tb.contains(&format!("{class}("))
                || (*class == "OSError" && tb.contains("Error: [Errno"))
            {
                Ok(format!(
                    "raised {}",
                    out.error_type.as_deref().unwrap_or(class)
                ))
            } else {
                Err(format!("expected {class}, got: {text}"))
            }
        }
        (Expect::Prints(s), Ok(out)) if out.output.contains(s) => Ok(format!("printed {s:?}")),
        (Expect::Lacks(s), Ok(out)) if !out.output.contains(s) && !out.is_error() => {
            Ok(format!("no {s:?}"))
        }
        (Expect::EngineError, Err(e)) if e.retryable() => Ok(format!("engine: {e}")),
        _ => Err(format!("unexpected outcome: {text}")),
    };
    // The session must still answer.
    match session.run("'ok'").await {
        Ok(out) if out.value.as_deref() == Some("'ok'") => {}
        other => return Err(format!("session broken afterwards: {other:?}")),
    }
    verdict
}

#[tokio::test]
async fn adversarial_payloads_are_contained() {
    let host = Host::new();
    let mut session = PythonSandbox::new()
        .wall_time(Duration::from_secs(3))
        .cpu_time(Duration::from_secs(2))
        .start()
        .await
        .expect("start a sandboxed session");
    eprintln!("layers: {}", session.layers());
    let payloads = payloads();
    assert!(payloads.len() >= 25);
    let mut failures = Vec::new();
    for payload in &payloads {
        let t = Instant::now();
        match check(&mut session, &host, payload).await {
            Ok(v) => eprintln!(
                "  ok   {:<40} {:>6} ms  {}",
                payload.name,
                t.elapsed().as_millis(),
                one_line(&v)
            ),
            Err(e) => {
                eprintln!("  FAIL {:<40} {}", payload.name, one_line(&e));
                failures.push(format!("{}: {e}", payload.name));
            }
        }
        host.assert_untouched();
    }
    drop(session);
    host.assert_untouched();
    assert!(
        failures.is_empty(),
        "{} payloads escaped:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.chars().take(110).collect()
}

fn process_with(token: &str) -> bool {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(token))
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_daemon_does_not_outlive_its_session() {
    let host = Host::new();
    let pid = std::process::id();
    // The shell's own command line must not contain the token: only the final
    // `sleep` (started after the writes) does.
    let token = format!("{pid}.31337");
    let marker = host.canary_dir.path().join("marker");
    let mut session = PythonSandbox::new().start().await.expect("start");
    let code = format!(
        "import os\n\
         if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        \
         os.execv('/bin/sh', ['sh', '-c', 'sleep 0.5; echo pwned > {marker}; echo pwned > /scratch/m; T=31337; exec sleep {pid}.$T'])\n    \
         os._exit(0)\n\
         'detached'",
        marker = marker.display()
    );
    let out = session.run(&code).await.expect("run");
    assert_eq!(out.value.as_deref(), Some("'detached'"));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !process_with(&token) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        process_with(&token),
        "the daemon runs while the session lives"
    );
    let out = session.run("open('/scratch/m').read()").await.expect("run");
    assert_eq!(
        out.value.as_deref(),
        Some("'pwned\\n'"),
        "it wrote inside the sandbox only"
    );
    assert!(!marker.exists());
    drop(session);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!process_with(&token), "the daemon survived the session");
    assert!(!marker.exists(), "the daemon wrote to the host");
    host.assert_untouched();
}

/// Processes on the host that live in the PID namespace of `worker`.
fn processes_in_namespace_of(worker: u32) -> usize {
    let Ok(ns) = std::fs::read_link(format!("/proc/{worker}/ns/pid")) else {
        return 0;
    };
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .filter(|e| std::fs::read_link(e.path().join("ns/pid")).ok().as_ref() == Some(&ns))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn fork_bombs_hit_the_process_limit() {
    let mut session = PythonSandbox::new()
        .max_processes(12)
        .wall_time(Duration::from_secs(5))
        .start()
        .await
        .expect("start");
    let worker = session.worker_pid().expect("worker");
    // Children that stay alive for a while: count them from the host.
    let out = session
        .run(
            "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            \
             time.sleep(3)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    \
             print('forks', n, type(e).__name__)",
        )
        .await
        .expect("run");
    let alive = processes_in_namespace_of(worker);
    assert!(out.stdout.starts_with("forks "), "{}", out.to_text());
    let forks: usize = out
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(99);
    assert!(forks < 12, "{forks} forks");
    assert!(out.stdout.contains("BlockingIOError"), "{}", out.stdout);
    assert!(
        (2..=12).contains(&alive),
        "{alive} processes in the sandbox"
    );
    // The classic bomb: every child forks too.
    let out = session
        .run("import os\nwhile True:\n    os.fork()")
        .await
        .expect("run");
    assert_eq!(
        out.error_type.as_deref(),
        Some("BlockingIOError"),
        "{}",
        out.to_text()
    );
    assert!(processes_in_namespace_of(worker) <= 12);
    assert_eq!(
        session.run("'alive'").await.expect("run").value.as_deref(),
        Some("'alive'")
    );
    drop(session);
    assert_eq!(processes_in_namespace_of(worker), 0);
}

#[tokio::test]
async fn the_worker_runs_as_an_unprivileged_user_on_the_host() {
    let mut session = PythonSandbox::new().start().await.expect("start");
    let pid = session.worker_pid().expect("worker");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_owned();
    let cap_line = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap_or_default()
        .to_owned();
    let seccomp = status
        .lines()
        .find(|l| l.starts_with("Seccomp:"))
        .unwrap_or_default()
        .to_owned();
    let nnp = status
        .lines()
        .find(|l| l.starts_with("NoNewPrivs:"))
        .unwrap_or_default()
        .to_owned();
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc_geteuid() };
    let expected = if euid == 0 { 65534 } else { euid };
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == expected.to_string()),
        "{uid_line}"
    );
    assert!(cap_line.ends_with("0000000000000000"), "{cap_line}");
    assert!(seccomp.ends_with('2'), "{seccomp}");
    assert!(nnp.ends_with('1'), "{nnp}");
    // Its own session and process group: `kill(0, sig)` cannot reach the host's.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        fields.get(2).copied(),
        Some(pid.to_string().as_str()),
        "pgrp: {stat}"
    );
    assert_eq!(
        fields.get(3).copied(),
        Some(pid.to_string().as_str()),
        "session: {stat}"
    );
    let out = session
        .run("import os, resource\n(os.getuid(), os.getgid(), os.getgroups(), os.getpid(), resource.getrlimit(resource.RLIMIT_NPROC))")
        .await
        .expect("run");
    assert_eq!(out.value.as_deref(), Some("(1000, 1000, [], 1, (16, 16))"));
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
