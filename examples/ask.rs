//! Jielong as a library: open the default model (downloaded and verified on first
//! use), ask a question, stream the answer, then ask a follow-up in the same session so
//! the first turn's tokens are reused from the KV cache.
//!
//! ```sh
//! cargo run --release --example ask -- "Why is the sky blue?"
//! ```

use std::io::Write;

use jielong::chat::{Chat, ChatRequest};
use jielong::{Message, ModelSession, SessionOptions};

/// Streams the reply to the conversation to stdout and appends it.
async fn turn(
    session: &mut dyn ModelSession,
    messages: &mut Vec<Message>,
) -> Result<(), Box<dyn std::error::Error>> {
    let answer = session
        .respond(&Chat::new(messages.clone()), &ChatRequest::new(200))?
        .finish(|piece| {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        })
        .await?;
    println!();
    eprintln!(
        "[{} prompt tokens, {} reused from the cache, {} generated]",
        answer.usage.prompt_tokens, answer.usage.cached_tokens, answer.usage.generated_tokens
    );
    messages.push(Message::assistant(answer.text));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let question = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "What is the capital of France?".to_string());
    let model =
        jielong::open_language_model("qwen2.5-coder-0.5b", &jielong::models::NoProgress).await?;
    let mut session = model.open_session(&SessionOptions::default())?;
    let mut messages = vec![Message::user(question)];
    turn(session.as_mut(), &mut messages).await?;
    messages.push(Message::user("Say that again in one short sentence."));
    turn(session.as_mut(), &mut messages).await
}
