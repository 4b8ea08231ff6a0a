//! Needle in a haystack on the context path: the model reads the whole context itself
//! (no index, no retrieval) and is asked for one sentence hidden in it.
//!
//! A [`Grid`] runs every cell of lengths × depths × [`Variant`]s:
//!
//! - the **haystack** is about `length` tokens of the user's [`Documents`] (their
//!   `.txt` files in sorted order, repeated if too short, cut at a sentence boundary),
//!   the needle included ([`Haystack`]);
//! - the **needle** goes in at the sentence boundary nearest `depth`% of the
//!   haystack's tokens (0% the very start, 100% the very end);
//! - the [`Reader`] (the model, for the CLI) reads the [`Prompt`] — the haystack in
//!   `<context>` tags and the question — and answers; the [`Variant::Tip`] starts the
//!   assistant's turn with "Here is the most relevant sentence in the context:";
//! - the answer is graded by the needle's key phrases ([`Needle::grade`]: the share
//!   present, case-insensitive; found when all are).
//!
//! Cells run length by length, depths from the deepest down and the variants of a
//! cell back to back, so a reader that keeps its KV cache evaluates only what follows
//! the longest common prefix: the tip variant re-reads nothing but its prefill, and a
//! shallower needle reuses the haystack in front of it.
//!
//! Each finished cell is appended to a cache (one fsynced JSON line, keyed by length,
//! depth and variant; the header names the reader, its configuration, the needle and
//! the documents), so a killed grid continues without redoing a cell. The
//! [`GridReport`] is written as JSON ([`GridReport::write_json`]) and drawn as an SVG
//! heatmap in the style of the LLMTest_NeedleInAHaystack charts
//! ([`GridReport::svg`]: x the depth, y the context length, green found to red
//! missed, one panel per variant).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::io_err;
use crate::journal::{Journal, Kind, Opened};
use crate::system::Tokens;
use crate::EvalError;

/// The sentence hidden by default (LLMTest_NeedleInAHaystack's, also `jielong bench
/// --needle`'s).
pub const DEFAULT_NEEDLE: &str =
    "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.";
/// The question whose answer is [`DEFAULT_NEEDLE`].
pub const DEFAULT_QUESTION: &str = "What is the best thing to do in San Francisco?";
/// The key phrases an answer to [`DEFAULT_QUESTION`] must hold.
pub const DEFAULT_KEYS: [&str; 2] = ["sandwich", "dolores park"];
/// The system message of every prompt (LLMTest_NeedleInAHaystack's).
pub const SYSTEM_PROMPT: &str =
    "You are a helpful AI bot that answers questions for a user. Keep your response short and direct.";
/// What [`Variant::Tip`] starts the assistant's turn with.
pub const TIP_PREFILL: &str = "Here is the most relevant sentence in the context:";

/// What reads a haystack and answers: the model, for the CLI; a script, in tests.
///
/// Two abilities: counting the tokens of a text (to cut haystacks to a length and to
/// place the needle) and answering a [`Prompt`]. A reader that keeps a KV cache
/// gains from the order the grid asks in (see the module docs).
pub trait Reader: Send + Sync {
    /// A name for reports and the cache header (e.g. `qwen2.5-coder-0.5b`).
    fn name(&self) -> String;

    /// What else decides the answers (sampling, answer length, …): a cache written
    /// with another configuration is refused. Default: nothing.
    fn config(&self) -> Value {
        Value::Null
    }

    /// The tokens of `text` as the model counts them inside a prompt.
    fn count_tokens(&self, text: &str) -> usize;

    /// Answers `prompt`: the text generated after the prompt (and its prefill), and
    /// the token counts if known. An `Err` is recorded as the cell's error.
    fn answer<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<Reply, ReadError>>;
}

/// Why a [`Reader`] gave no answer (the model's own error, kept whole).
pub type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// A chat of one question: a system message, a user message, and what the
/// assistant's turn starts with (the prefill; empty for none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// The system message.
    pub system: String,
    /// The user message: the haystack in `<context>` tags, then the question.
    pub user: String,
    /// The start of the assistant's turn, which the answer continues.
    pub prefill: String,
}

impl Prompt {
    /// The prompt that puts `question` about `context` to the reader, as `variant`.
    pub fn new(context: &str, question: &str, variant: Variant) -> Prompt {
        Prompt {
            system: SYSTEM_PROMPT.to_string(),
            user: format!(
                "<context>\n{context}\n</context>\n\n{question} Don't give information outside the document or repeat your findings."
            ),
            prefill: variant.prefill().to_string(),
        }
    }
}

/// A [`Reader`]'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The generated text (after the prefill, which it does not repeat).
    pub text: String,
    /// Token counts (prompt, cached, evaluated, generated), zero when unknown.
    pub tokens: Tokens,
}

/// How the question is put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The question alone; the model's turn starts empty.
    Plain,
    /// The model's turn starts with [`TIP_PREFILL`] (Anthropic's tip for long
    /// contexts), so it begins by quoting a sentence.
    Tip,
}

impl Variant {
    /// Every variant, in the default order.
    pub const ALL: [Variant; 2] = [Variant::Plain, Variant::Tip];

    /// `plain` or `tip`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Tip => "tip",
        }
    }

    /// What the assistant's turn starts with.
    pub fn prefill(self) -> &'static str {
        match self {
            Variant::Plain => "",
            Variant::Tip => TIP_PREFILL,
        }
    }

    /// A comma-separated list such as `plain,tip` (each once, at least one).
    pub fn parse_list(text: &str) -> Result<Vec<Variant>, EvalError> {
        let items = list_items("variants", text)?;
        let mut variants = Vec::new();
        for item in items {
            let variant: Variant = item.parse()?;
            if variants.contains(&variant) {
                return Err(setting(
                    "variants",
                    text,
                    format!("`{item}` is given twice"),
                ));
            }
            variants.push(variant);
        }
        Ok(variants)
    }
}

impl FromStr for Variant {
    type Err = EvalError;

    fn from_str(text: &str) -> Result<Variant, EvalError> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == text.trim())
            .ok_or_else(|| {
                setting(
                    "variants",
                    text,
                    "unknown variant (expected plain or tip)".to_string(),
                )
            })
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn setting(name: &str, text: &str, message: String) -> EvalError {
    EvalError::Setting {
        name: name.to_string(),
        text: text.to_string(),
        message,
    }
}

/// The trimmed items of a comma-separated list; an empty list or item is an error.
fn list_items<'a>(name: &str, text: &'a str) -> Result<Vec<&'a str>, EvalError> {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.iter().all(|i| i.is_empty()) {
        return Err(setting(name, text, "the list is empty".to_string()));
    }
    if items.iter().any(|i| i.is_empty()) {
        return Err(setting(name, text, "an item is empty".to_string()));
    }
    Ok(items)
}

/// Context lengths in tokens, comma-separated (`1000,2000,4000`): whole numbers above
/// 0, each once.
pub fn parse_lengths(text: &str) -> Result<Vec<usize>, EvalError> {
    let mut lengths = Vec::new();
    for item in list_items("lengths", text)? {
        let length: usize = item.parse().map_err(|_| {
            setting(
                "lengths",
                text,
                format!("`{item}` is not a whole number of tokens"),
            )
        })?;
        if length == 0 {
            return Err(setting("lengths", text, "a length must be above 0".into()));
        }
        if lengths.contains(&length) {
            return Err(setting("lengths", text, format!("{length} is given twice")));
        }
        lengths.push(length);
    }
    Ok(lengths)
}

/// Needle depths in percent of the haystack, comma-separated (`0,25,50,75,100`):
/// numbers from 0 to 100, each once.
pub fn parse_depths(text: &str) -> Result<Vec<f64>, EvalError> {
    let mut depths = Vec::new();
    for item in list_items("depths", text)? {
        let depth: f64 = item.parse().map_err(|_| {
            setting(
                "depths",
                text,
                format!("`{item}` is not a number (a percentage, 0 to 100)"),
            )
        })?;
        if !(0.0..=100.0).contains(&depth) {
            return Err(setting(
                "depths",
                text,
                format!("{item} is outside 0–100 (a percentage of the haystack)"),
            ));
        }
        if depths.contains(&depth) {
            return Err(setting("depths", text, format!("{item} is given twice")));
        }
        depths.push(depth);
    }
    Ok(depths)
}

/// The sentence hidden, the question asked for it, and the key phrases a right answer
/// holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needle {
    /// The sentence hidden in the haystack.
    pub sentence: String,
    /// The question whose answer it is.
    pub question: String,
    /// Phrases the answer must contain (case-insensitive); each is in the sentence.
    pub keys: Vec<String>,
}

impl Default for Needle {
    fn default() -> Needle {
        Needle {
            sentence: DEFAULT_NEEDLE.to_string(),
            question: DEFAULT_QUESTION.to_string(),
            keys: DEFAULT_KEYS.iter().map(|k| k.to_string()).collect(),
        }
    }
}

/// How an answer scored against the [`Needle`]'s keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    /// The share of the keys present, 0 to 1.
    pub score: f64,
    /// Whether every key is present.
    pub found: bool,
    /// The keys present.
    pub matched: Vec<String>,
}

impl Needle {
    /// A needle: the sentence, the question and its keys (a comma-separated list,
    /// e.g. `sandwich,dolores park`); each key must be in the sentence.
    pub fn new(sentence: &str, question: &str, keys: &str) -> Result<Needle, EvalError> {
        let sentence = sentence.trim();
        let question = question.trim();
        if sentence.is_empty() {
            return Err(setting("needle", sentence, "the needle is empty".into()));
        }
        if question.is_empty() {
            return Err(setting(
                "question",
                question,
                "the question is empty".into(),
            ));
        }
        let keys: Vec<String> = list_items("key", keys)?
            .into_iter()
            .map(str::to_string)
            .collect();
        let lower = sentence.to_lowercase();
        if let Some(missing) = keys.iter().find(|k| !lower.contains(&k.to_lowercase())) {
            return Err(setting(
                "key",
                &keys.join(","),
                format!("`{missing}` is not in the needle \"{sentence}\", so no answer could be graded found"),
            ));
        }
        Ok(Needle {
            sentence: sentence.to_string(),
            question: question.to_string(),
            keys,
        })
    }

    /// Grades `answer`: which keys it contains (case-insensitive; runs of whitespace
    /// count as one space).
    pub fn grade(&self, answer: &str) -> Grade {
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let answer = squash(&answer.to_lowercase());
        let matched: Vec<String> = self
            .keys
            .iter()
            .filter(|k| answer.contains(&squash(&k.to_lowercase())))
            .cloned()
            .collect();
        let score = if self.keys.is_empty() {
            0.0
        } else {
            matched.len() as f64 / self.keys.len() as f64
        };
        Grade {
            score,
            found: !self.keys.is_empty() && matched.len() == self.keys.len(),
            matched,
        }
    }
}

/// The texts a haystack is made of.
#[derive(Debug, Clone)]
pub struct Documents {
    /// Where they were read from (empty for texts given in code).
    pub dir: PathBuf,
    /// File name and text, in the order used.
    pub texts: Vec<(String, String)>,
}

impl Documents {
    /// The `.txt` files of `dir` (not its subfolders), in sorted order by name. A
    /// folder that is missing, empty, holds no `.txt` file or only blank ones is an
    /// error, as is a file that cannot be read as UTF-8.
    pub fn load(dir: &Path) -> Result<Documents, EvalError> {
        let meta = fs::metadata(dir).map_err(io_err("read the documents folder", dir))?;
        if !meta.is_dir() {
            return Err(EvalError::file(
                dir,
                "not a folder (give a folder of .txt documents)",
            ));
        }
        let mut entries = Vec::new();
        let mut any = false;
        for entry in fs::read_dir(dir).map_err(io_err("list the documents folder", dir))? {
            let entry = entry.map_err(io_err("list the documents folder", dir))?;
            any = true;
            let path = entry.path();
            let is_txt = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
            if is_txt && path.is_file() {
                entries.push(path);
            }
        }
        if !any {
            return Err(EvalError::file(
                dir,
                "the folder is empty (give a folder of .txt documents)",
            ));
        }
        if entries.is_empty() {
            return Err(EvalError::file(dir, "no .txt files in the folder"));
        }
        entries.sort();
        let mut texts = Vec::new();
        for path in entries {
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            let text = String::from_utf8(bytes)
                .map_err(|e| EvalError::file(&path, format!("not UTF-8 text: {e}")))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            texts.push((name, text));
        }
        let documents = Documents {
            dir: dir.to_path_buf(),
            texts,
        };
        if documents.sentences().is_empty() {
            return Err(EvalError::file(dir, "the .txt files hold no text"));
        }
        Ok(documents)
    }

    /// Documents given as (name, text) pairs, in this order.
    pub fn from_texts(texts: Vec<(String, String)>) -> Documents {
        Documents {
            dir: PathBuf::new(),
            texts,
        }
    }

    /// A SHA-256 of the names and texts (the cache is kept only for the same ones).
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        for (name, text) in &self.texts {
            hash.update((name.len() as u64).to_le_bytes());
            hash.update(name.as_bytes());
            hash.update((text.len() as u64).to_le_bytes());
            hash.update(text.as_bytes());
        }
        jielong_util::hex(&hash.finalize())
    }

    /// The documents' sentences in order, each with the whitespace before it (so
    /// that concatenated they give back the text; documents are separated by a blank
    /// line).
    fn sentences(&self) -> Vec<String> {
        let mut sentences = Vec::new();
        for (_, text) in &self.texts {
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let start = sentences.len();
            sentences.extend(split_sentences(text));
            if start > 0 {
                sentences[start].insert_str(0, "\n\n");
            }
        }
        sentences
    }
}

/// The longest piece without a sentence boundary before it is cut at a space.
const MAX_SENTENCE_BYTES: usize = 2000;

/// `text` (trimmed) as sentences: a sentence ends after `.`, `!` or `?` (and any
/// closing quotes or brackets) followed by whitespace, or at a blank line; the
/// whitespace between two sentences starts the second.
fn split_sentences(text: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let mut end = None;
        if matches!(c, '.' | '!' | '?') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | ']' | '”' | '’') {
                j += 1;
            }
            if j == chars.len() || chars[j].1.is_whitespace() {
                end = Some(j);
            }
        } else if c == '\n' {
            // A blank line ends a paragraph (a heading without a full stop, too).
            let mut j = i + 1;
            while j < chars.len() && chars[j].1.is_whitespace() && chars[j].1 != '\n' {
                j += 1;
            }
            if j < chars.len() && chars[j].1 == '\n' && at > start {
                end = Some(i);
            }
        }
        let byte_end = |j: usize| chars.get(j).map_or(text.len(), |c| c.0);
        if end.is_none() && at - start > MAX_SENTENCE_BYTES && c == ' ' {
            end = Some(i);
        }
        match end {
            Some(j) => {
                let cut = byte_end(j);
                if text[start..cut].trim().is_empty() {
                    i = j.max(i + 1);
                    continue;
                }
                sentences.push(text[start..cut].to_string());
                start = cut;
                i = j.max(i + 1);
            }
            None => i += 1,
        }
    }
    if !text[start..].trim().is_empty() {
        sentences.push(text[start..].to_string());
    } else if let Some(last) = sentences.last_mut() {
        last.push_str(&text[start..]);
    }
    sentences
}

/// The documents cut to a length, ready to take the needle at any depth.
#[derive(Debug, Clone)]
pub struct Haystack {
    /// The length asked for (the haystack with the needle), in tokens.
    pub length: usize,
    /// The sentences used, each with the whitespace before it.
    sentences: Vec<String>,
    /// `ends[i]`: tokens of the first `i` sentences (the boundary before sentence `i`);
    /// `ends[0] = 0`.
    bounds: Vec<usize>,
    needle: String,
}

/// A haystack with the needle in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The text.
    pub text: String,
    /// The depth asked for, in percent.
    pub depth: f64,
    /// Where the needle is, in percent of the haystack's tokens (the boundary
    /// nearest the depth asked for).
    pub placed_depth: f64,
    /// Tokens of the haystack before the needle.
    pub needle_token: usize,
}

impl Haystack {
    /// About `length` tokens of `documents` with room for `needle`: whole sentences,
    /// repeated from the start if the documents are too short, as many as fit.
    pub fn build(
        documents: &Documents,
        reader: &dyn Reader,
        length: usize,
        needle: &str,
    ) -> Result<Haystack, EvalError> {
        let source = documents.sentences();
        if source.is_empty() {
            return Err(EvalError::file(
                &documents.dir,
                "the documents hold no text",
            ));
        }
        let needle_tokens = reader.count_tokens(&format!(" {needle}"));
        let target = length.saturating_sub(needle_tokens);
        let mut sentences = Vec::new();
        let mut counts = Vec::new();
        let mut total = 0;
        for round in 0.. {
            let before = total;
            for (n, sentence) in source.iter().enumerate() {
                let sentence = if round > 0 && n == 0 {
                    format!("\n\n{sentence}")
                } else {
                    sentence.clone()
                };
                let tokens = reader.count_tokens(&sentence);
                if total + tokens > target {
                    break;
                }
                total += tokens;
                sentences.push(sentence);
                counts.push(tokens);
            }
            // Stop when full, when a sentence did not fit, or when a whole round
            // added nothing (a reader that counts no tokens).
            if total >= target || sentences.len() < source.len() * (round + 1) || total == before {
                break;
            }
        }
        // Counted whole, the text may differ from the sum of its sentences: drop
        // sentences from the end until it fits.
        loop {
            if sentences.is_empty() {
                return Err(EvalError::Setting {
                    name: "lengths".into(),
                    text: length.to_string(),
                    message: format!(
                        "{length} tokens do not hold the needle ({needle_tokens} tokens) and a sentence of the documents"
                    ),
                });
            }
            let actual = reader.count_tokens(&sentences.concat());
            if actual <= target {
                break;
            }
            let mut excess = actual - target;
            while excess > 0 && !sentences.is_empty() {
                sentences.pop();
                excess = excess.saturating_sub(counts.pop().unwrap_or(0));
            }
        }
        let mut bounds = Vec::with_capacity(counts.len() + 1);
        bounds.push(0);
        let mut sum = 0;
        for tokens in &counts {
            sum += tokens;
            bounds.push(sum);
        }
        Ok(Haystack {
            length,
            sentences,
            bounds,
            needle: needle.to_string(),
        })
    }

    /// The haystack's tokens without the needle (the sum of its sentences').
    pub fn tokens(&self) -> usize {
        self.bounds.last().copied().unwrap_or(0)
    }

    /// The haystack without the needle.
    pub fn text(&self) -> String {
        self.sentences.concat()
    }

    /// The haystack with the needle at the sentence boundary nearest `depth`% of its
    /// tokens (0: before the first sentence; 100: after the last).
    pub fn place(&self, depth: f64) -> Placed {
        let total = self.tokens();
        let want = depth.clamp(0.0, 100.0) / 100.0 * total as f64;
        let at = (0..self.bounds.len())
            .min_by(|&a, &b| {
                let da = (self.bounds[a] as f64 - want).abs();
                let db = (self.bounds[b] as f64 - want).abs();
                da.total_cmp(&db)
            })
            .unwrap_or(0);
        let mut text = String::new();
        text.push_str(&self.sentences[..at].concat());
        if at > 0 {
            text.push(' ');
        }
        text.push_str(&self.needle);
        if at == 0 && !self.sentences.is_empty() {
            text.push(' ');
        }
        text.push_str(&self.sentences[at..].concat());
        Placed {
            text,
            depth,
            placed_depth: if total == 0 {
                0.0
            } else {
                100.0 * self.bounds[at] as f64 / total as f64
            },
            needle_token: self.bounds[at],
        }
    }
}

/// One cell of the grid: one length, depth and variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The context length asked for, in tokens.
    pub length: usize,
    /// The depth asked for, in percent.
    pub depth: f64,
    /// How the question was put.
    pub variant: Variant,
    /// Tokens of the haystack with the needle, counted whole.
    pub context_tokens: usize,
    /// Where the needle is, in percent of the haystack's tokens.
    pub placed_depth: f64,
    /// Token counts of the answer: `tokens.prompt` is what the model read (the
    /// haystack, the question, the chat template, the prefill), `tokens.cached` what
    /// it found in its KV cache.
    pub tokens: Tokens,
    /// The text generated (after the prefill).
    pub answer: String,
    /// Why there is no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The share of the needle's keys in the answer, 0 to 1.
    pub score: f64,
    /// Whether every key is in the answer.
    pub found: bool,
    /// Seconds the answer took.
    pub seconds: f64,
}

impl Cell {
    /// The cache key: `LENGTH/DEPTH/VARIANT`.
    pub fn key(&self) -> String {
        cell_key(self.length, self.depth, self.variant)
    }
}

fn cell_key(length: usize, depth: f64, variant: Variant) -> String {
    format!("{length}/{depth}/{variant}")
}

/// Hears about a grid's progress.
pub trait GridObserver: Send + Sync {
    /// The grid starts: the cells still to run, in order (`(length, depth,
    /// variant)`), and how many come from the cache.
    fn started(&self, _todo: &[(usize, f64, Variant)], _cached: usize) {}
    /// A cell starts.
    fn cell_started(&self, _length: usize, _depth: f64, _variant: Variant) {}
    /// A cell finished.
    fn finished(&self, _cell: &Cell) {}
    /// Something worth telling that does not stop the grid.
    fn warning(&self, _message: &str) {}
}

impl GridObserver for () {}

/// A needle-in-a-haystack grid: lengths × depths × variants.
#[derive(Debug, Clone)]
pub struct Grid {
    lengths: Vec<usize>,
    depths: Vec<f64>,
    variants: Vec<Variant>,
    needle: Needle,
    cache: Option<PathBuf>,
    cancel: Option<Arc<AtomicBool>>,
}

impl Grid {
    /// A grid of every length × depth × variant (see [`parse_lengths`],
    /// [`parse_depths`], [`Variant::parse_list`]). Empty lists, a length of 0 or a
    /// depth outside 0–100 are errors.
    pub fn new(
        lengths: Vec<usize>,
        depths: Vec<f64>,
        variants: Vec<Variant>,
        needle: Needle,
    ) -> Result<Grid, EvalError> {
        if lengths.is_empty() {
            return Err(setting("lengths", "", "the list is empty".into()));
        }
        if lengths.contains(&0) {
            return Err(setting("lengths", "0", "a length must be above 0".into()));
        }
        if depths.is_empty() {
            return Err(setting("depths", "", "the list is empty".into()));
        }
        if let Some(bad) = depths.iter().find(|d| !(0.0..=100.0).contains(*d)) {
            return Err(setting(
                "depths",
                &bad.to_string(),
                format!("{bad} is outside 0–100"),
            ));
        }
        if variants.is_empty() {
            return Err(setting("variants", "", "the list is empty".into()));
        }
        Ok(Grid {
            lengths,
            depths,
            variants,
            needle,
            cache: None,
            cancel: None,
        })
    }

    /// Keeps finished cells in `path` and reuses those already there.
    pub fn cache(mut self, path: impl Into<PathBuf>) -> Grid {
        self.cache = Some(path.into());
        self
    }

    /// Stops before the next cell once `flag` is set.
    pub fn cancel(mut self, flag: Arc<AtomicBool>) -> Grid {
        self.cancel = Some(flag);
        self
    }

    /// The lengths, in the order given.
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// The needle.
    pub fn needle(&self) -> &Needle {
        &self.needle
    }

    /// The configuration a cache must have been written with: the reader's, the
    /// needle and question (not the keys: cached answers are graded again), the
    /// prompt and the documents.
    fn cache_config(&self, reader: &dyn Reader, documents: &Documents) -> Value {
        json!({
            "reader": reader.config(),
            "needle": self.needle.sentence,
            "question": self.needle.question,
            "prompt": Prompt::new("{context}", &self.needle.question, Variant::Tip),
            "documents": documents.fingerprint(),
        })
    }

    /// Runs every cell not in the cache. Fails before running anything on an
    /// unusable cache or a length too short for the needle, and during the run only
    /// when the cache cannot be written; a reader's error is recorded in its cell
    /// (and that cell is run again on resume).
    pub async fn run(
        &self,
        reader: &dyn Reader,
        documents: &Documents,
        observer: &dyn GridObserver,
    ) -> Result<GridReport, EvalError> {
        let (mut cache, previous) = match &self.cache {
            Some(path) => {
                let config = self.cache_config(reader, documents);
                let opened: Opened<Cell> =
                    Journal::open(path, GRID_CACHE, &reader.name(), &config)?;
                for warning in &opened.warnings {
                    observer.warning(warning);
                }
                let cells = opened.records.into_iter().map(|c| (c.key(), c));
                (Some(opened.journal), cells.collect())
            }
            None => (None, HashMap::new()),
        };
        let mut haystacks = Vec::new();
        for &length in &self.lengths {
            haystacks.push(Haystack::build(
                documents,
                reader,
                length,
                &self.needle.sentence,
            )?);
        }
        // Deepest first: a shallower needle shares the haystack in front of it.
        let mut depths = self.depths.clone();
        depths.sort_by(|a, b| b.total_cmp(a));
        let mut order = Vec::new();
        for &length in &self.lengths {
            for &depth in &depths {
                for &variant in &self.variants {
                    order.push((length, depth, variant));
                }
            }
        }
        let mut done: HashMap<String, Cell> = HashMap::new();
        let mut cached = 0;
        for &(length, depth, variant) in &order {
            let key = cell_key(length, depth, variant);
            if let Some(cell) = previous.get(&key) {
                let mut cell = cell.clone();
                let grade = self.needle.grade(&cell.answer);
                cell.score = grade.score;
                cell.found = grade.found;
                done.insert(key, cell);
                cached += 1;
            }
        }
        let todo: Vec<(usize, f64, Variant)> = order
            .iter()
            .copied()
            .filter(|&(l, d, v)| !done.contains_key(&cell_key(l, d, v)))
            .collect();
        observer.started(&todo, cached);
        let mut interrupted = false;
        for &(length, depth, variant) in &todo {
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::SeqCst))
            {
                interrupted = true;
                break;
            }
            let Some(haystack) = haystacks.iter().find(|h| h.length == length) else {
                continue;
            };
            observer.cell_started(length, depth, variant);
            let placed = haystack.place(depth);
            let prompt = Prompt::new(&placed.text, &self.needle.question, variant);
            let started = Instant::now();
            let reply = reader.answer(&prompt).await;
            let seconds = started.elapsed().as_secs_f64();
            let (answer, tokens, error) = match reply {
                Ok(reply) => (reply.text, reply.tokens, None),
                Err(e) => (String::new(), Tokens::default(), Some(e.to_string())),
            };
            let grade = self.needle.grade(&answer);
            let cell = Cell {
                length,
                depth,
                variant,
                context_tokens: reader.count_tokens(&placed.text),
                placed_depth: placed.placed_depth,
                tokens,
                answer,
                error,
                score: grade.score,
                found: grade.found,
                seconds,
            };
            if let (Some(cache), None) = (cache.as_mut(), &cell.error) {
                cache.append(&cell, &format!("cell {}", cell.key()))?;
            }
            observer.finished(&cell);
            done.insert(cell.key(), cell);
        }
        let mut cells = Vec::new();
        for &length in &self.lengths {
            for &depth in &self.depths {
                for &variant in &self.variants {
                    if let Some(cell) = done.remove(&cell_key(length, depth, variant)) {
                        cells.push(cell);
                    }
                }
            }
        }
        Ok(GridReport {
            reader: reader.name(),
            needle: self.needle.clone(),
            documents: DocumentsInfo {
                dir: documents.dir.clone(),
                files: documents.texts.len(),
                fingerprint: documents.fingerprint(),
            },
            lengths: self.lengths.clone(),
            depths: self.depths.clone(),
            variants: self.variants.clone(),
            cells,
            cached,
            interrupted,
        })
    }
}

/// Where the haystack came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentsInfo {
    /// The folder.
    pub dir: PathBuf,
    /// How many `.txt` files.
    pub files: usize,
    /// [`Documents::fingerprint`].
    pub fingerprint: String,
}

/// What a grid found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GridReport {
    /// [`Reader::name`].
    pub reader: String,
    /// The needle, question and keys.
    pub needle: Needle,
    /// The documents.
    pub documents: DocumentsInfo,
    /// The lengths asked for, in tokens.
    pub lengths: Vec<usize>,
    /// The depths asked for, in percent.
    pub depths: Vec<f64>,
    /// The variants.
    pub variants: Vec<Variant>,
    /// Every finished cell, by length, depth and variant.
    pub cells: Vec<Cell>,
    /// Cells taken from the cache.
    pub cached: usize,
    /// Whether the grid was stopped before every cell ran.
    pub interrupted: bool,
}

impl GridReport {
    /// The cell of `length`, `depth` and `variant`, if it ran.
    pub fn cell(&self, length: usize, depth: f64, variant: Variant) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.length == length && c.depth == depth && c.variant == variant)
    }

    /// Cells found and cells run, of `variant` (all variants for `None`).
    pub fn found(&self, variant: Option<Variant>) -> (usize, usize) {
        let cells = self
            .cells
            .iter()
            .filter(|c| variant.map_or(true, |v| c.variant == v));
        cells.fold((0, 0), |(f, n), c| (f + usize::from(c.found), n + 1))
    }

    /// The cells every grid would have (lengths × depths × variants).
    pub fn size(&self) -> usize {
        self.lengths.len() * self.depths.len() * self.variants.len()
    }

    /// Writes the report as pretty JSON, atomically.
    pub fn write_json(&self, path: &Path) -> Result<(), EvalError> {
        let mut value = serde_json::to_value(self)
            .map_err(|e| EvalError::file(path, format!("cannot encode the report: {e}")))?;
        let summary: Vec<Value> = self
            .variants
            .iter()
            .map(|&v| {
                let (found, total) = self.found(Some(v));
                let seconds: f64 = self
                    .cells
                    .iter()
                    .filter(|c| c.variant == v)
                    .map(|c| c.seconds)
                    .sum();
                json!({"variant": v, "found": found, "total": total, "seconds": seconds})
            })
            .collect();
        value["summary"] = Value::Array(summary);
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| EvalError::file(path, format!("cannot encode the report: {e}")))?;
        jielong_util::write_atomic(path, format!("{text}\n").as_bytes())?;
        Ok(())
    }

    /// Writes [`GridReport::svg`] to `path`, atomically.
    pub fn write_svg(&self, path: &Path) -> Result<(), EvalError> {
        jielong_util::write_atomic(path, self.svg().as_bytes())?;
        Ok(())
    }

    /// The grid as an SVG heatmap, one panel per variant side by side: x the depth,
    /// y the context length, each cell coloured by its score (green found, yellow
    /// half, red missed; grey not run or failed) and labelled with it, a title, axis
    /// labels and a colour legend. Each cell is a `<rect class="cell">` whose
    /// `<title>` holds the answer.
    pub fn svg(&self) -> String {
        const CELL_H: usize = 34;
        const LEFT: usize = 92;
        const TOP: usize = 112;
        const GAP: usize = 48;
        const LEGEND_W: usize = 96;
        let cols = self.depths.len().max(1);
        let rows = self.lengths.len();
        // Cells at least 64 wide, a panel at least 240 (room for its title).
        let cell_w = 64.max(240usize.div_ceil(cols));
        let panel_w = cols * cell_w;
        let panels = self.variants.len();
        let (found, total) = self.found(None);
        let title = format!(
            "Needle in a haystack: {} ({found}/{total} found)",
            self.reader
        );
        let needle_line = format!("Needle: {}", shorten(&self.needle.sentence, 120));
        let question_line = format!("Question: {}", shorten(&self.needle.question, 120));
        let note = format!(
            "Score: the share of the keys ({}) in the answer. Tip: the answer starts with \u{201c}{TIP_PREFILL}\u{201d}",
            shorten(&self.needle.keys.join(", "), 60)
        );
        let source = format!(
            "Haystack: {} .txt documents from {}",
            self.documents.files,
            shorten(&self.documents.dir.display().to_string(), 80)
        );
        // Rough text widths (Helvetica is about 0.55 em per character).
        let text_w = |text: &str, size: f64| (text.chars().count() as f64 * size * 0.55) as usize;
        let grid_w = LEFT + panels * panel_w + panels.saturating_sub(1) * GAP + 24 + LEGEND_W;
        let width = grid_w
            .max(text_w(&title, 18.0) + 40)
            .max(text_w(&needle_line, 11.0) + 40)
            .max(text_w(&question_line, 11.0) + 40)
            .max(LEFT + text_w(&note, 10.0) + 20)
            .max(LEFT + text_w(&source, 10.0) + 20);
        let height = TOP + rows * CELL_H + 88;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">"#
        );
        let _ = writeln!(
            svg,
            r##"<defs><linearGradient id="legend" x1="0" y1="1" x2="0" y2="0"><stop offset="0" stop-color="{MISSED}"/><stop offset="0.5" stop-color="{HALF}"/><stop offset="1" stop-color="{FOUND}"/></linearGradient></defs>"##
        );
        let _ = writeln!(
            svg,
            r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="28" font-size="18" font-weight="bold" text-anchor="middle">{}</text>"#,
            width / 2,
            escape(&title)
        );
        for (n, line) in [&needle_line, &question_line].iter().enumerate() {
            let _ = writeln!(
                svg,
                r##"<text x="{}" y="{}" font-size="11" text-anchor="middle" fill="#444">{}</text>"##,
                width / 2,
                48 + 15 * n,
                escape(line)
            );
        }
        for (p, &variant) in self.variants.iter().enumerate() {
            let x0 = LEFT + p * (panel_w + GAP);
            let (f, n) = self.found(Some(variant));
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" font-size="14" font-weight="bold" text-anchor="middle">{variant} ({f}/{n} found)</text>"#,
                x0 + panel_w / 2,
                TOP - 12,
            );
            for (r, &length) in self.lengths.iter().enumerate() {
                let y = TOP + r * CELL_H;
                if p == 0 {
                    let _ = writeln!(
                        svg,
                        r#"<text x="{}" y="{}" font-size="12" text-anchor="end" dominant-baseline="middle">{length}</text>"#,
                        x0 - 8,
                        y + CELL_H / 2
                    );
                }
                for (c, &depth) in self.depths.iter().enumerate() {
                    let x = x0 + c * cell_w;
                    let (fill, label, tip) = match self.cell(length, depth, variant) {
                        Some(cell) if cell.error.is_none() => (
                            colour(cell.score),
                            format_score(cell.score),
                            format!(
                                "{length} tokens ({} read), depth {depth}% (placed at {:.1}%), {variant}: {}",
                                cell.tokens.prompt,
                                cell.placed_depth,
                                shorten(cell.answer.trim(), 300)
                            ),
                        ),
                        Some(cell) => (
                            "#9e9e9e".to_string(),
                            "err".to_string(),
                            format!(
                                "{length} tokens, depth {depth}%, {variant}: {}",
                                cell.error.as_deref().unwrap_or_default()
                            ),
                        ),
                        None => (
                            "#e0e0e0".to_string(),
                            "–".to_string(),
                            format!("{length} tokens, depth {depth}%, {variant}: not run"),
                        ),
                    };
                    let _ = writeln!(
                        svg,
                        r#"<rect class="cell" x="{x}" y="{y}" width="{cell_w}" height="{CELL_H}" fill="{fill}" stroke="white" stroke-width="1"><title>{}</title></rect>"#,
                        escape(&tip)
                    );
                    let _ = writeln!(
                        svg,
                        r##"<text x="{}" y="{}" font-size="12" text-anchor="middle" dominant-baseline="middle" fill="#1a1a1a">{}</text>"##,
                        x + cell_w / 2,
                        y + CELL_H / 2,
                        escape(&label)
                    );
                }
            }
            for (c, &depth) in self.depths.iter().enumerate() {
                let _ = writeln!(
                    svg,
                    r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{depth}</text>"#,
                    x0 + c * cell_w + cell_w / 2,
                    TOP + rows * CELL_H + 18
                );
            }
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" font-size="13" text-anchor="middle">Depth of the needle (%)</text>"#,
                x0 + panel_w / 2,
                TOP + rows * CELL_H + 40
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="20" y="{y}" font-size="13" text-anchor="middle" transform="rotate(-90 20 {y})">Context length (tokens)</text>"#,
            y = TOP + rows * CELL_H / 2
        );
        let lx = grid_w - LEGEND_W + 10;
        let lh = (rows * CELL_H).max(60);
        let _ = writeln!(
            svg,
            r#"<text x="{lx}" y="{}" font-size="12" font-weight="bold">Score</text>"#,
            TOP - 12
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{lx}" y="{TOP}" width="16" height="{lh}" fill="url(#legend)" stroke="#888" stroke-width="0.5"/>"##
        );
        for (value, label) in [(1.0, "1 found"), (0.5, "0.5"), (0.0, "0 missed")] {
            let y = TOP as f64 + (1.0 - value) * lh as f64;
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{y:.0}" font-size="11" dominant-baseline="middle">{label}</text>"#,
                lx + 22
            );
        }
        for (n, line) in [&note, &source].iter().enumerate() {
            let _ = writeln!(
                svg,
                r##"<text x="{LEFT}" y="{}" font-size="10" fill="#666">{}</text>"##,
                height - 24 + 14 * n,
                escape(line)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The colours of LLMTest_NeedleInAHaystack's heatmap (missed, half, found).
const MISSED: &str = "#F0496E";
const HALF: &str = "#EBB839";
const FOUND: &str = "#0CD79F";

/// The colour of `score` (0 to 1) between [`MISSED`], [`HALF`] and [`FOUND`].
fn colour(score: f64) -> String {
    let rgb = |hex: &str| -> [f64; 3] {
        let v = u32::from_str_radix(&hex[1..], 16).unwrap_or(0);
        [
            f64::from((v >> 16) & 0xff),
            f64::from((v >> 8) & 0xff),
            f64::from(v & 0xff),
        ]
    };
    let s = score.clamp(0.0, 1.0);
    let (a, b, t) = if s <= 0.5 {
        (rgb(MISSED), rgb(HALF), s * 2.0)
    } else {
        (rgb(HALF), rgb(FOUND), (s - 0.5) * 2.0)
    };
    let mix = |i: usize| (a[i] + (b[i] - a[i]) * t).round() as u8;
    format!("#{:02X}{:02X}{:02X}", mix(0), mix(1), mix(2))
}

/// `1`, `0.5`, `0.33`, `0`.
fn format_score(score: f64) -> String {
    let text = format!("{score:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// `text` on one line, at most `max` characters (with an ellipsis when cut).
fn shorten(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        line
    } else {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// `text` with XML's special characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// The terminal's view: per variant, found/total per length × depth (each cell run
/// once, so `1/1` or `0/1`; the last column and row sum them), then every variant
/// together.
impl fmt::Display for GridReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tables: Vec<(String, Vec<Variant>)> = self
            .variants
            .iter()
            .map(|&v| (v.name().to_string(), vec![v]))
            .collect();
        if self.variants.len() > 1 {
            let names: Vec<&str> = self.variants.iter().map(|v| v.name()).collect();
            tables.push((names.join(" + "), self.variants.clone()));
        }
        for (n, (name, variants)) in tables.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            let count = |length: Option<usize>, depth: Option<f64>| -> String {
                let (mut found, mut total) = (0, 0);
                for cell in &self.cells {
                    if variants.contains(&cell.variant)
                        && length.map_or(true, |l| l == cell.length)
                        && depth.map_or(true, |d| d == cell.depth)
                    {
                        total += 1;
                        found += usize::from(cell.found);
                    }
                }
                if total == 0 {
                    "-".to_string()
                } else {
                    format!("{found}/{total}")
                }
            };
            writeln!(
                f,
                "found/total, {name} (rows: length in tokens; columns: depth %)"
            )?;
            write!(f, "{:>8}", "length")?;
            for depth in &self.depths {
                write!(f, " {:>7}", format!("{depth}%"))?;
            }
            writeln!(f, " {:>7}", "all")?;
            for &length in &self.lengths {
                write!(f, "{length:>8}")?;
                for &depth in &self.depths {
                    write!(f, " {:>7}", count(Some(length), Some(depth)))?;
                }
                writeln!(f, " {:>7}", count(Some(length), None))?;
            }
            write!(f, "{:>8}", "all")?;
            for &depth in &self.depths {
                write!(f, " {:>7}", count(None, Some(depth)))?;
            }
            writeln!(f, " {:>7}", count(None, None))?;
        }
        Ok(())
    }
}

/// A needle grid's cache: a journal of cells, headed `{"needle_grid": …}`.
const GRID_CACHE: Kind = Kind {
    key: "needle_grid",
    file: "a needle grid cache",
    record: "grid cell",
};

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Words as tokens; answers from a script: the needle's sentence when the
    /// needle's depth is at most `finds_up_to` percent of the words, else "I don't
    /// know"; the tip variant always quotes it.
    struct Fake {
        finds_up_to: f64,
        asked: Mutex<Vec<(usize, String)>>,
    }

    impl Fake {
        fn new(finds_up_to: f64) -> Fake {
            Fake {
                finds_up_to,
                asked: Mutex::new(Vec::new()),
            }
        }

        fn asked(&self) -> Vec<(usize, String)> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl Reader for Fake {
        fn name(&self) -> String {
            "fake".into()
        }

        fn count_tokens(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }

        fn answer<'a>(&'a self, prompt: &'a Prompt) -> BoxFuture<'a, Result<Reply, ReadError>> {
            let words = self.count_tokens(&prompt.user);
            self.asked
                .lock()
                .unwrap()
                .push((words, prompt.prefill.clone()));
            let context = prompt.user.split("</context>").next().unwrap_or("");
            let before = context.split(DEFAULT_NEEDLE).next().unwrap_or("");
            // Of the haystack's words without the needle's (and `<context>`).
            let haystack = self.count_tokens(context) - 1 - self.count_tokens(DEFAULT_NEEDLE);
            let depth = 100.0 * (self.count_tokens(before) - 1) as f64 / haystack as f64;
            let text = if !prompt.prefill.is_empty() || depth <= self.finds_up_to {
                format!(" {DEFAULT_NEEDLE}")
            } else if depth <= self.finds_up_to + 30.0 {
                "Eat a sandwich.".to_string()
            } else {
                "I don't know.".to_string()
            };
            Box::pin(async move {
                Ok(Reply {
                    text,
                    tokens: Tokens {
                        prompt: words,
                        ..Tokens::default()
                    },
                })
            })
        }
    }

    fn essays() -> Documents {
        let a = "Alpha one two three. Beta four five six seven! Gamma eight nine?\n\nA heading\n\nDelta ten \"eleven.\" Epsilon twelve.";
        let b = "Zeta thirteen fourteen. Eta fifteen sixteen seventeen eighteen.";
        Documents::from_texts(vec![("a.txt".into(), a.into()), ("b.txt".into(), b.into())])
    }

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn sentences_keep_the_text_and_end_at_full_stops_and_blank_lines() {
        let docs = essays();
        let sentences = docs.sentences();
        assert_eq!(
            sentences.concat(),
            format!("{}\n\n{}", docs.texts[0].1, docs.texts[1].1)
        );
        assert_eq!(sentences[0], "Alpha one two three.");
        assert_eq!(sentences[1], " Beta four five six seven!");
        assert_eq!(sentences[3], "\n\nA heading");
        assert_eq!(sentences[4], "\n\nDelta ten \"eleven.\"");
        assert_eq!(sentences[6], "\n\nZeta thirteen fourteen.");
        assert_eq!(sentences.len(), 8);
    }

    #[test]
    fn haystacks_have_about_the_length_asked_for() {
        let fake = Fake::new(100.0);
        let docs = essays();
        let needle_words = DEFAULT_NEEDLE.split_whitespace().count();
        for length in [30, 57, 100, 1000] {
            let haystack = Haystack::build(&docs, &fake, length, DEFAULT_NEEDLE).unwrap();
            let with_needle = fake.count_tokens(&haystack.place(50.0).text);
            assert!(with_needle <= length, "{length}: {with_needle}");
            // Short by less than the longest sentence (5 words here).
            assert!(with_needle + 5 >= length, "{length}: {with_needle}");
            assert_eq!(haystack.tokens() + needle_words, with_needle);
        }
        // Repeated: the second round starts after a blank line.
        let long = Haystack::build(&docs, &fake, 100, DEFAULT_NEEDLE).unwrap();
        assert!(
            long.text().contains("eighteen.\n\nAlpha one"),
            "{}",
            long.text()
        );
        // Too short for the needle and a sentence.
        let err = Haystack::build(&docs, &fake, 10, DEFAULT_NEEDLE).unwrap_err();
        assert!(err.to_string().contains("do not hold the needle"), "{err}");
    }

    #[test]
    fn the_needle_goes_to_the_boundary_nearest_its_depth() {
        let fake = Fake::new(100.0);
        let haystack = Haystack::build(&essays(), &fake, 200, DEFAULT_NEEDLE).unwrap();
        let start = haystack.place(0.0);
        assert!(start.text.starts_with(&format!("{DEFAULT_NEEDLE} Alpha")));
        assert_eq!(start.placed_depth, 0.0);
        let end = haystack.place(100.0);
        assert_eq!(end.text, format!("{} {DEFAULT_NEEDLE}", haystack.text()));
        assert_eq!(end.placed_depth, 100.0);
        for depth in [10.0, 25.0, 50.0, 75.0, 90.0] {
            let placed = haystack.place(depth);
            let before = placed.text.split(DEFAULT_NEEDLE).next().unwrap();
            let words = fake.count_tokens(before);
            assert_eq!(words, placed.needle_token);
            // A sentence is at most 5 words: the nearest boundary is within 3.
            let want = depth / 100.0 * haystack.tokens() as f64;
            assert!(
                (words as f64 - want).abs() <= 3.0,
                "{depth}: {words} vs {want}"
            );
            // At a boundary: a full stop (or a heading) before it.
            let before = before.trim_end();
            assert!(
                before.ends_with(['.', '!', '?', '"']) || before.ends_with("heading"),
                "{before:?}"
            );
            let needle_words = DEFAULT_NEEDLE.split_whitespace().count();
            assert_eq!(
                fake.count_tokens(&placed.text),
                haystack.tokens() + needle_words
            );
        }
    }

    #[test]
    fn grading_counts_the_keys_case_insensitively() {
        let needle = Needle::default();
        let all = needle.grade("Eat a SANDWICH and sit in Dolores\n Park.");
        assert!(all.found);
        assert_eq!(all.score, 1.0);
        let half = needle.grade("A sandwich.");
        assert!(!half.found);
        assert_eq!(half.score, 0.5);
        assert_eq!(half.matched, vec!["sandwich".to_string()]);
        let none = needle.grade("I don't know.");
        assert_eq!((none.score, none.found), (0.0, false));

        let custom = Needle::new("The code is 4711.", "What is the code?", "4711").unwrap();
        assert!(custom.grade("It is 4711").found);
        let err = Needle::new("The code is 4711.", "What is the code?", "4712").unwrap_err();
        assert!(
            err.to_string().contains("`4712` is not in the needle"),
            "{err}"
        );
        assert!(Needle::new("", "Q?", "x").is_err());
        assert!(Needle::new("x", "Q?", " , ").is_err());
    }

    #[test]
    fn lists_are_parsed_with_clear_errors() {
        assert_eq!(parse_lengths("1000, 2000").unwrap(), vec![1000, 2000]);
        assert_eq!(parse_depths("0,12.5,100").unwrap(), vec![0.0, 12.5, 100.0]);
        assert_eq!(
            Variant::parse_list("tip,plain").unwrap(),
            vec![Variant::Tip, Variant::Plain]
        );
        let cases = [
            (
                parse_lengths("1000,x").unwrap_err(),
                "lengths `1000,x`: `x` is not a whole number",
            ),
            (parse_lengths("0").unwrap_err(), "a length must be above 0"),
            (parse_lengths("").unwrap_err(), "the list is empty"),
            (parse_lengths("1,,2").unwrap_err(), "an item is empty"),
            (parse_lengths("5,5").unwrap_err(), "5 is given twice"),
            (parse_depths("0,150").unwrap_err(), "150 is outside 0–100"),
            (parse_depths("-1").unwrap_err(), "-1 is outside 0–100"),
            (parse_depths("half").unwrap_err(), "`half` is not a number"),
            (
                Variant::parse_list("plain,hint").unwrap_err(),
                "unknown variant",
            ),
        ];
        for (err, want) in cases {
            assert!(err.to_string().contains(want), "{err} lacks {want}");
        }
        assert!(Grid::new(vec![], vec![0.0], vec![Variant::Plain], Needle::default()).is_err());
        assert!(Grid::new(vec![0], vec![0.0], vec![Variant::Plain], Needle::default()).is_err());
        assert!(Grid::new(
            vec![9],
            vec![101.0],
            vec![Variant::Plain],
            Needle::default()
        )
        .is_err());
    }

    #[test]
    fn documents_load_sorted_txt_files_and_refuse_bad_folders() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Documents::load(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        let empty = Documents::load(dir.path()).unwrap_err();
        assert!(empty.to_string().contains("the folder is empty"), "{empty}");
        fs::write(dir.path().join("notes.md"), "Not text.").unwrap();
        let no_txt = Documents::load(dir.path()).unwrap_err();
        assert!(no_txt.to_string().contains("no .txt files"), "{no_txt}");
        fs::write(dir.path().join("b.txt"), "  \n").unwrap();
        let blank = Documents::load(dir.path()).unwrap_err();
        assert!(blank.to_string().contains("hold no text"), "{blank}");
        fs::write(dir.path().join("a.txt"), "First. Second.").unwrap();
        fs::write(dir.path().join("c.TXT"), "Third.").unwrap();
        let docs = Documents::load(dir.path()).unwrap();
        let names: Vec<&str> = docs.texts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.txt", "b.txt", "c.TXT"]);
        assert_eq!(docs.sentences().concat(), "First. Second.\n\nThird.");
        fs::write(dir.path().join("d.txt"), [0xff, 0xfe]).unwrap();
        let bad = Documents::load(dir.path()).unwrap_err();
        assert!(bad.to_string().contains("d.txt: not UTF-8"), "{bad}");
    }

    fn grid(lengths: Vec<usize>, depths: Vec<f64>) -> Grid {
        Grid::new(lengths, depths, Variant::ALL.to_vec(), Needle::default()).unwrap()
    }

    #[test]
    fn a_grid_runs_every_cell_variants_back_to_back_deepest_first() {
        let fake = Fake::new(40.0);
        let depths = vec![0.0, 50.0, 100.0];
        let report = run(grid(vec![60, 120], depths).run(&fake, &essays(), &())).unwrap();
        assert_eq!(report.cells.len(), 12);
        assert_eq!(report.size(), 12);
        let asked = fake.asked();
        let prefills: Vec<bool> = asked.iter().map(|(_, p)| !p.is_empty()).collect();
        assert_eq!(prefills, [false, true].repeat(6));
        // The variants of one cell read the same prompt.
        for pair in asked.chunks(2) {
            assert_eq!(pair[0].0, pair[1].0);
        }
        let plain = |l, d| report.cell(l, d, Variant::Plain).unwrap();
        assert!(plain(60, 0.0).found);
        assert_eq!(plain(60, 50.0).score, 0.5);
        assert!(!plain(60, 100.0).found);
        assert_eq!(plain(60, 100.0).score, 0.0);
        assert!(report.cell(120, 100.0, Variant::Tip).unwrap().found);
        assert_eq!(report.found(Some(Variant::Tip)), (6, 6));
        assert_eq!(report.found(Some(Variant::Plain)), (2, 6));
        let context = plain(120, 50.0).context_tokens;
        assert!((116..=120).contains(&context), "{context}");
        let table = report.to_string();
        assert!(table.contains("found/total, plain"), "{table}");
        assert!(table.contains("found/total, plain + tip"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["60", "2/2", "1/2", "1/2", "4/6"]),
            "{table}"
        );
    }

    /// A well-formedness check of the SVG: every tag closed in order, attributes
    /// quoted, entities known. Returns the number of `<rect class="cell"` elements.
    fn check_xml(svg: &str) -> usize {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        let mut cells = 0;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            for entity in text.split('&').skip(1) {
                let name = entity.split(';').next().unwrap();
                assert!(
                    ["amp", "lt", "gt", "quot", "apos"].contains(&name),
                    "entity {name}"
                );
            }
            let close = rest[open..].find('>').expect("a tag ends") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "{tag}");
            assert_eq!(tag.matches('"').count() % 2, 0, "{tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.trim()), "closing {name}");
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap().to_string());
            }
            if tag.starts_with("rect class=\"cell\"") {
                cells += 1;
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert!(rest.trim().is_empty());
        cells
    }

    #[test]
    fn the_svg_is_well_formed_with_a_cell_per_length_depth_and_variant() {
        let fake = Fake::new(40.0);
        let depths = vec![0.0, 25.0, 50.0, 75.0, 100.0];
        let mut report = run(grid(vec![60, 90, 120], depths).run(&fake, &essays(), &())).unwrap();
        report.reader = "fake <&> \"model\"".into();
        let svg = report.svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(check_xml(&svg), 30);
        assert!(svg.contains("fake &lt;&amp;&gt; &quot;model&quot;"));
        assert!(svg.contains("Depth of the needle (%)"));
        assert!(svg.contains("Context length (tokens)"));
        assert!(svg.contains(&format!("fill=\"{FOUND}\"")));
        assert!(svg.contains(&format!("fill=\"{MISSED}\"")));
        assert!(svg.contains(&format!("fill=\"{HALF}\"")));
        // A cell that did not run is grey.
        report.cells.pop();
        let svg = report.svg();
        assert_eq!(check_xml(&svg), 30);
        assert!(svg.contains("not run"));
    }

    #[test]
    fn a_killed_grid_resumes_without_redoing_cells() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.jsonl");
        let docs = essays();
        let depths = vec![0.0, 50.0, 100.0];

        // Stopped after three cells.
        struct StopAfter(usize, Arc<AtomicBool>, Mutex<usize>);
        impl GridObserver for StopAfter {
            fn finished(&self, _cell: &Cell) {
                let mut n = self.2.lock().unwrap();
                *n += 1;
                if *n == self.0 {
                    self.1.store(true, Ordering::SeqCst);
                }
            }
        }
        let flag = Arc::new(AtomicBool::new(false));
        let first = Fake::new(40.0);
        let g = grid(vec![60, 120], depths.clone()).cache(&cache);
        let stop = StopAfter(3, flag.clone(), Mutex::new(0));
        let report = run(g.clone().cancel(flag).run(&first, &docs, &stop)).unwrap();
        assert!(report.interrupted);
        assert_eq!(report.cells.len(), 3);
        assert_eq!(first.asked().len(), 3);

        // A cut-short last line is ignored (that cell runs again).
        let mut text = fs::read_to_string(&cache).unwrap();
        text.push_str("{\"length\": 60, \"dep");
        fs::write(&cache, text).unwrap();

        struct Warned(Mutex<Vec<String>>, Mutex<usize>);
        impl GridObserver for Warned {
            fn started(&self, _todo: &[(usize, f64, Variant)], cached: usize) {
                *self.1.lock().unwrap() = cached;
            }
            fn warning(&self, message: &str) {
                self.0.lock().unwrap().push(message.to_string());
            }
        }
        let second = Fake::new(40.0);
        let warned = Warned(Mutex::new(Vec::new()), Mutex::new(0));
        let report = run(g.run(&second, &docs, &warned)).unwrap();
        assert!(!report.interrupted);
        assert_eq!(report.cells.len(), 12);
        assert_eq!(report.cached, 3);
        assert_eq!(*warned.1.lock().unwrap(), 3);
        assert_eq!(second.asked().len(), 9);
        assert!(warned.0.lock().unwrap()[0].contains("corrupt last line"));

        // Done: nothing runs again; other keys re-grade the cached answers.
        let third = Fake::new(40.0);
        let report = run(g.run(&third, &docs, &())).unwrap();
        assert_eq!(third.asked().len(), 0);
        assert_eq!(report.cached, 12);
        let strict = Grid::new(
            vec![60, 120],
            depths.clone(),
            Variant::ALL.to_vec(),
            Needle::new(DEFAULT_NEEDLE, DEFAULT_QUESTION, "sunny").unwrap(),
        )
        .unwrap()
        .cache(&cache);
        let regraded = run(strict.run(&third, &docs, &())).unwrap();
        assert_eq!(third.asked().len(), 0);
        assert_eq!(regraded.found(Some(Variant::Plain)), (2, 6));
        assert_eq!(regraded.found(Some(Variant::Tip)), (6, 6));

        // Another question or other documents: the cache is refused.
        let other = Grid::new(
            vec![60],
            depths,
            Variant::ALL.to_vec(),
            Needle::new(DEFAULT_NEEDLE, "Where to sit?", "sandwich").unwrap(),
        )
        .unwrap()
        .cache(&cache);
        let err = run(other.run(&third, &docs, &())).unwrap_err();
        assert!(matches!(err, EvalError::CacheMismatch { .. }), "{err}");
    }

    #[test]
    fn the_report_is_written_as_json_with_every_cell() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(40.0);
        let report = run(grid(vec![60], vec![0.0, 100.0]).run(&fake, &essays(), &())).unwrap();
        let path = dir.path().join("needle.json");
        report.write_json(&path).unwrap();
        let value: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let cells = value["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 4);
        for key in [
            "length",
            "depth",
            "variant",
            "context_tokens",
            "placed_depth",
            "tokens",
            "answer",
            "found",
            "score",
            "seconds",
        ] {
            assert!(cells[0].get(key).is_some(), "{key} in {}", cells[0]);
        }
        assert_eq!(cells[0]["tokens"]["prompt"], json!(fake.asked()[2].0));
        assert_eq!(value["summary"][1]["variant"], "tip");
        assert_eq!(value["summary"][1]["found"], 2);
    }
}
