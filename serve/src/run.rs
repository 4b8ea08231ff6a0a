//! What chat and text completions share: parsing a body, holding a slot while a
//! generation runs, the extra branches of `n > 1`, ids, and the OpenAI shapes of
//! log-probabilities, finish reasons and usage.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use jielong_chat::{
    BranchId, BranchReply, BranchedSession, Completion, FinishReason, Generation, GenerationEvent,
    PreparedPrompt, TokenLogprob, Usage,
};
use jielong_wire as openai;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::error::ApiError;
use crate::slots::SlotGuard;
use crate::state::{InFlight, ServeState};

/// Parses a JSON body: a body over the limit is a 413, malformed JSON or a missing
/// field a 400.
pub(crate) fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| ApiError {
        status: rejection.status(),
        code: (rejection.status().as_u16() == 413).then_some("request_too_large"),
        ..ApiError::invalid(format!(
            "cannot read the request body: {}",
            rejection.body_text()
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_data() {
            ApiError::invalid(format!("the request does not fit the API: {e}"))
        } else {
            ApiError::invalid(format!("the request body is not valid JSON: {e}"))
        }
    })
}

/// A fresh id with `prefix` (`chatcmpl-`, `call_`): 24 hex digits from the clock and
/// a counter.
pub(crate) fn unique_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // A splitmix64 step so consecutive ids do not look alike.
    let mut z = nanos ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("{prefix}{z:016x}{:08x}", count as u32)
}

/// OpenAI's `finish_reason` for a completion.
pub(crate) fn finish_reason(finish: &FinishReason) -> openai::FinishReason {
    match finish {
        FinishReason::MaxTokens | FinishReason::ContextFull => openai::FinishReason::Length,
        FinishReason::EndOfText | FinishReason::StopString(_) | FinishReason::Cancelled => {
            openai::FinishReason::Stop
        }
    }
}

/// A log-probability as JSON (OpenAI sends -9999 for an impossible token).
fn logprob_value(logprob: f32) -> f32 {
    if logprob.is_finite() {
        logprob
    } else {
        -9999.0
    }
}

/// One token's entry of a chat `logprobs.content` list.
pub(crate) fn chat_logprob(entry: &TokenLogprob) -> openai::TokenLogprob {
    let top = |t: &jielong_chat::TokenProb| openai::TopLogprob {
        token: t.token.clone(),
        logprob: logprob_value(t.logprob),
        bytes: Some(t.token.as_bytes().to_vec()),
        id: None,
    };
    openai::TokenLogprob {
        token: entry.chosen.token.clone(),
        logprob: logprob_value(entry.chosen.logprob),
        bytes: Some(entry.chosen.token.as_bytes().to_vec()),
        id: None,
        top_logprobs: entry.top.iter().map(top).collect(),
    }
}

/// The legacy `logprobs` object of a text completion, for `entries` starting at
/// character `offset` of the text.
pub(crate) fn text_logprobs(entries: &[TokenLogprob], mut offset: usize) -> openai::TextLogprobs {
    let mut logprobs = openai::TextLogprobs::default();
    for entry in entries {
        logprobs.tokens.push(entry.chosen.token.clone());
        logprobs
            .token_logprobs
            .push(logprob_value(entry.chosen.logprob));
        let top = entry
            .top
            .iter()
            .map(|t| (t.token.as_str(), logprob_value(t.logprob)));
        logprobs.top_logprobs.push(top.collect());
        logprobs.text_offset.push(offset as u64);
        offset += entry.chosen.token.len();
    }
    logprobs
}

/// OpenAI's `usage`: the prompt once, every choice's generated tokens.
pub(crate) fn usage(prompt_tokens: usize, cached: usize, generated: usize) -> openai::Usage {
    openai::Usage::new(prompt_tokens as u64, cached as u64, generated as u64)
}

/// The extra branches of a request with `n > 1`: dropped (on a blocking thread)
/// when the request is done or goes away.
pub(crate) struct Temps {
    session: std::sync::Arc<dyn BranchedSession>,
    pub(crate) branches: Vec<BranchId>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Temps {
    fn drop(&mut self) {
        let session = self.session.clone();
        let branches = std::mem::take(&mut self.branches);
        let drop_all = move || {
            for branch in branches {
                if let Err(e) = session.drop_branch(branch) {
                    tracing::warn!("cannot drop branch {branch}: {e}");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(drop_all);
            }
            Err(_) => drop_all(),
        }
    }
}

/// A request that holds a slot: its generations (one per choice) and what is
/// released when it ends.
pub(crate) struct Running {
    pub(crate) state: ServeState,
    pub(crate) generations: Vec<Generation>,
    pub(crate) guard: SlotGuard,
    pub(crate) _temps: Option<Temps>,
    pub(crate) _in_flight: InFlight,
    /// Prompt tokens reused, when known apart from the completions (`n > 1`).
    pub(crate) cached: Option<usize>,
    /// The request's prompt, prepared once: every choice and every reply generated
    /// again on the same chat starts from it.
    pub(crate) prompt: PreparedPrompt,
    /// Tokens generated for replies that were generated again ([`Running::again`]):
    /// no part of any choice, still part of the usage.
    discarded: usize,
    /// Whether the request came to an end (finished or failed); a request dropped
    /// before that was cancelled by its client.
    ended: bool,
    /// When the request got its slot.
    started: std::time::Instant,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.ended {
            self.state
                .inner
                .metrics
                .cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Which conversation a reply generated again answers.
#[derive(Clone, Copy)]
pub(crate) enum Again<'a> {
    /// The request's own chat: its prepared prompt is reused.
    Same(&'a jielong_chat::Chat),
    /// A changed chat (tools taken away, the question narrowed): prepared anew.
    Changed(&'a jielong_chat::Chat),
}

/// How to start the generations once a slot is held.
pub(crate) enum Start<'a> {
    /// A chat, `n` choices.
    Chat {
        chat: &'a jielong_chat::Chat,
        request: &'a jielong_chat::ChatRequest,
        n: usize,
    },
    /// A raw prompt.
    Text(&'a jielong_chat::GenerateRequest),
}

impl Running {
    /// Waits for a slot for `prompt`, then starts the generations.
    pub(crate) async fn start(
        state: &ServeState,
        prompt: PreparedPrompt,
        budget: usize,
        start: Start<'_>,
    ) -> Result<Self, ApiError> {
        let inner = &state.inner;
        let session = &inner.session;
        let held = |branch| session.holds(branch);
        let mut guard = inner
            .slots
            .acquire(&inner.metrics, &prompt.tokens, budget, &held)
            .await?;
        let in_flight = InFlight::new(state);
        guard.evict(session.clone()).await?;
        let branch = guard.branch;
        tracing::debug!(
            "slot {branch}: {} prompt tokens, about {} reused",
            prompt.len(),
            guard.expected_reuse
        );
        let mut temps = None;
        let mut cached = None;
        let reply = |branch, chat, request| BranchReply {
            branch,
            prompt: &prompt,
            chat,
            request,
        };
        let generations = match start {
            Start::Text(request) => vec![session.generate_on(branch, &prompt, request)?],
            Start::Chat { chat, request, n } if n <= 1 => {
                session.respond_on(&[reply(branch, chat, request)])?
            }
            Start::Chat { chat, request, n } => {
                let permit = inner.slots.temps(n - 1).await?;
                // The prompt is evaluated once on the slot, then forked: the choices
                // share its cells.
                let prefill = jielong_chat::GenerateRequest {
                    max_tokens: 1,
                    ..Default::default()
                };
                let done = session
                    .generate_on(branch, &prompt, &prefill)?
                    .finish(|_| {})
                    .await?;
                cached = Some(done.usage.cached_tokens);
                let forker = session.clone();
                let branches = tokio::task::spawn_blocking(move || forker.fork(branch, n - 1))
                    .await
                    .map_err(|e| ApiError::internal(format!("fork failed: {e}")))??;
                let held = Temps {
                    session: session.clone(),
                    branches,
                    _permit: permit,
                };
                let requests: Vec<_> = (0..n)
                    .map(|i| {
                        let mut request = request.clone();
                        request.sampling.seed = request.sampling.seed.wrapping_add(i as u32);
                        request
                    })
                    .collect();
                let choices = std::iter::once(branch).chain(held.branches.iter().copied());
                let jobs: Vec<_> = choices
                    .zip(&requests)
                    .map(|(b, request)| reply(b, chat, request))
                    .collect();
                let generations = session.respond_on(&jobs)?;
                temps = Some(held);
                generations
            }
        };
        Ok(Self {
            state: state.clone(),
            generations,
            guard,
            _temps: temps,
            _in_flight: in_flight,
            cached,
            prompt,
            discarded: 0,
            ended: false,
            started: std::time::Instant::now(),
        })
    }

    /// Generates choice `index` again on the branch that holds it (the prompt's cells
    /// are reused), as `request` says: from the request's own prompt when `chat` is
    /// `None`, else from `chat`, a changed conversation, prepared anew. The choice's
    /// own generation must be done; the reply left out is then
    /// [`Running::discard`]ed.
    pub(crate) fn again(
        &self,
        index: usize,
        chat: Again<'_>,
        request: &jielong_chat::ChatRequest,
    ) -> Result<Generation, ApiError> {
        let branch = match index.checked_sub(1) {
            None => self.guard.branch,
            Some(i) => *self
                ._temps
                .as_ref()
                .and_then(|t| t.branches.get(i))
                .ok_or_else(|| ApiError::internal(format!("no branch for choice {index}")))?,
        };
        let changed;
        let (prompt, chat) = match chat {
            Again::Same(chat) => (&self.prompt, chat),
            Again::Changed(chat) => {
                changed = self.state.prepare(chat)?;
                (&changed, chat)
            }
        };
        let job = BranchReply {
            branch,
            prompt,
            chat,
            request,
        };
        let mut generations = self.state.inner.session.respond_on(&[job])?;
        generations
            .pop()
            .ok_or_else(|| ApiError::internal("the session started no generation"))
    }

    /// Counts the `tokens` of a reply no choice keeps into the usage.
    pub(crate) fn discard(&mut self, tokens: usize) {
        self.discarded += tokens;
    }

    /// After a failed generation: re-creates slots whose branches the worker cleared
    /// (on a blocking thread, in the background).
    pub(crate) fn repair(&mut self) {
        self.ended = true;
        let pool = self.state.inner.slots.clone();
        let session = self.state.session();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = pool.repair(session.as_ref()) {
                tracing::warn!("cannot re-create the slots: {e}");
            }
        });
    }

    /// The first event of the first generation, waited for: an error that ends it
    /// right away (a schema without a grammar, a prompt refused) becomes the answer
    /// before any stream starts.
    pub(crate) async fn first_event(&mut self) -> Result<Option<GenerationEvent>, ApiError> {
        let Some(generation) = self.generations.first_mut() else {
            return Ok(None);
        };
        match generation.next().await {
            Some(GenerationEvent::Done(Err(e))) => {
                self.repair();
                Err(e.into())
            }
            None => {
                self.repair();
                Err(ApiError::internal("the generation ended without a result"))
            }
            other => Ok(other),
        }
    }

    /// Records the end: the counters get the token counts (what the slot holds now
    /// the session has published).
    pub(crate) fn finished(&mut self, completions: &[&Completion]) {
        self.ended = true;
        if let Some(first) = completions.first() {
            tracing::info!(
                "slot {}: {} prompt tokens ({} reused), {} generated in {} choices, {:.0} ms",
                self.guard.branch,
                first.usage.prompt_tokens,
                self.cached.unwrap_or(first.usage.cached_tokens),
                completions
                    .iter()
                    .map(|c| c.usage.generated_tokens)
                    .sum::<usize>(),
                completions.len(),
                self.started.elapsed().as_secs_f64() * 1e3
            );
        }
        let metrics = &self.state.inner.metrics;
        for (i, c) in completions.iter().enumerate() {
            let usage = if i == 0 {
                Usage {
                    cached_tokens: self.cached.unwrap_or(c.usage.cached_tokens),
                    ..c.usage.clone()
                }
            } else {
                // The prompt counts once.
                Usage {
                    generated_tokens: c.usage.generated_tokens,
                    loops_broken: c.usage.loops_broken,
                    ..Usage::default()
                }
            };
            metrics.tokens(&usage);
        }
        metrics.tokens(&Usage {
            generated_tokens: self.discarded,
            ..Usage::default()
        });
    }

    /// Prompt tokens, reused ones and generated ones over `completions`.
    pub(crate) fn usage(&self, completions: &[&Completion]) -> openai::Usage {
        let prompt = completions.first().map_or(0, |c| c.usage.prompt_tokens);
        let cached = self
            .cached
            .or_else(|| completions.first().map(|c| c.usage.cached_tokens))
            .unwrap_or(0);
        let generated = completions
            .iter()
            .map(|c| c.usage.generated_tokens)
            .sum::<usize>()
            + self.discarded;
        usage(prompt, cached, generated)
    }
}

/// A server-sent-events response fed by a channel; the producer sees a send fail
/// once the client has gone.
pub(crate) fn sse(rx: mpsc::Receiver<Event>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// An SSE `data:` event of `value`.
pub(crate) fn data(value: &impl Serialize) -> Event {
    Event::default().data(encode(value))
}

/// A wire value as JSON text. The wire types always encode (no map has keys that
/// are not strings); should one not, the text is an error body.
pub(crate) fn encode(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        tracing::error!("cannot encode a reply: {e}");
        let error = openai::ErrorBody::new(
            format!("cannot encode the reply: {e}"),
            "server_error",
            None,
            None,
        );
        serde_json::to_string(&error).unwrap_or_default()
    })
}
