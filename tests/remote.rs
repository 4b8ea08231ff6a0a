//! The remote backend against llama.cpp's own `llama-server` (built by
//! `scripts/llama-server.sh`) serving the default model: `jielong run` on an `openai:`
//! reference computes with the python tool; a session streams text (with
//! log-probabilities, a prefill continued without its echo); a workflow whose model is
//! remote runs; an unknown model id names the served one. Without the binary, each
//! test prints a skip line and passes.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{model_lock, text, QWEN};
use jielong::chat::{
    Chat, ChatRequest, GenerationEvent, LanguageModel, Message, RemoteFault, RuntimeError,
    SessionOptions,
};
use jielong::{RemoteConfig, RemoteModel};
use serde_json::Value;

/// The id the server lists the model under (`--alias`).
const ALIAS: &str = "jielong-test-qwen";

/// Where `scripts/llama-server.sh` installs the binary.
fn llama_server_binary() -> PathBuf {
    let prefix = std::env::var_os("JIELONG_LLAMA_SERVER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("jielong/llama-server")
        });
    prefix.join("bin/llama-server")
}

/// The default model's file (pulled into the cache if needed; not loaded here).
fn model_file() -> PathBuf {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let store = jielong::ModelStore::from_env().expect("the model store");
        let reference = store.parse(QWEN).expect("the catalog name");
        store
            .resolve(&reference, &jielong::models::NoProgress)
            .await
            .expect("the default model is available")
    })
}

/// A running `llama-server` on a free loopback port; killed on drop.
struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LlamaServer {
    /// Starts the server with the default model, or `None` (after a skip line) when the
    /// binary is not built.
    fn start() -> Option<LlamaServer> {
        let binary = llama_server_binary();
        if !binary.is_file() {
            println!(
                "skipping: no llama-server at {} (build it with scripts/llama-server.sh)",
                binary.display()
            );
            return None;
        }
        let model = model_file();
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("an address").port()
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("llama-server.log");
        let log_file = std::fs::File::create(&log).expect("the log file");
        let child = Command::new(&binary)
            .arg("-m")
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--alias", ALIAS, "--jinja"])
            // One thread each way, one slot: the machine has two cores and other tests.
            .args(["-t", "1", "-tb", "1", "-c", "8192", "-np", "1"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the log file"))
            .stderr(log_file)
            .spawn()
            .expect("llama-server starts");
        let mut server = LlamaServer {
            child,
            port,
            log,
            _dir: dir,
        };
        server.wait_healthy();
        Some(server)
    }

    /// Waits for `GET /health` to answer 200 (503 while the model loads).
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("llama-server exited with {status}: {}", self.log_tail());
            }
            if health(self.port) == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "llama-server did not become healthy: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `openai:http://127.0.0.1:PORT/v1#ALIAS`.
    fn reference(&self) -> String {
        format!("openai:http://127.0.0.1:{}/v1#{ALIAS}", self.port)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of `GET /health`, if anything answers.
fn health(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(
            format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

fn jielong(args: &[&str], dir: &Path) -> Output {
    common::command()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the binary runs")
}

#[test]
fn jielong_run_on_a_remote_model_computes_with_python() {
    let _lock = model_lock();
    let Some(server) = LlamaServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = dir.path().join("trace.jsonl");
    let reference = server.reference();
    let out = jielong(
        &[
            "run",
            "--model",
            &reference,
            "What is 12345 * 6789?",
            "--trace",
            trace.to_str().expect("a UTF-8 path"),
        ],
        dir.path(),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout {stdout}\nstderr {stderr}\nserver {}",
        server.log_tail()
    );
    assert!(
        stdout.contains("83810205"),
        "stdout {stdout:?}, stderr {stderr}"
    );
    // The computed sample's call shows on stderr.
    assert!(stderr.contains("→ python("), "{stderr}");
    let events: Vec<Value> = std::fs::read_to_string(&trace)
        .expect("the trace")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    // The default votes across a written and a computed answer: the python call is
    // inside a sample.
    let ran = events.iter().map(common::unwrapped).any(|e| {
        e["type"] == "tool_result"
            && e["name"] == "python"
            && e["ok"] == true
            && e["content"]
                .as_str()
                .is_some_and(|c| c.contains("83810205"))
    });
    assert!(ran, "the python tool computed it: {events:?}");
    // The server's usage came through.
    let prompt_tokens: u64 = events
        .iter()
        .map(common::unwrapped)
        .filter(|e| e["type"] == "step_finished")
        .filter_map(|e| e["usage"]["prompt_tokens"].as_u64())
        .sum();
    assert!(prompt_tokens > 0, "{events:?}");
}

#[test]
fn a_remote_session_streams_text() {
    let _lock = model_lock();
    let Some(server) = LlamaServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let config = RemoteConfig::parse(&server.reference()).expect("a good reference");
        let model = RemoteModel::connect(config).await.expect("connects");
        assert_eq!(model.info().name, ALIAS);
        assert!(model.info().context_length >= 8192, "{:?}", model.info());
        let mut session = model
            .open_session(&SessionOptions::default())
            .expect("a session");
        assert_eq!(session.context_size(), 8192);

        // Streamed pieces, with log-probabilities.
        let ask = |question: &str| Chat::new(vec![Message::user(question)]);
        let request = ChatRequest {
            logprobs: Some(2),
            ..ChatRequest::new(48)
        };
        for (question, want) in [
            ("What is the capital of France? One word.", vec!["Paris"]),
            (
                "Name the capitals of France and Italy in one short sentence.",
                vec!["Paris", "Rome"],
            ),
        ] {
            let mut generation = session.respond(&ask(question), &request).expect("starts");
            let mut pieces = Vec::new();
            let mut logprobs = 0;
            let completion = loop {
                match generation.next().await.expect("an event") {
                    GenerationEvent::Text(piece) => pieces.push(piece),
                    GenerationEvent::Logprob(_) => logprobs += 1,
                    GenerationEvent::Done(result) => break result.expect("a completion"),
                    _ => {}
                }
            };
            let answer = pieces.concat();
            assert_eq!(answer, completion.text);
            for word in want {
                assert!(answer.contains(word), "{question}: {answer:?}");
            }
            if question.contains("sentence") {
                assert!(pieces.len() > 2, "streamed in pieces: {pieces:?}");
            }
            let usage = &completion.usage;
            assert!(
                usage.prompt_tokens > 0 && usage.generated_tokens > 0,
                "{usage:?}"
            );
            assert_eq!(
                usage.prompt_tokens,
                usage.cached_tokens + usage.evaluated_tokens
            );
            assert_eq!(logprobs, completion.logprobs.len());
            // One per generated token (the end-of-generation token may have none).
            assert!(
                logprobs > 0
                    && logprobs <= usage.generated_tokens
                    && logprobs + 1 >= usage.generated_tokens,
                "{logprobs} log-probabilities for {} tokens",
                usage.generated_tokens
            );
        }

        // A prefill is continued, and the server's echo of it is not output.
        let chat = ask("What is the capital of France?").with_prefill("The capital of France is");
        let completion = session
            .respond(&chat, &ChatRequest::new(16))
            .expect("starts")
            .finish(|_| {})
            .await
            .expect("a completion");
        assert!(completion.text.contains("Paris"), "{:?}", completion.text);
        assert!(
            !completion.text.starts_with("The capital"),
            "{:?}",
            completion.text
        );

        // An id the server does not serve.
        let wrong =
            RemoteConfig::parse(&format!("openai:http://127.0.0.1:{}/v1#gpt-9", server.port))
                .expect("a good reference");
        match RemoteModel::connect(wrong).await {
            Err(RuntimeError::Remote {
                kind: RemoteFault::UnknownModel,
                message,
            }) => assert!(message.contains(ALIAS), "{message}"),
            other => panic!("want UnknownModel, got {other:?}"),
        }
    });
}

#[test]
fn a_workflow_runs_on_a_remote_model() {
    let _lock = model_lock();
    let Some(server) = LlamaServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("remote.yaml");
    std::fs::write(
        &file,
        format!(
            r#"name: remote
models:
  served:
    model: "{}"
agents:
  solver:
    model: served
    tools: [python]
    max_steps: 6
steps:
  - id: solve
    agent: solver
    input: "What is 12345 * 6789?"
outputs:
  answer: "{{{{ steps.solve.output }}}}"
"#,
            server.reference()
        ),
    )
    .expect("write the workflow");
    let runs = dir.path().join("runs");
    let out = jielong(
        &[
            "workflow",
            "run",
            file.to_str().expect("a UTF-8 path"),
            "--json",
            "--runs",
            runs.to_str().expect("a UTF-8 path"),
        ],
        dir.path(),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout {stdout}\nstderr {stderr}\nserver {}",
        server.log_tail()
    );
    let outputs: Value = serde_json::from_str(&stdout).expect("the outputs as JSON");
    let answer = outputs["answer"].as_str().unwrap_or_default();
    assert!(answer.contains("83810205"), "{outputs}; stderr {stderr}");
    assert!(stderr.contains("→ python("), "{stderr}");
}

#[test]
fn an_unreachable_server_is_exit_code_3() {
    // No model here: nothing listens on the port.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("an address").port()
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let reference = format!("openai:http://127.0.0.1:{port}/v1#{ALIAS}");
    let out = jielong(
        &["run", "--model", &reference, "What is 2 + 2?"],
        dir.path(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("http://127.0.0.1:{port}/v1/models")),
        "{stderr}"
    );

    // A reference that is not one: exit code 3 too, saying what is wrong.
    let out = jielong(
        &["run", "--model", "openai:http://127.0.0.1:1/v1", "hi"],
        dir.path(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("no model id"), "{stderr}");
}
