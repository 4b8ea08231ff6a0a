//! One line of generation: the sampler, the stop-string matcher and the UTF-8 decoder
//! that turn sampled tokens into text. The session's one decode loop drives a
//! [`Branch`] per generating sequence, so budgets, stop strings and log-probabilities
//! behave the same for one reply or many.

use llama_cpp_2::model::LlamaModel as RawModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use crate::loop_guard::LoopGuard;
use jielong_chat::error::RuntimeError;
use jielong_chat::generate::{FinishReason, GenerateRequest, SamplingParams, ToolChoice};
use jielong_chat::logprob::{log_softmax_top, TokenLogprob, TokenProb};
use jielong_chat::stop::StopMatcher;

/// What a sampled token means for its branch.
pub(crate) enum Step {
    /// Keep going: evaluate the token, then sample the next one. Carries text that is
    /// now safe to emit (possibly empty).
    Continue(String),
    /// The branch is finished; the token is not evaluated. Carries the last text.
    Finish(String, FinishReason),
}

/// The decoding state of one generated sequence.
pub(crate) struct Branch {
    /// Chooses among the candidates (greedy, or filters and a seeded draw).
    sampler: LlamaSampler,
    /// The tool-call grammar, checked apart from `sampler` (see [`Branch::sample`]).
    grammar: Option<LlamaSampler>,
    /// The structured part of the output (calls, a JSON reply), watched for loops.
    structured: Option<Structured>,
    stops: StopMatcher,
    utf8: encoding_rs::Decoder,
    piece: Vec<u8>,
    max_tokens: usize,
    /// Alternatives per token when log-probabilities are reported.
    logprobs: Option<u32>,
    /// The log-probabilities reported so far.
    pub(crate) logprob_log: Vec<TokenLogprob>,
    /// Tokens sampled so far (end-of-generation tokens are not counted).
    pub(crate) generated: usize,
    /// Everything emitted so far.
    pub(crate) text: String,
}

impl Branch {
    pub(crate) fn new(model: &RawModel, request: &GenerateRequest) -> Result<Self, RuntimeError> {
        let grammar = match &request.tools {
            Some(constraint) => Some(super::grammar::tool_call_sampler(model, constraint)?),
            None => None,
        };
        Ok(Self {
            sampler: build_sampler(&request.sampling),
            grammar,
            structured: request.tools.as_ref().and_then(Structured::new),
            stops: StopMatcher::new(&request.stop),
            utf8: encoding_rs::UTF_8.new_decoder(),
            piece: Vec::with_capacity(32),
            max_tokens: request.max_tokens,
            logprobs: request.logprobs,
            logprob_log: Vec::new(),
            generated: 0,
            text: String::new(),
        })
    }

    /// Samples the next token from the logits at `index` of the last evaluated batch.
    ///
    /// With a grammar, the token is first drawn without it and then checked against
    /// it; only when the grammar rejects it are all candidates filtered and the draw
    /// repeated (as llama.cpp's own sampler does). Checking one token instead of the
    /// whole vocabulary makes constrained decoding nearly as fast as free decoding.
    /// The sampler and the grammar accept only the token that is finally chosen.
    pub(crate) fn sample(
        &mut self,
        model: &RawModel,
        ctx: &llama_cpp_2::context::LlamaContext<'_>,
        index: i32,
    ) -> LlamaToken {
        let Some(grammar) = self.grammar.as_mut() else {
            // `sample` draws and accepts in one call.
            return self.sampler.sample(ctx, index);
        };
        let mut all = ctx.token_data_array_ith(index);
        all.apply_sampler(&mut self.sampler);
        let drawn = all.selected_token();
        let allowed = drawn.is_some_and(|token| {
            let mut single =
                LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
            single.apply_sampler(grammar);
            single.data.first().is_some_and(|d| d.logit().is_finite())
        });
        let structured = &mut self.structured;
        let mut looping =
            |token: LlamaToken| structured.as_mut().is_some_and(|s| s.refuses(model, token));
        // The drawn token when the grammar allows it and the guard does not refuse it.
        let mut refused = None;
        let taken = match drawn {
            Some(token) if allowed && looping(token) => {
                refused = Some(token);
                None
            }
            Some(token) if allowed => Some(token),
            _ => None,
        };
        let token = match taken {
            Some(token) => token,
            None => {
                // The candidates the grammar allows; when the guard refuses the best
                // of them, the best of those it does not refuse (none: the grammar's
                // best, as a schema's required member must still be written).
                let mut all = ctx.token_data_array_ith(index);
                all.apply_sampler(grammar);
                let candidates: Vec<LlamaTokenData> = all
                    .data
                    .into_iter()
                    .filter(|d| d.logit().is_finite() && Some(d.id()) != refused)
                    .collect();
                let mut pick = |candidates: Vec<LlamaTokenData>| {
                    if candidates.is_empty() {
                        return None;
                    }
                    let mut array = LlamaTokenDataArray::new(candidates, false);
                    array.apply_sampler(&mut self.sampler);
                    array.selected_token()
                };
                let best = match pick(candidates.clone()) {
                    Some(best) if looping(best) => {
                        let kept: Vec<LlamaTokenData> = candidates
                            .into_iter()
                            .filter(|d| d.id() != best && !looping(d.id()))
                            .collect();
                        pick(kept).or(Some(best))
                    }
                    best => best,
                };
                if refused.is_some() {
                    tracing::debug!("loop guard: {refused:?} refused, {best:?} taken");
                }
                best.or(drawn).unwrap_or(LlamaToken(0))
            }
        };
        self.sampler.accept(token);
        grammar.accept(token);
        token
    }

    /// Records the log-probability of `token` at `index` of the last batch (and the
    /// top alternatives) when the request asked for them; what to stream.
    pub(crate) fn record_logprob(
        &mut self,
        model: &RawModel,
        ctx: &llama_cpp_2::context::LlamaContext<'_>,
        index: i32,
        token: LlamaToken,
    ) -> Option<TokenLogprob> {
        let k = self.logprobs?;
        let entry = token_logprob(model, ctx.get_logits_ith(index), token, k as usize);
        self.logprob_log.push(entry.clone());
        Some(entry)
    }

    /// Takes a sampled token: end of text, stop string and token budget are decided
    /// here. `room` says whether the context has space to evaluate the token.
    pub(crate) fn accept(&mut self, model: &RawModel, token: LlamaToken, room: bool) -> Step {
        let vocab = model.vocab();
        if vocab.is_eog(token) {
            return Step::Finish(self.flush(), FinishReason::EndOfText);
        }
        self.generated += 1;
        self.piece.clear();
        vocab.token_to_piece_into(token, &mut self.piece, true, None);
        let mut text = String::with_capacity(self.piece.len() + 4);
        let _ = self.utf8.decode_to_string(&self.piece, &mut text, false);
        let scan = self.stops.push(&text);
        self.text.push_str(&scan.emit);
        if let Some(structured) = self.structured.as_mut() {
            structured.observe(token.0, &String::from_utf8_lossy(&self.piece), &self.text);
        }
        if let Some(stop) = scan.stopped {
            return Step::Finish(scan.emit, FinishReason::StopString(stop));
        }
        if self.generated >= self.max_tokens {
            let mut emit = scan.emit;
            emit.push_str(&self.flush());
            return Step::Finish(emit, FinishReason::MaxTokens);
        }
        if !room {
            let mut emit = scan.emit;
            emit.push_str(&self.flush());
            return Step::Finish(emit, FinishReason::ContextFull);
        }
        Step::Continue(scan.emit)
    }

    /// Loops the guard found in the structured output so far.
    pub(crate) fn loops_broken(&self) -> usize {
        self.structured.as_ref().map_or(0, |s| s.guard.loops())
    }

    /// Ends the branch early (cancelled): releases text held back for stop strings.
    pub(crate) fn flush(&mut self) -> String {
        let mut rest = self.stops.flush();
        let _ = self.utf8.decode_to_string(&[], &mut rest, true);
        self.text.push_str(&rest);
        rest
    }
}

/// The part of a constrained reply the [`LoopGuard`] watches: all of it when the
/// grammar holds from the first token (a required call, a reply format), the calls
/// after their opening marker when the model chooses (a lazy grammar). Free prose is
/// not watched.
struct Structured {
    guard: LoopGuard,
    /// The marker that starts the watched part, until it has been written.
    from: Option<String>,
}

impl Structured {
    fn new(constraint: &jielong_chat::generate::ToolConstraint) -> Option<Self> {
        let from = match (constraint.choice, &constraint.reply) {
            (ToolChoice::None, None) => return None,
            (ToolChoice::Auto, None) => Some(constraint.format.open_marker().to_string()),
            _ => None,
        };
        Some(Self {
            guard: LoopGuard::new(),
            from,
        })
    }

    /// Whether the guard refuses `token` in the watched part.
    fn refuses(&mut self, model: &RawModel, token: LlamaToken) -> bool {
        self.from.is_none() && self.guard.refuses(token.0, &piece_text(model, token))
    }

    /// Takes an accepted `token` (its text `piece`); `text` is the reply so far.
    fn observe(&mut self, token: i32, piece: &str, text: &str) {
        match &self.from {
            None => self.guard.push(token, piece),
            Some(marker) if text.contains(marker.as_str()) => self.from = None,
            Some(_) => {}
        }
    }
}

/// The llama.cpp sampler chain for these settings.
fn build_sampler(params: &SamplingParams) -> LlamaSampler {
    if params.is_greedy() {
        return LlamaSampler::greedy();
    }
    let mut chain = Vec::with_capacity(5);
    if params.top_k > 0 {
        chain.push(LlamaSampler::top_k(
            i32::try_from(params.top_k).unwrap_or(i32::MAX),
        ));
    }
    if params.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(params.top_p, 1));
    }
    if params.min_p > 0.0 {
        chain.push(LlamaSampler::min_p(params.min_p, 1));
    }
    chain.push(LlamaSampler::temp(params.temperature));
    chain.push(LlamaSampler::dist(params.seed));
    LlamaSampler::chain_simple(chain)
}

/// The log-probability of `token` under `logits` with the `k` most likely tokens.
pub(crate) fn token_logprob(
    model: &RawModel,
    logits: &[f32],
    token: LlamaToken,
    k: usize,
) -> TokenLogprob {
    let (norm, top) = log_softmax_top(logits, k);
    let prob = |id: i32, logprob: f32| TokenProb {
        token: piece_text(model, LlamaToken(id)),
        id: Some(id),
        logprob,
    };
    let chosen = logits
        .get(token.0 as usize)
        .map_or(f32::NEG_INFINITY, |l| l - norm);
    TokenLogprob {
        chosen: prob(token.0, chosen),
        top: top.into_iter().map(|(i, lp)| prob(i as i32, lp)).collect(),
    }
}

/// A token's text (special tokens as their text; a partial character lossily).
pub(crate) fn piece_text(model: &RawModel, token: LlamaToken) -> String {
    String::from_utf8_lossy(&model.vocab().token_to_piece(token, true, None)).into_owned()
}
