//! Datasets: JSONL rows as [`Example`]s ([`load_jsonl`]), slices of them ([`Split`])
//! and seeded subsets ([`sample`]).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{io_err, EvalError};

/// One thing to evaluate: an input, the answer expected (if known) and the whole row
/// it came from (extra fields such as `category` or `metric` are read from there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Unique within a dataset: the row's id field, or its 1-based line number.
    pub id: String,
    /// What the system is asked.
    pub input: String,
    /// The reference answer; `None` for an ungraded example.
    pub expected: Option<String>,
    /// The whole JSON row.
    pub record: Map<String, Value>,
}

impl Example {
    /// An example built in code; its record holds `id`, `input` and (if given)
    /// `answer`. Add fields such as `category` with [`Example::with`].
    pub fn new(id: impl Into<String>, input: impl Into<String>, expected: Option<&str>) -> Self {
        let (id, input) = (id.into(), input.into());
        let mut record = Map::new();
        record.insert("id".into(), Value::String(id.clone()));
        record.insert("input".into(), Value::String(input.clone()));
        if let Some(answer) = expected {
            record.insert("answer".into(), Value::String(answer.into()));
        }
        Example {
            id,
            input,
            expected: expected.map(str::to_owned),
            record,
        }
    }

    /// The example with `key` set to `value` in its record.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.record.insert(key.into(), value.into());
        self
    }

    /// The record's `category` field, if it is a string.
    pub fn category(&self) -> Option<&str> {
        self.record.get("category").and_then(Value::as_str)
    }
}

/// Which fields of a JSONL row hold the input, the answer and the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The input field (a string); default `question`.
    pub input: String,
    /// The answer field (a string or a number; optional in each row); default `answer`.
    pub answer: String,
    /// The id field (a string or an integer); default `id`. A row without it, or every
    /// row when this is `None`, is identified by its 1-based line number.
    pub id: Option<String>,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            input: "question".into(),
            answer: "answer".into(),
            id: Some("id".into()),
        }
    }
}

/// The `turns` of an MT-Bench question (`{"question_id": 81, "category": "writing",
/// "turns": ["…", "…"], "reference": ["…"]}`): a non-empty list of strings.
pub fn mt_bench_turns(record: &Map<String, Value>) -> Option<Vec<&str>> {
    let turns: Option<Vec<&str>> = record
        .get("turns")?
        .as_array()?
        .iter()
        .map(Value::as_str)
        .collect();
    turns.filter(|t| !t.is_empty())
}

/// The first `reference` answer of an MT-Bench question, if it has one.
fn mt_bench_reference(record: &Map<String, Value>) -> Option<&Value> {
    mt_bench_turns(record)?;
    record.get("reference")?.as_array()?.first()
}

/// Reads a JSONL dataset: one JSON object per line, blank lines skipped. Errors name
/// the file and line (`data.jsonl:7: not a JSON object`); a file without examples
/// and duplicate ids are errors. Answers that are numbers become their text; GSM8K
/// answers become their final number ([`normalize_answer`]).
///
/// MT-Bench questions are read as published: a row without the input field but with
/// `turns` takes its first turn as the input (the rest stay in the record, see
/// [`mt_bench_turns`]), `question_id` as its id and `reference[0]` as its answer
/// when the configured fields are missing.
pub fn load_jsonl(path: &Path, fields: &Fields) -> Result<Vec<Example>, EvalError> {
    let bytes = std::fs::read(path).map_err(io_err("read", path))?;
    let mut examples = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let at = |message: String| EvalError::line(path, line, message);
        let text = std::str::from_utf8(raw).map_err(|_| at("not UTF-8".into()))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text).trim();
        if text.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| at(format!("invalid JSON: {}", json_message(&e))))?;
        let Value::Object(record) = value else {
            return Err(at("not a JSON object".into()));
        };
        let input = match record.get(&fields.input) {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(at(format!("field {:?} is not a string", fields.input))),
            None => match mt_bench_turns(&record) {
                Some(turns) => turns[0].to_string(),
                None => return Err(at(format!("no field {:?}", fields.input))),
            },
        };
        let answer = record
            .get(&fields.answer)
            .or_else(|| mt_bench_reference(&record));
        let expected = match answer {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(normalize_answer(s)),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                return Err(at(format!(
                    "field {:?} is not a string or a number",
                    fields.answer
                )))
            }
        };
        let question_id = "question_id".to_string();
        let id_field = fields
            .id
            .as_ref()
            .and_then(|f| record.get(f).map(|v| (f, v)))
            .or_else(|| {
                mt_bench_turns(&record)?;
                record.get("question_id").map(|v| (&question_id, v))
            });
        let id = match id_field {
            None => line.to_string(),
            Some((_, Value::String(s))) => s.clone(),
            Some((_, Value::Number(n))) if n.is_i64() || n.is_u64() => n.to_string(),
            Some((name, _)) => {
                return Err(at(format!("field {name:?} is not a string or an integer")))
            }
        };
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(at(format!("duplicate id {id:?} (first on line {first})")));
        }
        examples.push(Example {
            id,
            input,
            expected,
            record,
        });
    }
    if examples.is_empty() {
        return Err(EvalError::file(path, "no examples"));
    }
    Ok(examples)
}

/// serde_json's message without its " at line L column C" suffix (a JSONL row is one
/// line), with the column kept.
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let message = text
        .rfind(" at line ")
        .map_or(text.as_str(), |i| &text[..i]);
    format!("{message} (column {})", e.column())
}

/// A reference answer as compared: a GSM8K answer (`…reasoning…\n#### 1,234`) becomes
/// the text after its last `####`, trimmed, without commas (`1234`); any other text
/// is returned unchanged.
pub fn normalize_answer(text: &str) -> String {
    match text.rfind("####") {
        Some(i) => text[i + 4..].trim().replace(',', ""),
        None => text.to_owned(),
    }
}

/// A range of examples by position, written `START:END` with either side optional:
/// `100:` (from the 101st on), `:100` (the first 100), `50:150`, `0:` or `:` (all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    start: usize,
    end: Option<usize>,
}

impl Split {
    /// A split from `start` (inclusive) to `end` (exclusive, `None` for the end).
    /// `None` when `end < start`.
    pub fn new(start: usize, end: Option<usize>) -> Option<Split> {
        match end {
            Some(end) if end < start => None,
            _ => Some(Split { start, end }),
        }
    }

    /// Parses `START:END` (see [`Split`]).
    pub fn parse(text: &str) -> Result<Split, EvalError> {
        let bad = |message: &str| EvalError::Split {
            text: text.to_owned(),
            message: message.to_owned(),
        };
        let (start, end) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| bad("expected START:END, e.g. `100:`, `:100` or `50:150`"))?;
        let number = |s: &str, side: &str| -> Result<Option<usize>, EvalError> {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            s.parse()
                .map(Some)
                .map_err(|_| bad(&format!("{side} `{s}` is not a non-negative integer")))
        };
        let start = number(start, "start")?.unwrap_or(0);
        let end = number(end, "end")?;
        Split::new(start, end).ok_or_else(|| bad("end is before start"))
    }

    /// The first position included.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The first position excluded, `None` for "to the end".
    pub fn end(&self) -> Option<usize> {
        self.end
    }

    /// The part of `items` this split covers, clamped to their length.
    pub fn apply<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let end = self.end.unwrap_or(items.len()).min(items.len());
        let start = self.start.min(end);
        &items[start..end]
    }
}

impl FromStr for Split {
    type Err = EvalError;

    fn from_str(text: &str) -> Result<Split, EvalError> {
        Split::parse(text)
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            Some(end) => write!(f, "{}:{end}", self.start),
            None => write!(f, "{}:", self.start),
        }
    }
}

/// `n` items chosen by `seed`, in their original order: the same seed always picks
/// the same items (a splitmix64 generator driving a partial Fisher–Yates shuffle of
/// the positions). All items when `n >= items.len()`.
pub fn sample<T: Clone>(items: &[T], n: usize, seed: u64) -> Vec<T> {
    if n >= items.len() {
        return items.to_vec();
    }
    let mut rng = SplitMix64(seed);
    let mut positions: Vec<usize> = (0..items.len()).collect();
    for i in 0..n {
        let j = i + rng.below(items.len() - i);
        positions.swap(i, j);
    }
    let mut chosen = positions[..n].to_vec();
    chosen.sort_unstable();
    chosen.into_iter().map(|i| items[i].clone()).collect()
}

/// Steele, Lea and Flood's splitmix64: small, fast, and good enough to pick samples.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound > 0`), by multiply-shift (bias below 2^-32 for
    /// any dataset size).
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next()) * bound as u128) >> 64) as usize
    }
}
