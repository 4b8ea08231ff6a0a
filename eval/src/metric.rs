//! Metrics: whether an answer matches the expected one ([`Metric::score`]).

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock};

use regex::Regex;
use serde_json::Value;

use crate::dataset::Example;
use crate::error::EvalError;

/// The tolerance of `numeric` when none is given.
pub const DEFAULT_REL_TOLERANCE: f64 = 1e-6;

/// How an answer is compared with the expected one.
#[derive(Debug, Clone)]
pub enum Metric {
    /// Equal after [`normalize_text`] (trim, collapse whitespace, case-fold, strip one
    /// trailing period).
    Exact,
    /// The number in the answer ([`extract_number`]) against the expected number:
    /// `|got - expected| <= rel_tolerance * max(1, |expected|)`, or, when expected is
    /// written with 1 to 4 decimals, equal once `got` is rounded to as many.
    Numeric {
        /// Relative tolerance (absolute below 1).
        rel_tolerance: f64,
    },
    /// The expected text (normalised as by `Exact`) occurs in the answer (case-folded,
    /// whitespace collapsed).
    Contains,
    /// The pattern must match the answer. With a capture group, its first group (the
    /// whole match without one) is extracted and must equal the expected answer
    /// under `Exact`'s normalisation; without groups, matching is enough.
    Regex(Regex),
    /// A metric of a kind of task the evaluation does not know itself, added to a
    /// [`Metrics`] catalog by name (the Game of 24's checker comes from
    /// `jielong-puzzles`).
    Checked(Arc<dyn Checker>),
    /// Graded by an LLM judge after the run ([`judge`](crate::judge)): a row stays
    /// ungraded until [`apply_grades`](crate::judge::apply_grades) rates it, and
    /// [`Metric::score`] never counts an answer right.
    Judge,
}

/// The verdict on one answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Score {
    /// Whether the answer counts as right.
    pub correct: bool,
    /// The value that was compared: the number found, the normalised answer, the
    /// captured text; `None` when nothing could be extracted.
    pub extracted: Option<String>,
}

/// The seam of [`Metric::Checked`]: a checker for a kind of task (a puzzle's rules)
/// that reads the expected answer its own way.
///
/// Contract: [`Checker::check`] is a pure function of its arguments.
pub trait Checker: Send + Sync + fmt::Debug {
    /// The metric's name, as datasets and `--metric` spell it (`game24`).
    fn name(&self) -> &str;

    /// The verdict on `answer` against `expected`; `extracted` is the part checked.
    fn check(&self, answer: &str, expected: &str) -> Score;
}

/// The metrics known by name: the built-in ones and the [`Checker`]s added.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    checkers: Vec<Arc<dyn Checker>>,
}

impl Metrics {
    /// The built-in metrics only.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `checker` known by its name (a later one of the same name wins).
    pub fn with(mut self, checker: Arc<dyn Checker>) -> Self {
        self.checkers.retain(|c| c.name() != checker.name());
        self.checkers.push(checker);
        self
    }

    /// Parses `exact`, `numeric` (or `numeric:TOLERANCE`), `contains`, `judge`,
    /// `regex:PATTERN` or the name of a checker added.
    pub fn parse(&self, name: &str) -> Result<Metric, EvalError> {
        if let Some(checker) = self.checkers.iter().find(|c| c.name() == name) {
            return Ok(Metric::Checked(checker.clone()));
        }
        let bad = |message: String| EvalError::Metric {
            name: name.to_owned(),
            message,
        };
        match Metric::builtin(name) {
            Some(parsed) => parsed.map_err(bad),
            None => {
                let mut known = vec![
                    "exact",
                    "numeric",
                    "numeric:TOLERANCE",
                    "contains",
                    "judge",
                    "regex:PATTERN",
                ];
                known.extend(self.checkers.iter().map(|c| c.name()));
                let last = known.pop().unwrap_or_default();
                Err(bad(format!(
                    "unknown metric (expected {} or {last})",
                    known.join(", ")
                )))
            }
        }
    }
}

impl Metric {
    /// Parses a built-in metric's name: `exact`, `numeric` (or `numeric:TOLERANCE`),
    /// `contains`, `judge` or `regex:PATTERN` ([`Metrics::parse`] knows checkers too).
    pub fn parse(name: &str) -> Result<Metric, EvalError> {
        Metrics::new().parse(name)
    }

    /// A built-in metric: `None` when `name` names none, else the metric or why its
    /// parameter is refused.
    fn builtin(name: &str) -> Option<Result<Metric, String>> {
        if let Some(pattern) = name.strip_prefix("regex:") {
            return Some(
                Regex::new(pattern)
                    .map(Metric::Regex)
                    .map_err(|e| regex_message(&e)),
            );
        }
        Some(match name.split_once(':') {
            None if name == "exact" => Ok(Metric::Exact),
            None if name == "contains" => Ok(Metric::Contains),
            None if name == "judge" => Ok(Metric::Judge),
            None if name == "numeric" => Ok(Metric::Numeric {
                rel_tolerance: DEFAULT_REL_TOLERANCE,
            }),
            Some(("numeric", tolerance)) => match tolerance.trim().parse::<f64>() {
                Ok(t) if t.is_finite() && t >= 0.0 => Ok(Metric::Numeric { rel_tolerance: t }),
                _ => Err(format!(
                    "tolerance `{tolerance}` is not a non-negative number"
                )),
            },
            _ => return None,
        })
    }

    /// Scores `answer` against `expected`.
    pub fn score(&self, answer: &str, expected: &str) -> Score {
        match self {
            Metric::Exact => {
                let got = normalize_text(answer);
                Score {
                    correct: got == normalize_text(expected),
                    extracted: Some(got),
                }
            }
            Metric::Contains => {
                let want = normalize_text(expected);
                let found = collapse_lower(answer).contains(&want);
                Score {
                    correct: found,
                    extracted: found.then_some(want),
                }
            }
            Metric::Regex(pattern) => {
                let Some(captures) = pattern.captures(answer) else {
                    return Score::default();
                };
                let grouped = pattern.captures_len() > 1;
                let matched = if grouped {
                    captures.get(1)
                } else {
                    captures.get(0)
                };
                let extracted = matched.map(|m| m.as_str().to_owned());
                let correct = if grouped {
                    extracted
                        .as_deref()
                        .is_some_and(|e| normalize_text(e) == normalize_text(expected))
                } else {
                    true
                };
                Score { correct, extracted }
            }
            Metric::Judge => Score::default(),
            Metric::Checked(checker) => checker.check(answer, expected),
            Metric::Numeric { rel_tolerance } => {
                let Some(got) = extract_number(answer) else {
                    return Score::default();
                };
                let correct = extract_number(expected)
                    .is_some_and(|want| numbers_match(got.value, &want, *rel_tolerance));
                Score {
                    correct,
                    extracted: Some(format_number(got.value)),
                }
            }
        }
    }
}

impl fmt::Display for Metric {
    /// The name [`Metric::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Exact => f.write_str("exact"),
            Metric::Contains => f.write_str("contains"),
            Metric::Checked(checker) => f.write_str(checker.name()),
            Metric::Judge => f.write_str("judge"),
            Metric::Numeric { rel_tolerance } if *rel_tolerance == DEFAULT_REL_TOLERANCE => {
                f.write_str("numeric")
            }
            Metric::Numeric { rel_tolerance } => write!(f, "numeric:{rel_tolerance}"),
            Metric::Regex(pattern) => write!(f, "regex:{}", pattern.as_str()),
        }
    }
}

/// The metric for `example`: its record's string field `metric` (any name `metrics`
/// reads) if it has one, else `default`.
pub fn metric_for<'a>(
    example: &Example,
    default: &'a Metric,
    metrics: &Metrics,
) -> Result<Cow<'a, Metric>, EvalError> {
    match example.record.get("metric") {
        Some(Value::String(name)) => {
            metrics
                .parse(name)
                .map(Cow::Owned)
                .map_err(|e| EvalError::Example {
                    id: example.id.clone(),
                    message: e.to_string(),
                })
        }
        _ => Ok(Cow::Borrowed(default)),
    }
}

/// The regex crate's error on one line: its final `error: …` line, or the whole
/// message joined.
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Text as `Exact` compares it: trimmed, whitespace runs made one space, lower-case,
/// one trailing period removed.
pub fn normalize_text(text: &str) -> String {
    let text = collapse_lower(text);
    let text = text.strip_suffix('.').unwrap_or(&text);
    text.trim_end().to_owned()
}

fn collapse_lower(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A number found in text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number {
    /// Its value (a fraction `3/4` is `0.75`; a percent sign is dropped).
    pub value: f64,
    /// How many decimals it was written with (`12.50` → 2); `None` when it was
    /// written as a fraction or in scientific notation.
    pub decimals: Option<usize>,
}

/// One numeric token: optional sign and `$`, digits with optional thousands
/// separators (validated afterwards), decimals, exponent, `/denominator`, `%`.
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([-+\x{2212}]?)(\$?)(\d[\d,]*(?:\.\d+)?|\.\d+)([eE][-+]?\d+)?(?:/(\d+))?%?")
        .expect("number pattern")
});

/// LaTeX fractions, `\frac{3}{4}` (also `\dfrac`, `\tfrac`).
static FRAC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\\[dt]?frac\{\s*([^{}]*?)\s*\}\{\s*([^{}]*?)\s*\}").expect("frac pattern")
});

/// The number an answer gives: inside its last `\boxed{…}` if there is one, else the
/// last number in the text. Allowed: a sign, `$`, thousands separators (`1,234,567`;
/// badly grouped commas separate numbers), decimals, scientific notation (`1e6`), a
/// trailing `%` (dropped), integer fractions (`3/4` is 0.75) and LaTeX `\frac`.
/// Digits glued to a preceding letter (`x2`, `H2O`) are not numbers; a `-` glued to a
/// preceding letter or digit is a hyphen (`COVID-19` is 19, `3-4` is 3 and 4).
pub fn extract_number(text: &str) -> Option<Number> {
    let scope = last_boxed(text).unwrap_or(text);
    let scope = FRAC.replace_all(scope, "$1/$2").replace("{,}", ",");
    numbers(&scope).last().copied()
}

/// The content of the last `\boxed{…}` (or `\fbox{…}`), braces balanced.
fn last_boxed(text: &str) -> Option<&str> {
    let start = ["\\boxed{", "\\fbox{"]
        .iter()
        .filter_map(|marker| text.rfind(marker).map(|i| i + marker.len()))
        .max()?;
    let mut depth = 1usize;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i]);
                }
            }
            _ => {}
        }
    }
    Some(&text[start..])
}

/// Every number in `text`, in order.
fn numbers(text: &str) -> Vec<Number> {
    let mut out = Vec::new();
    for caps in NUMBER.captures_iter(text) {
        let (Some(all), Some(body)) = (caps.get(0), caps.get(3)) else {
            continue;
        };
        let body_text = body.as_str().trim_end_matches(',');
        let before = text[..all.start()].chars().next_back();
        let glued = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        let sign = caps.get(1).map_or("", |m| m.as_str());
        let has_dollar = caps.get(2).is_some_and(|m| !m.as_str().is_empty());
        // A sign glued to a word or number is a hyphen or an operator.
        let negative = matches!(sign, "-" | "\u{2212}") && !glued(before);
        let before_body = if sign.is_empty() { before } else { Some('-') };
        if !has_dollar && sign.is_empty() && glued(before_body) {
            continue;
        }
        let exponent = caps.get(4).map(|m| m.as_str());
        let denominator = caps.get(5).map(|m| m.as_str());
        let pieces = split_thousands(body_text);
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let sign = if negative && i == 0 { -1.0 } else { 1.0 };
            let (exponent, denominator) = if i == last {
                (exponent, denominator)
            } else {
                (None, None)
            };
            out.extend(number(piece, exponent, denominator, sign));
        }
    }
    out
}

/// Digits with commas: one number when the commas group thousands (`1,234,567`),
/// else one number per comma-separated piece (`1,2,3`). Commas are removed.
fn split_thousands(body: &str) -> Vec<String> {
    let (integer, decimals) = match body.find('.') {
        Some(i) => body.split_at(i),
        None => (body, ""),
    };
    if !integer.contains(',') {
        return vec![body.to_owned()];
    }
    let groups: Vec<&str> = integer.split(',').collect();
    let grouped = (1..=3).contains(&groups[0].len()) && groups[1..].iter().all(|g| g.len() == 3);
    if grouped {
        return vec![format!("{}{decimals}", groups.concat())];
    }
    let mut pieces: Vec<String> = groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(last) = pieces.last_mut() {
        last.push_str(decimals);
    } else {
        pieces.push(decimals.to_owned());
    }
    pieces
}

/// The value of one piece, or the numerator and denominator as two numbers when the
/// fraction is not one of integers over a non-zero integer.
fn number(
    digits: &str,
    exponent: Option<&str>,
    denominator: Option<&str>,
    sign: f64,
) -> Vec<Number> {
    let Ok(base) = format!("{digits}{}", exponent.unwrap_or("")).parse::<f64>() else {
        return Vec::new();
    };
    let decimals = match (exponent, digits.find('.')) {
        (None, Some(i)) => Some(digits.len() - i - 1),
        (None, None) => Some(0),
        (Some(_), _) => None,
    };
    let value = sign * base;
    let own = Number { value, decimals };
    let Some(den) = denominator else {
        return finite(own);
    };
    let den_value = den.parse::<f64>().unwrap_or(0.0);
    if decimals == Some(0) && den_value != 0.0 {
        return finite(Number {
            value: value / den_value,
            decimals: None,
        });
    }
    let mut both = finite(own);
    both.extend(finite(Number {
        value: den_value,
        decimals: Some(0),
    }));
    both
}

fn finite(n: Number) -> Vec<Number> {
    if n.value.is_finite() {
        vec![n]
    } else {
        Vec::new()
    }
}

fn numbers_match(got: f64, want: &Number, rel_tolerance: f64) -> bool {
    let scale = want.value.abs().max(1.0);
    // A few ulps of slack, so `0.51` is within 0.01 of `0.5` as written.
    let slack = 4.0 * f64::EPSILON * scale.max(got.abs());
    if (got - want.value).abs() <= rel_tolerance * scale + slack {
        return true;
    }
    match want.decimals {
        Some(k @ 1..=4) => {
            let scale = 10f64.powi(k as i32);
            (got * scale).round() == (want.value * scale).round()
        }
        _ => false,
    }
}

/// A number as text: the shortest form that reads back as the same `f64`
/// (`1234.5`, `1000`, `0.75`), never `-0`.
pub fn format_number(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else {
        value.to_string()
    }
}
