//! One line of generation: the sampler, the stop-string matcher and the UTF-8 decoder
//! that turn sampled tokens into text. The single-sequence loop and the forked
//! parallel loop both drive [`Branch`]es, so budgets and stop strings behave the same.

use llama_cpp_2::model::LlamaModel as RawModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::generate::{FinishReason, GenerateRequest, SamplingParams};
use crate::stop::StopMatcher;

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
    sampler: LlamaSampler,
    stops: StopMatcher,
    utf8: encoding_rs::Decoder,
    piece: Vec<u8>,
    max_tokens: usize,
    /// Tokens sampled so far (end-of-generation tokens are not counted).
    pub(crate) generated: usize,
    /// Everything emitted so far.
    pub(crate) text: String,
}

impl Branch {
    pub(crate) fn new(request: &GenerateRequest) -> Self {
        Self {
            sampler: build_sampler(&request.sampling),
            stops: StopMatcher::new(&request.stop),
            utf8: encoding_rs::UTF_8.new_decoder(),
            piece: Vec::with_capacity(32),
            max_tokens: request.max_tokens,
            generated: 0,
            text: String::new(),
        }
    }

    /// Samples the next token from the logits at `index` of the last evaluated batch.
    pub(crate) fn sample(
        &mut self,
        ctx: &llama_cpp_2::context::LlamaContext<'_>,
        index: i32,
    ) -> LlamaToken {
        self.sampler.sample(ctx, index)
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

    /// Ends the branch early (cancelled): releases text held back for stop strings.
    pub(crate) fn flush(&mut self) -> String {
        let mut rest = self.stops.flush();
        let _ = self.utf8.decode_to_string(&[], &mut rest, true);
        self.text.push_str(&rest);
        rest
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
