//! Token log-probabilities: what a generation reports per token when asked, and what
//! scoring a given continuation returns.

use serde::{Deserialize, Serialize};

/// The most alternatives a request may ask for per token.
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// One token and its natural-log probability under the model's distribution (before
/// sampling filters and temperature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenProb {
    /// The token's text (its bytes, lossily decoded when a token is a partial character).
    pub token: String,
    /// The token id, when the backend knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i32>,
    /// `ln p(token | context)`.
    pub logprob: f32,
}

/// A generated (or scored) token with the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token that was chosen.
    #[serde(flatten)]
    pub chosen: TokenProb,
    /// The `k` most likely tokens at this position, most likely first (the chosen one
    /// among them when it is in the top `k`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TokenProb>,
}

/// The log-probability of a continuation after a context, teacher-forced token by
/// token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The continuation's tokens, each with its log-probability (and alternatives when
    /// asked).
    pub tokens: Vec<TokenLogprob>,
    /// Tokens of the context (reused from the KV cache where it could be).
    pub context_tokens: usize,
}

impl Score {
    /// `ln p(continuation | context)`: the sum over its tokens.
    pub fn total(&self) -> f32 {
        self.tokens.iter().map(|t| t.chosen.logprob).sum()
    }

    /// The mean log-probability per token (`None` for an empty continuation).
    pub fn mean(&self) -> Option<f32> {
        (!self.tokens.is_empty()).then(|| self.total() / self.tokens.len() as f32)
    }
}

/// `ln softmax(logits)[i]` for the tokens at `indices`, and the `k` most likely
/// tokens (index, log-probability), most likely first. One pass for the maximum and the
/// normaliser, one partial selection for the top `k`.
pub fn log_softmax_top(logits: &[f32], k: usize) -> (f32, Vec<(usize, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return (f32::NEG_INFINITY, Vec::new());
    }
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let log_norm = max + sum.ln();
    let mut top: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    if k > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if top.len() < k {
                top.push((i, l));
                if top.len() == k {
                    top.sort_by(|a, b| b.1.total_cmp(&a.1));
                }
            } else if l > top[k - 1].1 {
                let at = top.partition_point(|&(_, v)| v >= l);
                top.insert(at, (i, l));
                top.truncate(k);
            }
        }
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
    }
    (
        log_norm,
        top.into_iter().map(|(i, l)| (i, l - log_norm)).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_top() {
        let logits = [1.0f32, 3.0, 2.0, 0.0];
        let (norm, top) = log_softmax_top(&logits, 2);
        let total: f32 = logits.iter().map(|l| (l - norm).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((top[0].1 - (3.0 - norm)).abs() < 1e-6);
        let (_, all) = log_softmax_top(&logits, 10);
        assert_eq!(
            all.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 2, 0, 3]
        );
        let (_, none) = log_softmax_top(&logits, 0);
        assert!(none.is_empty());
    }

    #[test]
    fn score_sums() {
        let tok = |p: f32| TokenLogprob {
            chosen: TokenProb {
                token: "a".into(),
                id: None,
                logprob: p,
            },
            top: Vec::new(),
        };
        let score = Score {
            tokens: vec![tok(-1.0), tok(-0.5)],
            context_tokens: 3,
        };
        assert_eq!(score.total(), -1.5);
        assert_eq!(score.mean(), Some(-0.75));
    }
}
