//! The planner loop against a scripted model: each test gives the replies the "model"
//! generates, in order, and checks the run (answer, stop reason, transcript), the
//! requests the agent made (prompts, tool choice) and the events it reported.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jielong_agent::{
    Agent, AgentBuilder, AgentError, AgentEvent, AgentRun, Phase, Prefetch, PromptKind, StopReason,
    Strategy, Verdict,
};
use jielong_chat::fit::CallFit;
use jielong_chat::tool::{SchemaTool, Tool, ToolError, ToolKind, ToolRegistry};
use jielong_chat::{
    Capabilities, Chat, ChatRequest, Completion, FinishReason, GenerateRequest, Generation,
    Message, ModelSession, Role, RuntimeError, ToolCallFormat, ToolChoice, Usage,
};
use jielong_llama::{ChatTemplate, PromptFormat};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// The scripted model

/// What the scripted model does on its next call.
enum Script {
    /// Streams this text and ends normally.
    Reply(String),
    /// Streams this text after a pause.
    Slow(String, Duration),
    /// Streams this text and ends for this reason.
    Finish(String, FinishReason),
    /// Refuses the request.
    Fail(RuntimeError),
}

fn reply(text: &str) -> Script {
    Script::Reply(text.to_string())
}

/// A request as the model saw it.
#[derive(Debug, Clone)]
struct Request {
    prompt: String,
    choice: Option<ToolChoice>,
    tools: Vec<String>,
    max_tokens: usize,
    temperature: f32,
}

/// A model session that plays a script. Tokens are characters; the "KV cache" is the
/// previous prompt plus its reply, so usage shows how much of each prompt is reused.
struct Scripted {
    script: VecDeque<Script>,
    /// The chat template and call syntax chats are rendered and parsed with.
    format: PromptFormat,
    requests: Arc<Mutex<Vec<Request>>>,
    resets: Arc<AtomicUsize>,
    cache: String,
}

impl ModelSession for Scripted {
    fn generate(
        &mut self,
        prompt: &str,
        request: &GenerateRequest,
    ) -> Result<Generation, RuntimeError> {
        request.validate()?;
        self.requests.lock().unwrap().push(Request {
            prompt: prompt.to_string(),
            choice: request.tools.as_ref().map(|t| t.choice),
            tools: request
                .tools
                .as_ref()
                .map(|t| t.tools.iter().map(|s| s.name.clone()).collect())
                .unwrap_or_default(),
            max_tokens: request.max_tokens,
            temperature: request.sampling.temperature,
        });
        let (text, finish, delay) = match self.script.pop_front() {
            None => return Err(RuntimeError::InvalidRequest("script exhausted".into())),
            Some(Script::Fail(error)) => return Err(error),
            Some(Script::Reply(text)) => (text, FinishReason::EndOfText, None),
            Some(Script::Slow(text, delay)) => (text, FinishReason::EndOfText, Some(delay)),
            Some(Script::Finish(text, finish)) => (text, finish, None),
        };
        let prompt_tokens = prompt.chars().count();
        let common = prompt
            .chars()
            .zip(self.cache.chars())
            .take_while(|(a, b)| a == b)
            .count();
        let cached = common.min(prompt_tokens.saturating_sub(1));
        let usage = Usage {
            prompt_tokens,
            cached_tokens: cached,
            evaluated_tokens: prompt_tokens - cached,
            generated_tokens: text.chars().count(),
            prompt_time: Duration::from_millis(1),
            generation_time: Duration::from_millis(1),
            ..Usage::default()
        };
        self.cache = format!("{prompt}{text}");
        let (sender, generation) = Generation::channel();
        let send = move || {
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(5) {
                sender.text(piece.iter().collect());
            }
            sender.done(Ok(Completion::new(text, finish, usage)));
        };
        match delay {
            None => send(),
            Some(delay) => {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    send();
                });
            }
        }
        Ok(generation)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            grammar: true,
            raw_prompts: true,
            ..Capabilities::CHAT_ONLY
        }
    }

    fn respond(&mut self, chat: &Chat, request: &ChatRequest) -> Result<Generation, RuntimeError> {
        let format = self.format.clone();
        format.respond(chat, request, |prompt, request| {
            self.generate(prompt, request)
        })
    }

    fn reset(&mut self) -> Result<(), RuntimeError> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.cache.clear();
        Ok(())
    }

    fn context_size(&self) -> u32 {
        8192
    }
}

/// ChatML with `calls` as the tool-call syntax.
fn scripted_format(calls: ToolCallFormat) -> PromptFormat {
    PromptFormat {
        template: ChatTemplate::chatml(),
        calls,
    }
}

// ---------------------------------------------------------------------------------------
// Test tools

/// Adds two integers.
struct Add;

#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    a: i64,
    b: i64,
}

impl Tool for Add {
    type Args = AddArgs;
    type Output = i64;
    fn name(&self) -> &str {
        "add"
    }
    fn description(&self) -> &str {
        "Add two integers."
    }
    async fn call(&self, args: AddArgs) -> Result<i64, ToolError> {
        args.a
            .checked_add(args.b)
            .ok_or_else(|| ToolError::failed("overflow", false))
    }
}

fn schema_tool<F, Fut>(name: &str, handler: F) -> SchemaTool
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, ToolError>> + Send + 'static,
{
    SchemaTool::new(
        name,
        format!("Test tool {name}."),
        json!({"type": "object"}),
        handler,
    )
    .unwrap()
}

fn sleeper(name: &'static str, result: &'static str, delay: Duration) -> SchemaTool {
    schema_tool(name, move |_| async move {
        tokio::time::sleep(delay).await;
        Ok(json!(result))
    })
}

fn tools() -> ToolRegistry {
    let mut tools = ToolRegistry::new();
    tools.register(Add).unwrap();
    let ms = Duration::from_millis;
    tools.register(sleeper("sleepy_a", "A", ms(200))).unwrap();
    tools.register(sleeper("sleepy_b", "B", ms(200))).unwrap();
    tools.register(sleeper("slow", "late", ms(5000))).unwrap();
    tools
        .register(schema_tool("broken", |_| async {
            Err(ToolError::failed("disk on fire", false))
        }))
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    tools
        .register(schema_tool("flaky", move |_| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    Err(ToolError::failed("busy", true))
                } else {
                    Ok(json!("fine"))
                }
            }
        }))
        .unwrap();
    tools
}

/// A Hermes-format agent with every test tool and short retry pauses.
fn agent() -> AgentBuilder {
    Agent::builder(ToolCallFormat::Hermes)
        .tools(tools())
        .tool_retries(1, Duration::from_millis(10))
}

/// A call block as Qwen writes it.
fn call(name: &str, arguments: Value) -> String {
    format!(
        "<tool_call>\n{}\n</tool_call>",
        json!({"name": name, "arguments": arguments})
    )
}

// ---------------------------------------------------------------------------------------
// The harness

/// A finished run and everything observed on the way.
struct Outcome {
    run: AgentRun,
    events: Vec<AgentEvent>,
    requests: Vec<Request>,
}

impl Outcome {
    fn prompt(&self, i: usize) -> &str {
        &self.requests[i].prompt
    }

    fn choices(&self) -> Vec<Option<ToolChoice>> {
        self.requests.iter().map(|r| r.choice).collect()
    }

    /// The event types in order, runs of tokens merged.
    fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = Vec::new();
        for event in &self.events {
            let kind = serde_json::to_value(event).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string();
            if kind != "token" || kinds.last().map(String::as_str) != Some("token") {
                kinds.push(kind);
            }
        }
        kinds
    }

    fn tool_results(&self) -> Vec<(String, bool, String, usize)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::ToolResult {
                    name,
                    ok,
                    content,
                    attempts,
                    ..
                } => Some((name.clone(), *ok, content.clone(), *attempts)),
                _ => None,
            })
            .collect()
    }
}

/// Runs `builder`'s agent on `task` against `script`, and checks what must hold for
/// every run: the session is never reset, each prompt extends the previous one (the
/// conversation is re-rendered and the KV cache reused), usage adds up, events
/// serialize with a `type` tag and round-trip, and `Stopped` comes last.
async fn check(builder: AgentBuilder, task: &str, script: Vec<Script>) -> Outcome {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let agent = builder
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let resets = Arc::new(AtomicUsize::new(0));
    let mut session = Scripted {
        script: script.into(),
        format: scripted_format(agent.format()),
        requests: requests.clone(),
        resets: resets.clone(),
        cache: String::new(),
    };
    let run = agent.run(&mut session, task).await;
    let events = events.lock().unwrap().clone();
    let requests = requests.lock().unwrap().clone();

    assert_eq!(resets.load(Ordering::SeqCst), 0, "the session was reset");
    for pair in requests.windows(2) {
        // A message may be added before the model's turn (an answer prompt): then only
        // the header of that turn is not reused.
        let kept = pair[0]
            .prompt
            .strip_suffix(GENERATION_HEADER)
            .unwrap_or(&pair[0].prompt);
        assert!(
            pair[1].prompt.starts_with(kept),
            "a prompt does not extend the previous one:\n{}\n---\n{}",
            pair[0].prompt,
            pair[1].prompt
        );
    }
    let mut total = Usage::default();
    for event in &events {
        if let AgentEvent::StepFinished { usage, .. } = event {
            total.accumulate(usage);
        }
        let value = serde_json::to_value(event).unwrap();
        assert!(value["type"].is_string(), "{value}");
        let back: AgentEvent = serde_json::from_value(value).unwrap();
        assert_eq!(&back, event);
    }
    assert_eq!(run.usage, total);
    // Every prompt of an answered run reached the model; a stopped one may end on a
    // call that never reported.
    let longest = requests.iter().map(|r| r.prompt.chars().count()).max();
    if run.stop == StopReason::Answered {
        assert_eq!(run.distinct_prompt_tokens, longest.unwrap_or(0));
    } else {
        assert!(run.distinct_prompt_tokens <= longest.unwrap_or(0));
    }
    assert_eq!(
        events.last(),
        Some(&AgentEvent::Stopped {
            reason: run.stop.clone()
        })
    );
    if let Some(answer) = &run.answer {
        assert!(events.contains(&AgentEvent::Final {
            answer: answer.clone()
        }));
    }
    let stepped = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::StepStarted { .. }))
        .count();
    assert_eq!(stepped, run.steps);
    Outcome {
        run,
        events,
        requests,
    }
}

const AUTO: Option<ToolChoice> = Some(ToolChoice::Auto);
const REQUIRED: Option<ToolChoice> = Some(ToolChoice::Required);
const PROSE: Option<ToolChoice> = Some(ToolChoice::None);
/// What ChatML adds for the model's turn.
const GENERATION_HEADER: &str = "<|im_start|>assistant\n";

fn roles(run: &AgentRun) -> Vec<Role> {
    run.transcript.iter().map(|m| m.role).collect()
}

// ---------------------------------------------------------------------------------------
// Cases

/// Runs that are fully described by their script and outcome.
#[tokio::test]
async fn scripted_outcomes() {
    struct Case {
        name: &'static str,
        agent: AgentBuilder,
        script: Vec<Script>,
        stop: StopReason,
        answer: Option<&'static str>,
        steps: usize,
        tool_calls: usize,
        choices: Vec<Option<ToolChoice>>,
    }
    let cases = vec![
        Case {
            name: "direct answer",
            agent: agent(),
            script: vec![reply("  Paris \n")],
            stop: StopReason::Answered,
            answer: Some("Paris"),
            steps: 1,
            tool_calls: 0,
            choices: vec![AUTO],
        },
        Case {
            name: "no tools: no constraint",
            agent: Agent::builder(ToolCallFormat::Hermes),
            script: vec![reply(r#"{"name": "add"}"#)],
            stop: StopReason::Answered,
            answer: Some(r#"{"name": "add"}"#),
            steps: 1,
            tool_calls: 0,
            choices: vec![None],
        },
        Case {
            name: "one call then answer",
            agent: agent(),
            script: vec![reply(&call("add", json!({"a": 2, "b": 40}))), reply("42")],
            stop: StopReason::Answered,
            answer: Some("42"),
            steps: 2,
            tool_calls: 1,
            choices: vec![AUTO, AUTO],
        },
        Case {
            name: "the same call three times",
            agent: agent(),
            script: (0..3)
                .map(|_| reply(&call("add", json!({"a": 1, "b": 1}))))
                .collect(),
            stop: StopReason::RepeatedCall { name: "add".into() },
            answer: None,
            steps: 3,
            tool_calls: 2,
            choices: vec![AUTO; 3],
        },
        Case {
            name: "three identical calls allowed",
            agent: agent().max_identical_calls(3),
            script: (0..3)
                .map(|_| reply(&call("add", json!({"a": 1, "b": 1}))))
                .chain([reply("2")])
                .collect(),
            stop: StopReason::Answered,
            answer: Some("2"),
            steps: 4,
            tool_calls: 3,
            choices: vec![AUTO; 4],
        },
        Case {
            name: "a tool that always fails",
            agent: agent().max_tool_failures(3),
            script: (1..=3)
                .map(|n| reply(&call("broken", json!({"n": n}))))
                .collect(),
            stop: StopReason::ToolFailed {
                name: "broken".into(),
                error: ToolError::failed("disk on fire", false),
            },
            answer: None,
            steps: 3,
            tool_calls: 3,
            choices: vec![AUTO; 3],
        },
        Case {
            name: "the model adapts to a tool error",
            agent: agent(),
            script: vec![
                reply(&call("broken", json!({}))),
                reply("I cannot, the disk is on fire."),
            ],
            stop: StopReason::Answered,
            answer: Some("I cannot, the disk is on fire."),
            steps: 2,
            tool_calls: 1,
            choices: vec![AUTO; 2],
        },
        Case {
            // The backend checks calls against the listed tools: an unknown one is a
            // malformed call whose error goes back to the model.
            name: "an unknown tool is an error for the model",
            agent: agent(),
            script: vec![reply(&call("ruby", json!({}))), reply("ok")],
            stop: StopReason::Answered,
            answer: Some("ok"),
            steps: 2,
            tool_calls: 0,
            choices: vec![AUTO; 2],
        },
        Case {
            name: "max steps with a call",
            agent: agent().max_steps(1),
            script: vec![reply(&call("add", json!({"a": 1, "b": 2})))],
            stop: StopReason::MaxSteps,
            answer: None,
            steps: 1,
            tool_calls: 1,
            choices: vec![AUTO],
        },
        Case {
            name: "token budget",
            agent: agent().max_total_tokens(60),
            script: vec![reply(&call("add", json!({"a": 1, "b": 2})))],
            stop: StopReason::MaxTokens,
            answer: None,
            steps: 1,
            tool_calls: 1,
            choices: vec![AUTO],
        },
        Case {
            name: "prompt too long",
            agent: agent(),
            script: vec![Script::Fail(RuntimeError::PromptTooLong {
                prompt_tokens: 9000,
                n_ctx: 8192,
            })],
            stop: StopReason::ContextFull,
            answer: None,
            steps: 1,
            tool_calls: 0,
            choices: vec![AUTO],
        },
        Case {
            name: "context full while generating",
            agent: agent(),
            script: vec![Script::Finish(
                "The answer is".into(),
                FinishReason::ContextFull,
            )],
            stop: StopReason::ContextFull,
            answer: None,
            steps: 1,
            tool_calls: 0,
            choices: vec![AUTO],
        },
        Case {
            name: "model error",
            agent: agent(),
            script: vec![],
            stop: StopReason::ModelError("invalid request: script exhausted".into()),
            answer: None,
            steps: 1,
            tool_calls: 0,
            choices: vec![AUTO],
        },
        Case {
            name: "bare JSON not naming a tool is an answer",
            agent: agent(),
            script: vec![reply(r#"{"name": "Bob", "age": 3}"#)],
            stop: StopReason::Answered,
            answer: Some(r#"{"name": "Bob", "age": 3}"#),
            steps: 1,
            tool_calls: 0,
            choices: vec![AUTO],
        },
    ];
    for case in cases {
        let out = check(case.agent, "task", case.script).await;
        let run = &out.run;
        let name = case.name;
        assert_eq!(run.stop, case.stop, "{name}");
        assert_eq!(run.answer.as_deref(), case.answer, "{name}");
        assert_eq!(run.steps, case.steps, "{name}");
        assert_eq!(run.tool_calls, case.tool_calls, "{name}");
        assert_eq!(out.choices(), case.choices, "{name}");
    }
}

#[tokio::test]
async fn a_tool_result_reaches_the_next_prompt() {
    let out = check(
        agent(),
        "What is 2 + 40?",
        vec![
            reply(&format!(
                "Let me add.\n{}",
                call("add", json!({"a": 2, "b": 40}))
            )),
            reply("42"),
        ],
    )
    .await;
    let run = &out.run;
    assert_eq!(
        roles(run),
        [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Assistant
        ]
    );
    let assistant = &run.transcript[2];
    assert_eq!(assistant.content, "Let me add.");
    assert_eq!(assistant.tool_calls[0].name, "add");
    assert_eq!(assistant.tool_calls[0].arguments, json!({"a": 2, "b": 40}));
    let id = assistant.tool_calls[0].id.clone().unwrap();
    assert_eq!(id.len(), 9);
    assert_eq!(run.transcript[3].content, "42");
    assert_eq!(run.transcript[3].tool_call_id.as_deref(), Some(id.as_str()));
    // The result is in the second prompt, as a tool turn after the re-rendered call.
    let second = out.prompt(1);
    assert!(
        second.contains("<|im_start|>tool\n42<|im_end|>"),
        "{second}"
    );
    assert!(second.contains(r#"{"name": "add", "arguments": {"a": 2, "b": 40}}"#));
    // The template lists the tools; the request constrains calls to them.
    assert!(out.prompt(0).contains("<tools>"));
    assert_eq!(
        out.requests[0].tools,
        ["add", "broken", "flaky", "sleepy_a", "sleepy_b", "slow"]
    );
    assert_eq!(out.requests[0].max_tokens, 512);
    // The second step reuses the whole first prompt from the "KV cache".
    let steps: Vec<&Usage> = out
        .events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::StepFinished { usage, .. } => Some(usage),
            _ => None,
        })
        .collect();
    assert_eq!(steps[0].cached_tokens, 0);
    assert!(steps[1].cached_tokens >= out.prompt(0).chars().count());
    assert!(steps[1].evaluated_tokens < steps[1].prompt_tokens / 2);
    assert_eq!(run.usage.generated_tokens, {
        let first = format!("Let me add.\n{}", call("add", json!({"a": 2, "b": 40})));
        first.chars().count() + 2
    });
    assert_eq!(
        out.tool_results(),
        [("add".to_string(), true, "42".to_string(), 1)]
    );
}

#[tokio::test]
async fn events_come_in_order() {
    let out = check(
        agent(),
        "task",
        vec![reply(&call("add", json!({"a": 1, "b": 2}))), reply("3")],
    )
    .await;
    assert_eq!(
        out.kinds(),
        // Tokens are the reply's prose; the call comes as its own event.
        [
            "step_started",
            "step_finished",
            "tool_call",
            "tool_result",
            "step_started",
            "token",
            "step_finished",
            "final",
            "stopped"
        ]
    );
    assert_eq!(
        out.events[0],
        AgentEvent::StepStarted {
            step: 1,
            phase: Phase::Task
        }
    );
    let streamed: String = out
        .events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Token { step: 2, text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, "3");
    let line = serde_json::to_string(out.events.last().unwrap()).unwrap();
    assert_eq!(line, r#"{"type":"stopped","reason":{"reason":"answered"}}"#);
}

#[tokio::test]
async fn calls_in_one_reply_run_concurrently_in_call_order() {
    let script = || {
        vec![
            reply(&format!(
                "{}\n{}",
                call("sleepy_a", json!({})),
                call("sleepy_b", json!({}))
            )),
            reply("AB"),
        ]
    };
    let out = check(agent(), "task", script()).await;
    assert_eq!(out.run.answer.as_deref(), Some("AB"));
    assert!(
        out.run.elapsed < Duration::from_millis(350),
        "{:?}",
        out.run.elapsed
    );
    let results: Vec<String> = out
        .run
        .transcript
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.clone())
        .collect();
    assert_eq!(results, ["A", "B"]);
    assert_eq!(out.run.transcript[2].tool_calls.len(), 2);
    let names: Vec<String> = out.tool_results().into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["sleepy_a", "sleepy_b"]);

    let out = check(agent().parallel_calls(false), "task", script()).await;
    assert!(
        out.run.elapsed >= Duration::from_millis(400),
        "{:?}",
        out.run.elapsed
    );
}

#[tokio::test]
async fn tool_errors_go_back_to_the_model() {
    let out = check(
        agent(),
        "task",
        (1..=3)
            .map(|n| reply(&call("broken", json!({"n": n}))))
            .collect(),
    )
    .await;
    assert!(out.prompt(1).contains("Error: failed: disk on fire"));
    assert!(out.prompt(2).contains("Error: failed: disk on fire"));
    // The third error is in the transcript although the run stopped on it.
    let last = out.run.transcript.last().unwrap();
    assert_eq!(last.role, Role::Tool);
    assert_eq!(last.content, "Error: failed: disk on fire");
    assert!(out.tool_results().iter().all(|r| !r.1));

    // A success resets the count.
    let out = check(
        agent(),
        "task",
        vec![
            reply(&call("broken", json!({"n": 1}))),
            reply(&call("broken", json!({"n": 2}))),
            reply(&format!(
                "{}{}",
                call("add", json!({"a": 1, "b": 1})),
                call("broken", json!({"n": 3}))
            )),
            reply(&call("broken", json!({"n": 4}))),
            reply("done"),
        ],
    )
    .await;
    assert_eq!(
        out.run.stop,
        StopReason::ToolFailed {
            name: "broken".into(),
            error: ToolError::failed("disk on fire", false)
        }
    );
    assert_eq!(out.run.steps, 3);
}

#[tokio::test]
async fn retryable_errors_are_retried() {
    let script = || vec![reply(&call("flaky", json!({}))), reply("fine")];
    let out = check(agent(), "task", script()).await;
    assert_eq!(
        out.tool_results(),
        [("flaky".to_string(), true, "fine".to_string(), 2)]
    );
    assert_eq!(out.run.tool_calls, 1);

    let out = check(agent().tool_retries(0, Duration::ZERO), "task", script()).await;
    assert_eq!(
        out.tool_results(),
        [(
            "flaky".to_string(),
            false,
            "Error: failed: busy".to_string(),
            1
        )]
    );
    assert_eq!(out.run.stop, StopReason::Answered);
}

#[tokio::test]
async fn max_steps_keeps_the_partial_transcript() {
    let out = check(
        agent().max_steps(1),
        "task",
        vec![reply(&call("add", json!({"a": 1, "b": 2})))],
    )
    .await;
    assert_eq!(out.run.stop, StopReason::MaxSteps);
    let t = &out.run.transcript;
    assert_eq!(
        roles(&out.run),
        [Role::System, Role::User, Role::Assistant, Role::Tool]
    );
    assert_eq!(t[1].content, "task");
    assert_eq!(t[2].tool_calls[0].name, "add");
    assert_eq!(t[3].content, "3");
}

#[tokio::test]
async fn wall_time_stops_slow_tools_and_slow_models() {
    let out = check(
        agent().max_wall_time(Duration::from_millis(300)),
        "task",
        vec![reply(&call("slow", json!({})))],
    )
    .await;
    assert_eq!(out.run.stop, StopReason::WallTime);
    assert!(out.run.elapsed < Duration::from_millis(1500));
    assert_eq!(
        out.run.transcript.last().unwrap().tool_calls[0].name,
        "slow"
    );

    let out = check(
        agent().max_wall_time(Duration::from_millis(200)),
        "task",
        vec![Script::Slow("late".into(), Duration::from_secs(5))],
    )
    .await;
    assert_eq!(out.run.stop, StopReason::WallTime);
    assert!(out.run.elapsed < Duration::from_millis(1500));
    assert_eq!(out.run.answer, None);
}

#[tokio::test]
async fn bare_json_calls_are_regenerated_with_calls_required() {
    let bare = r#"{"name": "add", "arguments": {"a": 2, "b": 3}}"#;
    for deviation in [
        bare.to_string(),
        format!("```json\n{bare}\n```"),
        // Cut off by the token limit: still clearly a call.
        r#"{"name": "add", "arguments": {"a": 2,"#.to_string(),
    ] {
        let out = check(
            agent(),
            "What is 2 + 3?",
            vec![
                reply(&deviation),
                reply(&call("add", json!({"a": 2, "b": 3}))),
                reply("5"),
            ],
        )
        .await;
        assert_eq!(out.run.answer.as_deref(), Some("5"), "{deviation}");
        assert_eq!(out.choices(), [AUTO, REQUIRED, AUTO]);
        // Same step, same prompt: only the reply is generated again.
        assert_eq!(out.prompt(0), out.prompt(1));
        assert_eq!(out.run.steps, 2);
        assert!(out.events.contains(&AgentEvent::ConstrainedRetry {
            step: 1,
            tool: "add".into()
        }));
        assert_eq!(out.tool_results()[0].2, "5");
        // The transcript holds the constrained call, not the deviation.
        let call = &out.run.transcript[2];
        assert_eq!(call.content, "");
        assert_eq!(call.tool_calls[0].arguments, json!({"a": 2, "b": 3}));
        assert_eq!(
            out.kinds()[..7],
            [
                "step_started",
                "token",
                "step_finished",
                "constrained_retry",
                "step_finished",
                "tool_call",
                "tool_result"
            ]
        );
    }
}

#[tokio::test]
async fn bare_calls_that_add_nothing_are_regenerated_as_the_answer() {
    let add = call("add", json!({"a": 2, "b": 3}));
    let same = r#"{"name": "add", "arguments": {"a": 2, "b": 3}}"#;
    let restated = r#"{"name": "add", "arguments": {"a": 5}}"#;
    let new = r#"{"name": "add", "arguments": {"a": 1, "b": 1}}"#;
    type Case = (&'static str, Vec<Script>, Vec<Option<ToolChoice>>);
    let cases: Vec<Case> = vec![
        // The same call again, as bare JSON: straight to the answer.
        (
            "same call",
            vec![reply(&add), reply(same), reply("The sum is 5.")],
            vec![AUTO, AUTO, PROSE],
        ),
        // Arguments that only restate the result.
        (
            "restated result",
            vec![reply(&add), reply(restated), reply("The sum is 5.")],
            vec![AUTO, AUTO, PROSE],
        ),
        // A new call as bare JSON, whose constrained form turns out to repeat the first.
        (
            "constrained repeat",
            vec![reply(&add), reply(new), reply(&add), reply("The sum is 5.")],
            vec![AUTO, AUTO, REQUIRED, PROSE],
        ),
    ];
    for (name, script, choices) in cases {
        let out = check(agent(), "What is 2 + 3?", script).await;
        assert_eq!(out.run.stop, StopReason::Answered, "{name}");
        assert_eq!(out.run.answer.as_deref(), Some("The sum is 5."), "{name}");
        assert_eq!(out.choices(), choices, "{name}");
        assert_eq!(out.run.tool_calls, 1, "{name}");
        assert_eq!(out.run.steps, 2, "{name}");
        assert!(
            out.events.contains(&AgentEvent::AnswerRetry { step: 2 }),
            "{name}"
        );
        // The answer prompt names the question, and sits right before the answer.
        let last = out.requests.last().unwrap();
        assert!(
            last.prompt
                .contains("without calling a tool:\nWhat is 2 + 3?"),
            "{name}"
        );
        let n = out.run.transcript.len();
        assert_eq!(
            roles(&out.run)[n - 2..],
            [Role::User, Role::Assistant],
            "{name}"
        );
    }
}

#[tokio::test]
async fn initial_calls_come_before_the_first_step() {
    let out = check(
        agent().initial_call("add", json!({"a": 2, "b": 3})),
        "What is 2 + 3?",
        vec![reply("5")],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("5"));
    assert_eq!((out.run.steps, out.run.tool_calls), (1, 1));
    assert_eq!(
        roles(&out.run)[1..],
        [Role::User, Role::Assistant, Role::Tool, Role::Assistant]
    );
    // The model's first prompt already holds the result.
    assert!(
        out.prompt(0).contains("<|im_start|>tool\n5<|im_end|>"),
        "{}",
        out.prompt(0)
    );
    assert!(matches!(&out.events[0], AgentEvent::ToolCall { step: 0, call } if call.name == "add"));
}

#[tokio::test]
async fn repeating_a_failed_call_is_not_taken_for_an_answer() {
    let broken = call("broken", json!({}));
    let bare = r#"{"name": "broken", "arguments": {}}"#;
    let out = check(
        agent().max_tool_failures(5).max_identical_calls(2),
        "Use broken.",
        vec![
            reply(&broken),
            reply(bare),
            reply(&broken),
            reply(bare),
            reply(&broken),
        ],
    )
    .await;
    // The failure is no result to answer from: the call is required again, and the
    // breaker ends the run.
    assert_eq!(
        out.run.stop,
        StopReason::RepeatedCall {
            name: "broken".into()
        }
    );
    assert_eq!(out.choices(), [AUTO, AUTO, REQUIRED, AUTO, REQUIRED]);
    assert!(!out
        .events
        .iter()
        .any(|e| matches!(e, AgentEvent::AnswerRetry { .. })));
}

#[tokio::test]
async fn malformed_calls_are_reported_to_the_model() {
    for (block, error) in [
        (
            r#"<tool_call>{"name": "add", "arguments": [1]}</tool_call>"#,
            "`arguments` must be a JSON object",
        ),
        (r#"<tool_call>{"name": "add", "argu"#, "not finished"),
        ("<tool_call>add(1, 2)</tool_call>", "not valid JSON"),
    ] {
        let out = check(agent(), "task", vec![reply(block), reply("ok")]).await;
        assert_eq!(out.run.stop, StopReason::Answered, "{block}");
        assert_eq!(out.run.answer.as_deref(), Some("ok"));
        let feedback = &out.run.transcript[3];
        assert_eq!(feedback.role, Role::User);
        assert!(feedback.content.contains("could not be read"));
        assert!(feedback.content.contains(error), "{}", feedback.content);
        assert!(out.prompt(1).contains(error));
        assert_eq!(out.run.transcript[2].content, block);
        assert!(out
            .events
            .iter()
            .any(|e| matches!(e, AgentEvent::MalformedCall { step: 1, .. })));
        assert_eq!(out.run.tool_calls, 0);
    }

    // A valid call next to a malformed one still runs.
    let out = check(
        agent(),
        "task",
        vec![
            reply(&format!(
                "{}<tool_call>oops</tool_call>",
                call("add", json!({"a": 1, "b": 1}))
            )),
            reply("2"),
        ],
    )
    .await;
    assert_eq!(
        roles(&out.run),
        [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::User,
            Role::Assistant
        ]
    );
    assert_eq!(out.run.tool_calls, 1);
}

#[tokio::test]
async fn plan_then_subtasks_then_synthesis() {
    let out = check(
        agent().strategy(jielong_agent::Strategy::plan(
            jielong_agent::Strategy::Direct,
        )),
        "Add 2 and 3, then double it.",
        vec![
            reply(&call(
                "submit_plan",
                json!({"subtasks": ["Add 2 and 3", "Double the result"]}),
            )),
            reply(&call("add", json!({"a": 2, "b": 3}))),
            reply("2 + 3 = 5."),
            reply(&call("add", json!({"a": 5, "b": 5}))),
            reply("Doubled: 10."),
            reply("The answer is 10."),
        ],
    )
    .await;
    let run = &out.run;
    assert_eq!(run.stop, StopReason::Answered);
    assert_eq!(run.answer.as_deref(), Some("The answer is 10."));
    assert_eq!(run.steps, 6);
    assert_eq!(run.tool_calls, 2);
    assert_eq!(out.choices(), [REQUIRED, AUTO, AUTO, AUTO, AUTO, AUTO]);
    assert_eq!(out.requests[0].tools, ["submit_plan"]);
    assert!(out.prompt(0).contains("Task: Add 2 and 3, then double it."));
    assert!(out.prompt(1).contains("Subtask 1 of 2: Add 2 and 3"));
    assert!(out.prompt(3).contains("Subtask 2 of 2: Double the result"));
    assert!(out.prompt(3).contains("2 + 3 = 5."));
    assert!(out.prompt(5).contains("All subtasks are done"));
    for request in &out.requests {
        // submit_plan is only in the constraint, never in the template's tool list.
        assert!(!request
            .prompt
            .contains(r#""function": {"name": "submit_plan""#));
    }
    assert!(out.events.contains(&AgentEvent::Plan {
        subtasks: vec!["Add 2 and 3".into(), "Double the result".into()]
    }));
    let phases: Vec<Phase> = out
        .events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::StepStarted { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect();
    use Phase::*;
    assert_eq!(
        phases,
        [Plan, Subtask, Subtask, Subtask, Subtask, Synthesis]
    );
    let subtasks = out
        .events
        .iter()
        .filter(|e| matches!(e, AgentEvent::Subtask { count: 2, .. }))
        .count();
    assert_eq!(subtasks, 2);
}

#[tokio::test]
async fn plan_budgets_and_fallbacks() {
    // The plan uses the same step budget.
    let out = check(
        agent()
            .strategy(jielong_agent::Strategy::plan(
                jielong_agent::Strategy::Direct,
            ))
            .max_steps(2),
        "task",
        vec![
            reply(&call("submit_plan", json!({"subtasks": ["a", "b"]}))),
            reply("A done."),
        ],
    )
    .await;
    assert_eq!(out.run.stop, StopReason::MaxSteps);
    assert_eq!(out.run.answer, None);

    // No usable plan: the task is the only subtask and its answer is the answer.
    let out = check(
        agent().strategy(jielong_agent::Strategy::plan(
            jielong_agent::Strategy::Direct,
        )),
        "task",
        vec![reply("I will just do it."), reply("42")],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("42"));
    assert!(out.events.contains(&AgentEvent::Plan { subtasks: vec![] }));
    assert!(out.prompt(1).contains("Subtask 1 of 1: task"));
}

fn critique(ok: bool, problem: &str) -> Script {
    reply(&call(
        "submit_critique",
        json!({"ok": ok, "problem": problem}),
    ))
}

#[tokio::test]
async fn reflection_revises_a_rejected_draft() {
    let out = check(
        agent().strategy(jielong_agent::Strategy::reflect(
            jielong_agent::Strategy::Direct,
        )),
        "What is 2 + 40?",
        vec![
            reply("41"),
            critique(false, "2 + 40 is not 41."),
            reply(&call("add", json!({"a": 2, "b": 40}))),
            reply("42"),
        ],
    )
    .await;
    let run = &out.run;
    assert_eq!(run.stop, StopReason::Answered);
    assert_eq!(run.answer.as_deref(), Some("42"));
    assert_eq!(out.choices(), [AUTO, REQUIRED, AUTO, AUTO]);
    assert_eq!(out.requests[1].tools, ["submit_critique"]);
    assert!(out.prompt(1).contains("Answer: 41"));
    assert!(out.prompt(1).contains("Task: What is 2 + 40?"));
    assert!(out
        .prompt(2)
        .contains("Your answer is wrong: 2 + 40 is not 41."));
    assert!(out.events.contains(&AgentEvent::Critique {
        round: 1,
        verdict: Verdict {
            ok: false,
            problem: "2 + 40 is not 41.".into()
        }
    }));
    let kinds = out.kinds();
    let critique_at = kinds.iter().position(|k| k == "critique").unwrap();
    assert_eq!(kinds[critique_at + 1], "step_started");

    // Two rounds; the second critique accepts the revision.
    let out = check(
        agent().strategy("reflect(rounds=2)".parse().unwrap()),
        "task",
        vec![
            reply("41"),
            critique(false, "wrong"),
            reply("42"),
            critique(true, ""),
        ],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("42"));
    assert_eq!(out.run.steps, 4);
    let rounds: Vec<(usize, bool)> = out
        .events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Critique { round, verdict } => Some((*round, verdict.ok)),
            _ => None,
        })
        .collect();
    assert_eq!(rounds, [(1, false), (2, true)]);

    // An accepted draft is the answer.
    let out = check(
        agent().strategy("reflect(rounds=3)".parse().unwrap()),
        "task",
        vec![reply("42"), critique(true, "")],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("42"));
    assert_eq!(out.run.steps, 2);

    // The budget runs out during reflection: the draft is kept.
    let out = check(
        agent()
            .strategy(jielong_agent::Strategy::reflect(
                jielong_agent::Strategy::Direct,
            ))
            .max_steps(2),
        "task",
        vec![reply("41"), critique(false, "wrong")],
    )
    .await;
    assert_eq!(out.run.stop, StopReason::MaxSteps);
    assert_eq!(out.run.answer.as_deref(), Some("41"));
}

#[tokio::test]
async fn generic_format_teaches_calls_in_the_system_prompt() {
    let out = check(
        Agent::builder(ToolCallFormat::Generic).tools(tools()),
        "task",
        vec![reply(&call("add", json!({"a": 1, "b": 2}))), reply("3")],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("3"));
    // The agent's messages stay the model-independent conversation; the backend
    // describes the tools in the system message of the prompt.
    let system = &out.run.transcript[0].content;
    assert!(system.starts_with("You are a careful assistant"));
    assert!(!system.contains("You can call tools"));
    let prompt = out.prompt(0);
    assert!(prompt.contains("You can call tools"), "{prompt}");
    assert!(prompt.contains("- add: Add two integers."));
    assert!(!prompt.contains("<tools>"));
}

#[tokio::test]
async fn prompts_can_be_replaced() {
    let dir = std::env::temp_dir().join(format!("jielong-agent-prompts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("agent_system.md"), "Be terse.\n").unwrap();
    std::fs::write(dir.join("subtask.md"), "Step {index}: {subtask}").unwrap();

    let out = check(agent().prompts_dir(&dir), "task", vec![reply("ok")]).await;
    assert_eq!(out.run.transcript[0], Message::system("Be terse."));

    let out = check(
        agent().prompt_file(PromptKind::System, dir.join("agent_system.md")),
        "task",
        vec![reply("ok")],
    )
    .await;
    assert_eq!(out.run.transcript[0].content, "Be terse.");

    let out = check(agent().system_prompt(""), "task", vec![reply("ok")]).await;
    assert_eq!(roles(&out.run), [Role::User, Role::Assistant]);

    let agent_built = agent().prompts_dir(&dir).build().unwrap();
    assert_eq!(agent_built.prompts().subtask, "Step {index}: {subtask}");
    assert_eq!(
        agent_built.prompts().plan,
        PromptKind::Plan.builtin().trim()
    );

    std::fs::write(dir.join("plan.md"), "Make a plan.").unwrap();
    let err = agent().prompts_dir(&dir).build().unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Prompt {
                kind: PromptKind::Plan,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("{task}"));

    let err = agent()
        .prompt_file(PromptKind::Critique, dir.join("missing.md"))
        .build()
        .unwrap_err();
    assert!(matches!(err, AgentError::PromptFile { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
    let err = agent().prompts_dir(dir.join("nope")).build().unwrap_err();
    assert!(matches!(err, AgentError::PromptFile { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    for bad in [
        agent().max_steps(0),
        agent().max_tokens_per_step(0),
        agent().max_identical_calls(0),
        agent().strategy(jielong_agent::Strategy::Plan(jielong_agent::Plan {
            then: Box::new(jielong_agent::Strategy::Direct),
            subtasks: 6,
        })),
    ] {
        let err = bad.build().unwrap_err();
        assert!(matches!(err, AgentError::InvalidSetting(_)), "{err}");
    }
}

#[tokio::test]
async fn events_can_go_to_a_channel() {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let agent = agent().event_channel(sender).build().unwrap();
    let mut session = Scripted {
        script: vec![reply("hi")].into(),
        format: scripted_format(ToolCallFormat::Hermes),
        requests: Arc::default(),
        resets: Arc::default(),
        cache: String::new(),
    };
    let run = agent.run(&mut session, "task").await;
    assert_eq!(run.answer.as_deref(), Some("hi"));
    let mut events = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        events.push(event);
    }
    assert_eq!(
        events.last(),
        Some(&AgentEvent::Stopped {
            reason: StopReason::Answered
        })
    );
}

#[test]
fn the_run_future_is_send_and_reasons_display() {
    fn assert_send<T: Send>(_: &T) {}
    let agent = agent().build().unwrap();
    let mut session = Scripted {
        script: VecDeque::new(),
        format: scripted_format(ToolCallFormat::Hermes),
        requests: Arc::default(),
        resets: Arc::default(),
        cache: String::new(),
    };
    let future = agent.run(&mut session, "task");
    assert_send(&future);
    drop(future);
    let reason = StopReason::ToolFailed {
        name: "broken".into(),
        error: ToolError::failed("disk on fire", false),
    };
    assert_eq!(
        reason.to_string(),
        "tool `broken` kept failing: failed: disk on fire"
    );
    assert_eq!(
        serde_json::to_value(&reason).unwrap(),
        json!({"reason": "tool_failed", "detail": {"name": "broken", "error": {"kind": "failed", "message": "disk on fire", "retryable": false}}})
    );
}

// ---------------------------------------------------------------------------------------
// Code actions, call-shaped replies, grounding and recovery

/// A stand-in `python`: `print(6*7)` prints 42, code with `boom` raises, anything
/// else prints what the code assigns last (for converted blobs).
fn fake_python() -> SchemaTool {
    SchemaTool::new(
        "python",
        "Run Python code.",
        json!({"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}),
        |args: Value| async move {
            let code = args["code"].as_str().unwrap_or_default().to_string();
            if code.contains("boom") {
                return Err(ToolError::failed("the code raised NameError: boom", false));
            }
            if code.contains("6*7") || code.contains("21 * 2") {
                return Ok(json!("42"));
            }
            if code.contains("(186.5 - 162.3) / 162.3 * 100") {
                return Ok(json!("14.910659272951316"));
            }
            Ok(json!(format!("ran: {code}")))
        },
    )
    .unwrap()
    .with_kind(ToolKind::Interpreter {
        language: "python",
        argument: "code",
    })
}

fn code_agent() -> AgentBuilder {
    let mut tools = ToolRegistry::new();
    tools.register(fake_python()).unwrap();
    tools.register(Add).unwrap();
    Agent::builder(ToolCallFormat::Hermes).tools(tools)
}

fn code_calls(out: &Outcome) -> Vec<String> {
    out.events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::CodeBlock { code, .. } => Some(code.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn fenced_code_runs_when_the_block_closes_and_the_reply_continues() {
    let out = check(
        code_agent(),
        "What is 6 times 7?",
        vec![
            // What follows the closing fence is never seen: generation is cut there.
            reply("I will compute it.\n```python\nprint(6*7)\n```\n```output\n41\n```\nIt is 41."),
            reply("The answer is 42."),
        ],
    )
    .await;
    assert_eq!(out.run.stop, StopReason::Answered);
    assert_eq!(out.run.answer.as_deref(), Some("The answer is 42."));
    assert_eq!(code_calls(&out), vec!["print(6*7)".to_string()]);
    // python is not offered as a JSON tool; the other tools are.
    assert_eq!(out.requests[0].tools, vec!["add".to_string()]);
    assert!(!out.prompt(0).contains("\"python\""), "{}", out.prompt(0));
    assert!(out
        .prompt(0)
        .contains("Python function solution() that returns the answer"));
    assert!(
        out.prompt(1)
            .ends_with("I will compute it.\n```python\nprint(6*7)\n```\n```output\n42\n```\n"),
        "{}",
        out.prompt(1)
    );
    assert!(!out.prompt(1).contains("41"));
    // The whole turn is one assistant message.
    let last = out.run.transcript.last().unwrap();
    assert_eq!(last.role, Role::Assistant);
    assert!(
        last.content.contains("```output\n42\n```") && last.content.ends_with("The answer is 42.")
    );
    assert_eq!(
        out.tool_results(),
        vec![("python".into(), true, "42".into(), 1)]
    );
}

/// The code tool is found by what it is, not by its name: an interpreter called
/// `run_py` gets the fenced code, and a plain tool that happens to be called `python`
/// is offered as a JSON tool like any other.
#[tokio::test]
async fn code_goes_to_the_interpreter_whatever_its_name() {
    let interpreter = SchemaTool::new(
        "run_py",
        "Run Python code.",
        json!({"type": "object", "properties": {"source": {"type": "string"}}, "required": ["source"]}),
        |args: Value| async move {
            let code = args["source"].as_str().unwrap_or_default().to_string();
            Ok(json!(if code.contains("6*7") { "42" } else { "?" }))
        },
    )
    .unwrap()
    .with_kind(ToolKind::Interpreter {
        language: "python",
        argument: "source",
    });
    let mut tools = ToolRegistry::new();
    tools.register(interpreter).unwrap();
    tools
        .register(schema_tool("python", |_| async { Ok(json!("a snake")) }))
        .unwrap();
    let out = check(
        Agent::builder(ToolCallFormat::Hermes).tools(tools),
        "What is 6 times 7?",
        vec![
            reply("```python\nprint(6*7)\n```"),
            reply("The answer is 42."),
        ],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("The answer is 42."));
    assert_eq!(out.requests[0].tools, vec!["python".to_string()]);
    assert_eq!(
        out.tool_results(),
        vec![("run_py".into(), true, "42".into(), 1)]
    );
}

#[tokio::test]
async fn call_shaped_blobs_are_run_as_code_never_answered() {
    let out = check(
        code_agent(),
        "Zack is twice 21. How old is he?",
        vec![
            reply("```json\n{\"name\": \"calculate_age\", \"arguments\": {\"zack_age\": 21 * 2}}\n```"),
            reply("Zack is 42."),
        ],
    )
    .await;
    assert!(
        out.kinds().contains(&"blob_converted".to_string()),
        "{:?}",
        out.kinds()
    );
    assert_eq!(
        code_calls(&out),
        vec!["zack_age = 21 * 2\nprint(zack_age)".to_string()]
    );
    assert_eq!(out.run.answer.as_deref(), Some("Zack is 42."));

    // A blob that is no code is asked again, not answered.
    let mut python_only = ToolRegistry::new();
    python_only.register(fake_python()).unwrap();
    let out = check(
        Agent::builder(ToolCallFormat::Hermes).tools(python_only),
        "Look it up.",
        vec![
            reply("{\"name\": \"lookup\", \"arguments\": {\"query\": \"bridges\"}}"),
            reply("I cannot look that up."),
        ],
    )
    .await;
    assert!(
        out.kinds().contains(&"call_shaped_answer".to_string()),
        "{:?}",
        out.kinds()
    );
    assert_eq!(out.run.answer.as_deref(), Some("I cannot look that up."));
}

#[tokio::test]
async fn answers_no_result_backs_are_checked_in_code_once() {
    let out = check(
        code_agent(),
        "What is 6 times 7?",
        vec![
            reply("It is 48."),
            // The check's reply starts inside a python block.
            reply("print(6*7)\n```"),
            reply("It is 42."),
        ],
    )
    .await;
    let kinds = out.kinds();
    assert!(kinds.contains(&"ungrounded".to_string()), "{kinds:?}");
    assert!(
        out.prompt(1)
            .ends_with("<|im_start|>assistant\n```python\n"),
        "{}",
        out.prompt(1)
    );
    assert!(out.prompt(1).contains("\"It is 48.\" is not backed"));
    assert_eq!(out.run.answer.as_deref(), Some("It is 42."));

    // An answer that still states another number after the check: the check stands.
    let out = check(
        code_agent(),
        "By what percentage did revenue grow from 162.3 to 186.5? Round to 1 decimal place.",
        vec![
            reply("By 1.2%."),
            reply("print((186.5 - 162.3) / 162.3 * 100)\n```"),
            reply("By 1.4%."),
        ],
    )
    .await;
    let kinds = out.kinds();
    assert!(kinds.contains(&"check_kept".to_string()), "{kinds:?}");
    assert_eq!(out.run.answer.as_deref(), Some("By 14.9%."));

    // A restated number, or one a tool returned, is not sent back.
    let out = check(
        code_agent(),
        "Janet has 16 eggs. How many eggs does she have?",
        vec![reply("She has 16 eggs.")],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("She has 16 eggs."));
    assert_eq!(out.requests.len(), 1);
}

/// A stand-in search tool that asks to be called with the task first
/// ([`Tool::prefetch`]): it "finds" one passage with a founding year in it.
struct Search;

#[derive(Deserialize, JsonSchema)]
struct SearchArgs {
    query: String,
}

impl Tool for Search {
    type Args = SearchArgs;
    type Output = String;
    fn name(&self) -> &str {
        "search"
    }
    fn description(&self) -> &str {
        "Search the documents."
    }
    async fn call(&self, args: SearchArgs) -> Result<String, ToolError> {
        Ok(format!(
            "[1] ({}) Ostmere was founded in 1701; Calvoy Sands in 1788.",
            args.query
        ))
    }
    fn prefetch(&self, task: &str) -> Option<Value> {
        Some(json!({ "query": task }))
    }
}

fn search_agent(with_python: bool) -> AgentBuilder {
    let mut tools = ToolRegistry::new();
    tools.register(Search).unwrap();
    if with_python {
        tools.register(fake_python()).unwrap();
    }
    Agent::builder(ToolCallFormat::Hermes).tools(tools)
}

#[tokio::test]
async fn a_search_tool_searches_the_task_before_the_first_step() {
    let task = "When was Ostmere founded?";
    let out = check(search_agent(false), task, vec![reply("In 1701 [1].")]).await;
    assert_eq!(out.run.answer.as_deref(), Some("In 1701 [1]."));
    assert_eq!((out.run.steps, out.run.tool_calls), (1, 1));
    assert!(
        matches!(&out.events[0], AgentEvent::ToolCall { step: 0, call }
            if call.name == "search" && call.arguments == json!({"query": task})),
        "{:?}",
        out.events[0]
    );
    // The model's first prompt already holds the passage.
    assert!(
        out.prompt(0).contains("Ostmere was founded in 1701"),
        "{}",
        out.prompt(0)
    );

    // An initial call of the same tool replaces the prefetch; `Prefetch::Off` has none.
    let out = check(
        search_agent(false).initial_call("search", json!({"query": "Ostmere"})),
        task,
        vec![reply("In 1701 [1].")],
    )
    .await;
    assert_eq!(out.run.tool_calls, 1);
    assert!(out.prompt(0).contains("[1] (Ostmere)"), "{}", out.prompt(0));
    let out = check(
        search_agent(false).prefetch(Prefetch::Off),
        task,
        vec![reply("I do not know.")],
    )
    .await;
    assert_eq!(out.run.tool_calls, 0);

    // A written answer calls nothing itself but reads the same passages first.
    let out = check(
        search_agent(false).strategy(Strategy::Written),
        task,
        vec![reply("In 1701.")],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("In 1701."));
    assert_eq!((out.run.steps, out.run.tool_calls), (1, 1));
    assert!(
        out.prompt(0).contains("Ostmere was founded in 1701"),
        "{}",
        out.prompt(0)
    );
    // In the task's own message, never as a call the model could copy.
    assert!(!out.prompt(0).contains("\"query\""), "{}", out.prompt(0));

    // A program gets them as the call and result they are (inside the code prompt the
    // default model copied the passages instead of writing its program).
    let out = check(
        search_agent(true),
        "How many years after Ostmere was Calvoy Sands founded?",
        vec![reply("```python\nprint(6*7)\n```"), reply("42 years.")],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("42 years."));
    let first = out.prompt(0);
    let passage = first
        .find("Ostmere was founded in 1701")
        .expect("the passage");
    let question = first
        .rfind("How many years after Ostmere")
        .expect("the question");
    assert!(question < passage, "{first}");
    assert!(
        first.contains("<tool_call>\n{\"name\": \"search\""),
        "{first}"
    );
}

#[tokio::test]
async fn a_number_read_off_a_passage_is_checked_in_code() {
    // "How many years after" needs a computation: 1788 is in the passage, but only a
    // python result backs a number, so the answer goes back for a check in code.
    let out = check(
        search_agent(true),
        "How many years after Ostmere was Calvoy Sands founded?",
        vec![
            reply("It was founded in 1788."),
            reply("print(6*7)\n```"),
            reply("42 years."),
        ],
    )
    .await;
    let kinds = out.kinds();
    assert!(kinds.contains(&"ungrounded".to_string()), "{kinds:?}");
    assert_eq!(out.run.answer.as_deref(), Some("42 years."));
    // Without python there is nothing to check with: the passage's number stands.
    let out = check(
        search_agent(false),
        "When was Calvoy Sands founded?",
        vec![reply("It was founded in 1788.")],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("It was founded in 1788."));
}

#[tokio::test]
async fn code_that_repeats_a_successful_cell_asks_for_the_answer() {
    let out = check(
        code_agent(),
        "What is 6 times 7?",
        vec![
            reply("```python\nprint(6*7)\n```"),
            // The same cell again: not run, the answer is asked for.
            reply("```python\nprint(6*7)\n```"),
            reply("The answer is 42."),
        ],
    )
    .await;
    assert_eq!(out.run.stop, StopReason::Answered);
    assert_eq!(out.run.answer.as_deref(), Some("The answer is 42."));
    assert_eq!(code_calls(&out), vec!["print(6*7)".to_string()]);
    assert!(
        out.kinds().contains(&"answer_retry".to_string()),
        "{:?}",
        out.kinds()
    );
    assert!(
        out.prompt(2).contains("You already have the result above"),
        "{}",
        out.prompt(2)
    );
}

#[tokio::test]
async fn a_reply_cut_by_the_token_limit_is_not_the_answer() {
    let out = check(
        agent(),
        "Name the capital of France.",
        vec![
            Script::Finish(
                "The capital of France is a city that".into(),
                FinishReason::MaxTokens,
            ),
            reply("Paris."),
        ],
    )
    .await;
    let kinds = out.kinds();
    assert!(kinds.contains(&"truncated".to_string()), "{kinds:?}");
    assert_eq!(out.run.answer.as_deref(), Some("Paris."));

    // Cut again after being asked for the answer: the run stops there, it does not
    // spend its other steps asking.
    let script = (0..jielong_agent::AgentSettings::DEFAULT_MAX_STEPS)
        .map(|_| Script::Finish("and so".into(), FinishReason::MaxTokens))
        .collect();
    let out = check(agent(), "Name the capital of France.", script).await;
    assert_eq!(out.run.stop, StopReason::MaxTokens);
    assert_eq!(out.run.steps, 2);
}

#[tokio::test]
async fn the_step_after_a_failure_samples_a_new_path() {
    let out = check(
        code_agent(),
        "What is 6 times 7?",
        vec![
            reply("```python\nprint(boom)\n```"),
            reply("Fixed:\n```python\nprint(6*7)\n```"),
            reply("It is 42."),
        ],
    )
    .await;
    let temperatures: Vec<f32> = out.requests.iter().map(|r| r.temperature).collect();
    assert_eq!(temperatures, vec![0.0, 0.7, 0.0]);
    assert!(out.kinds().contains(&"resampled".to_string()));
    assert_eq!(out.run.answer.as_deref(), Some("It is 42."));
    let results = out.tool_results();
    assert!(!results[0].1 && results[1].1, "{results:?}");
}

// ---------------------------------------------------------------------------------------
// Strategies, the step budget's default, the trace writer

/// The phases of a run's steps, in order.
fn phases(out: &Outcome) -> Vec<Phase> {
    out.events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::StepStarted { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn each_strategy_runs_its_own_stages() {
    use jielong_agent::Strategy;
    use Phase::*;
    let plan = || reply(&call("submit_plan", json!({"subtasks": ["a"]})));
    let cases: Vec<(Strategy, Vec<Script>, Vec<Phase>, &str)> = vec![
        (Strategy::Direct, vec![reply("42")], vec![Task], "42"),
        (
            Strategy::plan(Strategy::Direct),
            vec![plan(), reply("A."), reply("42")],
            vec![Plan, Subtask, Synthesis],
            "42",
        ),
        (
            Strategy::reflect(Strategy::Direct),
            vec![reply("41"), critique(false, "wrong"), reply("42")],
            vec![Task, Critique, Revision],
            "42",
        ),
        (
            Strategy::reflect(Strategy::plan(Strategy::Direct)),
            vec![
                plan(),
                reply("A."),
                reply("41"),
                critique(false, "wrong"),
                reply("42"),
            ],
            vec![Plan, Subtask, Synthesis, Critique, Revision],
            "42",
        ),
    ];
    for (strategy, script, expected, answer) in cases {
        let builder = agent().strategy(strategy.clone());
        let out = check(builder, "task", script).await;
        assert_eq!(out.run.stop, StopReason::Answered, "{strategy}");
        assert_eq!(out.run.answer.as_deref(), Some(answer), "{strategy}");
        assert_eq!(phases(&out), expected, "{strategy}");
    }
}

#[test]
fn strategies_are_values_the_builder_keeps() {
    use jielong_agent::{AgentSettings, Strategy};
    let settings = |b: AgentBuilder| b.build().unwrap().settings().strategy.clone();
    assert_eq!(AgentSettings::default().strategy, Strategy::Direct);
    assert_eq!(settings(agent()), Strategy::Direct);
    let composed: Strategy = "reflect(vote(written, plan, n=3))".parse().unwrap();
    assert_eq!(settings(agent().strategy(composed.clone())), composed);
    // Out of range anywhere inside: the agent is not built.
    let deep = Strategy::reflect(Strategy::vote(vec![Strategy::Direct], 17));
    assert!(matches!(
        agent().strategy(deep).build(),
        Err(AgentError::InvalidSetting(_))
    ));
}

#[tokio::test]
async fn the_step_budget_defaults_to_the_one_constant() {
    use jielong_agent::AgentSettings;
    assert_eq!(AgentSettings::DEFAULT_MAX_STEPS, 12);
    assert_eq!(
        AgentSettings::default().max_steps,
        AgentSettings::DEFAULT_MAX_STEPS
    );
    assert_eq!(
        agent().build().unwrap().settings().max_steps,
        AgentSettings::DEFAULT_MAX_STEPS
    );
    // A model that never gives an answer takes exactly that many steps.
    let script = (0..AgentSettings::DEFAULT_MAX_STEPS + 3)
        .map(|_| reply(""))
        .collect();
    let out = check(agent(), "task", script).await;
    assert_eq!(out.run.stop, StopReason::MaxSteps);
    assert_eq!(out.run.steps, AgentSettings::DEFAULT_MAX_STEPS);
}

#[tokio::test]
async fn the_trace_writer_stamps_every_event_line() {
    use jielong_agent::{now_ms, TraceWriter, TIMESTAMP_FIELD};
    let dir = std::env::temp_dir().join(format!("jielong-agent-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.jsonl");
    let trace = TraceWriter::create(&path).unwrap();
    let before = now_ms();
    let out = check(
        agent(),
        "What is 2 + 3?",
        vec![reply(&call("add", json!({"a": 2, "b": 3}))), reply("5")],
    )
    .await;
    // The run's events, written the way `jielong run --trace` writes them.
    for event in &out.events {
        trace.write(event).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), out.events.len(), "{text}");
    for (line, event) in lines.iter().zip(&out.events) {
        let ts = line[TIMESTAMP_FIELD].as_u64().expect("ts_ms");
        assert!(ts >= before && ts <= now_ms(), "{line}");
        // The rest of the line is the event's own JSON, `step` number and all.
        let mut rest = line.clone();
        rest.as_object_mut().unwrap().remove(TIMESTAMP_FIELD);
        assert_eq!(rest, serde_json::to_value(event).unwrap());
        assert_eq!(
            &serde_json::from_value::<AgentEvent>(line.clone()).unwrap(),
            event
        );
    }
    assert!(lines
        .iter()
        .any(|l| l["type"] == "step_started" && l["step"] == 2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs "What is 3 * 6?" with a sampling `strategy` of `samples` samples on a
/// scripted session without branches: the run, its events and the requests made.
async fn run_samples(
    strategy: jielong_agent::Strategy,
    samples: usize,
    script: Vec<Script>,
) -> (AgentRun, Vec<AgentEvent>, Vec<Request>) {
    let agent = agent().strategy(match strategy {
        jielong_agent::Strategy::Sample(mut sample) => {
            sample.n = samples;
            jielong_agent::Strategy::Sample(sample)
        }
        other => other,
    });
    run_scripted(agent, "What is 3 * 6?", script).await
}

/// Runs the agent `builder` describes on `task` with the scripted model: the run, its
/// events and the requests the model saw.
async fn run_scripted(
    builder: AgentBuilder,
    task: &str,
    script: Vec<Script>,
) -> (AgentRun, Vec<AgentEvent>, Vec<Request>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let agent = builder
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let mut session = Scripted {
        script: script.into(),
        format: scripted_format(ToolCallFormat::Hermes),
        requests: requests.clone(),
        resets: Arc::default(),
        cache: String::new(),
    };
    let run = agent.run(&mut session, task).await;
    let events = events.lock().unwrap().clone();
    let requests = requests.lock().unwrap().clone();
    (run, events, requests)
}

/// Self-consistency on a backend without branches: the samples run one after another
/// on the session, each sampling with its own seed; answers are voted by their
/// normalised form and the tally is an event.
#[tokio::test]
async fn self_consistency_votes_over_independent_samples() {
    let run_with = |script: Vec<Script>, samples: usize| {
        run_samples("self-consistency".parse().unwrap(), samples, script)
    };
    let tally = |events: &[AgentEvent]| {
        events
            .iter()
            .find_map(|e| match e {
                AgentEvent::Tally {
                    votes,
                    abstained,
                    winner,
                    tie,
                } => Some((votes.clone(), *abstained, winner.clone(), *tie)),
                _ => None,
            })
            .expect("a tally")
    };

    // Two of three agree once normalised; the first answer with that key wins.
    let (run, events, requests) = run_with(
        vec![reply("The answer is 18."), reply("17"), reply("$18")],
        3,
    )
    .await;
    assert_eq!(run.stop, StopReason::Answered);
    assert_eq!(run.answer.as_deref(), Some("The answer is 18."));
    assert_eq!(
        tally(&events),
        (
            vec![("18".to_string(), 2), ("17".to_string(), 1)],
            0,
            Some("The answer is 18.".to_string()),
            false
        )
    );
    assert_eq!(run.steps, 3);
    // The first sample is the greedy run; the others sample, each with its own seed.
    assert_eq!(requests[0].temperature, 0.0, "{requests:?}");
    assert!(
        requests[1..].iter().all(|r| r.temperature > 0.0),
        "{requests:?}"
    );
    let sample_events: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Sample { sample, .. } => Some(*sample),
            _ => None,
        })
        .collect();
    assert!(sample_events.contains(&1) && sample_events.contains(&3));
    assert!(matches!(events.last(), Some(AgentEvent::Stopped { .. })));

    // A tie goes to the answer that appeared first, and says so.
    let (run, events, _) = run_with(vec![reply("2"), reply("1")], 2).await;
    assert_eq!(run.answer.as_deref(), Some("2"));
    assert!(tally(&events).3, "a tie");

    // A sample without an answer abstains; no answer at all is a stop.
    let (run, events, _) = run_with(
        vec![
            reply("5"),
            Script::Fail(RuntimeError::InvalidRequest("down".into())),
        ],
        2,
    )
    .await;
    assert_eq!(run.answer.as_deref(), Some("5"));
    assert_eq!(tally(&events).1, 1);
    let (run, _, _) = run_with(
        vec![Script::Fail(RuntimeError::InvalidRequest("down".into()))],
        1,
    )
    .await;
    assert!(run.answer.is_none());
    assert!(
        matches!(run.stop, StopReason::ModelError(_)),
        "{}",
        run.stop
    );

    // The number of samples is checked.
    for n in [0, 17] {
        let sampled = jielong_agent::Strategy::vote(vec![jielong_agent::Strategy::Direct], n);
        assert!(agent().strategy(sampled).build().is_err());
    }
}

/// Best-of-N: the samples' distinct answers are judged pairwise in both orders; the
/// judge's choice beats the vote, and a judge that always picks what it sees first
/// cancels out, leaving the vote.
#[tokio::test]
async fn best_of_n_judges_each_pair_in_both_orders() {
    let run_with = |script: Vec<Script>| run_samples("best-of-n".parse().unwrap(), 3, script);
    let ranking = |events: &[AgentEvent]| {
        events
            .iter()
            .find_map(|e| match e {
                AgentEvent::Ranking {
                    candidates, error, ..
                } => Some((candidates.clone(), error.clone())),
                _ => None,
            })
            .expect("a ranking")
    };
    let judged = |events: &[AgentEvent]| -> Vec<(usize, usize, Option<f32>)> {
        events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::Judged {
                    first,
                    second,
                    preference,
                } => Some((*first, *second, *preference)),
                _ => None,
            })
            .collect()
    };
    let samples = || vec![reply("17"), reply("It is 18."), reply("18")];

    // The judge prefers 17 in both orders: it wins against two votes for 18.
    let mut script = samples();
    script.extend([reply("B"), reply("A")]);
    let (run, events, requests) = run_with(script).await;
    assert_eq!(run.answer.as_deref(), Some("17"), "{events:?}");
    assert_eq!(run.stop, StopReason::Answered);
    // Vote order: 18 (samples 2 and 3) before 17 (sample 1); 18 is shown first.
    assert_eq!(judged(&events), vec![(2, 1, Some(0.0)), (1, 2, Some(1.0))]);
    let (candidates, error) = ranking(&events);
    assert_eq!(error, None);
    assert_eq!(
        candidates,
        vec![("17".to_string(), 1, 1.0), ("18".to_string(), 2, 0.0)]
    );
    // The judge saw the task and both candidates' work, in both orders, greedily.
    let judge_prompts = &requests[3..];
    assert_eq!(judge_prompts.len(), 2);
    for request in judge_prompts {
        assert!(
            request.prompt.contains("Question: What is 3 * 6?"),
            "{}",
            request.prompt
        );
        assert!(request.prompt.contains("Solution A:"), "{}", request.prompt);
        assert_eq!(request.temperature, 0.0);
    }
    let a = judge_prompts[0].prompt.find("It is 18.").unwrap();
    let b = judge_prompts[0].prompt.find("17").unwrap();
    assert!(a < b, "18 first: {}", judge_prompts[0].prompt);

    // A judge that always answers A prefers whatever it sees first: both orders
    // cancel, the scores tie and the vote decides.
    let mut script = samples();
    script.extend([reply("A"), reply("A")]);
    let (run, events, _) = run_with(script).await;
    assert_eq!(run.answer.as_deref(), Some("It is 18."));
    let (candidates, _) = ranking(&events);
    assert_eq!(candidates[0], ("18".to_string(), 2, 0.0));

    // A judge that names neither is no preference; a judge that fails leaves the
    // vote and says why.
    let mut script = samples();
    script.extend([reply("Both are fine"), reply("C")]);
    let (run, events, _) = run_with(script).await;
    assert_eq!(run.answer.as_deref(), Some("It is 18."));
    assert_eq!(judged(&events), vec![(2, 1, None), (1, 2, None)]);
    let mut script = samples();
    script.push(Script::Fail(RuntimeError::InvalidRequest("down".into())));
    let (run, events, _) = run_with(script).await;
    assert_eq!(run.answer.as_deref(), Some("It is 18."));
    let (_, error) = ranking(&events);
    assert!(error.is_some_and(|e| e.contains("down")));

    // One distinct answer needs no judge: no judge call is made.
    let (run, events, requests) = run_with(vec![reply("18"), reply("18."), reply("$18")]).await;
    assert_eq!(run.answer.as_deref(), Some("18"));
    assert!(judged(&events).is_empty());
    assert_eq!(requests.len(), 3);
}

// ---------------------------------------------------------------------------------------
// Tree of Thoughts

/// A tree-of-thoughts run of `space` on `task` with the scripted model.
async fn run_tree(
    space: Arc<dyn jielong_agent::ThoughtSpace>,
    shape: jielong_agent::TreeSearch,
    task: &str,
    script: Vec<Script>,
) -> (AgentRun, Vec<AgentEvent>, Vec<Request>) {
    let agent = agent()
        .strategy(jielong_agent::Strategy::Tree(shape))
        .thoughts(space);
    run_scripted(agent, task, script).await
}

/// The beam search on a Game of 24: invalid steps are rejected by the checker, a
/// state reached twice is kept once, the evaluator's labels rank the states and only
/// the beam's best go on, and the solution is written over the puzzle's numbers.
#[tokio::test]
async fn tree_of_thoughts_searches_checked_steps_and_keeps_the_best_states() {
    use jielong_agent::{ThoughtOutcome, TreeSearch};
    use jielong_puzzles::thoughts::Game24;
    let shape = TreeSearch {
        breadth: 2,
        beam: 2,
        depth: 4,
    };
    let script = vec![
        // Depth 1: two proposals for 4 9 10 13.
        reply("13 - 9 = 4 (left: 4 4 10)\n4 + 9 = 14 (left: 10 13 14)"),
        reply("10 - 4 = 6 (left: 6 9 13)\n13 - 9 = 4 (left: 4 4 10)\n9 + 10 = 19 (left: 4 13 19)"),
        // Three open states, the beam keeps two: values of 4 4 10, 6 9 13, 4 13 19.
        reply("likely"),
        reply("impossible"),
        reply("sure (19 - 13 = 6, 6 * 4 = 24)"),
        // Depth 2: 4 13 19 first (the best), then 4 4 10.
        reply("19 - 13 = 6 (left: 4 6)"),
        reply("4 * 13 = 52 (left: 19 52)"),
        reply("10 - 4 = 6 (left: 4 6)"),
        reply("4 + 4 = 8 (left: 8 10)"),
        reply("sure"),
        reply("impossible"),
        reply("imp"),
        // Depth 3: 4 6 solved.
        reply("4 * 6 = 24 (left: 24)"),
        reply("4 + 6 = 10 (left: 10)"),
    ];
    let (run, events, requests) =
        run_tree(Arc::new(Game24), shape, "Use 4 9 10 13 to make 24.", script).await;
    assert_eq!(run.stop, StopReason::Answered, "{events:#?}");
    let answer = run.answer.clone().unwrap();
    assert_eq!(answer, "4 * ((9 + 10) - 13) = 24");
    jielong_puzzles::game24::check(&[4, 9, 10, 13], &answer).unwrap();
    assert_eq!(requests.len(), 14, "every scripted reply is used");
    assert_eq!(run.steps, 14);
    // Proposals: the first of each state greedy, the second sampled; values greedy.
    let temperatures: Vec<f32> = requests.iter().map(|r| r.temperature).collect();
    assert_eq!(&temperatures[..5], &[0.0, 0.7, 0.0, 0.0, 0.0]);
    assert!(requests[0]
        .prompt
        .contains("The numbers are: 4 9 10 13<|im_end|>"));
    assert!(requests[5]
        .prompt
        .contains("The numbers are: 4 13 19<|im_end|>"));
    assert!(requests[2].prompt.contains("\n4 4 10:"));
    let outcomes: Vec<&ThoughtOutcome> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Thought { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    assert!(outcomes.iter().any(|o| matches!(o,
        ThoughtOutcome::Rejected { reason } if reason == "4 + 9 is 13, not 14")));
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, ThoughtOutcome::Repeated))
            .count(),
        2
    );
    let beams: Vec<(usize, usize, usize)> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Beam {
                depth,
                kept,
                dropped,
            } => Some((*depth, kept.len(), *dropped)),
            _ => None,
        })
        .collect();
    assert_eq!(beams, vec![(1, 2, 1), (2, 2, 1)]);
    // The transcript is the solved path.
    assert_eq!(
        run.transcript.last().map(|m| m.content.clone()),
        Some(format!(
            "9 + 10 = 19 (left: 4 13 19)\n19 - 13 = 6 (left: 4 6)\n{answer}"
        ))
    );
}

/// A search with nothing valid to go on with, a task that is not a puzzle and a
/// depth limit each end unsolved, saying why.
#[tokio::test]
async fn tree_of_thoughts_ends_unsolved_with_the_reason() {
    use jielong_agent::{FreeThoughts, TreeSearch};
    use jielong_puzzles::thoughts::Game24;
    let narrow = TreeSearch {
        breadth: 1,
        beam: 1,
        depth: 2,
    };
    let unsolved = |run: &AgentRun, want: &str| match &run.stop {
        StopReason::Unsolved { reason } => assert!(reason.contains(want), "{reason}"),
        other => panic!("{other:?}"),
    };
    let (run, _, requests) = run_tree(
        Arc::new(Game24),
        narrow,
        "4 9 10 13",
        vec![reply("I think we should add them all.")],
    )
    .await;
    unsolved(&run, "no valid thought to go on with at depth 1");
    assert_eq!(requests.len(), 1);
    assert_eq!(run.answer, None);

    let (run, _, requests) = run_tree(Arc::new(Game24), narrow, "make a cake", vec![]).await;
    unsolved(&run, "names the numbers");
    assert!(requests.is_empty());

    // Free thoughts: a line per step; the depth runs out before an answer.
    let (run, events, requests) = run_tree(
        Arc::new(FreeThoughts),
        narrow,
        "What is 3 * 6?",
        vec![reply("Step 1: Multiply 3 by 6.\nmore"), reply("It is 18")],
    )
    .await;
    unsolved(&run, "no solution within 2 thoughts");
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1].prompt.contains("1. Multiply 3 by 6."),
        "{}",
        requests[1].prompt
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, AgentEvent::Thought { .. }))
            .count(),
        2
    );
    // ... and one that says the answer solves it.
    let (run, _, _) = run_tree(
        Arc::new(FreeThoughts),
        narrow,
        "What is 3 * 6?",
        vec![reply("Multiply 3 by 6."), reply("The answer is 18.")],
    )
    .await;
    assert_eq!(run.answer.as_deref(), Some("The answer is 18."));
}

// ---------------------------------------------------------------------------------------
// Composed strategies

/// `text` read as a strategy (the test's own constants, so they parse).
fn strategy(text: &str) -> jielong_agent::Strategy {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[tokio::test]
async fn a_fallback_answers_in_writing_when_the_tools_end_without_an_answer() {
    let broken = || reply(&call("broken", json!({})));
    let (run, events, requests) = run_scripted(
        agent().strategy(strategy("fallback(direct, written)")),
        "What is 2 + 40?",
        // Repeated failures of the same tool end the direct run; the written one answers.
        vec![
            broken(),
            broken(),
            broken(),
            reply("2 + 40 = \\(\\boxed{42}\\)"),
        ],
    )
    .await;
    assert_eq!(run.stop, StopReason::Answered);
    assert_eq!(run.answer.as_deref(), Some("2 + 40 = 42"));
    let why = run.unverified.as_deref().unwrap_or_default();
    assert!(why.contains("direct ended without an answer"), "{why}");
    let fell_back: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::FellBack { reason, then } => Some(format!("{then} after {reason}")),
            _ => None,
        })
        .collect();
    assert_eq!(fell_back.len(), 1, "{fell_back:?}");
    assert!(fell_back[0].starts_with("written after"), "{fell_back:?}");
    // The written answer saw no tools and no system prompt.
    let last = requests.last().unwrap();
    assert!(last.tools.is_empty(), "{last:?}");
    assert!(
        !last.prompt.contains("careful assistant"),
        "{}",
        last.prompt
    );
    // The direct run's calls count in the whole run's figures.
    assert!(run.tool_calls >= 2, "{}", run.tool_calls);
    // The run's last events are its own.
    assert!(matches!(
        events.last(),
        Some(AgentEvent::Stopped {
            reason: StopReason::Answered
        })
    ));

    // A direct run that answers needs no fallback: nothing is marked.
    let (run, _, requests) = run_scripted(
        agent().strategy(strategy("fallback(direct, written)")),
        "What is 2 + 40?",
        vec![reply("42")],
    )
    .await;
    assert_eq!((run.answer.as_deref(), run.unverified), (Some("42"), None));
    assert_eq!(requests.len(), 1);
}

#[tokio::test]
async fn a_mixed_vote_alternates_written_and_tool_runs() {
    let (run, events, requests) = run_scripted(
        agent().strategy(strategy("vote(written, direct, n=3)")),
        "What is 3 * 6?",
        vec![reply("18"), reply("19"), reply("The answer is 18.")],
    )
    .await;
    assert_eq!(run.answer.as_deref(), Some("18"));
    assert_eq!(requests.len(), 3);
    // Written runs (1st, 3rd) see no tools; the direct one does.
    let tool_counts: Vec<usize> = requests.iter().map(|r| r.tools.len()).collect();
    assert_eq!(tool_counts[0], 0);
    assert!(tool_counts[1] > 0, "{tool_counts:?}");
    assert_eq!(tool_counts[2], 0);
    // The first of each way is greedy; the third samples.
    let temperatures: Vec<f32> = requests.iter().map(|r| r.temperature).collect();
    assert_eq!(temperatures[..2], [0.0, 0.0]);
    assert!(temperatures[2] > 0.0, "{temperatures:?}");
    assert!(events.iter().any(
        |e| matches!(e, AgentEvent::Tally { votes, .. } if votes[0] == ("18".to_string(), 2))
    ));
}

#[tokio::test]
async fn an_adaptive_vote_draws_more_only_while_the_answers_disagree() {
    // Agreement at once: two runs.
    let (run, _, requests) = run_scripted(
        agent().strategy(strategy("adaptive(written, direct, n=6)")),
        "What is 3 * 6?",
        vec![reply("18"), reply("18")],
    )
    .await;
    assert_eq!((run.answer.as_deref(), requests.len()), (Some("18"), 2));

    // Disagreement: a round of each way at a time until one answer leads by two.
    let (run, events, requests) = run_scripted(
        agent().strategy(strategy("adaptive(written, direct, n=6)")),
        "What is 3 * 6?",
        vec![reply("18"), reply("19"), reply("18"), reply("18")],
    )
    .await;
    assert_eq!(run.answer.as_deref(), Some("18"));
    assert_eq!(requests.len(), 4);
    let answers = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::SampleAnswer { .. }))
        .count();
    assert_eq!(answers, 4);

    // Never more than n.
    let (run, _, requests) = run_scripted(
        agent().strategy(strategy("adaptive(written, direct, n=3)")),
        "What is 3 * 6?",
        vec![reply("17"), reply("18"), reply("19")],
    )
    .await;
    assert_eq!((run.answer.as_deref(), requests.len()), (Some("17"), 3));
}

#[tokio::test]
async fn a_plan_works_its_subtasks_by_the_inner_strategy_and_reflection_wraps_a_vote() {
    use Phase::*;
    let plan = reply(&call("submit_plan", json!({"subtasks": ["add", "double"]})));
    let (run, events, requests) = run_scripted(
        agent().strategy(strategy("plan(written)")),
        "Add 2 and 3, then double it.",
        vec![plan, reply("5"), reply("10"), reply("10")],
    )
    .await;
    assert_eq!(run.answer.as_deref(), Some("10"));
    // The subtasks ran as parts: written (no tools), the second told what the first found.
    assert!(requests[1].tools.is_empty() && requests[2].tools.is_empty());
    assert!(
        requests[2].prompt.contains("- add: 5"),
        "{}",
        requests[2].prompt
    );
    let parts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Part { part, event } if matches!(**event, AgentEvent::Final { .. }) => {
                Some(part.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(parts, ["subtask 1", "subtask 2"]);
    let top: Vec<Phase> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::StepStarted { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect();
    assert_eq!(top, [Plan, Synthesis]);
    assert_eq!(run.steps, 4);

    // reflect(vote): the vote's answer is the draft, then critique and revision.
    let (run, events, _) = run_scripted(
        agent().strategy(strategy("reflect(vote(direct, n=2))")),
        "What is 2 + 40?",
        vec![
            reply("41"),
            reply("41"),
            critique(false, "2 + 40 is 42."),
            reply("42"),
        ],
    )
    .await;
    assert_eq!(run.answer.as_deref(), Some("42"));
    assert!(events
        .iter()
        .any(|e| matches!(e, AgentEvent::Critique { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, AgentEvent::Part { part, .. } if part == "draft")));
}

#[tokio::test]
async fn a_checker_pick_prefers_the_answer_another_way_arrives_at_again() {
    // The vote is a tie (19 first); the checkers find 18 both times.
    let (run, events, requests) = run_scripted(
        agent().strategy(strategy("sample(written, direct, n=2, pick=check)")),
        "What is 3 * 6?",
        vec![reply("19"), reply("18"), reply("18"), reply("18")],
    )
    .await;
    assert_eq!(run.answer.as_deref(), Some("18"));
    assert_eq!(requests.len(), 4);
    assert!(
        requests[2]
            .prompt
            .contains("Someone proposed this answer: 19"),
        "{}",
        requests[2].prompt
    );
    let checks: Vec<(usize, bool)> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Checked {
                sample,
                agreed,
                checker,
                ..
            } => {
                // Written answers (no calls) are checked by the tools' way.
                assert_eq!(checker, "direct");
                Some((*sample, *agreed))
            }
            _ => None,
        })
        .collect();
    assert_eq!(checks, [(1, false), (2, true)]);
    // The checkers' steps count in the run's figures.
    assert_eq!(run.steps, 4);
}

/// With calls fitted to the question, a call of a tool for a subject the question never
/// names is declined and the step is answered in writing; a tool the question names, or
/// any tool when calls go as written (the default), is called.
#[tokio::test]
async fn calls_of_tools_the_question_never_names_are_declined() {
    let agent = |fit: CallFit| {
        let mut tools = ToolRegistry::new();
        let weather = SchemaTool::new(
            "get_weather",
            "The current weather in a city.",
            json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            |_| async { Ok(json!("sunny, 21 C")) },
        )
        .unwrap();
        tools.register(weather).unwrap();
        Agent::builder(ToolCallFormat::Hermes)
            .tools(tools)
            .call_fit(fit)
    };
    let london = || reply(&call("get_weather", json!({"city": "London"})));
    let out = check(
        agent(CallFit::Fitted),
        "Who wrote Hamlet?",
        vec![london(), reply("Shakespeare wrote Hamlet.")],
    )
    .await;
    assert_eq!(out.run.answer.as_deref(), Some("Shakespeare wrote Hamlet."));
    assert!(out.events.contains(&AgentEvent::Declined {
        step: 1,
        tools: vec!["get_weather".into()]
    }));
    assert_eq!(out.choices(), [AUTO, PROSE]);
    assert!(out.tool_results().is_empty());
    for (fit, task) in [
        (CallFit::Fitted, "What is the weather in London?"),
        (CallFit::AsWritten, "Who wrote Hamlet?"),
    ] {
        let out = check(agent(fit), task, vec![london(), reply("Sunny.")]).await;
        assert_eq!(out.tool_results().len(), 1, "{fit:?} {task}");
        assert!(
            !out.kinds().contains(&"declined".to_string()),
            "{fit:?} {task}"
        );
    }
}
