//! Branches: one prompt evaluated once, forked into four branches that sample four
//! answers in one batch, two of them continued for a second turn, the other two
//! dropped — with the KV cache's token accounting after each stage.
//!
//! ```sh
//! cargo run --release --example branches
//! ```

use jielong::chat::{BranchId, Chat, ChatRequest, KvUsage};
use jielong::{Message, ModelSession, SamplingParams, SessionOptions};

fn show(stage: &str, usage: &KvUsage) {
    println!(
        "[{stage}] {} of {} cells in use",
        usage.cells, usage.context
    );
    for branch in &usage.branches {
        println!(
            "    branch {}: {} tokens, {} in cells shared with another branch",
            branch.id, branch.tokens, branch.shared
        );
    }
}

async fn reply(
    session: &mut dyn ModelSession,
    jobs: &[(Chat, ChatRequest)],
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut texts = Vec::new();
    for generation in session.respond_batch(jobs)? {
        texts.push(generation.finish(|_| {}).await?.text.trim().to_string());
    }
    Ok(texts)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model =
        jielong::open_model(jielong::models::DEFAULT_MODEL, &jielong::models::NoProgress).await?;
    let mut session = model.session(&SessionOptions {
        max_sequences: 5,
        ..SessionOptions::default()
    })?;
    let question = vec![
        Message::system("You are a creative assistant. Keep answers short."),
        Message::user("Suggest a name for a small bakery. Reply with the name only."),
    ];

    // 1. The shared prefix is evaluated once, on the main branch.
    let first = reply(
        &mut session,
        &[(Chat::new(question.clone()), ChatRequest::new(12))],
    )
    .await?;
    println!("main (greedy): {}", first[0]);
    show("prefix evaluated", &session.kv_usage()?);

    // 2. Four branches share it and sample four names in one batch.
    let branches = session.fork(BranchId::MAIN, 4)?;
    let jobs: Vec<(Chat, ChatRequest)> = branches
        .iter()
        .zip(1u32..)
        .map(|(&branch, seed)| {
            let request = ChatRequest {
                sampling: SamplingParams {
                    temperature: 1.0,
                    seed,
                    ..SamplingParams::default()
                },
                ..ChatRequest::new(12)
            };
            (Chat::new(question.clone()).on(branch), request)
        })
        .collect();
    let names = reply(&mut session, &jobs).await?;
    for (branch, name) in branches.iter().zip(&names) {
        println!("branch {branch}: {name}");
    }
    show("four branches sampled", &session.kv_usage()?);

    // 3. Two branches go on to a second turn; the other two are dropped.
    for &branch in &branches[2..] {
        session.drop_branch(branch)?;
    }
    show("two branches dropped", &session.kv_usage()?);
    let jobs: Vec<(Chat, ChatRequest)> = branches[..2]
        .iter()
        .zip(&names)
        .map(|(&branch, name)| {
            let mut messages = question.clone();
            messages.push(Message::assistant(name.clone()));
            messages.push(Message::user("Now a one-line slogan for it."));
            (Chat::new(messages).on(branch), ChatRequest::new(24))
        })
        .collect();
    let slogans = reply(&mut session, &jobs).await?;
    for (branch, slogan) in branches.iter().zip(&slogans) {
        println!("branch {branch}, second turn: {slogan}");
    }
    show("two branches continued", &session.kv_usage()?);
    Ok(())
}
