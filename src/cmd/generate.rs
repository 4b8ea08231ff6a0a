//! `jielong generate "PROMPT"`: a continuation with per-token log-probabilities, or
//! the score of a given continuation (`--score TEXT`): what the model weighs, for
//! people (a table) and programs (`--json`).

use std::io::Write;

use anyhow::Context;
use jielong::chat::{Chat, Score, TokenLogprob};
use jielong::{Completion, Message};
use serde_json::json;

use crate::cli::{GenerateArgs, GlobalArgs};

/// Runs `jielong generate`.
pub async fn generate(global: &GlobalArgs, args: GenerateArgs) -> anyhow::Result<()> {
    let mut request = super::request(global);
    request.logprobs = args.logprobs;
    request.validate()?;
    let model = super::load_model(global).await?;
    let mut session = model.open_session(&super::session_options(global))?;
    if let Some(continuation) = &args.score {
        let top = args.logprobs.unwrap_or(0);
        let score = session
            .score(&args.prompt, continuation, top)
            .context("cannot score the continuation")?;
        return print_score(&args, continuation, &score);
    }
    let generation = if args.chat {
        let chat_request = jielong::chat::ChatRequest {
            logprobs: args.logprobs,
            ..super::chat_request(global)
        };
        session.respond(
            &Chat::new(vec![Message::user(args.prompt.clone())]),
            &chat_request,
        )?
    } else {
        session.generate(&args.prompt, &request)?
    };
    let stream = !args.json && args.logprobs.is_none();
    let mut stdout = std::io::stdout().lock();
    let completion = generation
        .finish(|piece| {
            if stream {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            }
        })
        .await?;
    drop(stdout);
    if global.verbose > 0 {
        eprintln!("{}", super::usage_line(&completion.usage));
    }
    if args.json {
        let out = json!({
            "prompt": args.prompt,
            "text": completion.text,
            "finish": completion.finish,
            "tokens": completion.logprobs,
            "usage": {
                "prompt_tokens": completion.usage.prompt_tokens,
                "cached_tokens": completion.usage.cached_tokens,
                "generated_tokens": completion.usage.generated_tokens,
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if stream {
        println!();
    } else {
        print_generation(&completion);
    }
    Ok(())
}

fn print_generation(completion: &Completion) {
    println!("{}", completion.text);
    println!();
    print_tokens(&completion.logprobs);
    let total: f32 = completion.logprobs.iter().map(|t| t.chosen.logprob).sum();
    println!(
        "{} tokens, total log-probability {total:.3} ({:?})",
        completion.logprobs.len(),
        completion.finish
    );
}

fn print_score(args: &GenerateArgs, continuation: &str, score: &Score) -> anyhow::Result<()> {
    if args.json {
        let out = json!({
            "context": args.prompt,
            "continuation": continuation,
            "total_logprob": score.total(),
            "mean_logprob": score.mean(),
            "context_tokens": score.context_tokens,
            "tokens": score.tokens,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:?} after {:?}: total log-probability {:.3} (p = {:.4}), {} tokens, mean {:.3}",
        continuation,
        args.prompt,
        score.total(),
        score.total().exp(),
        score.tokens.len(),
        score.mean().unwrap_or(0.0)
    );
    println!();
    print_tokens(&score.tokens);
    Ok(())
}

/// One line per token: the token, its log-probability and probability, then the
/// alternatives.
fn print_tokens(tokens: &[TokenLogprob]) {
    println!("{:<18} {:>9} {:>7}  alternatives", "token", "logprob", "p");
    for token in tokens {
        let alternatives: Vec<String> = token
            .top
            .iter()
            .map(|alt| format!("{:?} {:.2}", alt.token, alt.logprob))
            .collect();
        println!(
            "{:<18} {:>9.3} {:>7.4}  {}",
            format!("{:?}", token.chosen.token),
            token.chosen.logprob,
            token.chosen.logprob.exp(),
            alternatives.join(", ")
        );
    }
}
