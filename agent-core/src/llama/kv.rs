//! Bookkeeping of what a KV cache holds, so a new prompt evaluates only what follows
//! the longest prefix it shares with what was already evaluated.

use llama_cpp_2::model::LlamaModel as RawModel;
use llama_cpp_2::token::LlamaToken;

/// Length of the longest common prefix of two token sequences.
pub fn common_prefix_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Tokenizes a rendered prompt: special tokens in the text are parsed, and BOS is
/// added when the model wants one and the text does not already start with it.
pub(crate) fn tokenize(model: &RawModel, text: &str) -> Vec<LlamaToken> {
    let vocab = model.vocab();
    let mut tokens = vocab.tokenize(text.as_bytes(), false, true);
    if vocab.should_add_bos() && tokens.first() != Some(&vocab.bos()) {
        tokens.insert(0, vocab.bos());
    }
    tokens
}

/// The tokens one sequence of the KV cache holds, position by position.
///
/// Invariant: `tokens[i]` is the token whose keys and values sit at position `i` of the
/// sequence in llama.cpp's memory; nothing past `tokens.len()` is in it.
#[derive(Debug, Default, Clone)]
pub(crate) struct SequenceCache {
    pub(crate) tokens: Vec<LlamaToken>,
}

impl SequenceCache {
    /// How many leading tokens of `prompt` can be reused. At least one prompt token is
    /// always left to evaluate, because the logits of the last prompt token are needed
    /// to sample the next one.
    pub(crate) fn reusable(&self, prompt: &[LlamaToken]) -> usize {
        common_prefix_len(&self.tokens, prompt).min(prompt.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix() {
        assert_eq!(common_prefix_len(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix_len::<i32>(&[], &[1]), 0);
        assert_eq!(common_prefix_len(&[1, 2], &[1, 2, 3]), 2);
        let cache = SequenceCache {
            tokens: vec![LlamaToken(1), LlamaToken(2), LlamaToken(3)],
        };
        // The whole prompt is cached: the last token is evaluated again for its logits.
        assert_eq!(cache.reusable(&[LlamaToken(1), LlamaToken(2)]), 1);
        assert_eq!(
            cache.reusable(&[LlamaToken(1), LlamaToken(2), LlamaToken(3), LlamaToken(4)]),
            3
        );
        assert_eq!(cache.reusable(&[LlamaToken(9)]), 0);
    }
}
