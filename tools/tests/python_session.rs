//! Notebook behaviour of the Python engine on the real interpreter: persistent
//! variables, values of trailing expressions, tracebacks, output capture and
//! truncation, time and memory limits, crashes, fail-closed start, and cleanup.

use std::time::{Duration, Instant};

use jielong_tools::python::{LimitKind, PythonError, PythonSandbox, PythonSession, SandboxFeature};

#[test]
fn sessions_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<PythonSession>();
    send::<PythonSandbox>();
    send::<PythonError>();
}

async fn session() -> PythonSession {
    PythonSandbox::new()
        .start()
        .await
        .expect("start a sandboxed session")
}

async fn run(s: &mut PythonSession, code: &str) -> jielong_tools::python::RunOutput {
    match s.run(code).await {
        Ok(out) => out,
        Err(e) => panic!("{code:?} failed: {e}"),
    }
}

fn assert_one_line(e: &PythonError) {
    let text = e.to_string();
    assert!(!text.contains('\n'), "multi-line error: {text:?}");
}

#[tokio::test]
async fn variables_persist_and_trailing_expressions_show_their_value() {
    let mut s = session().await;
    assert!(!s.layers().unsandboxed, "{}", s.layers());
    let out = run(&mut s, "x = 41").await;
    assert_eq!(out.value, None);
    assert_eq!(
        out.to_text(),
        "(the code printed nothing; its last line set x = 41)"
    );
    assert_eq!(run(&mut s, "x + 1").await.value.as_deref(), Some("42"));
    assert_eq!(
        run(&mut s, "12345*6789").await.value.as_deref(),
        Some("83810205")
    );
    assert_eq!(run(&mut s, "None").await.value, None);
    assert_eq!(run(&mut s, "_").await.value.as_deref(), Some("83810205"));
    let out = run(&mut s, "print('hello')\n'a' * 3").await;
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.value.as_deref(), Some("'aaa'"));
    assert_eq!(out.to_text(), "hello\n'aaa'");
    let out = run(&mut s, "def f(n):\n    return n * 2\n\nf(21)").await;
    assert_eq!(out.value.as_deref(), Some("42"));
    // Statements after the last expression are not an expression: nothing shown.
    assert_eq!(
        run(&mut s, "y = f(1)\nfor i in range(2): pass").await.value,
        None
    );
    assert_eq!(
        run(&mut s, "import __main__; __main__.x")
            .await
            .value
            .as_deref(),
        Some("41")
    );
}

#[tokio::test]
async fn exceptions_are_output_with_a_trimmed_traceback() {
    let mut s = session().await;
    run(&mut s, "x = 5").await;
    let out = run(&mut s, "def g():\n    return 1 / 0\n\ng()").await;
    assert!(out.is_error());
    assert_eq!(out.error_type.as_deref(), Some("ZeroDivisionError"));
    let tb = out.traceback.as_deref().unwrap_or_default();
    assert!(tb.starts_with("Traceback (most recent call last):"), "{tb}");
    assert!(tb.contains("ZeroDivisionError: division by zero"), "{tb}");
    assert!(tb.contains("return 1 / 0"), "source lines are shown: {tb}");
    assert!(
        !tb.contains("_jielong_main") && !tb.contains("run_cell"),
        "runner frames leak: {tb}"
    );
    assert!(out.to_text().contains("ZeroDivisionError"));
    // Still alive, state kept.
    assert_eq!(run(&mut s, "x").await.value.as_deref(), Some("5"));
    let out = run(&mut s, "print('before')\nraise ValueError('bad')").await;
    assert_eq!(out.stdout, "before\n");
    assert!(
        out.to_text().starts_with("before\nTraceback"),
        "{}",
        out.to_text()
    );
    let out = run(&mut s, "def broken(:\n  pass").await;
    assert_eq!(out.error_type.as_deref(), Some("SyntaxError"));
    let tb = out.traceback.as_deref().unwrap_or_default();
    assert!(tb.contains("<cell-") && tb.contains("def broken(:"), "{tb}");
    assert!(!tb.contains("During handling"), "{tb}");
    assert!(!tb.starts_with("Traceback"), "no runner frames: {tb}");
    let out = run(&mut s, "import sys; sys.exit(3)").await;
    assert_eq!(out.error_type.as_deref(), Some("SystemExit"));
    assert_eq!(run(&mut s, "x * 2").await.value.as_deref(), Some("10"));
    assert_eq!(s.restarts(), 0);
}

#[tokio::test]
async fn output_streams_interleave_in_order_and_unicode_survives() {
    let mut s = session().await;
    let out = run(
        &mut s,
        "import sys, os, subprocess\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')\n\
         os.write(1, b'raw\\n')\nsubprocess.run(['echo', 'sub'])\nprint('d')",
    )
    .await;
    assert_eq!(out.output, "a\nb\nc\nraw\nsub\nd\n");
    assert_eq!(out.stdout, "a\nc\nraw\nsub\nd\n");
    assert_eq!(out.stderr, "b\n");
    let text = "héllo wörld — 世界 🎉";
    let out = run(&mut s, &format!("print({text:?})\n{text:?}")).await;
    assert_eq!(out.stdout, format!("{text}\n"));
    assert_eq!(out.value.as_deref(), Some(format!("'{text}'").as_str()));
    let out = run(
        &mut s,
        "import sys; sys.stdout.buffer.write('ü\\n'.encode()); sys.stdout.flush()",
    )
    .await;
    assert_eq!(out.stdout, "ü\n");
    // Output of one call does not spill into the next.
    assert_eq!(run(&mut s, "1").await.output, "");
}

#[tokio::test]
async fn threads_subprocesses_and_multiprocessing_work() {
    let mut s = session().await;
    let out = run(
        &mut s,
        "from multiprocessing import Pool\nwith Pool(2) as p:\n    r = p.map(abs, [-1, -2, -3])\nr",
    )
    .await;
    assert_eq!(out.value.as_deref(), Some("[1, 2, 3]"), "{}", out.to_text());
    let out = run(
        &mut s,
        "from concurrent.futures import ThreadPoolExecutor\n\
         with ThreadPoolExecutor(4) as ex:\n    r = sum(ex.map(lambda x: x * x, range(10)))\nr",
    )
    .await;
    assert_eq!(out.value.as_deref(), Some("285"));
    let out = run(
        &mut s,
        "import subprocess; subprocess.check_output(['ls', '/'], text=True).split()",
    )
    .await;
    assert!(out.value.unwrap_or_default().contains("'scratch'"));
    let out = run(&mut s, "open('data.txt', 'w').write('kept'); import os; os.getcwd(), open('/scratch/data.txt').read()").await;
    assert_eq!(out.value.as_deref(), Some("('/scratch', 'kept')"));
}

#[tokio::test]
async fn host_paths_can_be_shared_explicitly() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().expect("temp dir");
    std::fs::write(data.path().join("input.csv"), "a,b\n1,2\n").expect("write");
    let scratch = tempfile::tempdir().expect("temp dir");
    // The sandbox user is `nobody` on the host when the tests run as root.
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let mut s = PythonSandbox::new()
        .read_only_path(data.path())
        .scratch_dir(scratch.path())
        .start()
        .await
        .expect("start");
    let input = data.path().join("input.csv").display().to_string();
    let out = run(&mut s, &format!("open({input:?}).read()")).await;
    assert_eq!(out.value.as_deref(), Some("'a,b\\n1,2\\n'"));
    let out = run(&mut s, &format!("open({input:?}, 'a').write('x')")).await;
    assert!(out.is_error(), "read-only: {}", out.to_text());
    run(&mut s, "open('/scratch/result.txt', 'w').write('42')").await;
    drop(s);
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("result.txt")).expect("kept on the host"),
        "42"
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("input.csv")).expect("read"),
        "a,b\n1,2\n"
    );
}

#[tokio::test]
async fn output_is_truncated_with_a_marker() {
    let mut s = PythonSandbox::new()
        .max_output(1000)
        .start()
        .await
        .expect("start");
    let out = run(&mut s, "for i in range(10000): print(i)").await;
    assert!(out.truncated);
    assert!(out.output.len() < 1100, "{}", out.output.len());
    let total: u64 = (0..10000u64).map(|i| i.to_string().len() as u64 + 1).sum();
    assert_eq!(out.omitted_bytes, total - 1000);
    assert!(
        out.output
            .ends_with(&format!("…[output truncated: {} more bytes]", total - 1000)),
        "{}",
        &out.output[out.output.len() - 60..]
    );
    assert!(out.output.starts_with("0\n1\n2\n"));
    let out = run(&mut s, "'y' * 5000").await;
    assert!(out.truncated);
    let value = out.value.unwrap_or_default();
    assert!(
        value.ends_with("…[value truncated: 4002 more bytes]"),
        "{value}"
    );
    let out = run(&mut s, "def r(n): return r(n + 1)\nr(0)").await;
    assert_eq!(out.error_type.as_deref(), Some("RecursionError"));
    assert!(out.traceback.unwrap_or_default().len() < 1200);
}

#[tokio::test]
async fn timeouts_kill_the_worker_and_the_next_call_gets_a_fresh_one() {
    let mut s = PythonSandbox::new()
        .wall_time(Duration::from_millis(1500))
        .cpu_time(Duration::from_secs(10))
        .start()
        .await
        .expect("start");
    run(&mut s, "x = 1").await;
    let pid = s.worker_pid();
    let t = Instant::now();
    let err = s.run("while True: pass").await.expect_err("must time out");
    let took = t.elapsed();
    assert!(
        matches!(
            err,
            PythonError::Timeout {
                kind: LimitKind::WallTime,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(err.retryable());
    assert!(err.to_string().contains("variables"), "{err}");
    assert_one_line(&err);
    assert_eq!(s.worker_pid(), None);
    if let Some(pid) = pid {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    let out = run(&mut s, "x").await;
    assert_eq!(
        out.error_type.as_deref(),
        Some("NameError"),
        "state is gone"
    );
    assert_eq!(s.restarts(), 1);
    // Blocking (not burning CPU) is limited by wall time too.
    let err = s
        .run("import time; time.sleep(60)")
        .await
        .expect_err("must time out");
    assert!(matches!(err, PythonError::Timeout { .. }), "{err}");
    assert_eq!(run(&mut s, "2 + 2").await.value.as_deref(), Some("4"));
}

#[tokio::test]
async fn cpu_time_is_limited_per_call() {
    let mut s = PythonSandbox::new()
        .wall_time(Duration::from_secs(20))
        .cpu_time(Duration::from_secs(1))
        .start()
        .await
        .expect("start");
    // Many short calls add up to more than the limit without hitting it.
    for _ in 0..3 {
        run(
            &mut s,
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass",
        )
        .await;
    }
    let t = Instant::now();
    let err = s
        .run("while True: pass")
        .await
        .expect_err("must hit the CPU limit");
    assert!(
        matches!(
            err,
            PythonError::Timeout {
                kind: LimitKind::CpuTime,
                ..
            }
        ),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(run(&mut s, "1").await.value.as_deref(), Some("1"));
}

#[tokio::test]
async fn memory_bombs_are_contained() {
    let mut s = PythonSandbox::new()
        .memory(256 * 1024 * 1024)
        .start()
        .await
        .expect("start");
    run(&mut s, "keep = 7").await;
    let out = run(&mut s, "b = bytearray(10**10)").await;
    assert_eq!(out.error_type.as_deref(), Some("MemoryError"), "{out:?}");
    let out = run(&mut s, "x = [0] * (10**9)").await;
    assert_eq!(out.error_type.as_deref(), Some("MemoryError"), "{out:?}");
    let r = s.run("big = []\nwhile True: big.append(' ' * 10**6)").await;
    match r {
        Ok(out) => assert_eq!(out.error_type.as_deref(), Some("MemoryError"), "{out:?}"),
        Err(e) => assert!(e.retryable(), "{e}"),
    }
    run(&mut s, "big = None").await;
    assert_eq!(
        run(&mut s, "sum(range(10))").await.value.as_deref(),
        Some("45")
    );
}

#[tokio::test]
async fn crashes_are_reported_and_the_session_recovers() {
    let mut s = session().await;
    let err = s
        .run("import os; os._exit(3)")
        .await
        .expect_err("worker exits");
    match &err {
        PythonError::Crashed { detail } => assert!(detail.contains("status 3"), "{detail}"),
        other => panic!("{other}"),
    }
    assert!(err.retryable());
    assert_one_line(&err);
    assert_eq!(run(&mut s, "1 + 1").await.value.as_deref(), Some("2"));
    let err = s
        .run("import ctypes; ctypes.string_at(0)")
        .await
        .expect_err("segfault");
    match &err {
        PythonError::Crashed { detail } => assert!(detail.contains("SIGSEGV"), "{detail}"),
        other => panic!("{other}"),
    }
    let err = s
        .run("import os; os.close(3); os.close(4)")
        .await
        .expect_err("protocol closed");
    assert!(err.retryable(), "{err}");
    assert_eq!(
        run(&mut s, "'alive'").await.value.as_deref(),
        Some("'alive'")
    );
    // Forged frames on the protocol fd are not taken for the answer.
    let out = run(
        &mut s,
        "import os\nbody = b'I' + (4).to_bytes(4, 'big') + (0).to_bytes(4, 'big') + b'V' + (1).to_bytes(4, 'big') + b'!'\n\
         os.write(4, len(body).to_bytes(4, 'big') + body)\n'real'",
    )
    .await;
    assert_eq!(out.value.as_deref(), Some("'real'"));
    assert_eq!(s.restarts(), 3);
    let err = s.run(&"#".repeat(2 << 20)).await.expect_err("too large");
    assert!(matches!(err, PythonError::CodeTooLarge { .. }));
    assert!(!err.retryable());
}

#[tokio::test]
async fn forked_children_do_not_answer_for_the_worker() {
    let mut s = session().await;
    let out = run(
        &mut s,
        "import os\npid = os.fork()\nprint('parent' if pid else 'child')",
    )
    .await;
    // The child's copy of the runner exits silently; its fd-level output is lost.
    assert_eq!(out.stdout, "parent\n");
    assert_eq!(run(&mut s, "3 * 3").await.value.as_deref(), Some("9"));
    assert_eq!(run(&mut s, "4 * 4").await.value.as_deref(), Some("16"));
}

#[tokio::test]
async fn the_sandbox_fails_closed() {
    for feature in [
        SandboxFeature::UserNamespace,
        SandboxFeature::MountNamespace,
        SandboxFeature::PidNamespace,
        SandboxFeature::NetworkNamespace,
        SandboxFeature::Seccomp,
    ] {
        let err = PythonSandbox::new()
            .disable_feature(feature)
            .start()
            .await
            .expect_err("must refuse to start");
        match &err {
            PythonError::SandboxUnavailable { feature: f, .. } => assert_eq!(*f, feature),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains(&feature.to_string()), "{err}");
        assert!(err.to_string().contains("allow_unsandboxed"), "{err}");
        assert!(!err.retryable());
        assert_one_line(&err);
    }
    // Landlock is optional: the session starts without it.
    let mut s = PythonSandbox::new()
        .disable_feature(SandboxFeature::Landlock)
        .start()
        .await
        .expect("start without Landlock");
    assert!(s.layers().landlock_abi.is_none());
    assert!(s.layers().namespaces);
    assert_eq!(run(&mut s, "6 * 7").await.value.as_deref(), Some("42"));
    // Explicit opt-out.
    let mut s = PythonSandbox::new()
        .disable_feature(SandboxFeature::UserNamespace)
        .allow_unsandboxed(true)
        .start()
        .await
        .expect("start unsandboxed");
    assert!(s.layers().unsandboxed);
    assert!(s.layers().to_string().contains("UNSANDBOXED"));
    assert_eq!(run(&mut s, "6 * 7").await.value.as_deref(), Some("42"));
    let err = s.run("while True: pass").await;
    assert!(err.is_ok() || err.as_ref().is_err_and(PythonError::retryable));
}

#[tokio::test]
async fn a_missing_interpreter_is_a_clear_error() {
    let err = PythonSandbox::new()
        .python("/nonexistent/python3")
        .start()
        .await
        .expect_err("no interpreter");
    assert!(matches!(err, PythonError::Interpreter { .. }), "{err}");
    assert_one_line(&err);
}

#[tokio::test]
async fn an_abandoned_call_kills_its_worker_at_once() {
    let mut s = PythonSandbox::new()
        .wall_time(Duration::from_secs(30))
        .start()
        .await
        .expect("start");
    let worker = s.worker_pid().expect("worker");
    let call = tokio::time::timeout(
        Duration::from_millis(300),
        s.run("import time; time.sleep(60)"),
    )
    .await;
    assert!(call.is_err(), "the call was abandoned");
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::path::Path::new(&format!("/proc/{worker}")).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{worker}")).exists(),
        "worker still running"
    );
    // The session goes on with a fresh worker.
    assert_eq!(run(&mut s, "1 + 2").await.value.as_deref(), Some("3"));
    assert_eq!(s.restarts(), 1);
}

fn processes_with(token: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(token) {
                found.push(pid);
            }
        }
    }
    found
}

#[tokio::test]
async fn dropping_the_session_kills_everything_it_started() {
    let mut s = session().await;
    let token = format!("{}.{}", std::process::id(), 4242);
    let out = run(
        &mut s,
        &format!(
            "import subprocess\n\
             p = subprocess.Popen(['sh', '-c', 'sleep {token}'], start_new_session=True)\n\
             q = subprocess.Popen(['sleep', '{token}'])\n'started'"
        ),
    )
    .await;
    assert_eq!(out.value.as_deref(), Some("'started'"));
    let worker = s.worker_pid().expect("worker");
    let deadline = Instant::now() + Duration::from_secs(2);
    while processes_with(&token).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        processes_with(&token).len() >= 2,
        "the sleepers are visible from the host"
    );
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(2);
    while (!processes_with(&token).is_empty()
        || std::path::Path::new(&format!("/proc/{worker}")).exists())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        processes_with(&token).is_empty(),
        "sleepers survived the session"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{worker}")).exists(),
        "worker survived"
    );
}

/// Runs in a child copy of this test binary (see the next test): starts a session
/// with a background sleeper, reports the pids and dies without any cleanup.
#[tokio::test]
#[ignore = "helper: run by workers_die_with_the_host"]
async fn host_death_helper() {
    let Ok(token) = std::env::var("JIELONG_HOST_DEATH_TOKEN") else {
        return;
    };
    let mut s = session().await;
    run(
        &mut s,
        &format!(
            "import subprocess\np = subprocess.Popen(['sleep', '{token}'], start_new_session=True)"
        ),
    )
    .await;
    println!("WORKER {}", s.worker_pid().unwrap_or(0));
    std::process::abort();
}

#[tokio::test]
async fn workers_die_with_the_host() {
    let token = format!("{}.{}", std::process::id(), 777);
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "host_death_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("JIELONG_HOST_DEATH_TOKEN", &token)
        .output()
        .expect("run helper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let worker: u32 = stdout
        .lines()
        .find_map(|l| l.split("WORKER ").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "helper output: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(worker > 0);
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while (alive(worker) || !processes_with(&token).is_empty()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(worker), "worker outlived its host");
    assert!(
        processes_with(&token).is_empty(),
        "sleeper outlived the host"
    );
}
