//! The message-level model boundary on the real model: chats in, prose and parsed
//! calls out; branches that share a prefix and decode in one batch; log-probabilities
//! that agree with teacher-forced scoring; the prose-only choice that still lets an
//! answer write `<` and `{`.

mod common;

use common::{model, model_lock, QWEN, SMOLLM};
use jielong::chat::{
    BranchId, Chat, ChatRequest, Completion, GenerationEvent, ToolChoice, ToolSpec,
};
use jielong::{LlamaSession, Message, RuntimeError, SamplingParams, SessionOptions};
use serde_json::json;

fn python_tool() -> ToolSpec {
    ToolSpec::new(
        "python",
        "Run Python code and return what it prints.",
        json!({
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
        }),
    )
}

/// Every event of a reply, then its completion.
fn collect(
    session: &LlamaSession,
    chat: &Chat,
    request: &ChatRequest,
) -> (Vec<GenerationEvent>, Completion) {
    let mut generation = session.respond(chat, request).expect("the reply starts");
    let mut events = Vec::new();
    loop {
        match generation.blocking_next().expect("events until Done") {
            GenerationEvent::Done(result) => return (events, result.expect("the reply ends")),
            event => events.push(event),
        }
    }
}

fn session(max_sequences: u32) -> LlamaSession {
    model(QWEN)
        .session(&SessionOptions {
            max_sequences,
            ..SessionOptions::default()
        })
        .unwrap()
}

#[test]
fn a_chat_reply_brings_parsed_calls_and_prose() {
    let _lock = model_lock();
    for (name, choice) in [(QWEN, ToolChoice::Required), (SMOLLM, ToolChoice::Required)] {
        let session = model(name).session(&SessionOptions::default()).unwrap();
        let chat = Chat::new(vec![Message::user(
            "What is 12345 * 6789? Use the python tool to compute it.",
        )])
        .with_tools(vec![python_tool()]);
        let request = ChatRequest {
            tool_choice: choice,
            max_calls: 1,
            ..ChatRequest::new(120)
        };
        let (events, done) = collect(&session, &chat, &request);
        let calls: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                GenerationEvent::Call(call) => Some(call.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(calls.len(), 1, "{name}: {}", done.text);
        assert_eq!(calls[0].name, "python");
        assert!(
            calls[0].arguments["code"].is_string(),
            "{name}: {:?}",
            calls[0]
        );
        assert_eq!(done.calls, calls, "{name}");
        assert!(done.malformed.is_empty(), "{name}: {:?}", done.malformed);
        // Prose events never carry the call block.
        for event in &events {
            if let GenerationEvent::Text(text) = event {
                assert!(!text.contains("<tool_call>"), "{name}: {text}");
            }
        }
    }
}

#[test]
fn a_prose_only_reply_may_write_angle_brackets_and_braces() {
    let _lock = model_lock();
    let session = session(1);
    let chat = Chat::new(vec![Message::user(
        "Repeat exactly, without code fences: if x < 3: d = {'a': 1}",
    )])
    .with_tools(vec![python_tool()]);
    let request = ChatRequest {
        tool_choice: ToolChoice::None,
        ..ChatRequest::new(40)
    };
    let (_, done) = collect(&session, &chat, &request);
    assert!(
        done.calls.is_empty() && done.malformed.is_empty(),
        "{done:?}"
    );
    assert!(done.text.contains('<'), "{}", done.text);
    assert!(done.text.contains('{'), "{}", done.text);
    assert!(!done.text.contains("<tool_call>"), "{}", done.text);
}

#[test]
fn logprobs_agree_with_teacher_forced_scores() {
    let _lock = model_lock();
    let session = session(1);
    let prompt = "The capital of France is";
    let request = jielong::GenerateRequest {
        max_tokens: 6,
        logprobs: Some(5),
        ..jielong::GenerateRequest::default()
    };
    let done = session
        .generate(prompt, &request)
        .unwrap()
        .wait(|_| {})
        .unwrap();
    assert_eq!(done.logprobs.len(), 6, "{:?}", done.logprobs);
    for token in &done.logprobs {
        // Greedy: the chosen token is the most likely one.
        assert_eq!(token.top.len(), 5);
        assert_eq!(token.top[0].id, token.chosen.id, "{token:?}");
        assert!(token.chosen.logprob <= 0.0);
        let mass: f32 = token.top.iter().map(|t| t.logprob.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "{mass}");
    }
    assert!(done.text.starts_with(" Paris"), "{}", done.text);

    // Scoring the generated text after the prompt gives the same numbers.
    let score = session.score(prompt, &done.text, 0).unwrap();
    let generated: Vec<f32> = done.logprobs.iter().map(|t| t.chosen.logprob).collect();
    let scored: Vec<f32> = score.tokens.iter().map(|t| t.chosen.logprob).collect();
    assert_eq!(
        generated.len(),
        scored.len(),
        "{:?} vs {:?}",
        done.logprobs,
        score.tokens
    );
    for (g, s) in generated.iter().zip(&scored) {
        // One token at a time against one batch: the numerics differ a little.
        assert!((g - s).abs() < 0.05, "{generated:?} vs {scored:?}");
    }
    let paris = session.score(prompt, " Paris", 0).unwrap();
    let london = session.score(prompt, " London", 0).unwrap();
    assert!(paris.total() > london.total() + 2.0, "{paris:?} {london:?}");
    assert!(matches!(
        session.score(prompt, "", 0),
        Err(RuntimeError::InvalidRequest(_))
    ));
}

#[test]
fn branches_share_a_prefix_and_continue_independently() {
    let _lock = model_lock();
    let session = session(5);
    let question = vec![Message::user("Name a colour. One word.")];
    let first = collect(&session, &Chat::new(question.clone()), &ChatRequest::new(6)).1;
    let prefix = first.usage.prompt_tokens;

    let branches = session.fork(BranchId::MAIN, 4).unwrap();
    assert_eq!(branches.len(), 4);
    let usage = session.kv_usage().unwrap();
    assert_eq!(usage.branches.len(), 5);
    // Forks copy no cells: the cells in use are the main branch's.
    assert_eq!(usage.cells, usage.branches[0].tokens, "{usage:?}");

    let jobs: Vec<(Chat, ChatRequest)> = branches
        .iter()
        .zip(1u32..)
        .map(|(&b, seed)| {
            let request = ChatRequest {
                sampling: SamplingParams {
                    temperature: 1.0,
                    seed,
                    ..SamplingParams::default()
                },
                ..ChatRequest::new(6)
            };
            (Chat::new(question.clone()).on(b), request)
        })
        .collect();
    let replies: Vec<Completion> = session
        .respond_batch(&jobs)
        .unwrap()
        .into_iter()
        .map(|g| g.wait(|_| {}).unwrap())
        .collect();
    for reply in &replies {
        // Only the last prompt token was evaluated on each branch.
        assert_eq!(reply.usage.prompt_tokens, prefix);
        assert_eq!(reply.usage.evaluated_tokens, 1, "{:?}", reply.usage);
    }
    let usage = session.kv_usage().unwrap();
    for branch in &usage.branches[1..] {
        assert!(branch.shared >= prefix - 1, "{usage:?}");
    }
    let own: usize = usage.branches.iter().map(|b| b.tokens - b.shared).sum();
    assert!(usage.cells < usage.branches.iter().map(|b| b.tokens).sum::<usize>());
    assert!(usage.cells >= own, "{usage:?}");

    // Two branches continue, two are dropped; the survivors keep their own text.
    for &b in &branches[2..] {
        session.drop_branch(b).unwrap();
    }
    assert!(session.branch_tokens(branches[3]).is_err());
    let after_drop = session.kv_usage().unwrap();
    assert_eq!(after_drop.branches.len(), 3);
    assert!(after_drop.cells < usage.cells);
    let follow = |i: usize| {
        let mut messages = question.clone();
        messages.push(Message::assistant(replies[i].text.trim()));
        messages.push(Message::user("And another one?"));
        (Chat::new(messages).on(branches[i]), ChatRequest::new(6))
    };
    let second: Vec<Completion> = session
        .respond_batch(&[follow(0), follow(1)])
        .unwrap()
        .into_iter()
        .map(|g| g.wait(|_| {}).unwrap())
        .collect();
    for (i, reply) in second.iter().enumerate() {
        // The branch's first turn is reused from its own cells.
        assert!(
            reply.usage.cached_tokens >= prefix,
            "{i}: {:?}",
            reply.usage
        );
    }
    // A greedy reply on a fresh branch equals the main branch's.
    let fresh = session.fork(BranchId::MAIN, 1).unwrap()[0];
    let again = collect(
        &session,
        &Chat::new(question.clone()).on(fresh),
        &ChatRequest::new(6),
    )
    .1;
    assert_eq!(again.text, first.text);
    // Forking past the session's sequences is an error, not a crash.
    assert!(matches!(
        session.fork(BranchId::MAIN, 8),
        Err(RuntimeError::InvalidRequest(_))
    ));
    assert!(session.fork(BranchId(77), 1).is_err());
}

/// How far below the chosen token (in nats) another token may be and still count as
/// a tie that the order of a sum can break.
const NEAR_TIE: f32 = 1.0;

/// Batched and one-at-a-time decoding compute the same logits up to the order of
/// floating-point sums (the kernels differ by batch shape and CPU), so two greedy
/// runs agree token by token except where the two best tokens are nearly tied: at the
/// first token where they part, the batched run's token must be in the one-at-a-time
/// run's top list within [`NEAR_TIE`] of its choice. A branch that read another
/// branch's prompt parts at a token far from any tie.
fn agree_but_for_near_ties(alone: &Completion, together: &Completion) {
    let first_difference = alone
        .logprobs
        .iter()
        .zip(&together.logprobs)
        .position(|(a, t)| a.chosen.token != t.chosen.token);
    let Some(at) = first_difference else {
        assert_eq!(together.text, alone.text);
        return;
    };
    let position = &alone.logprobs[at];
    let taken = &together.logprobs[at].chosen.token;
    let rival = position
        .top
        .iter()
        .find(|candidate| &candidate.token == taken)
        .unwrap_or_else(|| {
            panic!(
                "batched {:?} parts from {:?} at token {at} with {taken:?}, not in {:?}",
                together.text, alone.text, position.top
            )
        });
    assert!(
        position.chosen.logprob - rival.logprob <= NEAR_TIE,
        "batched {:?} parts from {:?} at token {at}: {taken:?} is {} nats below {:?}",
        together.text,
        alone.text,
        position.chosen.logprob - rival.logprob,
        position.chosen.token
    );
}

#[test]
fn handles_of_one_session_decode_together_and_agree_with_one_at_a_time() {
    let _lock = model_lock();
    let session = session(5);
    let questions = [
        "Name a colour. One word.",
        "Name a fruit. One word.",
        "Name a planet. One word.",
    ];
    let chat = |q: &str| Chat::new(vec![Message::user(q)]);
    let request = ChatRequest {
        logprobs: Some(5),
        ..ChatRequest::new(8)
    };
    // One at a time, each on the main branch.
    let alone: Vec<Completion> = questions
        .iter()
        .map(|q| collect(&session, &chat(q), &request).1)
        .collect();
    // At once: one handle per question, each on its own branch, started together.
    let branches = session.fork(BranchId::MAIN, 3).unwrap();
    let generations: Vec<_> = questions
        .iter()
        .zip(&branches)
        .map(|(q, &b)| {
            let handle = session.clone();
            handle.respond(&chat(q).on(b), &request).unwrap()
        })
        .collect();
    let together: Vec<Completion> = std::thread::scope(|scope| {
        let threads: Vec<_> = generations
            .into_iter()
            .map(|g| scope.spawn(move || g.wait(|_| {}).unwrap()))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (alone, together) in alone.iter().zip(&together) {
        agree_but_for_near_ties(alone, together);
    }
    let alone: Vec<String> = alone.into_iter().map(|c| c.text).collect();
    // A request on a branch that is generating waits its turn instead of failing.
    let first = session
        .respond(&chat(questions[0]).on(branches[0]), &ChatRequest::new(8))
        .unwrap();
    let second = session
        .respond(&chat(questions[1]).on(branches[0]), &ChatRequest::new(8))
        .unwrap();
    assert_eq!(first.wait(|_| {}).unwrap().text, alone[0]);
    assert_eq!(second.wait(|_| {}).unwrap().text, alone[1]);
}

#[test]
fn a_request_whose_grammar_fails_fails_alone() {
    let _lock = model_lock();
    let session = session(3);
    let question = vec![Message::user("Name a colour. One word.")];
    let first = collect(&session, &Chat::new(question.clone()), &ChatRequest::new(6)).1;
    let branch = session.fork(BranchId::MAIN, 1).unwrap()[0];
    let held = session.branch_tokens(branch).unwrap();
    // A tool whose schema llama.cpp cannot turn into a grammar.
    let broken = ToolSpec::new(
        "f",
        "A tool.",
        json!({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}),
    );
    let bad = Chat::new(question.clone())
        .with_tools(vec![broken])
        .on(branch);
    let good = session
        .respond(&Chat::new(question.clone()), &ChatRequest::new(6))
        .unwrap();
    let refused = session
        .respond(&bad, &ChatRequest::new(6))
        .unwrap()
        .wait(|_| {});
    assert!(
        matches!(refused, Err(RuntimeError::InvalidRequest(_))),
        "{refused:?}"
    );
    // The other request and the other branches are untouched.
    assert_eq!(good.wait(|_| {}).unwrap().text, first.text);
    assert_eq!(session.branch_tokens(branch).unwrap(), held);
}
