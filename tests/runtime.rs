//! The model runtime on the real catalog models: chat templates, greedy determinism,
//! KV-cache prefix reuse (and that it changes nothing in the output), stop strings,
//! budgets, seeded sampling, cancellation, context limits.

mod common;

use common::{model, model_lock, QWEN, SMOLLM};
use jielong::chat::BranchId;
use jielong::{
    Completion, FinishReason, GenerateRequest, LlamaSession, Message, RuntimeError, SamplingParams,
    SessionOptions,
};

fn ask(session: &LlamaSession, prompt: &str, request: &GenerateRequest) -> Completion {
    session
        .generate(prompt, request)
        .expect("generation starts")
        .wait(|_| {})
        .expect("generation finishes")
}

fn chat_prompt(name: &str, messages: &[Message]) -> String {
    model(name)
        .chat_template()
        .render(messages, &[], true)
        .expect("the template renders")
}

fn greedy(max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        max_tokens,
        ..GenerateRequest::default()
    }
}

/// A session of `m` that holds up to `branches` live sequences.
fn with_branches(m: &jielong::LlamaModel, branches: u32) -> LlamaSession {
    m.session(&SessionOptions {
        max_sequences: branches,
        ..SessionOptions::default()
    })
    .unwrap()
}

#[test]
fn answers_a_factual_question_on_both_models() {
    let _lock = model_lock();
    for (name, want) in [(QWEN, "Paris"), (SMOLLM, "Paris")] {
        let m = model(name);
        let session = m.session(&SessionOptions::default()).unwrap();
        let prompt = chat_prompt(
            name,
            &[Message::user(
                "What is the capital of France? Answer in one word.",
            )],
        );
        let done = ask(&session, &prompt, &greedy(32));
        assert!(done.text.contains(want), "{name} answered {:?}", done.text);
        assert_eq!(done.finish, FinishReason::EndOfText, "{name}");
        assert!(done.usage.generated_tokens >= 1);
        assert_eq!(
            done.usage.cached_tokens, 0,
            "a new session has nothing cached"
        );
        assert_eq!(done.usage.prompt_tokens, m.tokenize(&prompt).len());
    }
}

#[test]
fn prefix_reuse_evaluates_only_the_new_part_and_changes_nothing() {
    let _lock = model_lock();
    let m = model(QWEN);
    let mut messages = vec![Message::user("Name three primary colours.")];
    let reused = m.session(&SessionOptions::default()).unwrap();
    let first = ask(&reused, &chat_prompt(QWEN, &messages), &greedy(24));
    messages.push(Message::assistant(first.text.clone()));
    messages.push(Message::user(
        "Now name one more colour that is not primary.",
    ));
    let prompt2 = chat_prompt(QWEN, &messages);
    let second = ask(&reused, &prompt2, &greedy(24));

    let first_prompt_tokens = first.usage.prompt_tokens;
    assert!(
        second.usage.cached_tokens >= first_prompt_tokens,
        "turn 2 reused {} tokens, turn 1's prompt alone had {first_prompt_tokens}",
        second.usage.cached_tokens
    );
    assert_eq!(
        second.usage.cached_tokens + second.usage.evaluated_tokens,
        second.usage.prompt_tokens
    );
    // The same prompt in a fresh session gives the same greedy answer.
    let fresh = m.session(&SessionOptions::default()).unwrap();
    let again = ask(&fresh, &prompt2, &greedy(24));
    assert_eq!(again.usage.cached_tokens, 0);
    assert_eq!(
        again.text, second.text,
        "reusing the cache changed the output"
    );

    // Asking the very same prompt again reuses all but the last token.
    let third = ask(&reused, &prompt2, &greedy(24));
    assert_eq!(third.usage.evaluated_tokens, 1);
    assert_eq!(third.text, second.text);

    // After a reset nothing is reused.
    reused.reset().unwrap();
    let after_reset = ask(&reused, &prompt2, &greedy(4));
    assert_eq!(after_reset.usage.cached_tokens, 0);
}

#[test]
fn a_branch_borrows_the_prefix_another_branch_evaluated() {
    let _lock = model_lock();
    let m = model(QWEN);
    let session = with_branches(&m, 3);
    let conversation = chat_prompt(
        QWEN,
        &[
            Message::user("Name three primary colours."),
            Message::assistant("Red, yellow and blue."),
            Message::user("Which of them is the colour of the sky?"),
        ],
    );
    let on_main = ask(&session, &conversation, &greedy(16));
    // A second branch that holds something else (it shares only the system prompt).
    let other = session.fork(BranchId::MAIN, 1).unwrap()[0];
    let unrelated = chat_prompt(QWEN, &[Message::user("Count to five.")]);
    session
        .generate_on(other, &unrelated, &greedy(8))
        .unwrap()
        .wait(|_| {})
        .unwrap();
    let cells_before = session.kv_usage().unwrap().cells;

    // The conversation on that branch: the main branch's cells are shared, only the
    // last token is evaluated, and the answer is the same.
    let moved = session
        .generate_on(other, &conversation, &greedy(16))
        .unwrap()
        .wait(|_| {})
        .unwrap();
    assert_eq!(moved.usage.evaluated_tokens, 1, "{:?}", moved.usage);
    assert_eq!(
        moved.text, on_main.text,
        "borrowed cells changed the answer"
    );
    let usage = session.kv_usage().unwrap();
    let branch = usage.branches.iter().find(|b| b.id == other).unwrap();
    assert!(branch.shared >= moved.usage.prompt_tokens - 1, "{usage:?}");
    assert!(
        usage.cells <= cells_before + moved.usage.generated_tokens + 1,
        "the borrowed prefix took new cells: {usage:?}"
    );
    // The donor is untouched: its own conversation still reuses everything.
    let again = ask(&session, &conversation, &greedy(16));
    assert_eq!(again.usage.evaluated_tokens, 1);
    assert_eq!(again.text, on_main.text);
}

#[test]
fn stop_strings_and_token_budget() {
    let _lock = model_lock();
    let m = model(QWEN);
    let session = m.session(&SessionOptions::default()).unwrap();
    let prompt = chat_prompt(
        QWEN,
        &[Message::user("Count from 1 to 20, separated by commas.")],
    );
    let full = ask(&session, &prompt, &greedy(80));
    assert!(full.text.contains("5, 6"), "{:?}", full.text);

    let stopped = ask(
        &session,
        &prompt,
        &GenerateRequest {
            stop: vec!["5".into()],
            ..greedy(80)
        },
    );
    assert_eq!(stopped.finish, FinishReason::StopString("5".into()));
    assert!(!stopped.text.contains('5'), "{:?}", stopped.text);
    assert!(full.text.starts_with(&stopped.text));

    let cut = ask(&session, &prompt, &greedy(3));
    assert_eq!(cut.finish, FinishReason::MaxTokens);
    assert_eq!(cut.usage.generated_tokens, 3);
    assert!(full.text.starts_with(&cut.text));
}

#[test]
fn seeded_sampling_is_reproducible() {
    let _lock = model_lock();
    let m = model(SMOLLM);
    let session = m.session(&SessionOptions::default()).unwrap();
    let prompt = chat_prompt(
        SMOLLM,
        &[Message::user("Tell me a short story about a cat.")],
    );
    let sampled = |seed| GenerateRequest {
        max_tokens: 40,
        sampling: SamplingParams {
            temperature: 1.0,
            seed,
            ..SamplingParams::default()
        },
        ..GenerateRequest::default()
    };
    let a = ask(&session, &prompt, &sampled(7));
    let b = ask(&session, &prompt, &sampled(7));
    assert_eq!(a.text, b.text, "same seed, different text");
    let texts: Vec<String> = (100..104)
        .map(|s| ask(&session, &prompt, &sampled(s)).text)
        .collect();
    assert!(
        texts.iter().any(|t| *t != a.text),
        "five seeds all gave the same text: sampling is not random"
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_and_the_session_survives() {
    let _lock = model_lock();
    let m = model(SMOLLM);
    let session = m
        .session(&SessionOptions {
            context_size: Some(64),
            ..SessionOptions::default()
        })
        .unwrap();
    let long = chat_prompt(SMOLLM, &[Message::user("word ".repeat(200))]);
    let err = session
        .generate(&long, &greedy(4))
        .unwrap()
        .wait(|_| {})
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::PromptTooLong { n_ctx: 64, .. }),
        "{err}"
    );
    // Generation that runs into the end of the window stops with ContextFull.
    let short = chat_prompt(SMOLLM, &[Message::user("Write a long poem about the sea.")]);
    let done = ask(&session, &short, &greedy(500));
    assert_eq!(done.finish, FinishReason::ContextFull);
}

#[test]
fn invalid_requests_are_rejected_before_any_work() {
    let _lock = model_lock();
    let m = model(SMOLLM);
    let session = m.session(&SessionOptions::default()).unwrap();
    for request in [
        greedy(0),
        GenerateRequest {
            stop: vec![String::new()],
            ..greedy(4)
        },
        GenerateRequest {
            sampling: SamplingParams {
                temperature: -1.0,
                ..SamplingParams::default()
            },
            ..greedy(4)
        },
    ] {
        let err = session.generate("hi", &request).unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidRequest(_)), "{err}");
    }
}

#[test]
fn cancelling_stops_generation_and_keeps_the_session_usable() {
    let _lock = model_lock();
    let m = model(QWEN);
    let session = m.session(&SessionOptions::default()).unwrap();
    let prompt = chat_prompt(QWEN, &[Message::user("Write a long essay about rivers.")]);
    let mut generation = session.generate(&prompt, &greedy(400)).unwrap();
    let mut pieces = 0;
    let done = loop {
        match generation.blocking_next().expect("events until Done") {
            jielong::GenerationEvent::Text(_) => {
                pieces += 1;
                if pieces == 3 {
                    generation.cancel();
                }
            }
            jielong::GenerationEvent::Done(result) => break result.unwrap(),
            other => panic!("raw text streams no {other:?}"),
        }
    };
    assert_eq!(done.finish, FinishReason::Cancelled);
    assert!(done.usage.generated_tokens < 10);
    // Dropping a generation mid-way cancels it too; the next request still works.
    drop(session.generate(&prompt, &greedy(400)).unwrap());
    let next = ask(&session, &prompt, &greedy(5));
    assert_eq!(next.finish, FinishReason::MaxTokens);
}

#[test]
fn a_prompt_forks_into_parallel_sequences() {
    let _lock = model_lock();
    let m = model(QWEN);
    let session = with_branches(&m, 5);
    let prompt = chat_prompt(QWEN, &[Message::user("Name three primary colours.")]);
    let single = ask(&session, &prompt, &greedy(16));

    // Greedy forks reproduce the single-sequence answer exactly.
    let forks = session
        .generate_parallel(&prompt, &[greedy(16), greedy(16), greedy(16)])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(forks.len(), 3);
    for fork in &forks {
        assert_eq!(
            fork.text, single.text,
            "a fork diverged from the single answer"
        );
    }
    // The prompt was in the cache already: evaluated once (its last token), shared by all.
    assert_eq!(forks[0].usage.evaluated_tokens, 1);
    assert_eq!(forks[1].usage.cached_tokens, forks[1].usage.prompt_tokens);

    // Seeded samples: reproducible per seed, different across seeds.
    let sampled = |seed| GenerateRequest {
        max_tokens: 24,
        sampling: SamplingParams {
            temperature: 1.2,
            seed,
            ..SamplingParams::default()
        },
        ..GenerateRequest::default()
    };
    let requests: Vec<_> = (1..=4).map(sampled).collect();
    let a = session
        .generate_parallel(&prompt, &requests)
        .unwrap()
        .wait()
        .unwrap();
    let b = session
        .generate_parallel(&prompt, &requests)
        .unwrap()
        .wait()
        .unwrap();
    let texts = |cs: &[jielong::Completion]| cs.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&a), texts(&b), "same seeds, different samples");
    let mut distinct = texts(&a);
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 1,
        "four seeds gave one answer: {distinct:?}"
    );

    // The forks are gone afterwards; the main sequence still holds the prompt.
    let again = ask(&session, &prompt, &greedy(16));
    assert_eq!(again.usage.evaluated_tokens, 1);
    assert_eq!(again.text, single.text);

    // More requests than the session has sequences for is an error, not a crash.
    let err = session
        .generate_parallel(&prompt, &vec![greedy(4); 5])
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidRequest(_)), "{err}");
}

#[test]
fn the_tool_call_format_is_detected_from_the_model() {
    let _lock = model_lock();
    assert_eq!(
        model(QWEN).info().tool_call_format,
        jielong::chat::ToolCallFormat::Hermes
    );
    assert_eq!(
        model(SMOLLM).info().tool_call_format,
        jielong::chat::ToolCallFormat::Generic
    );
}
