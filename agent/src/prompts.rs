//! The agent's prompts: short text files with `{placeholder}`s, embedded as defaults and
//! replaceable per agent (by text, by file or by directory).

use std::fmt;
use std::path::Path;

use super::AgentError;

/// One of the agent's prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptKind {
    /// The system prompt of the tool agent (`agent_system.md`).
    System,
    /// Asks for a plan (`plan.md`; placeholder `{task}`, required).
    Plan,
    /// Starts one subtask (`subtask.md`; `{subtask}` required, also `{index}`, `{count}`,
    /// `{task}`).
    Subtask,
    /// Asks for the final answer after the subtasks (`synthesize.md`; `{task}`).
    Synthesize,
    /// Asks for a critique of a draft (`critique.md`; `{task}`, `{draft}`).
    Critique,
    /// Asks for a revision after a critique (`revise.md`; `{task}`, `{draft}`,
    /// `{problem}`).
    Revise,
    /// Asks for the answer when the model wants to repeat a call whose result it already
    /// has (`answer.md`; `{question}`: the task, or the current subtask).
    Answer,
    /// The system prompt, in place of [`PromptKind::System`], when the `python` tool
    /// takes fenced code blocks (`code_system.md`; no placeholders). Empty by default:
    /// the model's own default system prompt (its chat template's), which the default
    /// model follows best; how to write code is in [`PromptKind::CodeTask`].
    CodeSystem,
    /// Asks for a check when an answer's number appears in no tool result
    /// (`ground.md`; `{question}`, `{answer}`).
    Ground,
    /// What a written answer reads before the task: the results of the agent's
    /// initial calls (a document search's passages) put in front of the task's message
    /// (`read_first.md`; `{results}`, required).
    ReadFirst,
    /// The task as the user's message when `python` takes fenced code blocks
    /// (`code_task.md`; `{task}`, required).
    CodeTask,
    /// A subtask of a plan when the `python` tool takes fenced code blocks
    /// (`code_subtask.md`; `{task}`, required): one step, so no worked examples.
    CodeSubtask,
    /// Asks the judge of [`Pick::Judge`](crate::Pick::Judge) which of two
    /// solutions is right (`judge.md`; `{task}`, `{first}`, `{second}`, all required);
    /// the reply's first token is read as `A` or `B`.
    Judge,
    /// Asks a checker of a sample's answer ([`Pick::Check`](crate::Pick::Check)) to work
    /// the task again and say what it finds (`check.md`; `{task}`, `{answer}`, both
    /// required).
    Check,
    /// Asks a tree-of-thoughts search for next thoughts (`propose.md`; `{task}`,
    /// `{steps}`: the thoughts so far, numbered, `{state}`: the state as the thought
    /// space shows it; at least one of `{steps}` and `{state}` is needed).
    Propose,
    /// Asks a tree-of-thoughts search for the value of a state (`evaluate.md`; the
    /// placeholders of [`PromptKind::Propose`]); the reply's first token is read as
    /// `sure`, `likely` or `impossible`.
    Evaluate,
}

impl PromptKind {
    /// Every kind.
    pub const ALL: [PromptKind; 16] = [
        Self::System,
        Self::Plan,
        Self::Subtask,
        Self::Synthesize,
        Self::Critique,
        Self::Revise,
        Self::Answer,
        Self::CodeSystem,
        Self::Ground,
        Self::ReadFirst,
        Self::CodeTask,
        Self::CodeSubtask,
        Self::Judge,
        Self::Check,
        Self::Propose,
        Self::Evaluate,
    ];

    /// The file name of the prompt in a prompt directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::System => "agent_system.md",
            Self::Plan => "plan.md",
            Self::Subtask => "subtask.md",
            Self::Synthesize => "synthesize.md",
            Self::Critique => "critique.md",
            Self::Revise => "revise.md",
            Self::Answer => "answer.md",
            Self::CodeSystem => "code_system.md",
            Self::Ground => "ground.md",
            Self::ReadFirst => "read_first.md",
            Self::CodeTask => "code_task.md",
            Self::CodeSubtask => "code_subtask.md",
            Self::Judge => "judge.md",
            Self::Check => "check.md",
            Self::Propose => "propose.md",
            Self::Evaluate => "evaluate.md",
        }
    }

    /// The built-in text (the file of the same name in the repository's `prompts/`).
    pub fn builtin(self) -> &'static str {
        match self {
            Self::System => include_str!("../../prompts/agent_system.md"),
            Self::Plan => include_str!("../../prompts/plan.md"),
            Self::Subtask => include_str!("../../prompts/subtask.md"),
            Self::Synthesize => include_str!("../../prompts/synthesize.md"),
            Self::Critique => include_str!("../../prompts/critique.md"),
            Self::Revise => include_str!("../../prompts/revise.md"),
            Self::Answer => include_str!("../../prompts/answer.md"),
            Self::CodeSystem => include_str!("../../prompts/code_system.md"),
            Self::Ground => include_str!("../../prompts/ground.md"),
            Self::ReadFirst => include_str!("../../prompts/read_first.md"),
            Self::CodeTask => include_str!("../../prompts/code_task.md"),
            Self::CodeSubtask => include_str!("../../prompts/code_subtask.md"),
            Self::Judge => include_str!("../../prompts/judge.md"),
            Self::Check => include_str!("../../prompts/check.md"),
            Self::Propose => include_str!("../../prompts/propose.md"),
            Self::Evaluate => include_str!("../../prompts/evaluate.md"),
        }
    }

    /// The kind whose file is `name`, with or without `.md` (`"plan"`, `"agent_system.md"`).
    pub fn from_name(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".md").unwrap_or(name);
        Self::ALL
            .into_iter()
            .find(|kind| kind.file_name().strip_suffix(".md") == Some(stem))
    }

    /// Placeholders the prompt must contain to make sense.
    fn required(self) -> &'static [&'static str] {
        match self {
            Self::Plan => &["task"],
            Self::Subtask => &["subtask"],
            Self::CodeTask | Self::CodeSubtask => &["task"],
            Self::Judge => &["task", "first", "second"],
            Self::Check => &["task", "answer"],
            Self::ReadFirst => &["results"],
            _ => &[],
        }
    }
}

impl fmt::Display for PromptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// The texts of all prompts an agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompts {
    /// See [`PromptKind::System`].
    pub system: String,
    /// See [`PromptKind::Plan`].
    pub plan: String,
    /// See [`PromptKind::Subtask`].
    pub subtask: String,
    /// See [`PromptKind::Synthesize`].
    pub synthesize: String,
    /// See [`PromptKind::Critique`].
    pub critique: String,
    /// See [`PromptKind::Revise`].
    pub revise: String,
    /// See [`PromptKind::Answer`].
    pub answer: String,
    /// See [`PromptKind::CodeSystem`].
    pub code_system: String,
    /// See [`PromptKind::Ground`].
    pub ground: String,
    /// See [`PromptKind::ReadFirst`].
    pub read_first: String,
    /// See [`PromptKind::CodeTask`].
    pub code_task: String,
    /// See [`PromptKind::CodeSubtask`].
    pub code_subtask: String,
    /// See [`PromptKind::Judge`].
    pub judge: String,
    /// See [`PromptKind::Check`].
    pub check: String,
    /// See [`PromptKind::Propose`].
    pub propose: String,
    /// See [`PromptKind::Evaluate`].
    pub evaluate: String,
}

impl Default for Prompts {
    fn default() -> Self {
        let text = |kind: PromptKind| kind.builtin().trim().to_string();
        Self {
            system: text(PromptKind::System),
            plan: text(PromptKind::Plan),
            subtask: text(PromptKind::Subtask),
            synthesize: text(PromptKind::Synthesize),
            critique: text(PromptKind::Critique),
            revise: text(PromptKind::Revise),
            answer: text(PromptKind::Answer),
            code_system: text(PromptKind::CodeSystem),
            ground: text(PromptKind::Ground),
            read_first: text(PromptKind::ReadFirst),
            code_task: text(PromptKind::CodeTask),
            code_subtask: text(PromptKind::CodeSubtask),
            judge: text(PromptKind::Judge),
            check: text(PromptKind::Check),
            propose: text(PromptKind::Propose),
            evaluate: text(PromptKind::Evaluate),
        }
    }
}

impl Prompts {
    /// The text of `kind`.
    pub fn get(&self, kind: PromptKind) -> &str {
        match kind {
            PromptKind::System => &self.system,
            PromptKind::Plan => &self.plan,
            PromptKind::Subtask => &self.subtask,
            PromptKind::Synthesize => &self.synthesize,
            PromptKind::Critique => &self.critique,
            PromptKind::Revise => &self.revise,
            PromptKind::Answer => &self.answer,
            PromptKind::CodeSystem => &self.code_system,
            PromptKind::Ground => &self.ground,
            PromptKind::ReadFirst => &self.read_first,
            PromptKind::CodeTask => &self.code_task,
            PromptKind::CodeSubtask => &self.code_subtask,
            PromptKind::Judge => &self.judge,
            PromptKind::Check => &self.check,
            PromptKind::Propose => &self.propose,
            PromptKind::Evaluate => &self.evaluate,
        }
    }

    /// Replaces the text of `kind` (surrounding whitespace is dropped).
    pub fn set(&mut self, kind: PromptKind, text: impl Into<String>) {
        let text = text.into().trim().to_string();
        match kind {
            PromptKind::System => self.system = text,
            PromptKind::Plan => self.plan = text,
            PromptKind::Subtask => self.subtask = text,
            PromptKind::Synthesize => self.synthesize = text,
            PromptKind::Critique => self.critique = text,
            PromptKind::Revise => self.revise = text,
            PromptKind::Answer => self.answer = text,
            PromptKind::CodeSystem => self.code_system = text,
            PromptKind::Ground => self.ground = text,
            PromptKind::ReadFirst => self.read_first = text,
            PromptKind::CodeTask => self.code_task = text,
            PromptKind::CodeSubtask => self.code_subtask = text,
            PromptKind::Judge => self.judge = text,
            PromptKind::Check => self.check = text,
            PromptKind::Propose => self.propose = text,
            PromptKind::Evaluate => self.evaluate = text,
        }
    }

    /// Replaces `kind` with the contents of the file at `path`.
    pub fn load_file(&mut self, kind: PromptKind, path: &Path) -> Result<(), AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::PromptFile {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        self.set(kind, text);
        Ok(())
    }

    /// Replaces every prompt that has a file in `dir` (named by
    /// [`PromptKind::file_name`]); the others keep their text. Fails if `dir` is not a
    /// readable directory.
    pub fn load_dir(&mut self, dir: &Path) -> Result<(), AgentError> {
        if !dir.is_dir() {
            return Err(AgentError::PromptFile {
                path: dir.to_path_buf(),
                detail: "not a directory".into(),
            });
        }
        for kind in PromptKind::ALL {
            let path = dir.join(kind.file_name());
            if path.is_file() {
                self.load_file(kind, &path)?;
            }
        }
        Ok(())
    }

    /// Checks that every prompt has the placeholders it needs.
    pub fn validate(&self) -> Result<(), AgentError> {
        for kind in PromptKind::ALL {
            let text = self.get(kind);
            if matches!(kind, PromptKind::Propose | PromptKind::Evaluate)
                && !text.contains("{steps}")
                && !text.contains("{state}")
            {
                return Err(AgentError::Prompt {
                    kind,
                    detail: "it must contain the placeholder {steps} or {state}".into(),
                });
            }
            for name in kind.required() {
                if !text.contains(&format!("{{{name}}}")) {
                    return Err(AgentError::Prompt {
                        kind,
                        detail: format!("it must contain the placeholder {{{name}}}"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Fills `{name}` placeholders of `template` with `values` in one pass (a value that
/// contains a placeholder is not expanded again); unknown placeholders stay as they are.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value, close))
        });
        match value {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_one_pass() {
        assert_eq!(
            fill(
                "T: {task} D: {draft} {other} {",
                &[("task", "{draft}"), ("draft", "x")]
            ),
            "T: {draft} D: x {other} {"
        );
    }

    #[test]
    fn builtins_are_valid() {
        Prompts::default().validate().unwrap();
        assert_eq!(PromptKind::from_name("plan"), Some(PromptKind::Plan));
        assert_eq!(
            PromptKind::from_name("agent_system.md"),
            Some(PromptKind::System)
        );
        assert_eq!(PromptKind::from_name("nope"), None);
    }
}
