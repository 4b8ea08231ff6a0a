//! The executor's logic against a scripted model: the graph order, templates between
//! steps, `for_each`, `when`, one request at a time per model, failures that stop the
//! run but keep finished steps, and resuming a failed run without redoing them.
//! (The real model runs the same workflows in the root package's `tests/workflow.rs`.)

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jielong_chat::{
    Capabilities, Chat, ChatRequest, Completion, FinishReason, GenerateRequest, Generation,
    LanguageModel, ModelInfo, ModelSession, RuntimeError, SessionOptions, ToolCallFormat, Usage,
};
use jielong_llama::{ChatTemplate, PromptFormat};
use jielong_workflow::store::{RunStore, StepStatus};
use jielong_workflow::{ModelProvider, RunOptions, RunReport, Workflow, WorkflowError};
use serde_json::{json, Value};

/// What the scripted model saw and did, shared by all its sessions.
#[derive(Default)]
struct Log {
    /// Every task it answered (the last user message of each prompt).
    tasks: Mutex<Vec<String>>,
    /// Requests in flight now, and the most ever at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// When set, a task containing "FAIL" makes the model fail.
    broken: AtomicBool,
    /// When set, every reply is empty (never an answer).
    silent: AtomicBool,
}

/// A model that answers `echo: <task>` after a short pause.
struct Echo {
    info: ModelInfo,
    template: ChatTemplate,
    log: Arc<Log>,
}

struct EchoSession {
    template: ChatTemplate,
    log: Arc<Log>,
}

impl LanguageModel for Echo {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            raw_prompts: true,
            ..Capabilities::CHAT_ONLY
        }
    }

    fn open_session(&self, _: &SessionOptions) -> Result<Box<dyn ModelSession>, RuntimeError> {
        Ok(Box::new(EchoSession {
            template: self.template.clone(),
            log: self.log.clone(),
        }))
    }
}

/// The last user message of a ChatML prompt.
fn last_user_message(prompt: &str) -> String {
    let start = prompt
        .rfind("<|im_start|>user\n")
        .map_or(0, |i| i + "<|im_start|>user\n".len());
    let rest = &prompt[start..];
    rest[..rest.find("<|im_end|>").unwrap_or(rest.len())].to_string()
}

impl ModelSession for EchoSession {
    fn generate(&mut self, prompt: &str, _: &GenerateRequest) -> Result<Generation, RuntimeError> {
        let task = last_user_message(prompt);
        if self.log.broken.load(Ordering::SeqCst) && task.contains("FAIL") {
            return Err(RuntimeError::InvalidRequest("scripted failure".into()));
        }
        self.log.tasks.lock().unwrap().push(task.clone());
        let now = self.log.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.log.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let text = if self.log.silent.load(Ordering::SeqCst) {
            String::new()
        } else {
            format!("echo: {task}")
        };
        let (sender, generation) = Generation::channel();
        let log = self.log.clone();
        let finish = FinishReason::EndOfText;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            log.in_flight.fetch_sub(1, Ordering::SeqCst);
            sender.text(text.clone());
            let usage = Usage {
                generated_tokens: text.len(),
                ..Usage::default()
            };
            sender.done(Ok(Completion::new(text, finish, usage)));
        });
        Ok(generation)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            raw_prompts: true,
            ..Capabilities::CHAT_ONLY
        }
    }

    fn respond(&mut self, chat: &Chat, request: &ChatRequest) -> Result<Generation, RuntimeError> {
        let format = PromptFormat {
            template: self.template.clone(),
            calls: ToolCallFormat::Hermes,
        };
        format.respond(chat, request, |prompt, request| {
            self.generate(prompt, request)
        })
    }

    fn reset(&mut self) -> Result<(), RuntimeError> {
        Ok(())
    }

    fn context_size(&self) -> u32 {
        8192
    }
}

/// Hands out the echo model; counts loads per reference.
struct Provider {
    log: Arc<Log>,
    loads: Mutex<Vec<String>>,
}

impl Provider {
    fn new() -> Provider {
        Provider {
            log: Arc::new(Log::default()),
            loads: Mutex::new(Vec::new()),
        }
    }

    fn tasks(&self) -> Vec<String> {
        self.log.tasks.lock().unwrap().clone()
    }
}

impl ModelProvider for Provider {
    fn load<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn LanguageModel>, String>> {
        Box::pin(async move {
            if reference == "missing-model" {
                return Err("no such model in the catalog".to_string());
            }
            self.loads.lock().unwrap().push(reference.to_string());
            let info = ModelInfo {
                name: reference.to_string(),
                path: None,
                architecture: "echo".into(),
                context_length: 8192,
                parameters: 0,
                size_bytes: 0,
                has_own_template: false,
                tool_call_format: ToolCallFormat::Hermes,
            };
            Ok(Arc::new(Echo {
                info,
                template: ChatTemplate::chatml(),
                log: self.log.clone(),
            }) as Arc<dyn LanguageModel>)
        })
    }

    fn default_model(&self) -> String {
        "echo-default".to_string()
    }
}

fn workflow(yaml: &str, dir: &Path) -> Workflow {
    let file = dir.join("flow.yaml");
    std::fs::write(&file, yaml).unwrap();
    Workflow::from_file(&file).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a workflow on the echo model with runs kept in `dir/runs`.
async fn check(
    flow: &Workflow,
    provider: &Provider,
    dir: &Path,
    options: RunOptions,
) -> Result<RunReport, WorkflowError> {
    flow.run(provider, options.store(RunStore::new(dir.join("runs"))))
        .await
}

const PIPELINE: &str = r#"
name: pipeline
inputs:
  n: {type: integer, default: 3}
  names: {type: list, default: [ann, bo, cy]}
agents:
  echo: {max_steps: 2}
steps:
  - id: last
    agent: echo
    input: "{{ steps.each.output | join(' + ') }} / skipped={{ steps.skipped.output }}"
  - id: each
    for_each: inputs.names
    agent: echo
    input: "{{ index }}:{{ item }} after [{{ steps.first.output }}]"
  - id: skipped
    when: inputs.n > 5
    agent: echo
    input: never
  - id: first
    agent: echo
    input: "hello {{ inputs.n }}"
outputs:
  all: "{{ steps.last.output }}"
  list: "{{ steps.each.output }}"
  n: "{{ inputs.n * 2 }}"
"#;

#[tokio::test]
async fn steps_run_in_dependency_order_with_their_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let flow = workflow(PIPELINE, dir.path());
    let provider = Provider::new();
    let report = check(&flow, &provider, dir.path(), RunOptions::new())
        .await
        .unwrap();
    let each = [
        "echo: 0:ann after [echo: hello 3]",
        "echo: 1:bo after [echo: hello 3]",
        "echo: 2:cy after [echo: hello 3]",
    ];
    assert_eq!(report.outputs["list"], json!(each));
    assert_eq!(
        report.outputs["all"],
        json!(format!("echo: {} / skipped=None", each.join(" + ")))
    );
    // A template that is one expression keeps the value's type.
    assert_eq!(report.outputs["n"], json!(6));
    // `first` before `each`, `each` before `last`; `skipped` never asked the model.
    let tasks = provider.tasks();
    assert_eq!(tasks.len(), 5, "{tasks:?}");
    assert_eq!(tasks[0], "hello 3");
    assert!(tasks[4].starts_with("echo: 0:ann"));
    assert!(!tasks.iter().any(|t| t == "never"));
    // The skipped step is recorded as such; one model loaded, the default one.
    let view = RunStore::new(dir.path().join("runs"))
        .inspect(&report.run_id)
        .unwrap();
    assert_eq!(view.steps["skipped"].status, StepStatus::Skipped);
    assert_eq!(view.steps["skipped"].output, Value::Null);
    assert_eq!(view.items["each"], 3);
    assert_eq!(*provider.loads.lock().unwrap(), ["echo-default"]);
}

#[tokio::test]
async fn inputs_are_converted_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let flow = workflow(PIPELINE, dir.path());
    let provider = Provider::new();
    let report = check(
        &flow,
        &provider,
        dir.path(),
        RunOptions::new().input("n", "7").input("names", "x, y"),
    )
    .await
    .unwrap();
    assert_eq!(report.outputs["n"], json!(14));
    assert_eq!(report.outputs["list"].as_array().map(Vec::len), Some(2));
    // n > 5: the conditional step ran this time.
    assert!(provider.tasks().iter().any(|t| t == "never"));

    for (name, value, expected) in [
        (
            "n",
            "three",
            "input `n`: expected a whole number, got \"three\"",
        ),
        (
            "nope",
            "1",
            "input `nope`: not an input of the workflow; inputs: n, names",
        ),
        ("names", "[1, 2", "input `names`: expected a JSON list"),
    ] {
        let err = check(
            &flow,
            &provider,
            dir.path(),
            RunOptions::new().input(name, value),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().starts_with(expected), "{err}");
    }
    let required = workflow(
        "name: r\ninputs:\n  q: {type: string}\nagents: {a: {}}\nsteps:\n  - {id: s, agent: a, input: '{{ inputs.q }}'}\n",
        dir.path(),
    );
    let err = check(&required, &provider, dir.path(), RunOptions::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "input `q`: required (no default); give it with --input q=VALUE"
    );
}

#[tokio::test]
async fn one_model_serves_one_request_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
name: parallel
concurrency: 4
agents: {a: {}}
steps:
  - {id: s1, agent: a, input: one}
  - {id: s2, agent: a, input: two}
  - {id: s3, agent: a, input: three}
  - id: fan
    for_each: '[1, 2, 3, 4]'
    agent: a
    input: "item {{ item }}"
"#;
    let flow = workflow(yaml, dir.path());
    let provider = Provider::new();
    let report = check(&flow, &provider, dir.path(), RunOptions::new())
        .await
        .unwrap();
    assert_eq!(report.executed.len(), 4);
    assert_eq!(provider.tasks().len(), 7);
    assert_eq!(provider.log.max_in_flight.load(Ordering::SeqCst), 1);
}

const FRAGILE: &str = r#"
name: fragile
agents: {a: {}}
steps:
  - {id: ok1, agent: a, input: fine}
  - {id: bad, agent: a, input: "FAIL after {{ steps.ok1.output }}"}
  - {id: after, agent: a, input: "after {{ steps.bad.output }}"}
  - {id: side, agent: a, input: independent}
outputs:
  result: "{{ steps.after.output }}"
"#;

#[tokio::test]
async fn a_failed_step_stops_the_run_and_a_resume_redoes_only_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let flow = workflow(FRAGILE, dir.path());
    let provider = Provider::new();
    provider.log.broken.store(true, Ordering::SeqCst);
    let err = check(
        &flow,
        &provider,
        dir.path(),
        RunOptions::new().concurrency(1),
    )
    .await
    .unwrap_err();
    let WorkflowError::StepFailed { run, step, message } = &err else {
        panic!("{err}");
    };
    assert_eq!(step, "bad");
    assert!(message.contains("scripted failure"), "{message}");
    assert!(
        err.to_string().contains(&format!("--resume {run}")),
        "{err}"
    );
    // `after` never ran; `ok1` and `side` did and are kept.
    let store = RunStore::new(dir.path().join("runs"));
    let view = store.inspect(run).unwrap();
    assert_eq!(view.steps["ok1"].status, StepStatus::Succeeded);
    assert_eq!(view.steps["bad"].status, StepStatus::Failed);
    assert!(!view.steps.contains_key("after"));
    assert!(provider.tasks().iter().all(|t| !t.starts_with("after")));
    let before = provider.tasks().len();

    // The model is fixed: the resume runs `bad` and `after`, nothing else.
    provider.log.broken.store(false, Ordering::SeqCst);
    let report = check(
        &flow,
        &provider,
        dir.path(),
        RunOptions::new().resume(run.clone()),
    )
    .await
    .unwrap();
    let mut executed = report.executed.clone();
    executed.sort();
    assert_eq!(executed, ["after", "bad"]);
    let mut reused = report.reused.clone();
    reused.sort();
    assert!(reused.contains(&"ok1".to_string()), "{reused:?}");
    assert_eq!(provider.tasks().len() - before, 2);
    assert_eq!(
        report.outputs["result"],
        json!("echo: after echo: FAIL after echo: fine")
    );
    let view = store.inspect(run).unwrap();
    assert_eq!(view.record.attempts, 2);

    // A resume may not change the inputs, and the file may not change under it.
    let err = check(
        &flow,
        &provider,
        dir.path(),
        RunOptions::new().resume(run.clone()).input("x", "1"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("keeps its inputs"), "{err}");
    let changed = workflow(&FRAGILE.replace("fine", "changed"), dir.path());
    let err = check(
        &changed,
        &provider,
        dir.path(),
        RunOptions::new().resume(run.clone()),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("different version of the workflow"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_model_fails_before_any_step_runs() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: m\nmodels:\n  big: {model: missing-model}\nagents: {a: {}}\nsteps:\n  - {id: s, agent: a, input: hi}\n";
    let flow = workflow(yaml, dir.path());
    let provider = Provider::new();
    let err = check(&flow, &provider, dir.path(), RunOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "model `big`: no such model in the catalog");
    assert!(provider.tasks().is_empty());
}

/// The run's `trace.jsonl`, one value per line.
fn trace_of(report: &RunReport) -> Vec<Value> {
    std::fs::read_to_string(report.dir.join("trace.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The agent events of `step` in a trace (they carry `workflow_step`).
fn agent_events<'t>(trace: &'t [Value], step: &str) -> Vec<&'t Value> {
    trace
        .iter()
        .filter(|e| e["workflow_step"] == step)
        .collect()
}

#[tokio::test]
async fn trace_lines_keep_the_agents_step_and_name_the_workflow_step() {
    let dir = tempfile::tempdir().unwrap();
    let flow = workflow(PIPELINE, dir.path());
    let provider = Provider::new();
    let report = check(&flow, &provider, dir.path(), RunOptions::new())
        .await
        .unwrap();
    let trace = trace_of(&report);
    // Every line, workflow event or agent event, has the time it was written.
    for line in &trace {
        assert!(
            line["ts_ms"]
                .as_u64()
                .is_some_and(|ms| ms > 1_600_000_000_000),
            "no ts_ms: {line}"
        );
    }
    assert!(trace.iter().any(|e| e["type"] == "run_started"));
    // Workflow events name the step in `step`, agent events keep their own number.
    assert!(trace
        .iter()
        .any(|e| e["type"] == "workflow_step_started" && e["step"] == "first"));
    let first = agent_events(&trace, "first");
    let started: Vec<&Value> = first
        .iter()
        .copied()
        .filter(|e| e["type"] == "step_started")
        .collect();
    assert_eq!(started.len(), 1, "{first:?}");
    assert_eq!(started[0]["step"], 1);
    assert_eq!(started[0]["phase"], "task");
    assert!(first
        .iter()
        .any(|e| e["type"] == "step_finished" && e["step"] == 1));
    assert!(first.iter().any(|e| e["type"] == "final"));
    assert!(first.iter().all(|e| e.get("item").is_none()));
    // `for_each` elements: the element in `item`, each agent counting from step 1.
    let each = agent_events(&trace, "each");
    for item in 0..3 {
        assert!(
            each.iter()
                .any(|e| e["type"] == "step_started" && e["step"] == 1 && e["item"] == item),
            "element {item}: {each:?}"
        );
    }
    // No agent event lost its number to the workflow's id.
    for event in trace.iter().filter(|e| e.get("workflow_step").is_some()) {
        if let Some(step) = event.get("step") {
            assert!(step.is_u64(), "{event}");
        }
    }
}

#[tokio::test]
async fn agents_run_the_strategy_their_yaml_names() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
name: strategies
agents:
  direct: {}
  planner: {strategy: plan}
  critic: {strategy: reflect}
  both: {strategy: plan+reflect}
  nested: {strategy: {reflect: {around: {plan: {}}}}}
  parted: {strategy: "plan(written)"}
steps:
  - {id: d, agent: direct, input: one}
  - {id: p, agent: planner, input: two}
  - {id: r, agent: critic, input: three}
  - {id: pr, agent: both, input: four}
  - {id: op, agent: nested, input: five}
  - {id: ob, agent: parted, input: six}
"#;
    let flow = workflow(yaml, dir.path());
    use jielong_agent::Strategy;
    let strategies: Vec<(String, Strategy)> = flow
        .spec()
        .agents
        .iter()
        .map(|(name, agent)| (name.clone(), agent.strategy()))
        .collect();
    let direct = || Strategy::Direct;
    assert_eq!(
        strategies,
        [
            ("direct".to_string(), direct()),
            ("planner".to_string(), Strategy::plan(direct())),
            ("critic".to_string(), Strategy::reflect(direct())),
            (
                "both".to_string(),
                Strategy::reflect(Strategy::plan(direct()))
            ),
            (
                "nested".to_string(),
                Strategy::reflect(Strategy::plan(direct()))
            ),
            ("parted".to_string(), Strategy::plan(Strategy::Written)),
        ]
    );
    let provider = Provider::new();
    let report = check(&flow, &provider, dir.path(), RunOptions::new())
        .await
        .unwrap();
    let trace = trace_of(&report);
    // What each agent's run did: a plan first, a critique after the draft.
    for (step, plans, reflects) in [
        ("d", false, false),
        ("p", true, false),
        ("r", false, true),
        ("pr", true, true),
        ("op", true, true),
        ("ob", true, false),
    ] {
        let events = agent_events(&trace, step);
        let phases: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "step_started")
            .filter_map(|e| e["phase"].as_str())
            .collect();
        assert_eq!(phases.first() == Some(&"plan"), plans, "{step}: {phases:?}");
        assert_eq!(phases.contains(&"critique"), reflects, "{step}: {phases:?}");
        assert_eq!(
            events.iter().any(|e| e["type"] == "plan"),
            plans,
            "{step}: {events:?}"
        );
        assert_eq!(
            events.iter().any(|e| e["type"] == "critique"),
            reflects,
            "{step}: {events:?}"
        );
        assert!(events.iter().any(|e| e["type"] == "final"), "{step}");
    }
}

/// How many model steps workflow step `id` took in the run a failed `err` names.
fn model_steps(dir: &Path, err: &WorkflowError, id: &str) -> usize {
    let run = match err {
        WorkflowError::StepFailed { run, .. } => run.clone(),
        other => panic!("{other}"),
    };
    let trace = RunStore::new(dir.join("runs"))
        .inspect(&run)
        .unwrap()
        .read_trace()
        .unwrap();
    trace
        .iter()
        .filter(|e| e["workflow_step"] == id && e["type"] == "step_started")
        .count()
}

#[tokio::test]
async fn an_agent_without_max_steps_gets_the_library_default() {
    use jielong_agent::AgentSettings;
    assert_eq!(
        jielong_workflow::run::DEFAULT_MAX_STEPS,
        AgentSettings::DEFAULT_MAX_STEPS
    );
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: budget\nagents: {a: {}, b: {max_steps: 3}}\nsteps:\n  - {id: s, agent: a, input: go}\n  - {id: t, agent: b, input: go}\n";
    let flow = workflow(yaml, dir.path());
    let provider = Provider::new();
    // A model whose every reply is empty never answers: the run takes every step it
    // is allowed.
    provider.log.silent.store(true, Ordering::SeqCst);
    let err = check(
        &flow,
        &provider,
        dir.path(),
        RunOptions::new().concurrency(1),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("step budget"), "{err}");
    let steps_of = |id: &str| model_steps(dir.path(), &err, id);
    assert_eq!(steps_of("s"), AgentSettings::DEFAULT_MAX_STEPS);
    assert_eq!(
        AgentSettings::default().max_steps,
        AgentSettings::DEFAULT_MAX_STEPS
    );
    // Both steps were ready at once: the second ran too, within its own budget.
    assert_eq!(steps_of("t"), 3);
}

#[tokio::test]
async fn a_settings_block_sets_what_the_shorthands_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: settings\nagents:\n  a: {settings: {max_steps: 2, max_identical_calls: 5}}\n  b: {max_steps: 3, settings: {max_total_tokens: 100000}}\nsteps:\n  - {id: s, agent: a, input: go}\n  - {id: t, agent: b, input: go}\n";
    let flow = workflow(yaml, dir.path());
    let provider = Provider::new();
    provider.log.silent.store(true, Ordering::SeqCst);
    let err = check(
        &flow,
        &provider,
        dir.path(),
        RunOptions::new().concurrency(1),
    )
    .await
    .unwrap_err();
    let steps_of = |id: &str| model_steps(dir.path(), &err, id);
    assert_eq!(steps_of("s"), 2, "the block's max_steps");
    assert_eq!(steps_of("t"), 3, "a shorthand beside the block");
}

#[tokio::test]
async fn models_entries_resolve_to_the_references_the_provider_loads() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
name: models
models:
  small: qwen2.5-coder-0.5b
  local: {model: tiny.gguf, temperature: 0}
  served: {base_url: "http://127.0.0.1:8080/v1", model: qwen2.5-7b-instruct}
  keyed:
    base_url: https://llm.example.invalid/v1
    model: big-model
    api_key_env: LLM_API_KEY
agents:
  a: {model: small}
  b: {model: local}
  c: {model: served}
  d: {model: keyed}
steps:
  - {id: s1, agent: a, input: one}
  - {id: s2, agent: b, input: two}
  - {id: s3, agent: c, input: three}
  - {id: s4, agent: d, input: four}
"#;
    let flow = workflow(yaml, dir.path());
    let served = &flow.spec().models["served"];
    assert_eq!(
        served.served_reference().as_deref(),
        Some("openai:http://127.0.0.1:8080/v1#qwen2.5-7b-instruct")
    );
    assert_eq!(flow.spec().models["small"].served_reference(), None);
    assert_eq!(
        flow.spec().models["small"].model.value,
        "qwen2.5-coder-0.5b"
    );
    let provider = Provider::new();
    let report = check(&flow, &provider, dir.path(), RunOptions::new())
        .await
        .unwrap();
    assert_eq!(report.executed.len(), 4);
    let mut loads = provider.loads.lock().unwrap().clone();
    loads.sort();
    let local = dir.path().join("tiny.gguf").display().to_string();
    let mut expected = vec![
        "openai:http://127.0.0.1:8080/v1#qwen2.5-7b-instruct".to_string(),
        "openai:https://llm.example.invalid/v1#big-model;api_key_env=LLM_API_KEY".to_string(),
        "qwen2.5-coder-0.5b".to_string(),
        local,
    ];
    expected.sort();
    assert_eq!(loads, expected);
}

#[tokio::test]
async fn an_agents_technique_words_its_task_and_a_broken_few_shot_file_fails_its_step() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shots.jsonl"),
        "{\"question\": \"What is 2 + 3?\", \"answer\": \"2 + 3 = 5\\n#### 5\"}\n",
    )
    .unwrap();
    let yaml = r#"
name: framing
agents:
  careful: {technique: cot, few_shot: shots.jsonl, shots: 1, max_steps: 1}
steps:
  - {id: s, agent: careful, input: "What is 4 + 4?"}
outputs:
  answer: "{{ steps.s.output }}"
"#;
    let flow = workflow(yaml, dir.path());
    let provider = Provider::new();
    let report = check(&flow, &provider, dir.path(), RunOptions::new())
        .await
        .unwrap();
    assert_eq!(
        report.outputs["answer"],
        json!("echo: What is 4 + 4?\n\nLet's think step by step.")
    );

    // The file turns bad after validation: the step fails naming file and line.
    std::fs::write(dir.path().join("shots.jsonl"), "{oops\n").unwrap();
    let err = check(&flow, &provider, dir.path(), RunOptions::new())
        .await
        .unwrap_err();
    let WorkflowError::StepFailed { step, message, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(step, "s");
    assert!(
        message.contains(&format!(
            "{}:1: not JSON",
            dir.path().join("shots.jsonl").display()
        )),
        "{message}"
    );
}
