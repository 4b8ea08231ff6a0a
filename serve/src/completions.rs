//! `POST /v1/completions`: raw text in, its continuation out.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jielong_chat::{GenerateRequest, GenerationEvent};
use jielong_wire::{self as openai, CompletionRequest, Prompt};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::run::{
    data, encode, finish_reason, parse, sse, text_logprobs, unique_id, Running, Start,
};
use crate::state::{now, ServeState};
use crate::wire;

/// OpenAI's default token limit for text completions.
const DEFAULT_MAX_TOKENS: usize = 16;

/// The handler.
pub(crate) async fn completions(
    State(state): State<ServeState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match complete(state, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn complete(
    state: ServeState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let wire: CompletionRequest = parse(body)?;
    let prompt = match wire.prompt {
        Prompt::One(prompt) => prompt,
        Prompt::Many(mut prompts) if prompts.len() == 1 => prompts.remove(0),
        Prompt::Many(_) => {
            return Err(ApiError::invalid_param(
                "prompt",
                "only one prompt per request is supported",
            ))
        }
    };
    if wire.n.unwrap_or(1) != 1 {
        return Err(ApiError::invalid_param(
            "n",
            "text completions support n = 1 only (chat completions take n)",
        ));
    }
    if wire
        .logprobs
        .is_some_and(|k| k > jielong_chat::logprob::MAX_TOP_LOGPROBS)
    {
        return Err(ApiError::invalid_param(
            "logprobs",
            format!(
                "logprobs must be at most {}",
                jielong_chat::logprob::MAX_TOP_LOGPROBS
            ),
        ));
    }
    let prepared = state.prepare_text(&prompt)?;
    let room = prepared.room(inner.session.context_size())?;
    let max_tokens = wire::token_limit(wire.max_tokens, "max_tokens")?
        .unwrap_or(DEFAULT_MAX_TOKENS)
        .min(room)
        .max(1);
    let request = GenerateRequest {
        max_tokens,
        sampling: wire::sampling(
            &inner.config.sampling,
            wire.temperature,
            wire.top_p,
            wire.top_k,
            wire.min_p,
            wire.seed,
        )?,
        stop: wire::stops(wire.stop)?,
        tools: None,
        logprobs: wire.logprobs,
    };
    request.validate()?;
    let echo = wire.echo.unwrap_or(false);
    let mut running = Running::start(&state, prepared, max_tokens, Start::Text(&request)).await?;
    let first = running.first_event().await?;
    let id = unique_id("cmpl-");
    let model = inner.config.model_id.clone();
    let created = now();
    let want_logprobs = wire.logprobs.is_some();
    // What every chunk and the reply repeat.
    let head = openai::TextCompletion {
        id,
        object: openai::completion::TEXT_COMPLETION.into(),
        created,
        model,
        ..openai::TextCompletion::default()
    };
    if wire.stream.unwrap_or(false) {
        let include_usage = wire.stream_options.is_some_and(|o| o.include_usage);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let chunk = |text: &str,
                         logprobs: Option<openai::TextLogprobs>,
                         finish: Option<openai::FinishReason>| {
                data(&openai::TextCompletion {
                    choices: vec![openai::TextChoice {
                        index: 0,
                        text: text.to_string(),
                        logprobs,
                        finish_reason: finish,
                    }],
                    ..head.clone()
                })
            };
            if echo && tx.send(chunk(&prompt, None, None)).await.is_err() {
                return;
            }
            let mut pending = first;
            let mut entries = Vec::new();
            let mut sent = 0;
            let mut offset = 0;
            let Some(generation) = running.generations.first_mut() else {
                return;
            };
            loop {
                let event = match pending.take() {
                    Some(event) => Some(event),
                    None => generation.next().await,
                };
                let out = match event {
                    Some(GenerationEvent::Logprob(entry)) => {
                        entries.push(entry);
                        continue;
                    }
                    Some(GenerationEvent::Text(text)) => {
                        let lp = want_logprobs.then(|| {
                            sent += entries.len();
                            text_logprobs(&std::mem::take(&mut entries), offset)
                        });
                        offset += text.len();
                        chunk(&text, lp, None)
                    }
                    Some(GenerationEvent::Done(Ok(completion))) => {
                        // The end-of-text token's entry is no part of the text.
                        entries.truncate(completion.usage.generated_tokens.saturating_sub(sent));
                        let lp = (want_logprobs && !entries.is_empty())
                            .then(|| text_logprobs(&std::mem::take(&mut entries), offset));
                        let _ = tx
                            .send(chunk("", lp, Some(finish_reason(&completion.finish))))
                            .await;
                        running.finished(&[&completion]);
                        if include_usage {
                            let usage = openai::TextCompletion {
                                usage: Some(running.usage(&[&completion])),
                                ..head.clone()
                            };
                            let _ = tx.send(data(&usage)).await;
                        }
                        let _ = tx
                            .send(axum::response::sse::Event::default().data("[DONE]"))
                            .await;
                        return;
                    }
                    Some(GenerationEvent::Done(Err(error))) => {
                        running.repair();
                        let _ = tx.send(data(&ApiError::from(error).body())).await;
                        return;
                    }
                    Some(_) => continue,
                    None => return,
                };
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        });
        return Ok(sse(rx));
    }
    let mut pending = first;
    let generation = running
        .generations
        .first_mut()
        .ok_or_else(|| ApiError::internal("no generation"))?;
    let completion = loop {
        let event = match pending.take() {
            Some(event) => Some(event),
            None => generation.next().await,
        };
        match event {
            Some(GenerationEvent::Done(Ok(completion))) => break completion,
            Some(GenerationEvent::Done(Err(error))) => {
                running.repair();
                return Err(error.into());
            }
            Some(_) => {}
            None => {
                running.repair();
                return Err(ApiError::internal("the generation ended without a result"));
            }
        }
    };
    running.finished(&[&completion]);
    let usage = running.usage(&[&completion]);
    let text = if echo {
        format!("{prompt}{}", completion.text)
    } else {
        completion.text.clone()
    };
    let logprobs = want_logprobs.then(|| {
        let generated = completion
            .logprobs
            .len()
            .min(completion.usage.generated_tokens);
        text_logprobs(
            &completion.logprobs[..generated],
            if echo { prompt.len() } else { 0 },
        )
    });
    let body = openai::TextCompletion {
        choices: vec![openai::TextChoice {
            index: 0,
            text,
            logprobs,
            finish_reason: Some(finish_reason(&completion.finish)),
        }],
        usage: Some(usage),
        ..head
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], encode(&body)).into_response())
}
