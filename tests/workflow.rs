//! YAML workflows end to end on the default model: every example in
//! `examples/workflows/` runs and gives its expected outputs (one through the library
//! API, the others through `jielong workflow run`); a run killed with SIGKILL mid-way
//! resumes without redoing finished steps (counted by a loopback HTTP server the steps
//! fetch from); broken files fail validation with file:line:col; `jielong runs` shows
//! what happened.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{model_lock, model_path, text, QWEN};
use jielong::workflow::{store::RunStore, RunOptions, Workflow};
use serde_json::Value;

/// `examples/workflows` copied to a temporary folder (runs write indexes next to the
/// workflow file; the source tree stays clean).
fn examples() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows"),
        dir.path(),
    );
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the examples") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            if entry.file_name() != ".jielong" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// `jielong ARGS --runs RUNS`.
fn jielong(args: &[&str], runs: &Path) -> Output {
    common::command()
        .args(args)
        .arg("--runs")
        .arg(runs)
        .output()
        .expect("the binary runs")
}

/// `jielong workflow run FILE --json` with inputs: the outputs object.
fn run_example(file: &Path, inputs: &[&str], runs: &Path) -> serde_json::Map<String, Value> {
    let mut args = vec![
        "workflow",
        "run",
        file.to_str().expect("a UTF-8 path"),
        "--json",
    ];
    for input in inputs {
        args.push("--input");
        args.push(input);
    }
    let out = jielong(&args, runs);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: stderr {}",
        file.display(),
        text(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Object(outputs)) => outputs,
        other => panic!("{}: stdout is not a JSON object: {other:?}", file.display()),
    }
}

/// The only run in `runs`: its directory.
fn only_run(runs: &Path) -> PathBuf {
    let list = RunStore::new(runs).list().expect("the runs list");
    assert_eq!(list.len(), 1, "one run in {}", runs.display());
    list[0].path.clone()
}

fn trace_of(run_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("trace.jsonl"))
        .expect("the run's trace")
        .lines()
        .map(|line| serde_json::from_str(line).expect("every trace line is JSON"))
        .collect()
}

#[test]
fn math_example_runs_through_the_library_api() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let examples = examples();
    let runs = tempfile::tempdir().expect("a runs directory");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let report = runtime
        .block_on(async {
            let workflow = Workflow::from_file(examples.path().join("math.yaml"))?;
            workflow
                .run(
                    &jielong::LocalModels::new(),
                    RunOptions::new().store(RunStore::new(runs.path())),
                )
                .await
        })
        .expect("the workflow runs");
    let answer = report.outputs["answer"].as_str().expect("a text answer");
    assert!(answer.contains("338350"), "answer: {answer}");
    assert_eq!(report.executed, ["solve"]);
    // The trace holds the agent's events (with their own step number), tagged with the
    // workflow's step, each line with its time.
    let trace = trace_of(&report.dir);
    assert!(
        trace.iter().all(|e| e["ts_ms"].is_u64()),
        "every line has ts_ms"
    );
    assert!(trace
        .iter()
        .any(|e| e["type"] == "step_started" && e["workflow_step"] == "solve" && e["step"] == 1));
    assert!(
        trace.iter().any(|e| e["type"] == "tool_result"
            && e["workflow_step"] == "solve"
            && e["step"].is_u64()
            && e["name"] == "python"
            && e["content"].as_str().is_some_and(|c| c.contains("338350"))),
        "the python result is in the trace"
    );
    assert!(trace
        .iter()
        .any(|e| e["type"] == "run_finished" && e["ok"] == true));
}

#[test]
fn fan_out_example_answers_every_question() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let examples = examples();
    let runs = tempfile::tempdir().expect("a runs directory");
    let outputs = run_example(&examples.path().join("fan_out.yaml"), &[], runs.path());
    let answers = outputs["answers"].as_array().expect("a list of answers");
    assert_eq!(answers.len(), 3, "{answers:?}");
    for (answer, expected) in answers.iter().zip(["391", "65536", "2"]) {
        let answer = answer.as_str().expect("text answers");
        assert!(
            answer.contains(expected),
            "{answer:?} should contain {expected}"
        );
    }
    let table = outputs["table"].as_str().expect("a table");
    assert!(
        table.contains("1. What is 17 * 23? ->") && table.contains("391"),
        "{table}"
    );
    // One finished element per question, on disk.
    let run = only_run(runs.path());
    for i in 0..3 {
        assert!(run.join(format!("steps/answer/{i}.json")).is_file());
    }
}

#[test]
fn writer_example_outlines_drafts_and_reflects() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let examples = examples();
    let runs = tempfile::tempdir().expect("a runs directory");
    let outputs = run_example(&examples.path().join("writer.yaml"), &[], runs.path());
    let body = outputs["text"].as_str().expect("a text");
    let words = body.split_whitespace().count();
    assert!(words >= 20, "a paragraph, not {words} words: {body:?}");
    assert!(
        body.to_lowercase().contains("scatter") || body.to_lowercase().contains("light"),
        "{body}"
    );
    let length = outputs["length"].as_str().expect("a word count");
    assert_eq!(
        length,
        format!("{words} words"),
        "the python step counted the draft"
    );
    let outline = outputs["outline"].as_str().expect("an outline");
    assert!(
        outline.lines().filter(|l| !l.trim().is_empty()).count() >= 2,
        "{outline}"
    );
    // The draft was critiqued (and revised if the critique found a fault).
    let trace = trace_of(&only_run(runs.path()));
    assert!(
        trace
            .iter()
            .any(|e| e["type"] == "critique" && e["workflow_step"] == "draft"),
        "a critique of the draft"
    );
}

#[test]
fn research_example_answers_from_the_folder_with_citations() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let examples = examples();
    let runs = tempfile::tempdir().expect("a runs directory");
    let file = examples.path().join("research.yaml");
    let outputs = run_example(
        &file,
        &["question=When was the Lumen Bridge opened?"],
        runs.path(),
    );
    let answer = outputs["answer"].as_str().expect("an answer");
    assert!(answer.contains("1987"), "answer: {answer}");
    assert!(
        answer.contains("[1]"),
        "the answer cites the passage: {answer}"
    );
    let sources = outputs["sources"].as_str().expect("sources");
    let first = sources.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("[1]") && first.contains("lumen-bridge.md:"),
        "{sources}"
    );
    // The index was built next to the workflow; a second run finds it current.
    assert!(examples.path().join(".jielong/research-index").is_dir());
    let again = jielong(
        &[
            "workflow",
            "run",
            file.to_str().expect("UTF-8"),
            "--input",
            "question=What is sold at the Oriel market?",
        ],
        runs.path(),
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("0 files added or changed, 3 unchanged"),
        "{}",
        text(&again.stderr)
    );
}

/// An HTTP server on 127.0.0.1 that counts requests per path. `/number` answers
/// `41`, `/page/NAME` answers `page NAME`; `/page/slow` holds its answer until
/// released and reports that it was asked.
struct CountingServer {
    base: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    release: Arc<AtomicBool>,
    slow_asked: mpsc::Receiver<()>,
}

impl CountingServer {
    fn start() -> CountingServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let release = Arc::new(AtomicBool::new(false));
        let (asked, slow_asked) = mpsc::channel();
        let (c, r) = (counts.clone(), release.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (c, r, asked) = (c.clone(), r.clone(), asked.clone());
                std::thread::spawn(move || serve(stream, &c, &r, &asked));
            }
        });
        CountingServer {
            base,
            counts,
            release,
            slow_asked,
        }
    }

    fn count(&self, path: &str) -> usize {
        self.counts
            .lock()
            .map(|c| c.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

fn serve(
    mut stream: TcpStream,
    counts: &Mutex<HashMap<String, usize>>,
    release: &AtomicBool,
    asked: &mpsc::Sender<()>,
) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    if let Ok(mut c) = counts.lock() {
        *c.entry(path.clone()).or_insert(0) += 1;
    }
    if path == "/page/slow" {
        let _ = asked.send(());
        let start = Instant::now();
        while !release.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let body = match path.as_str() {
        "/number" => "41".to_string(),
        p => format!("page {}", p.trim_start_matches("/page/")),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `jielong workflow run FILE --resume ID --json`.
fn resume(file: &Path, id: &str, runs: &Path) -> Output {
    let file = file.to_str().expect("a UTF-8 path");
    jielong(&["workflow", "run", file, "--resume", id, "--json"], runs)
}

const RESUME_WORKFLOW: &str = r#"
name: resume-check
inputs:
  base: {type: string}
tools:
  fetch_url: {allow_hosts: ["127.0.0.1"]}
agents:
  solver: {tools: [python], max_steps: 5}
concurrency: 1
steps:
  - id: number
    tool: fetch_url
    args: {url: "{{ inputs.base }}/number"}
  - id: pages
    for_each: '["a", "b", "slow"]'
    tool: fetch_url
    args: {url: "{{ inputs.base }}/page/{{ item }}"}
  - id: solve
    needs: [pages]
    agent: solver
    input: "What is {{ steps.number.output | trim }} * 3?"
outputs:
  pages: "{{ steps.pages.output }}"
  answer: "{{ steps.solve.output }}"
"#;

#[test]
fn a_killed_run_resumes_without_redoing_finished_steps() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let server = CountingServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("resume.yaml");
    std::fs::write(&file, RESUME_WORKFLOW).expect("write the workflow");
    let runs = dir.path().join("runs");
    let input = format!("base={}", server.base);

    let mut child = common::command()
        .args(["workflow", "run"])
        .arg(&file)
        .args(["--input", &input, "--runs"])
        .arg(&runs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    // Kill it while the third element of `pages` is being fetched.
    server
        .slow_asked
        .recv_timeout(Duration::from_secs(120))
        .expect("the run reaches /page/slow");
    assert!(
        child.try_wait().expect("the child's state").is_none(),
        "still running"
    );
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    server.release.store(true, Ordering::SeqCst);

    // What the killed run left: the first step and two elements, not the rest.
    let run = only_run(&runs);
    assert!(run.join("steps/number.json").is_file());
    assert!(run.join("steps/pages/0.json").is_file() && run.join("steps/pages/1.json").is_file());
    assert!(!run.join("steps/pages/2.json").exists() && !run.join("steps/pages.json").exists());
    let listed = jielong(&["runs", "list", "--json"], &runs);
    let line: Value = serde_json::from_slice(&listed.stdout).expect("one JSON line");
    assert_eq!(line["state"], "interrupted", "{line}");
    let id = line["id"].as_str().expect("an id").to_string();

    let resumed = resume(&file, &id, &runs);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let outputs: Value = serde_json::from_slice(&resumed.stdout).expect("JSON outputs");
    assert_eq!(
        outputs["pages"],
        serde_json::json!(["page a", "page b", "page slow"])
    );
    assert!(
        outputs["answer"]
            .as_str()
            .is_some_and(|a| a.contains("123")),
        "{outputs}"
    );
    // Finished work was not fetched again; only the element in flight was.
    assert_eq!(server.count("/number"), 1);
    assert_eq!(server.count("/page/a"), 1);
    assert_eq!(server.count("/page/b"), 1);
    assert_eq!(server.count("/page/slow"), 2);
    let stderr = text(&resumed.stderr);
    assert!(stderr.contains("number: finished earlier"), "{stderr}");
    assert!(stderr.contains("(2 finished earlier)"), "{stderr}");

    // Resuming a finished run runs nothing and gives the same outputs.
    let again = resume(&file, &id, &runs);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(
        serde_json::from_slice::<Value>(&again.stdout).ok(),
        Some(outputs)
    );
    assert_eq!(server.count("/page/slow"), 2);

    let shown = jielong(&["runs", "show", &id], &runs);
    let shown = text(&shown.stdout);
    assert!(shown.contains("state: succeeded (attempts: 3)"), "{shown}");
    assert!(shown.contains("✓ solve"), "{shown}");
}

#[test]
fn broken_workflows_fail_validation_with_their_place() {
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflow/tests/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&broken)
        .expect("the broken examples")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6);
    let runs = tempfile::tempdir().expect("a runs directory");
    for file in &files {
        let out = common::jielong(&["workflow", "validate", file.to_str().expect("UTF-8")]);
        assert_eq!(out.status.code(), Some(2), "{}", file.display());
        let stderr = text(&out.stderr);
        let prefix = format!("{}:", file.display());
        let first = stderr.lines().next().unwrap_or_default();
        // file:line:col: field: message
        let rest = first
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{first}"));
        let mut parts = rest.splitn(3, ':');
        let line: u32 = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let column: u32 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        assert!(line > 0 && column > 0, "{first}");
        // Running it refuses the same way, before anything runs.
        let run = jielong(
            &["workflow", "run", file.to_str().expect("UTF-8")],
            runs.path(),
        );
        assert_eq!(run.status.code(), Some(2), "{}", file.display());
        assert!(text(&run.stderr).contains(&prefix), "{}", text(&run.stderr));
    }
    // Nothing ran: no run was created.
    assert!(RunStore::new(runs.path())
        .list()
        .map_or(true, |l| l.is_empty()));
    // Every example validates.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows");
    for name in [
        "math.yaml",
        "fan_out.yaml",
        "writer.yaml",
        "research.yaml",
        "strategies.yaml",
    ] {
        let out = common::jielong(&[
            "workflow",
            "validate",
            examples.join(name).to_str().expect("UTF-8"),
        ]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
    }
    // The schema is JSON and describes the steps.
    let schema = common::jielong(&["workflow", "schema"]);
    let schema: Value = serde_json::from_slice(&schema.stdout).expect("the schema is JSON");
    assert!(schema["properties"]["steps"].is_object(), "{schema}");
}
