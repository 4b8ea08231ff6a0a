//! Prompt techniques: how a task is put to the model, without training it (chain of
//! thought, explain first, "take a deep breath", an emotional stimulus, stating the
//! premises) and worked examples shown before it (few-shot).
//!
//! A [`Technique`] is a prompt file of `prompts/techniques/` with a `{task}`
//! placeholder; [`Shots`] are question/answer pairs from a JSONL file, shown as earlier
//! turns of the conversation. [`Framing`] holds both and is what the plain model and
//! the agent put in front of a task: the one place a task's opening turns are built.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fill;
use jielong_chat::chat::Message;

/// How the task is worded: a prompt file around it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[non_exhaustive]
pub enum Technique {
    /// The task as it is (the default).
    #[default]
    #[serde(rename = "plain")]
    Plain,
    /// "Let's think step by step." after the task (`techniques/cot.md`).
    #[serde(rename = "cot")]
    ChainOfThought,
    /// Asks for an explanation of the way to solve it before the answer
    /// (`techniques/explain.md`).
    #[serde(rename = "explain")]
    ExplainFirst,
    /// "Take a deep breath and work on this problem step-by-step." before the task
    /// (`techniques/deep_breath.md`).
    #[serde(rename = "deep-breath")]
    DeepBreath,
    /// "This is very important to my career." after the task (`techniques/emotion.md`).
    #[serde(rename = "emotion")]
    Emotion,
    /// Asks for the facts the question states, one per line, before working it out
    /// (`techniques/premises.md`).
    #[serde(rename = "premises")]
    Premises,
}

impl Technique {
    /// Every technique, in the order help texts list them.
    pub const ALL: &'static [Technique] = &[
        Technique::Plain,
        Technique::ChainOfThought,
        Technique::ExplainFirst,
        Technique::DeepBreath,
        Technique::Emotion,
        Technique::Premises,
    ];

    /// The name it is written as (CLI `--technique`, YAML `technique:`).
    pub fn name(self) -> &'static str {
        match self {
            Technique::Plain => "plain",
            Technique::ChainOfThought => "cot",
            Technique::ExplainFirst => "explain",
            Technique::DeepBreath => "deep-breath",
            Technique::Emotion => "emotion",
            Technique::Premises => "premises",
        }
    }

    /// The built-in prompt (the file of `prompts/techniques/`), `{task}` in it; `None`
    /// for [`Technique::Plain`].
    pub fn template(self) -> Option<&'static str> {
        Some(match self {
            Technique::Plain => return None,
            Technique::ChainOfThought => include_str!("../../prompts/techniques/cot.md"),
            Technique::ExplainFirst => include_str!("../../prompts/techniques/explain.md"),
            Technique::DeepBreath => include_str!("../../prompts/techniques/deep_breath.md"),
            Technique::Emotion => include_str!("../../prompts/techniques/emotion.md"),
            Technique::Premises => include_str!("../../prompts/techniques/premises.md"),
        })
    }

    /// `task` worded with this technique.
    pub fn apply(self, task: &str) -> String {
        match self.template() {
            Some(template) => fill(template.trim(), &[("task", task)]),
            None => task.to_string(),
        }
    }
}

impl fmt::Display for Technique {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Text that names no [`Technique`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown technique `{0}`; techniques: plain, cot, explain, deep-breath, emotion, premises")]
pub struct UnknownTechnique(pub String);

impl std::str::FromStr for Technique {
    type Err = UnknownTechnique;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        Technique::ALL
            .iter()
            .copied()
            .find(|t| t.name() == text)
            .ok_or_else(|| UnknownTechnique(text.to_string()))
    }
}

/// How a task is put into words: a built-in [`Technique`], or an instruction of one's
/// own (`--instruction`, or the prompt file `jielong optimize` writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wording {
    /// A built-in technique.
    Technique(Technique),
    /// An instruction: a template with a `{task}` placeholder, or text put after the
    /// task (a blank line between them), as "Let's think step by step." is.
    Instruction(String),
}

impl Default for Wording {
    fn default() -> Self {
        Wording::Technique(Technique::Plain)
    }
}

impl From<Technique> for Wording {
    fn from(technique: Technique) -> Self {
        Wording::Technique(technique)
    }
}

impl Wording {
    /// `task` in these words.
    pub fn apply(&self, task: &str) -> String {
        match self {
            Wording::Technique(technique) => technique.apply(task),
            Wording::Instruction(text) => {
                let text = text.trim();
                if text.is_empty() {
                    task.to_string()
                } else if text.contains("{task}") {
                    fill(text, &[("task", task)])
                } else {
                    format!("{task}\n\n{text}")
                }
            }
        }
    }
}

/// One worked example: a question and the answer shown for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shot {
    /// The question (the user's turn).
    pub input: String,
    /// The answer (the assistant's turn).
    pub answer: String,
}

/// Worked examples shown before the task, as earlier user and assistant turns.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shots(pub Vec<Shot>);

/// A few-shot file could not be used. Messages name the file and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShotsError {
    /// The file could not be read.
    #[error("cannot read the few-shot file {path}: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A line is not a JSON object with the two fields as strings.
    #[error("{path}:{line}: {detail}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// The file holds fewer examples than asked for.
    #[error("the few-shot file {path} holds {found} examples; {wanted} were asked for")]
    TooFew {
        /// The file.
        path: PathBuf,
        /// Examples in it.
        found: usize,
        /// Examples asked for.
        wanted: usize,
    },
}

impl Shots {
    /// The first `count` examples of a JSONL file: one object per line with the
    /// question in `input_field` and the answer in `answer_field` (blank lines are
    /// skipped). A GSM8K answer is shown as its worked solution without the
    /// calculator marks (`<<3*6=18>>`), its `#### 18` line as "The answer is 18.".
    pub fn from_jsonl(
        path: &Path,
        input_field: &str,
        answer_field: &str,
        count: usize,
    ) -> Result<Shots, ShotsError> {
        let text = std::fs::read_to_string(path).map_err(|e| ShotsError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let mut shots = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if shots.len() == count {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            let bad = |detail: String| ShotsError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                detail,
            };
            let record: Value =
                serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
            let field = |name: &str| {
                record
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("no string field `{name}`")))
            };
            shots.push(Shot {
                input: field(input_field)?,
                answer: worked_answer(&field(answer_field)?),
            });
        }
        if shots.len() < count {
            return Err(ShotsError::TooFew {
                path: path.to_path_buf(),
                found: shots.len(),
                wanted: count,
            });
        }
        Ok(Shots(shots))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An answer as a worked example shows it: GSM8K's calculator marks removed and its
/// final `#### N` line written as a sentence.
fn worked_answer(answer: &str) -> String {
    let mut text = String::with_capacity(answer.len());
    let mut rest = answer;
    while let Some(open) = rest.find("<<") {
        match rest[open..].find(">>") {
            Some(close) => {
                text.push_str(&rest[..open]);
                rest = &rest[open + close + 2..];
            }
            None => break,
        }
    }
    text.push_str(rest);
    let lines: Vec<String> = text
        .lines()
        .map(|line| match line.trim().strip_prefix("####") {
            Some(result) => format!("The answer is {}.", result.trim()),
            None => line.to_string(),
        })
        .collect();
    lines.join("\n").trim().to_string()
}

/// What is put in front of a task: worked examples, then the task in a technique's
/// words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Framing {
    /// How the task (and each example's question) is worded.
    pub wording: Wording,
    /// Worked examples before the task.
    pub shots: Shots,
}

impl Framing {
    /// The examples' turns: each question (in the technique's words) as a user turn,
    /// its answer as the assistant's.
    pub fn example_turns(&self) -> Vec<Message> {
        self.shots
            .0
            .iter()
            .flat_map(|shot| {
                [
                    Message::user(self.wording.apply(&shot.input)),
                    Message::assistant(shot.answer.clone()),
                ]
            })
            .collect()
    }

    /// The opening of a conversation about `task`: the system prompt (if any), the
    /// examples, then the task in the technique's words.
    pub fn messages(&self, system: Option<&str>, task: &str) -> Vec<Message> {
        let mut messages: Vec<Message> = system.map(Message::system).into_iter().collect();
        messages.extend(self.example_turns());
        messages.push(Message::user(self.wording.apply(task)));
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jielong_chat::chat::Role;

    #[test]
    fn techniques_word_the_task_and_parse_by_name() {
        let check = |technique: Technique, expected: &str| {
            assert_eq!(technique.apply("What is 2 + 3?"), expected, "{technique}");
            assert_eq!(technique.name().parse::<Technique>(), Ok(technique));
        };
        check(Technique::Plain, "What is 2 + 3?");
        check(
            Technique::ChainOfThought,
            "What is 2 + 3?\n\nLet's think step by step.",
        );
        check(
            Technique::DeepBreath,
            "Take a deep breath and work on this problem step-by-step.\n\nWhat is 2 + 3?",
        );
        check(
            Technique::Emotion,
            "What is 2 + 3?\n\nThis is very important to my career.",
        );
        for &technique in Technique::ALL {
            assert!(technique.apply("Q?").contains("Q?"), "{technique}");
        }
        // An instruction of one's own goes after the task, or where `{task}` says.
        let own = |text: &str| Wording::Instruction(text.into()).apply("Q?");
        assert_eq!(own("Show your work."), "Q?\n\nShow your work.");
        assert_eq!(own("Question: {task}\nAnswer:"), "Question: Q?\nAnswer:");
        assert_eq!(own("  "), "Q?");
        assert_eq!(Wording::default().apply("Q?"), "Q?");
        assert_eq!(
            "bogus".parse::<Technique>().unwrap_err().to_string(),
            "unknown technique `bogus`; techniques: plain, cot, explain, deep-breath, emotion, premises"
        );
    }

    #[test]
    fn shots_come_from_jsonl_with_gsm8k_answers_as_worked_solutions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shots.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"question": "Ann has 3 bags of 6 apples. How many apples?", "answer": "3 * 6 = <<3*6=18>>18 apples.\n#### 18"}"#,
                "\n\n",
                r#"{"question": "What is 2 + 3?", "answer": "5"}"#,
                "\n",
                "not json\n",
            ),
        )
        .unwrap();
        let shots = Shots::from_jsonl(&path, "question", "answer", 2).unwrap();
        assert_eq!(shots.0[0].answer, "3 * 6 = 18 apples.\nThe answer is 18.");
        assert_eq!(shots.0[1].input, "What is 2 + 3?");

        let framing = Framing {
            wording: Technique::ChainOfThought.into(),
            shots,
        };
        let messages = framing.messages(None, "What is 4 + 4?");
        let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::User,
                Role::Assistant,
                Role::User,
                Role::Assistant,
                Role::User
            ]
        );
        assert!(messages[4].content.starts_with("What is 4 + 4?"));
        assert!(messages[4].content.ends_with("step by step."));
        // The default framing is the task alone, after the system prompt.
        assert_eq!(
            Framing::default().messages(Some("Be terse."), "Q?"),
            [Message::system("Be terse."), Message::user("Q?")]
        );

        // A bad line names the file and the line; a short file says how short.
        let err = Shots::from_jsonl(&path, "question", "answer", 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:4: not JSON: expected ident at line 1 column 2",
                path.display()
            )
        );
        let err = Shots::from_jsonl(&path, "input", "answer", 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}:1: no string field `input`", path.display())
        );
        std::fs::write(&path, "{\"question\": \"q\", \"answer\": \"a\"}\n").unwrap();
        let err = Shots::from_jsonl(&path, "question", "answer", 2).unwrap_err();
        assert!(
            err.to_string()
                .contains("holds 1 examples; 2 were asked for"),
            "{err}"
        );
        let missing = dir.path().join("missing.jsonl");
        assert!(Shots::from_jsonl(&missing, "question", "answer", 1)
            .unwrap_err()
            .to_string()
            .starts_with(&format!(
                "cannot read the few-shot file {}",
                missing.display()
            )));
    }
}
