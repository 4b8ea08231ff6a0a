//! Tokenization of prompts and the common-prefix arithmetic of KV-cache reuse.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix() {
        assert_eq!(common_prefix_len(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix_len::<i32>(&[], &[1]), 0);
        assert_eq!(common_prefix_len(&[1, 2], &[1, 2, 3]), 2);
    }
}
