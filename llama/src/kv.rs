//! Tokenization of prompts and the common-prefix arithmetic of KV-cache reuse.

pub use jielong_chat::branched::common_prefix_len;

use llama_cpp_2::model::LlamaModel as RawModel;
use llama_cpp_2::token::LlamaToken;

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
