//! `jielong run "TASK"`: answer one task, streaming the answer to stdout.

use std::io::Write;

use anyhow::Context;
use jielong::{FinishReason, Message};

use crate::cli::{GlobalArgs, RunArgs};

/// Runs `jielong run`.
pub async fn run(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<()> {
    let request = super::request(global);
    request.validate()?;
    let model = super::load_model(global).await?;
    let session = model.session(&super::session_options(global))?;
    let mut messages = Vec::new();
    if let Some(system) = args.system {
        messages.push(Message::system(system));
    }
    messages.push(Message::user(args.task));
    let prompt = model.chat_template().render(&messages, &[], true)?;
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let completion = session.generate(&prompt, &request)?.finish(|piece| {
        if write_error.is_none() {
            if let Err(e) = stdout
                .write_all(piece.as_bytes())
                .and_then(|()| stdout.flush())
            {
                write_error = Some(e);
            }
        }
    });
    let completion = completion.await?;
    if let Some(e) = write_error {
        return Err(e).context("cannot write the answer to stdout");
    }
    writeln!(stdout).context("cannot write the answer to stdout")?;
    if global.verbose > 0 {
        eprintln!("{}", super::usage_line(&completion.usage));
    }
    if completion.finish == FinishReason::MaxTokens {
        eprintln!(
            "jielong: note: the answer was cut at --max-tokens {}",
            request.max_tokens
        );
    }
    Ok(())
}
