//! `POST /v1/chat/completions`.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use jielong_chat::fit::{adds_item, ask_for_more, names_several, uncovered, unfit_calls, CallFit};
use jielong_chat::intent::{intended_call, looks_like_call};
use jielong_chat::{
    Chat, ChatRequest, Completion, FinishReason, Generation, GenerationEvent, Role, ToolCall,
    ToolChoice, ToolSpec, Unenforceable,
};
use jielong_wire::{self as openai, ChatCompletionRequest};
use tokio::sync::mpsc;

use crate::calls::{cut_call, may_be_call, written_call, CutCall};
use crate::error::ApiError;
use crate::run::{
    chat_logprob, data, encode, finish_reason, parse, sse, unique_id, Again, Running, Start,
};
use crate::state::{now, ServeState};
use crate::wire::translate;

/// The handler.
pub(crate) async fn chat_completions(
    State(state): State<ServeState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match chat(state, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// What a reply needs to know about the request's tools: the chat and request it
/// answers, which it is generated again from when it meant a call it did not make.
#[derive(Clone)]
struct CallRules {
    chat: Chat,
    request: ChatRequest,
    /// Whether calls are fitted to the request ([`fit`]).
    fit: CallFit,
}

impl CallRules {
    /// The tools a call may use.
    fn callable(&self) -> &[ToolSpec] {
        self.request.callable(&self.chat)
    }

    /// Whether a call written as JSON in the text is taken as a call (or asked for
    /// again): the client let the model choose (`tool_choice: auto`), asked for no
    /// reply format, and listed tools.
    fn recover(&self) -> bool {
        self.request.tool_choice == ToolChoice::Auto
            && self.request.format.is_none()
            && !self.callable().is_empty()
    }

    /// A call the text is, when the model wrote one as JSON instead of its syntax.
    fn written(&self, text: &str) -> Option<ToolCall> {
        self.recover()
            .then(|| written_call(text, self.callable()))?
    }

    /// The request that generates a reply again with the call required, when its text
    /// means a call (a JSON call with an expression for a value, arguments its schema
    /// refuses, the `<tools>` list echoed) that cannot be taken as written. A call of
    /// a listed tool is held to that tool. `None`: the text is an answer, or a call.
    fn again(&self, text: &str) -> Option<ChatRequest> {
        if !self.recover() || self.written(text).is_some() {
            return None;
        }
        let intent = intended_call(text, self.callable());
        if intent.is_none() && !looks_like_call(text) {
            return None;
        }
        let mut request = self.request.clone();
        request.tool_choice = ToolChoice::Required;
        if let Some(tool) = intent.and_then(|i| self.callable().iter().find(|t| t.name == i.name)) {
            request.call_tools = Some(vec![tool.clone()]);
        }
        Some(request)
    }

    /// Whether a regenerated reply's calls are all calls the conversation already made
    /// (same tool, same arguments): the first reply restated what was done, and taking
    /// the redo would have the client call the tool again, so the text stands.
    fn repeats(&self, calls: &[ToolCall]) -> bool {
        let made = |call: &ToolCall| {
            self.chat.messages.iter().any(|m| {
                m.tool_calls
                    .iter()
                    .any(|c| c.name == call.name && c.arguments == call.arguments)
            })
        };
        !calls.is_empty() && calls.iter().all(made)
    }

    /// Whether a regenerated reply is taken in place of the first one.
    fn takes(&self, again: &Completion) -> bool {
        !again.calls.is_empty() && !self.repeats(&again.calls)
    }

    /// The request's own words calls are fitted to: its last message, when the user
    /// wrote it (after a tool result the calls answer the result, not the words).
    fn question(&self) -> Option<&str> {
        if self.fit != CallFit::Fitted {
            return None;
        }
        let last = self.chat.messages.last()?;
        (last.role == Role::User).then_some(last.content.as_str())
    }

    /// The tool a call names.
    fn tool(&self, call: &ToolCall) -> Option<&ToolSpec> {
        self.callable().iter().find(|t| t.name == call.name)
    }

    /// The calls of `calls` whose tools the request does not name: declined when the
    /// client let the model choose ([`CallRules::recover`]).
    fn unfit(&self, calls: &[ToolCall]) -> Vec<usize> {
        let Some(question) = self.question().filter(|_| self.recover()) else {
            return Vec::new();
        };
        unfit_calls(question, calls, self.callable(), |_| true)
    }

    /// Whether a reply with these calls is asked for more: the request may name several
    /// items, any listed tool may be called (no named function, no reply format), and
    /// the reply ended with its calls whole and room for more.
    fn asks_more(&self, completion: &Completion) -> bool {
        let Some(question) = self.question() else {
            return false;
        };
        self.request.tool_choice != ToolChoice::None
            && self.request.call_tools.is_none()
            && self.request.format.is_none()
            && !completion.calls.is_empty()
            && completion.malformed.is_empty()
            && completion.calls.len() < self.request.max_calls as usize
            && matches!(completion.finish, FinishReason::EndOfText)
            && names_several(question)
    }
}

/// The rest of `generation` (`first`: an event already taken from it): its text and
/// completion.
async fn drain(
    generation: &mut Generation,
    mut first: Option<GenerationEvent>,
) -> Result<(String, Completion), ApiError> {
    let mut prose = String::new();
    loop {
        let event = match first.take() {
            Some(event) => Some(event),
            None => generation.next().await,
        };
        match event {
            Some(GenerationEvent::Text(text)) => prose.push_str(&text),
            Some(GenerationEvent::Done(Ok(completion))) => return Ok((prose, completion)),
            Some(GenerationEvent::Done(Err(error))) => return Err(error.into()),
            Some(_) => {}
            None => return Err(ApiError::internal("the generation ended without a result")),
        }
    }
}

/// Choice `index`'s reply (`text`, `completion`) generated again when it meant a call
/// it could not make ([`CallRules::again`]): the redo when it is taken in the reply's
/// place. Whichever reply is left out counts as discarded usage; a failure repairs the
/// slots.
async fn redo(
    running: &mut Running,
    rules: &CallRules,
    index: usize,
    text: &str,
    completion: &Completion,
) -> Result<Option<(String, Completion)>, ApiError> {
    let Some(request) = completion
        .calls
        .is_empty()
        .then(|| rules.again(text))
        .flatten()
    else {
        return Ok(None);
    };
    running
        .state
        .inner
        .metrics
        .regenerated
        .fetch_add(1, Ordering::Relaxed);
    let redone = match running.again(index, Again::Same(&rules.chat), &request) {
        Ok(mut generation) => drain(&mut generation, None).await,
        Err(error) => Err(error),
    };
    match redone {
        Ok(redone) if rules.takes(&redone.1) => {
            running.discard(completion.usage.generated_tokens);
            Ok(Some(redone))
        }
        Ok(redone) => {
            running.discard(redone.1.usage.generated_tokens);
            Ok(None)
        }
        Err(error) => {
            running.repair();
            Err(error)
        }
    }
}

/// Choice `index`'s reply fitted to the request (see [`jielong_chat::fit`]): calls of
/// tools the request does not name are dropped, and a reply left without calls is
/// generated again as text, as if no tool had been offered; a reply whose request names
/// several items is asked for a call for each part of the request no call covers yet
/// (a call required), keeping each call that adds an item. A call written as JSON in the text counts as a call. `None`: the reply stands
/// as it is. Replies left out count as discarded usage; a failure repairs the slots.
async fn fit(
    running: &mut Running,
    rules: &CallRules,
    index: usize,
    reply: &(String, Completion),
) -> Result<Option<(String, Completion)>, ApiError> {
    // A call written as JSON in the text is a call to fit like any other.
    let written = match rules.written(&reply.0) {
        Some(call) if reply.1.calls.is_empty() => {
            let mut completion = reply.1.clone();
            completion.calls.push(call);
            Some((String::new(), completion))
        }
        _ => None,
    };
    let (prose, completion) = written.as_ref().unwrap_or(reply);
    let unfit = rules.unfit(&completion.calls);
    if !unfit.is_empty() {
        let mut kept = completion.clone();
        kept.calls = (0..completion.calls.len())
            .filter(|i| !unfit.contains(i))
            .map(|i| completion.calls[i].clone())
            .collect();
        running
            .state
            .inner
            .metrics
            .declined
            .fetch_add(unfit.len() as u64, Ordering::Relaxed);
        if !kept.calls.is_empty() || !prose.trim().is_empty() {
            return Ok(Some((prose.clone(), kept)));
        }
        // Answered as if no tool had been offered.
        let mut request = rules.request.clone();
        request.tool_choice = ToolChoice::None;
        let chat = rules.chat.clone().with_tools(Vec::new());
        let text = match running.again(index, Again::Changed(&chat), &request) {
            Ok(mut generation) => drain(&mut generation, None).await,
            Err(error) => Err(error),
        };
        return match text {
            Ok(text) => {
                running.discard(completion.usage.generated_tokens);
                Ok(Some(text))
            }
            Err(error) => {
                running.repair();
                Err(error)
            }
        };
    }
    let Some(question) = rules.question().filter(|_| rules.asks_more(completion)) else {
        tracing::debug!(
            finish = ?completion.finish,
            calls = completion.calls.len(),
            malformed = completion.malformed.len(),
            "call fit: no further call asked for"
        );
        return Ok(written);
    };
    let mut merged = completion.clone();
    let mut request = rules.request.clone();
    request.tool_choice = ToolChoice::Required;
    request.max_calls = 1;
    let mut asked: Vec<String> = Vec::new();
    while merged.calls.len() < rules.request.max_calls as usize {
        let room = rules
            .request
            .max_tokens
            .saturating_sub(merged.usage.generated_tokens);
        let next = uncovered(question, &merged.calls)
            .into_iter()
            .find(|part| !asked.contains(part));
        let (Some(part), true) = (next, room > 0) else {
            break;
        };
        request.max_tokens = room;
        let mut chat = rules.chat.clone();
        if let Some(last) = chat.messages.last_mut() {
            last.content = ask_for_more(question, &part);
        }
        asked.push(part);
        let more = match running.again(index, Again::Changed(&chat), &request) {
            Ok(mut generation) => drain(&mut generation, None).await,
            Err(error) => Err(error),
        };
        let (_, more) = match more {
            Ok(more) => more,
            Err(error) => {
                running.repair();
                return Err(error);
            }
        };
        let added = more.calls.first().filter(|call| {
            rules
                .tool(call)
                .is_some_and(|tool| adds_item(call, &merged.calls, question, tool))
        });
        tracing::debug!(part = %asked.last().map_or("", String::as_str), calls = ?more.calls, added = added.is_some(), "call fit: asked for one more call");
        let Some(call) = added.cloned() else {
            running.discard(more.usage.generated_tokens);
            continue;
        };
        running
            .state
            .inner
            .metrics
            .added_calls
            .fetch_add(1, Ordering::Relaxed);
        merged.text = format!("{}\n{}", merged.text.trim_end(), more.text);
        merged.calls.push(call);
        merged.usage.generated_tokens += more.usage.generated_tokens;
    }
    if merged.calls.len() > completion.calls.len() {
        return Ok(Some((prose.clone(), merged)));
    }
    Ok(written)
}

async fn chat(
    state: ServeState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let wire: ChatCompletionRequest = parse(body)?;
    let mut t = translate(wire, inner.config.max_n, &inner.config.sampling)?;
    t.request.calls = inner.config.calls;
    let prompt = state.prepare(&t.chat)?;
    let room = prompt.room(inner.session.context_size())?;
    t.request.max_tokens = t
        .max_tokens
        .unwrap_or(inner.config.default_max_tokens)
        .min(room)
        .max(1);
    t.request.validate(&t.chat)?;
    let tools = match t.request.tool_choice {
        ToolChoice::None => &[][..],
        _ => t.request.callable(&t.chat),
    };
    inner
        .session
        .check_schemas(tools, t.request.format.as_ref())
        .map_err(unenforceable)?;
    let rules = CallRules {
        chat: t.chat.clone(),
        request: t.request.clone(),
        fit: inner.config.fit,
    };
    let budget = t.request.max_tokens * t.n;
    let mut running = Running::start(
        &state,
        prompt,
        budget,
        Start::Chat {
            chat: &t.chat,
            request: &t.request,
            n: t.n,
        },
    )
    .await?;
    let first = running.first_event().await?;
    let id = unique_id("chatcmpl-");
    let model = inner.config.model_id.clone();
    if t.stream {
        let (tx, rx) = mpsc::channel(64);
        let head = Head {
            id,
            model,
            created: now(),
        };
        tokio::spawn(stream(
            running,
            first,
            head,
            rules,
            t.logprobs,
            t.include_usage,
            tx,
        ));
        return Ok(sse(rx));
    }
    // One reply per choice; one that meant a call it could not make is generated
    // again with the call required.
    let mut replies = Vec::with_capacity(running.generations.len());
    let mut pending_first = first;
    for generation in running.generations.iter_mut() {
        match drain(generation, pending_first.take()).await {
            Ok(reply) => replies.push(reply),
            Err(error) => {
                running.repair();
                return Err(error);
            }
        }
    }
    let mut settled = Vec::with_capacity(replies.len());
    for (index, (prose, completion)) in replies.into_iter().enumerate() {
        settled.push(
            settle(
                &mut running,
                &rules,
                index,
                prose,
                completion,
                Seen::Nothing,
            )
            .await?,
        );
    }
    let completions: Vec<&Completion> = settled.iter().map(|s| &s.completion).collect();
    running.finished(&completions);
    let usage = running.usage(&completions);
    let choices = settled
        .iter()
        .enumerate()
        .map(|(index, reply)| {
            let completion = &reply.completion;
            let (content, calls) = reply.message();
            let logprobs = t.logprobs.then(|| {
                // The end-of-text token is no part of the reply.
                let entries = completion
                    .logprobs
                    .iter()
                    .take(completion.usage.generated_tokens);
                openai::ChoiceLogprobs::of(entries.map(chat_logprob).collect())
            });
            openai::ChatChoice {
                index: index as u32,
                message: openai::ChatMessage::assistant(content, calls),
                logprobs,
                finish_reason: Some(reply.finish.clone()),
            }
        })
        .collect();
    let body = openai::ChatCompletion {
        id,
        object: openai::chat::CHAT_COMPLETION.into(),
        created: now(),
        model,
        system_fingerprint: Some(fingerprint()),
        choices,
        usage: Some(usage),
        timings: None,
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], encode(&body)).into_response())
}

/// A schema the session cannot hold to, as a 400 naming the field.
fn unenforceable(error: Unenforceable) -> ApiError {
    let param = match &error {
        Unenforceable::Tool { index, .. } => format!("tools[{index}].function.parameters"),
        Unenforceable::Format { .. } => "response_format".to_string(),
    };
    ApiError::invalid_param(param, error.to_string())
}

/// How much of a reply its client has seen before it is settled: a stream sends prose
/// as it comes, unless it may still turn out to be a call (then it is held back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nothing of its text (a whole reply, or a stream that held the text back).
    Nothing,
    /// Its prose so far: that text stands, it is not taken back as a call.
    Prose,
}

/// One choice's reply as its client gets it, decided by [`settle`] for whole and
/// streamed replies alike.
struct Settled {
    /// The reply's text.
    prose: String,
    /// The reply, its calls final (parsed, written as JSON, regenerated or fitted).
    completion: Completion,
    /// A call the budget cut, returned as far as it goes.
    cut: Option<CutCall>,
    finish: openai::FinishReason,
    /// Whether the reply was generated again (its log-probabilities are the redo's).
    redone: bool,
}

impl Settled {
    /// The message's content (`None`: only calls) and its calls in OpenAI's shape.
    fn message(&self) -> (Option<String>, Vec<openai::ToolCall>) {
        let prose = self.prose.trim_start();
        let calls = &self.completion.calls;
        let content = if prose.trim().is_empty() && (!calls.is_empty() || self.cut.is_some()) {
            None
        } else {
            Some(prose.to_string())
        };
        let calls = calls.iter().map(wire_call);
        let cut = self.cut.iter().map(wire_cut);
        (content, calls.chain(cut).collect())
    }
}

/// Decides choice `index`'s reply (`prose`, `completion`): a reply that meant a call it
/// could not make is generated again with the call required ([`redo`]), a call
/// written as JSON is taken as a call, calls are fitted to the request ([`fit`]), and
/// a call the budget cut is kept as far as it goes. Text the client has `seen` stands.
/// The one decision for whole replies and streams; a failure repairs the slots.
async fn settle(
    running: &mut Running,
    rules: &CallRules,
    index: usize,
    prose: String,
    completion: Completion,
    seen: Seen,
) -> Result<Settled, ApiError> {
    let mut reply = (prose, completion);
    let mut redone = false;
    if seen == Seen::Nothing {
        if let Some(again) = redo(running, rules, index, &reply.0, &reply.1).await? {
            reply = again;
            redone = true;
        } else if reply.1.calls.is_empty() {
            if let Some(call) = rules.written(&reply.0) {
                reply.1.calls.push(call);
                reply.0.clear();
            }
        }
    }
    if let Some(fitted) = fit(running, rules, index, &reply).await? {
        reply = fitted;
    }
    let (prose, completion) = reply;
    let cut = cut_call(&completion, rules.callable());
    let finish = reply_finish(&completion, completion.calls.len(), cut.as_ref());
    Ok(Settled {
        prose,
        completion,
        cut,
        finish,
        redone,
    })
}

/// OpenAI's `finish_reason` for a reply with `calls` calls and perhaps one `cut` by
/// the budget: `length` for a cut call, as for cut text.
fn reply_finish(
    completion: &Completion,
    calls: usize,
    cut: Option<&CutCall>,
) -> openai::FinishReason {
    if calls == 0 || cut.is_some() {
        finish_reason(&completion.finish)
    } else {
        openai::FinishReason::ToolCalls
    }
}

/// A call in OpenAI's shape (a fresh id unless it has one).
fn wire_call(call: &ToolCall) -> openai::ToolCall {
    let id = call.id.as_deref().filter(|id| !id.is_empty());
    let id = id.map_or_else(|| unique_id("call_"), str::to_string);
    openai::ToolCall::function(id, &call.name, call.arguments.to_string())
}

/// A call cut by the budget in OpenAI's shape: its arguments as far as they go.
fn wire_cut(cut: &CutCall) -> openai::ToolCall {
    openai::ToolCall::function(unique_id("call_"), &cut.name, cut.arguments.clone())
}

/// A stream delta of more text.
fn text_delta(text: String) -> openai::Delta {
    openai::Delta {
        content: Some(text),
        ..openai::Delta::default()
    }
}

/// A stream delta of a whole call, the `index`th of its choice.
fn call_delta(call: openai::ToolCall, index: usize) -> openai::Delta {
    openai::Delta {
        tool_calls: vec![call.into_delta(index as u32)],
        ..openai::Delta::default()
    }
}

/// A stable `system_fingerprint`: the crate version.
fn fingerprint() -> String {
    format!("jielong-{}", env!("CARGO_PKG_VERSION"))
}

/// What every chunk of one response repeats.
struct Head {
    id: String,
    model: String,
    created: u64,
}

impl Head {
    fn chunk(&self, choices: Vec<openai::ChunkChoice>) -> openai::ChatCompletionChunk {
        openai::ChatCompletionChunk {
            id: self.id.clone(),
            object: openai::chat::CHAT_COMPLETION_CHUNK.into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(fingerprint()),
            choices,
            ..openai::ChatCompletionChunk::default()
        }
    }
}

/// One choice's state in a stream.
#[derive(Default)]
struct ChoiceStream {
    /// Text held back because the reply may be a call written as JSON.
    held: Option<String>,
    /// Everything streamed as text.
    prose: String,
    /// Log-probabilities not yet sent.
    logprobs: Vec<openai::TokenLogprob>,
    /// Log-probabilities sent so far.
    sent: usize,
    /// Calls sent so far.
    calls: usize,
    completion: Option<Completion>,
}

impl ChoiceStream {
    /// The log-probabilities to send with the next chunk.
    fn take_logprobs(&mut self) -> Vec<openai::TokenLogprob> {
        let entries = std::mem::take(&mut self.logprobs);
        self.sent += entries.len();
        entries
    }
}

/// Streams the choices' deltas; stops (dropping the generations, which cancels
/// them) as soon as the client has gone.
async fn stream(
    mut running: Running,
    first: Option<GenerationEvent>,
    head: Head,
    rules: CallRules,
    logprobs: bool,
    include_usage: bool,
    tx: mpsc::Sender<axum::response::sse::Event>,
) {
    let n = running.generations.len();
    let hold = rules.recover();
    // Whether calls are fitted to the request before they are sent.
    let fitting = rules.question().is_some() && !rules.callable().is_empty();
    let mut choices: Vec<ChoiceStream> = (0..n)
        .map(|_| ChoiceStream {
            held: hold.then(String::new),
            ..ChoiceStream::default()
        })
        .collect();
    let send = |choice: usize,
                delta: openai::Delta,
                lp: Vec<openai::TokenLogprob>,
                finish: Option<openai::FinishReason>| {
        let logprobs = (logprobs && !lp.is_empty()).then(|| openai::ChoiceLogprobs::of(lp));
        data(&head.chunk(vec![openai::ChunkChoice {
            index: choice as u32,
            delta,
            logprobs,
            finish_reason: finish,
        }]))
    };
    let mut gone = false;
    for i in 0..n {
        if tx
            .send(send(
                i,
                openai::Delta {
                    role: Some(openai::Role::Assistant),
                    ..text_delta(String::new())
                },
                Vec::new(),
                None,
            ))
            .await
            .is_err()
        {
            gone = true;
        }
    }
    let generations = std::mem::take(&mut running.generations);
    let streams = generations.into_iter().enumerate().map(|(i, generation)| {
        futures::stream::unfold(generation, move |mut g| async move {
            g.next().await.map(|event| ((i, event), g))
        })
        .boxed()
    });
    let mut merged = futures::stream::select_all(streams);
    let mut pending = first.map(|event| (0, event));
    let mut failed = None;
    while !gone {
        let next = match pending.take() {
            Some(item) => Some(item),
            None => merged.next().await,
        };
        let Some((i, event)) = next else { break };
        let choice = &mut choices[i];
        let mut out = Vec::new();
        match event {
            GenerationEvent::Logprob(entry) => {
                if logprobs {
                    choice.logprobs.push(chat_logprob(&entry));
                }
            }
            GenerationEvent::Text(text) => {
                choice.prose.push_str(&text);
                match choice.held.as_mut() {
                    Some(held) => {
                        held.push_str(&text);
                        if !may_be_call(held) {
                            let text = std::mem::take(held);
                            choice.held = None;
                            out.push(send(i, text_delta(text), choice.take_logprobs(), None));
                        }
                    }
                    None => out.push(send(i, text_delta(text), choice.take_logprobs(), None)),
                }
            }
            // Calls to fit wait for the reply's end (they may be declined or joined
            // by more).
            GenerationEvent::Call(_) if fitting => {}
            GenerationEvent::Call(call) => {
                let delta = call_delta(wire_call(&call), choice.calls);
                choice.calls += 1;
                out.push(send(i, delta, choice.take_logprobs(), None));
            }
            GenerationEvent::Done(Ok(completion)) => {
                // The end-of-text token's entry is no part of the reply.
                let allowed = completion
                    .usage
                    .generated_tokens
                    .saturating_sub(choice.sent);
                choice.logprobs.truncate(allowed);
                let (seen, streamed) = match choice.held.take() {
                    Some(_) => (Seen::Nothing, String::new()),
                    None => (Seen::Prose, choice.prose.clone()),
                };
                let prose = choice.prose.clone();
                match settle(&mut running, &rules, i, prose, completion, seen).await {
                    Err(error) => failed = Some(error),
                    Ok(reply) => {
                        if reply.redone {
                            choice.logprobs = if logprobs {
                                let completion = &reply.completion;
                                let kept = completion
                                    .logprobs
                                    .iter()
                                    .take(completion.usage.generated_tokens);
                                kept.map(chat_logprob).collect()
                            } else {
                                Vec::new()
                            };
                        }
                        // The text not streamed yet: held text that stayed text, or text
                        // generated in place of declined calls.
                        if reply.prose != streamed && !reply.prose.trim().is_empty() {
                            let text = reply.prose.clone();
                            out.push(send(i, text_delta(text), choice.take_logprobs(), None));
                            choice.prose = reply.prose.clone();
                        }
                        for call in reply.completion.calls.iter().skip(choice.calls) {
                            let delta = call_delta(wire_call(call), choice.calls);
                            choice.calls += 1;
                            out.push(send(i, delta, choice.take_logprobs(), None));
                        }
                        if let Some(cut) = &reply.cut {
                            let delta = call_delta(wire_cut(cut), choice.calls);
                            choice.calls += 1;
                            out.push(send(i, delta, choice.take_logprobs(), None));
                        }
                        out.push(send(
                            i,
                            openai::Delta::default(),
                            choice.take_logprobs(),
                            Some(reply.finish),
                        ));
                        choice.completion = Some(reply.completion);
                    }
                }
            }
            GenerationEvent::Done(Err(error)) => {
                running.repair();
                failed = Some(ApiError::from(error));
            }
            GenerationEvent::CallStarted | GenerationEvent::Malformed(_) => {}
        }
        for event in out {
            if tx.send(event).await.is_err() {
                gone = true;
                break;
            }
        }
        if failed.is_some() {
            break;
        }
    }
    drop(merged);
    if gone {
        return;
    }
    if let Some(error) = failed {
        let _ = tx.send(data(&error.body())).await;
        let _ = tx
            .send(axum::response::sse::Event::default().data("[DONE]"))
            .await;
        return;
    }
    let completions: Vec<&Completion> = choices
        .iter()
        .filter_map(|c| c.completion.as_ref())
        .collect();
    if completions.len() < n {
        running.repair();
        let error = ApiError::internal("a generation ended without a result");
        let _ = tx.send(data(&error.body())).await;
        let _ = tx
            .send(axum::response::sse::Event::default().data("[DONE]"))
            .await;
        return;
    }
    running.finished(&completions);
    if include_usage {
        let mut chunk = head.chunk(Vec::new());
        chunk.usage = Some(running.usage(&completions));
        let _ = tx.send(data(&chunk)).await;
    }
    let _ = tx
        .send(axum::response::sse::Event::default().data("[DONE]"))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `CallRules::again` decides for a reply `text` given two tools: `None` (the
    /// reply stands), or the tools the required call may use.
    fn check(recover: bool, text: &str, want: Option<&[&str]>) {
        let tool = |name: &str| {
            ToolSpec::new(
                name,
                "",
                json!({"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}),
            )
        };
        let tools = vec![tool("plot"), tool("scale")];
        let chat = Chat::new(vec![jielong_chat::Message::user("q")]).with_tools(tools.clone());
        let mut request = ChatRequest::new(64);
        if !recover {
            request.tool_choice = ToolChoice::Required;
        }
        let rules = CallRules {
            chat: chat.clone(),
            request: request.clone(),
            fit: CallFit::AsWritten,
        };
        let got = rules.again(text).map(|r| {
            assert_eq!(r.tool_choice, ToolChoice::Required, "{text}");
            assert_eq!(r.max_tokens, request.max_tokens);
            r.callable(&chat)
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
        });
        let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(got, want, "{text}");
    }

    #[test]
    fn a_reply_that_means_a_call_is_asked_for_again() {
        let both: &[&str] = &["plot", "scale"];
        // An expression for a value: held to the tool it names.
        check(
            true,
            "```json\n{\"name\": \"plot\", \"arguments\": {\"x\": 2 * pi}}\n```",
            Some(&["plot"]),
        );
        // Arguments its schema refuses.
        check(
            true,
            "{\"name\": \"scale\", \"arguments\": {\"x\": \"big\"}}",
            Some(&["scale"]),
        );
        // The tool list echoed.
        check(
            true,
            "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"plot\"",
            Some(both),
        );
        // A call as written is taken, not asked for again.
        check(
            true,
            "{\"name\": \"plot\", \"arguments\": {\"x\": 6.28}}",
            None,
        );
        // Prose is an answer.
        check(true, "The wave goes from 0 to 2 pi.", None);
        // Not when the client chose (tool_choice, a reply format).
        check(
            false,
            "{\"name\": \"plot\", \"arguments\": {\"x\": 2 * pi}}",
            None,
        );
        // A redo that only repeats a call the conversation made is not taken.
        let made = ToolCall::new("plot", json!({"x": 1}));
        let chat = Chat::new(vec![
            jielong_chat::Message::user("q"),
            jielong_chat::Message::assistant_with_tool_calls("", vec![made.clone()]),
        ]);
        let rules = CallRules {
            chat,
            request: ChatRequest::new(8),
            fit: CallFit::AsWritten,
        };
        assert!(rules.repeats(std::slice::from_ref(&made)));
        assert!(!rules.repeats(&[ToolCall::new("plot", json!({"x": 2}))]));
        assert!(!rules.repeats(&[]));
    }
}
