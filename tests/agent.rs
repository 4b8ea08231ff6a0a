//! The agent on the default model (Qwen2.5-Coder-0.5B) with real tools: it calls the
//! sandboxed Python tool for arithmetic and answers from the result, reuses the KV
//! cache across steps, and ends every failure with its typed stop reason.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{model, model_lock, model_path, QWEN};
use jielong::agent::Agent;
use jielong::agent::{AgentEvent, AgentRun, StopReason};
use jielong::chat::tool::{SchemaTool, ToolError, ToolRegistry};
use jielong::tools::builtin::builtin_registry;
use jielong::{Role, SessionOptions};
use serde_json::{json, Value};

/// Runs `jielong run TASK --trace FILE`: exit code, stdout and the trace's events.
fn jielong_run(task: &str) -> (Option<i32>, String, String, Vec<Value>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = dir.path().join("trace.jsonl");
    let out = common::command()
        .args(["run", task, "--trace"])
        .arg(&trace)
        .output()
        .expect("the binary runs");
    let events = std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every trace line is JSON"))
        .collect();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        events,
    )
}

/// The successful `python` results in a trace (inside samples and parts too).
fn python_results(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(common::unwrapped)
        .filter(|e| e["type"] == "tool_result" && e["name"] == "python" && e["ok"] == true)
        .filter_map(|e| e["content"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn run_answers_arithmetic_through_the_python_tool() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    for (task, answer) in [
        ("What is 12345 * 6789?", "83810205"),
        ("What is the sum of the squares of 1..100?", "338350"),
    ] {
        let (code, stdout, stderr, events) = jielong_run(task);
        assert_eq!(code, Some(0), "{task}: {stderr}");
        assert!(stdout.contains(answer), "{task}: stdout {stdout:?}");
        // The number came from Python, not from the model's head.
        let results = python_results(&events);
        assert!(
            results.iter().any(|r| r.contains(answer)),
            "{task}: python results {results:?}"
        );
        assert_eq!(
            events.last().map(|e| e["type"].clone()),
            Some(json!("stopped"))
        );
    }
}

/// Runs an agent on the default model with greedy sampling.
fn run_agent(
    build: impl FnOnce(jielong::agent::AgentBuilder) -> Agent,
    task: &str,
) -> (AgentRun, Vec<AgentEvent>) {
    let m = model(QWEN);
    let mut session = m.session(&SessionOptions::default()).expect("a session");
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let agent =
        build(Agent::for_model(&m).on_event(move |e| sink.lock().expect("events").push(e.clone())));
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let run = runtime.block_on(agent.run(&mut session, task));
    let events = events.lock().expect("events").clone();
    (run, events)
}

#[test]
fn prompt_tokens_over_a_multi_step_run_stay_close_to_the_distinct_tokens() {
    let _lock = model_lock();
    let (run, _) = run_agent(
        |b| {
            b.tools(builtin_registry(&["python".into()]).expect("python"))
                .strategy(jielong::agent::Strategy::plan(
                    jielong::agent::Strategy::Direct,
                ))
                .build()
                .expect("an agent")
        },
        "What is 12345 * 6789 plus the number of days in a leap year?",
    );
    assert_eq!(run.stop, StopReason::Answered, "{:?}", run.transcript);
    assert!(run.steps >= 4, "{} steps", run.steps);
    let ratio = run.evaluated_per_distinct().expect("tokens were evaluated");
    eprintln!(
        "{} steps: {} prompt tokens evaluated for {} distinct ({ratio:.2}x); {} prompt tokens in all",
        run.steps, run.usage.evaluated_tokens, run.distinct_prompt_tokens, run.usage.prompt_tokens
    );
    assert!(ratio <= 1.2, "{ratio:.2}x");
    // Without the cache every step would evaluate its whole prompt.
    assert!(run.usage.prompt_tokens > 3 * run.usage.evaluated_tokens);
}

/// A tool that counts its calls and answers with `result`.
fn counting_tool(
    name: &str,
    calls: Arc<AtomicUsize>,
    result: Result<&'static str, &'static str>,
) -> ToolRegistry {
    let tool = SchemaTool::new(
        name,
        "Looks up the current population of a city.",
        json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        }),
        move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match result {
                    Ok(text) => Ok(json!(text)),
                    Err(message) => Err(ToolError::failed(message, false)),
                }
            }
        },
    )
    .expect("a valid tool");
    let mut registry = ToolRegistry::new();
    registry.register(tool).expect("registered");
    registry
}

const TASK: &str = "What is the population of Paris? Use the population tool.";

#[test]
fn every_failure_ends_with_its_typed_stop_reason() {
    let _lock = model_lock();

    // A tool that always fails: its errors go back to the model until the breaker.
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = counting_tool(
        "population",
        calls.clone(),
        Err("the census service is down"),
    );
    let (run, events) = run_agent(
        |b| {
            b.tools(registry)
                .max_tool_failures(2)
                .max_identical_calls(10)
                .build()
                .expect("an agent")
        },
        TASK,
    );
    match &run.stop {
        StopReason::ToolFailed { name, error } => {
            assert_eq!(name, "population");
            assert!(error.to_string().contains("census service is down"));
        }
        other => panic!("stopped with {other:?}: {:?}", run.transcript),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(run.answer, None);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::ToolResult { ok: false, .. }))
        .collect();
    assert_eq!(failed.len(), 2);
    // The transcript keeps the task, the calls and the errors.
    assert_eq!(run.transcript[1].content, TASK);
    assert_eq!(
        run.transcript
            .iter()
            .filter(|m| m.role == Role::Tool)
            .count(),
        2
    );

    // The same call over and over: the repeat breaker.
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = counting_tool("population", calls.clone(), Err("try again"));
    let (run, _) = run_agent(
        |b| {
            b.tools(registry)
                .max_identical_calls(2)
                .build()
                .expect("an agent")
        },
        TASK,
    );
    assert_eq!(
        run.stop,
        StopReason::RepeatedCall {
            name: "population".into()
        },
        "{:?}",
        run.transcript
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the third call is not made"
    );
    assert!(run.transcript.iter().any(|m| m.role == Role::Tool));

    // A step budget of 1: the call is made, no step is left to answer.
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = counting_tool("population", calls.clone(), Ok("2,102,650 (2023)"));
    let (run, _) = run_agent(
        |b| b.tools(registry).max_steps(1).build().expect("an agent"),
        TASK,
    );
    assert_eq!(run.stop, StopReason::MaxSteps, "{:?}", run.transcript);
    assert_eq!(run.steps, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let last = run.transcript.last().expect("a transcript");
    assert_eq!(last.role, Role::Tool);
    assert_eq!(last.content, "2,102,650 (2023)");
}

/// A vote across ways of answering on the embedded model: program, written, program
/// samples run at once on branches forked from the main one, each with a Python
/// session of its own (the written one with none); the branches are gone afterwards
/// and the vote is in the events.
#[test]
fn a_mixed_vote_samples_on_branches_and_votes() {
    let (events, branches) = sampled_product("vote(direct, written, n=3)");
    // The written sample called no tool.
    let written_calls = events
        .iter()
        .filter(|e| {
            matches!(e, AgentEvent::Sample { sample: 2, event }
                if matches!(**event, AgentEvent::ToolCall { .. }))
        })
        .count();
    assert_eq!(written_calls, 0);
    let samples: std::collections::BTreeSet<usize> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Sample { sample, .. } => Some(*sample),
            _ => None,
        })
        .collect();
    assert_eq!(samples.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
    let tally = events.iter().find_map(|e| match e {
        AgentEvent::Tally { votes, .. } => Some(votes.clone()),
        _ => None,
    });
    let votes = tally.expect("a tally");
    assert_eq!(votes[0].0, "83810205", "{votes:?}");
    // Only the main branch is left.
    assert_eq!(branches, 1);
}

/// Runs the python agent with a sampling `strategy` of 3 samples on "What is
/// 12345 * 6789?" and checks the product is the answer: the events, and how many
/// branches the session holds afterwards.
fn sampled_product(strategy: &str) -> (Vec<AgentEvent>, usize) {
    let strategy = jielong::agent::Strategy::parse(strategy, 3).unwrap();
    let _lock = model_lock();
    let m = model(QWEN);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut session = m.session(&SessionOptions::default()).unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let agent = Agent::for_model(&m)
        .tools(builtin_registry(&["python".into()]).unwrap())
        .strategy(strategy)
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let run = runtime.block_on(agent.run(&mut session, "What is 12345 * 6789?"));
    assert_eq!(run.stop, StopReason::Answered, "{run:?}");
    assert!(
        run.answer.as_deref().unwrap_or("").contains("83810205"),
        "{:?}",
        run.answer
    );
    let events = events.lock().unwrap().clone();
    (events, session.kv_usage().unwrap().branches.len())
}

/// The judge on the embedded model: a comparison judges both orders, each read from
/// the first token's probabilities (not a 0/1 letter), and reports their
/// position-swapped mean, so swapping the solutions swaps the verdict. Whether the
/// 0.5B judge prefers the right solution is the model's ceiling and its CPU's: on an
/// AVX2 machine it gives `A` about 0.7 in either order, so the mean lands near 0.5
/// instead of on the wrong solution, which is what the swap is for. The right answer
/// winning is asserted end to end by best-of-N's ranking below.
#[test]
fn the_judge_reads_both_orders_and_swapping_the_solutions_swaps_the_verdict() {
    use jielong::agent::{Judge, Prompts};
    let _lock = model_lock();
    let m = model(QWEN);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut session = m.session(&SessionOptions::default()).unwrap();
    let judge = Judge::from_prompts(&Prompts::default());
    let task = "Pens cost $3 each. Ana buys 4 pens and pays with a $20 bill. \
                How much change does she get?";
    let right = "```python\ndef solution():\n    cost = 4 * 3\n    return 20 - cost\n```\n\
                 ```output\n8\n```\nShe gets $8 in change.";
    let wrong = "```python\ndef solution():\n    cost = 4 + 3\n    return 20 - cost\n```\n\
                 ```output\n13\n```\nShe gets $13 in change.";
    let one = runtime
        .block_on(judge.compare(&mut session, task, right, wrong))
        .unwrap();
    let other = runtime
        .block_on(judge.compare(&mut session, task, wrong, right))
        .unwrap();
    for comparison in [&one, &other] {
        for judgement in [&comparison.forward, &comparison.backward] {
            let p = judgement
                .preference
                .expect("a preference from the first token");
            assert!(p > 0.0 && p < 1.0, "{comparison:?}");
        }
        let (f, b) = (
            comparison.forward.preference.unwrap(),
            comparison.backward.preference.unwrap(),
        );
        assert!((comparison.preference() - (f + 1.0 - b) / 2.0).abs() < 1e-6);
    }
    // The same two prompts in the other roles: the verdict is the complement (up to
    // what a cached prefix changes in the last bits of a logit).
    assert!(
        (one.preference() + other.preference() - 1.0).abs() < 0.02,
        "{one:?} {other:?}"
    );
}

/// Best-of-N on the embedded model: samples on branches, their answers ranked, the
/// right product given; only the main branch is left.
#[test]
fn best_of_n_samples_on_branches_and_ranks_the_answers() {
    let (events, branches) = sampled_product("best-of-n");
    let ranking = events.iter().find_map(|e| match e {
        AgentEvent::Ranking { candidates, .. } => Some(candidates.clone()),
        _ => None,
    });
    let candidates = ranking.expect("a ranking");
    assert_eq!(candidates[0].0, "83810205", "{candidates:?}");
    // Every pair of distinct answers was judged in both orders.
    let judged = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::Judged { .. }))
        .count();
    let n = candidates.len();
    assert_eq!(judged, n * (n - 1), "{events:?}");
    assert_eq!(branches, 1);
}

/// Tree of Thoughts on the embedded model: a Game of 24 solved by checked steps,
/// proposals sampled on branches (gone afterwards), the answer an expression the
/// checker accepts. Which easy puzzle a 0.5B model solves within a small search
/// depends on the CPU's kernels (greedy proposals part at near ties), so the test
/// tries [`TREE_PUZZLES`] in turn and needs one solved; a broken search solves none.
#[test]
fn tree_of_thoughts_solves_a_game_of_24_on_branches() {
    use jielong::agent::{Strategy, ThoughtOutcome, TreeSearch};
    use jielong::puzzles::thoughts::Game24;
    let _lock = model_lock();
    let m = model(QWEN);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut session = m.session(&SessionOptions::default()).unwrap();
    let mut tried = Vec::new();
    for (puzzle, numbers) in TREE_PUZZLES {
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        let agent = Agent::for_model(&m)
            .strategy(Strategy::Tree(TreeSearch {
                breadth: 3,
                beam: 3,
                depth: 3,
            }))
            .thoughts(Arc::new(Game24))
            .on_event(move |e| sink.lock().unwrap().push(e.clone()))
            .build()
            .unwrap();
        let run = runtime.block_on(agent.run(&mut session, puzzle));
        let events = events.lock().unwrap().clone();
        // Every proposal's branch is gone, solved or not.
        assert_eq!(session.kv_usage().unwrap().branches.len(), 1);
        if run.stop != StopReason::Answered {
            assert!(
                matches!(run.stop, StopReason::Unsolved { .. }),
                "{events:#?}"
            );
            tried.push((puzzle, events));
            continue;
        }
        let answer = run.answer.unwrap();
        jielong::puzzles::game24::check(numbers, &answer).unwrap();
        let solved = events.iter().any(|e| {
            matches!(e, AgentEvent::Thought { outcome: ThoughtOutcome::Solved { answer: a }, .. } if *a == answer)
        });
        assert!(solved, "{events:#?}");
        return;
    }
    panic!("no puzzle solved: {tried:#?}");
}

/// The puzzles of `tree_of_thoughts_solves_a_game_of_24_on_branches` and their numbers,
/// each solvable in two steps.
const TREE_PUZZLES: [(&str, &[i64]); 2] = [
    ("Use 2 3 4 to make 24.", &[2, 3, 4]),
    ("Use 2 2 6 to make 24.", &[2, 2, 6]),
];
