//! [`compare`]: two runs on the same examples, paired by id, with an exact McNemar
//! test on the examples where they disagree.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::run::Row;

/// Two runs side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The first run's name.
    pub a: String,
    /// The second run's name.
    pub b: String,
    /// Examples graded in both runs (same id and input hash).
    pub paired: usize,
    /// Paired examples both got right.
    pub both_right: usize,
    /// Paired examples only `a` got right.
    pub only_a: usize,
    /// Paired examples only `b` got right.
    pub only_b: usize,
    /// Paired examples both got wrong.
    pub both_wrong: usize,
    /// `a`'s accuracy on the paired examples.
    pub accuracy_a: f64,
    /// `b`'s accuracy on the paired examples.
    pub accuracy_b: f64,
    /// Exact two-sided McNemar p-value: the binomial test of `only_a` against
    /// `only_b` at one half ([`mcnemar_p`]).
    pub p_value: f64,
    /// The paired examples whose verdicts differ, in `a`'s order.
    pub changed: Vec<Change>,
    /// Ids in only one of the runs, or whose inputs differ between them.
    pub unmatched: usize,
    /// Ids in both runs but ungraded in at least one (no expected answer).
    pub ungraded: usize,
}

/// An example the two runs disagree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The example's id.
    pub id: String,
    /// Whether `a` was right.
    pub a_correct: bool,
    /// Whether `b` was right.
    pub b_correct: bool,
}

/// Pairs the rows of run `a` and run `b` by id and compares their verdicts.
pub fn compare(a_name: &str, a: &[Row], b_name: &str, b: &[Row]) -> Comparison {
    let by_id: HashMap<&str, &Row> = b.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut c = Comparison {
        a: a_name.to_owned(),
        b: b_name.to_owned(),
        paired: 0,
        both_right: 0,
        only_a: 0,
        only_b: 0,
        both_wrong: 0,
        accuracy_a: 0.0,
        accuracy_b: 0.0,
        p_value: 1.0,
        changed: Vec::new(),
        unmatched: 0,
        ungraded: 0,
    };
    let mut matched = 0;
    for row_a in a {
        let Some(row_b) = by_id.get(row_a.id.as_str()) else {
            c.unmatched += 1;
            continue;
        };
        if row_a.input_hash != row_b.input_hash {
            // Same id, different example: it counts once per run.
            c.unmatched += 2;
            matched += 1;
            continue;
        }
        matched += 1;
        let (Some(ra), Some(rb)) = (row_a.correct, row_b.correct) else {
            c.ungraded += 1;
            continue;
        };
        c.paired += 1;
        match (ra, rb) {
            (true, true) => c.both_right += 1,
            (true, false) => c.only_a += 1,
            (false, true) => c.only_b += 1,
            (false, false) => c.both_wrong += 1,
        }
        if ra != rb {
            c.changed.push(Change {
                id: row_a.id.clone(),
                a_correct: ra,
                b_correct: rb,
            });
        }
    }
    c.unmatched += b.len().saturating_sub(matched);
    if c.paired > 0 {
        c.accuracy_a = (c.both_right + c.only_a) as f64 / c.paired as f64;
        c.accuracy_b = (c.both_right + c.only_b) as f64 / c.paired as f64;
    }
    c.p_value = mcnemar_p(c.only_a, c.only_b);
    c
}

/// The exact two-sided McNemar p-value for discordant counts `b` and `c`:
/// `min(1, 2 · P(X ≤ min(b, c)))` for `X ~ Binomial(b + c, 1/2)`; 1 when there is no
/// discordant pair. Computed in log space, so large counts do not underflow.
pub fn mcnemar_p(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    let mut log_term = -(n as f64) * std::f64::consts::LN_2; // log(C(n, 0) / 2^n)
    let mut tail = 0.0;
    for i in 0..=k {
        tail += log_term.exp();
        log_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    (2.0 * tail).min(1.0)
}

impl Comparison {
    /// Whether the difference is significant at `alpha` (`p_value < alpha`).
    pub fn significant(&self, alpha: f64) -> bool {
        self.p_value < alpha
    }
}

impl fmt::Display for Comparison {
    /// A plain-text table: accuracies, the 2×2 counts, the p-value and the verdict
    /// at 0.05.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.a.chars().count().max(self.b.chars().count()).max(8);
        let w = (width + "only  ".len()).max(12);
        let percent = |x: f64| format!("{:.1}%", 100.0 * x);
        writeln!(f, "{:<w$}{:>width$}  {:>width$}", "", self.a, self.b)?;
        writeln!(
            f,
            "{:<w$}{:>width$}  {:>width$}",
            "accuracy",
            percent(self.accuracy_a),
            percent(self.accuracy_b)
        )?;
        writeln!(f, "{:<w$}{}", "paired", self.paired)?;
        writeln!(f, "{:<w$}{}", "both right", self.both_right)?;
        writeln!(f, "{:<w$}{}", format!("only {}", self.a), self.only_a)?;
        writeln!(f, "{:<w$}{}", format!("only {}", self.b), self.only_b)?;
        writeln!(f, "{:<w$}{}", "both wrong", self.both_wrong)?;
        if self.unmatched > 0 || self.ungraded > 0 {
            writeln!(
                f,
                "{:<w$}{} unmatched, {} ungraded",
                "left out", self.unmatched, self.ungraded
            )?;
        }
        writeln!(f, "{:<w$}{:.4} (exact McNemar)", "p-value", self.p_value)?;
        writeln!(
            f,
            "significant at 0.05: {}",
            if self.significant(0.05) { "yes" } else { "no" }
        )
    }
}
