//! `rag_search`: passages from a local index, numbered for citation.
//!
//! Every passage the tool returns gets a number that stays the same for the whole run
//! (the same chunk found twice keeps its number; new ones continue the count), so the
//! model can cite `[n]` and a [`CitationBook`] can list the sources under the
//! answer.

use std::sync::{Arc, Mutex};

use jielong_chat::tool::{Tool, ToolError, ToolKind};
use jielong_retrieval::{Hit, Index, RetrievalError, SearchRequest};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most passages one search returns.
const MAX_PASSAGES: usize = 8;
/// Passages per search unless set otherwise.
pub const DEFAULT_PASSAGES: usize = 3;
/// Longest passage shown to the model, in characters, unless set otherwise.
pub const DEFAULT_PASSAGE_CHARS: usize = 700;

/// A passage the tool has shown the model, with its citation number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Citation {
    /// The number the model cites it by (`[n]`), from 1.
    pub number: usize,
    /// The source file (or `file#record` for JSON lines).
    pub source: String,
    /// Its title.
    pub title: String,
    /// First line of the passage in the source, from 1.
    pub line_start: u64,
    /// Last line of the passage.
    pub line_end: u64,
}

impl Citation {
    /// `source:first-last`, the way editors and `grep -n` name a place.
    pub fn location(&self) -> String {
        if self.line_start == self.line_end {
            format!("{}:{}", self.source, self.line_start)
        } else {
            format!("{}:{}-{}", self.source, self.line_start, self.line_end)
        }
    }
}

/// `rag_search` over one [`Index`].
pub struct RagSearchTool {
    index: Arc<Index>,
    passages: usize,
    max_passage_chars: usize,
    shown: Arc<Mutex<Vec<Shown>>>,
}

/// A passage shown to the model: its citation, where it starts, and its text.
#[derive(Debug, Clone)]
struct Shown {
    citation: Citation,
    byte_start: u64,
    text: String,
}

impl RagSearchTool {
    /// The tool's name.
    pub const NAME: &'static str = "rag_search";

    /// A tool searching `index`, returning `passages` passages per search (1 to 8) of at
    /// most `max_passage_chars` characters each.
    pub fn new(index: Arc<Index>, passages: usize, max_passage_chars: usize) -> Self {
        Self {
            index,
            passages: passages.clamp(1, MAX_PASSAGES),
            max_passage_chars: max_passage_chars.max(80),
            shown: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A handle on the citations that stays valid after the tool moves into a registry.
    pub fn citation_book(&self) -> CitationBook {
        CitationBook(self.shown.clone())
    }

    /// The number of `hit`, given a new one if it was not shown before.
    fn number(&self, hit: &Hit) -> usize {
        let mut shown = match self.shown.lock() {
            Ok(shown) => shown,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(seen) = shown
            .iter()
            .find(|s| s.citation.source == hit.source && s.byte_start == hit.byte_start)
        {
            return seen.citation.number;
        }
        let number = shown.len() + 1;
        shown.push(Shown {
            citation: Citation {
                number,
                source: hit.source.clone(),
                title: hit.title.clone(),
                line_start: hit.line_start,
                line_end: hit.line_end,
            },
            byte_start: hit.byte_start,
            text: hit.text.clone(),
        });
        number
    }
}

/// The citations of a [`RagSearchTool`], readable after the tool went into a registry.
#[derive(Clone)]
pub struct CitationBook(Arc<Mutex<Vec<Shown>>>);

impl CitationBook {
    fn shown(&self) -> Vec<Shown> {
        match self.0.lock() {
            Ok(shown) => shown.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Every passage shown so far, in citation order.
    pub fn all(&self) -> Vec<Citation> {
        self.shown().into_iter().map(|s| s.citation).collect()
    }

    /// The passages that state a figure of `work` (the code or calls that computed an
    /// answer: `1642`, `162.3`; numbers of two digits or more), in citation order: the
    /// sources of a computed answer, which no passage states itself.
    pub fn sources_of_figures(&self, work: &str) -> Vec<Citation> {
        let used = figures(work);
        self.shown()
            .into_iter()
            .filter(|s| !figures(&s.text).is_disjoint(&used))
            .map(|s| s.citation)
            .collect()
    }

    /// The passages `answer` rests on: those it cites as `[n]`, in citation order. An
    /// answer that cites none (small models often forget) is attributed after the fact:
    /// the passages that contain most of the answer's content words (at least half),
    /// best first. Empty when no passage supports it.
    pub fn sources_of(&self, answer: &str) -> Vec<Citation> {
        let shown = self.shown();
        let cited: Vec<Citation> = shown
            .iter()
            .filter(|s| answer.contains(&format!("[{}]", s.citation.number)))
            .map(|s| s.citation.clone())
            .collect();
        if !cited.is_empty() {
            return cited;
        }
        let words = content_words(answer);
        if words.is_empty() {
            return Vec::new();
        }
        let mut supported: Vec<(usize, Citation)> = shown
            .iter()
            .map(|s| {
                let passage = content_words(&s.text);
                let found = words.iter().filter(|w| passage.contains(*w)).count();
                (found, s.citation.clone())
            })
            .filter(|(found, _)| found * 2 >= words.len())
            .collect();
        supported.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.number.cmp(&b.1.number)));
        let best = supported.first().map_or(0, |(found, _)| *found);
        supported
            .into_iter()
            .take_while(|(found, _)| *found == best)
            .map(|(_, citation)| citation)
            .collect()
    }
}

/// The numbers written in `text` with two digits or more (`1642`, `162.3`, `7,315` as
/// `7315`): figures that can tell which passage a computation took them from.
fn figures(text: &str) -> std::collections::HashSet<String> {
    jielong_chat::numbers::number_spans(text)
        .into_iter()
        .filter(|(span, _)| {
            text[span.clone()]
                .bytes()
                .filter(u8::is_ascii_digit)
                .count()
                >= 2
        })
        .map(|(_, value)| value.abs().to_string())
        .collect()
}

/// The lower-cased words of `text` longer than three letters (a rough cut of the words
/// that carry content).
fn content_words(text: &str) -> std::collections::HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 3)
        .map(str::to_lowercase)
        .collect()
}

/// Arguments of `rag_search`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RagSearchArgs {
    /// What to look for: key words of the question.
    pub query: String,
}

impl Tool for RagSearchTool {
    type Args = RagSearchArgs;
    type Output = String;

    fn name(&self) -> &str {
        Self::NAME
    }

    fn description(&self) -> &str {
        "Search the local documents. Returns numbered passages; cite them as [n]."
    }

    fn kind(&self) -> ToolKind {
        ToolKind::General
    }

    /// The task itself is the first query: small models otherwise answer questions
    /// about the documents from memory.
    fn prefetch(&self, task: &str) -> Option<serde_json::Value> {
        let query = task.trim();
        (!query.is_empty()).then(|| serde_json::json!({ "query": query }))
    }

    async fn call(&self, args: RagSearchArgs) -> Result<String, ToolError> {
        let query = args.query.trim();
        if query.is_empty() {
            return Err(ToolError::invalid_arguments("the query is empty"));
        }
        let request = SearchRequest::new(query, self.passages);
        let index = self.index.clone();
        let hits = tokio::task::spawn_blocking(move || index.search(&request))
            .await
            .map_err(|e| ToolError::failed(format!("the search stopped: {e}"), true))?
            .map_err(search_error)?;
        if hits.is_empty() {
            return Ok(format!("No passage matches \"{query}\"."));
        }
        let mut out = String::new();
        for hit in &hits {
            let number = self.number(hit);
            let text = cut(hit.text.trim(), self.max_passage_chars);
            out.push_str(&format!(
                "[{number}] {} ({}:{}-{})\n{text}\n\n",
                hit.title, hit.source, hit.line_start, hit.line_end
            ));
        }
        Ok(out.trim_end().to_string())
    }
}

fn search_error(e: RetrievalError) -> ToolError {
    match e {
        RetrievalError::Query { .. } => ToolError::invalid_arguments(e.to_string()),
        other => ToolError::failed(other.to_string(), false),
    }
}

/// `text` cut to `max` characters at a word boundary, with an ellipsis.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((end, _)) => {
            let head = &text[..end];
            let head = head
                .rsplit_once(char::is_whitespace)
                .map_or(head, |(h, _)| h);
            format!("{head} …")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(passages: &[(&str, &str)]) -> CitationBook {
        let shown = passages
            .iter()
            .enumerate()
            .map(|(i, (source, text))| Shown {
                citation: Citation {
                    number: i + 1,
                    source: source.to_string(),
                    title: source.to_string(),
                    line_start: 1,
                    line_end: 3,
                },
                byte_start: 0,
                text: text.to_string(),
            })
            .collect();
        CitationBook(Arc::new(Mutex::new(shown)))
    }

    #[test]
    fn figures_are_numbers_of_two_digits_or_more() {
        let got = figures("Founded in 1642; 7,315 people; 162.3 km; 5 roads; route v12; -40 C.");
        let mut got: Vec<String> = got.into_iter().collect();
        got.sort();
        assert_eq!(got, ["162.3", "1642", "40", "7315"]);
        let program = figures("print(1719 - 1642)");
        assert!(
            program.contains("1719") && program.contains("1642"),
            "{program:?}"
        );
    }

    #[test]
    fn sources_are_the_cited_passages_or_the_supporting_ones() {
        let book = book(&[
            (
                "a.txt",
                "The harvest festival is in October in the northern towns.",
            ),
            (
                "b.txt",
                "Star anise is the secret ingredient of the dumplings.",
            ),
            ("c.txt", "Dumplings are boiled, steamed or fried."),
        ]);
        let numbers = |answer: &str| -> Vec<usize> {
            book.sources_of(answer).iter().map(|c| c.number).collect()
        };
        assert_eq!(numbers("It is star anise [2], see also [3]."), [2, 3]);
        assert_eq!(numbers("The secret ingredient is star anise."), [2]);
        assert_eq!(
            numbers("Paris is the capital of France."),
            Vec::<usize>::new()
        );
        assert_eq!(numbers(""), Vec::<usize>::new());
        assert_eq!(book.all().len(), 3);
        assert_eq!(book.all()[1].location(), "b.txt:1-3");
    }

    #[test]
    fn long_passages_are_cut_at_a_word() {
        assert_eq!(cut("one two three", 100), "one two three");
        assert_eq!(cut("one two three", 9), "one two …");
    }
}
