//! `jielong chat`: an interactive conversation that keeps its KV cache between turns.
//!
//! Reads one user turn per line from stdin (a terminal or a pipe). `/reset` starts
//! over, `/exit` (or end of input) quits.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use jielong::chat::Chat;
use jielong::{Message, Usage};

use crate::cli::{ChatArgs, GlobalArgs};

/// Runs `jielong chat`.
pub async fn chat(global: &GlobalArgs, args: ChatArgs) -> anyhow::Result<()> {
    let request = super::chat_request(global);
    request.validate(&Chat::default())?;
    let model = super::load_model(global).await?;
    let mut session = model.open_session(&super::session_options(global))?;
    let interactive = std::io::stdin().is_terminal();
    let mut messages = Vec::new();
    let reset = |messages: &mut Vec<Message>| {
        messages.clear();
        if let Some(system) = &args.system {
            messages.push(Message::system(system.clone()));
        }
    };
    reset(&mut messages);
    if interactive {
        eprintln!(
            "jielong chat on {} — /reset starts over, /exit quits",
            model.info().name
        );
    }
    let mut total = Usage::default();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read from stdin")?;
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                reset(&mut messages);
                session.reset()?;
                continue;
            }
            _ => {}
        }
        messages.push(Message::user(line));
        let mut stdout = std::io::stdout().lock();
        let completion = session
            .respond(&Chat::new(messages.clone()), &request)?
            .finish(|piece| {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            })
            .await?;
        writeln!(stdout).context("cannot write to stdout")?;
        drop(stdout);
        if global.verbose > 0 {
            eprintln!("{}", super::usage_line(&completion.usage));
        }
        total.accumulate(&completion.usage);
        messages.push(Message::assistant(completion.text));
    }
    if global.verbose > 0 {
        eprintln!("session total: {}", super::usage_line(&total));
    }
    Ok(())
}
