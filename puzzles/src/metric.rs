//! The Game of 24 as an evaluation metric (`game24`): the expected answer is the
//! puzzle's numbers (`4 9 10 13`), and an answer is right when it holds an expression
//! that uses each of them once and makes 24 ([`game24::check`]); the expression is
//! what is extracted.

use jielong_eval::{Checker, Score};

use crate::game24;

/// The `game24` metric; add it to a [`jielong_eval::Metrics`] catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Game24Metric;

impl Checker for Game24Metric {
    fn name(&self) -> &str {
        "game24"
    }

    fn check(&self, answer: &str, expected: &str) -> Score {
        let numbers: Vec<i64> = expected
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        match game24::check(&numbers, answer) {
            Ok(expression) => Score {
                correct: true,
                extracted: Some(expression),
            },
            Err(_) => Score::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expression_making_24_from_the_numbers_is_right() {
        let cases: [(&str, &str, bool, Option<&str>); 5] = [
            (
                "13 - 9 = 4\n10 - 4 = 6\nSo (13 − 9) × (10 − 4) = 24.",
                "4 9 10 13",
                true,
                Some("(13 - 9) * (10 - 4)"),
            ),
            (
                "(10 - 4) * (13 - 9)",
                "4, 9, 10, 13",
                true,
                Some("(10 - 4) * (13 - 9)"),
            ),
            // Right value, but 13 is used twice and 9 never.
            ("(10 - 4) * (13 - 13 + 4)", "4 9 10 13", false, None),
            ("4 * 6 = 24", "4 9 10 13", false, None),
            ("It cannot be done.", "1 1 1 1", false, None),
        ];
        for (answer, expected, correct, extracted) in cases {
            let score = Game24Metric.check(answer, expected);
            assert_eq!(score.correct, correct, "{answer:?}");
            assert_eq!(score.extracted.as_deref(), extracted, "{answer:?}");
        }
        let metric = jielong_eval::Metrics::new()
            .with(std::sync::Arc::new(Game24Metric))
            .parse("game24")
            .unwrap();
        assert_eq!(metric.to_string(), "game24");
    }
}
