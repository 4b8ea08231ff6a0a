//! One run of an [`Agent`]: the step loop, tool dispatch, planning and reflection.

use std::collections::HashMap;
use std::time::Instant;

use futures::future::join_all;
use serde_json::{json, Value};
use tokio::time::Instant as Deadline;

use super::code::{
    after_last_output, carry_result, closed_python_block, code_from_blob, is_grounded,
    speaks_of_program, CodeBlock,
};
use super::compose::Figures;
use super::events::{AgentEvent, AgentRun, Phase, StopReason, Verdict};
use super::prompts::{fill, PromptKind};
use super::strategy::{Plan, Strategy};
use super::{Agent, CodeActions, Grounding, Prefetch, SUBMIT_CRITIQUE, SUBMIT_PLAN};
use jielong_chat::chat::{Message, ToolCall, ToolSpec};
use jielong_chat::error::RuntimeError;
use jielong_chat::fit::{unfit_calls, CallFit};
use jielong_chat::generate::{FinishReason, GenerationEvent, SamplingParams, ToolChoice, Usage};
use jielong_chat::intent::{
    bare_call_state, fenced_body, intended_call, looks_like_call, restates_result, BareCall, Intent,
};
use jielong_chat::model::ModelSession;
use jielong_chat::respond::{Chat, ChatRequest};
use jielong_chat::tool::{Interpreter, ToolError, ToolKind};
use jielong_chat::tool_format::ToolCallFormat;

/// `Err` ends the run for the given reason.
type Flow<T> = Result<T, StopReason>;

/// A tool's outcome and how many times it ran.
type Outcome = (Result<Value, ToolError>, usize);

/// What one model call produced.
struct Reply {
    /// The step it belongs to.
    step: usize,
    /// The text outside call blocks.
    text: String,
    /// Everything generated.
    raw: String,
    /// Valid calls, in order.
    calls: Vec<ToolCall>,
    /// Call blocks that are not calls: (raw, error).
    malformed: Vec<(String, String)>,
    /// A closed ```` ```python ```` block ([`CodeActions::Fenced`]); `text` and `raw`
    /// then end with its closing fence.
    code: Option<CodeBlock>,
    /// Why generation ended.
    finish: FinishReason,
}

impl Reply {
    /// Cuts the reply right after its first closed ```` ```python ```` block (one
    /// opened in `open`, the turn's text before the reply, counts) and keeps the
    /// block; `false` when there is none yet.
    fn cut_at_code(&mut self, open: &str) -> bool {
        let scanned = format!("{open}{}", self.text);
        let Some(block) = closed_python_block(&scanned) else {
            return false;
        };
        let Some(end) = block.end.checked_sub(open.len()) else {
            return false;
        };
        self.text.truncate(end);
        self.raw = self.text.clone();
        self.code = Some(block);
        true
    }
}

/// Which calls a step's reply may make.
#[derive(Debug, Clone)]
struct Calls {
    choice: ToolChoice,
    /// The tools a call may use when not the listed ones (a structured answer).
    tools: Option<Vec<ToolSpec>>,
    max: u32,
}

/// What the conversation's own answers may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leaf {
    /// The agent's tools (`direct`, and the conversation of `plan` and `reflect`).
    Tools,
    /// No tools to call and no system prompt: a written answer (`written`), after the
    /// calls the agent makes before any step ([`Runner::initial_calls`]).
    Written,
}

/// The state of one run.
pub(super) struct Runner<'a> {
    agent: &'a Agent,
    leaf: Leaf,
    /// What parts (inner runs of their own) spent.
    parts: Figures,
    session: &'a mut dyn ModelSession,
    messages: Vec<Message>,
    /// Tools the model is told about and may call.
    callable: Vec<ToolSpec>,
    usage: Usage,
    /// The longest prompt so far, in tokens.
    distinct_prompt_tokens: usize,
    steps: usize,
    tool_calls: usize,
    started: Instant,
    deadline: Option<Deadline>,
    /// Calls made so far (tool, arguments, count).
    seen: Vec<(String, Value, usize)>,
    /// Failures in a row, per tool.
    failures: HashMap<String, usize>,
    /// Successful calls: tool, arguments, and the result as given to the model.
    answered: Vec<(String, Value, String)>,
    /// What the current tool loop answers: the task, or the current subtask.
    question: String,
    next_id: usize,
    /// Whether `python` takes fenced code blocks ([`CodeActions::Fenced`] and the
    /// agent has the tool).
    fenced: bool,
    /// The tool that runs the agent's code, found by what it is
    /// ([`ToolRegistry::interpreter`](jielong_chat::ToolRegistry::interpreter)); fenced
    /// code actions need it to run Python, the language of their prompts and parser.
    code_tool: Option<Interpreter>,
    /// Why the next step should sample instead of replaying the greedy path.
    recover: Option<String>,
    /// How many steps have sampled for recovery (each gets its own seed).
    recoveries: u32,
}

impl<'a> Runner<'a> {
    pub(super) fn new(agent: &'a Agent, session: &'a mut dyn ModelSession, leaf: Leaf) -> Self {
        let (mut callable, code_tool) = match leaf {
            Leaf::Tools => (agent.tools.specs(), agent.tools.interpreter()),
            Leaf::Written => (Vec::new(), None),
        };
        let fenced = code_tool
            .as_ref()
            .is_some_and(|code| code.language == "python")
            && agent.settings.code_actions == CodeActions::Fenced;
        if let (true, Some(code)) = (fenced, &code_tool) {
            callable.retain(|t| t.name != code.name);
        }
        let system = match (leaf, fenced) {
            (Leaf::Written, _) => String::new(),
            (Leaf::Tools, true) => agent.prompts.code_system.clone(),
            (Leaf::Tools, false) => agent.prompts.system.clone(),
        };
        let mut messages = if system.is_empty() {
            Vec::new()
        } else {
            vec![Message::system(system)]
        };
        messages.extend(agent.settings.framing.example_turns());
        Self {
            agent,
            leaf,
            parts: Figures::default(),
            session,
            messages,
            callable,
            usage: Usage::default(),
            distinct_prompt_tokens: 0,
            steps: 0,
            tool_calls: 0,
            started: Instant::now(),
            deadline: agent.settings.max_wall_time.map(|d| Deadline::now() + d),
            seen: Vec::new(),
            failures: HashMap::new(),
            answered: Vec::new(),
            question: String::new(),
            next_id: 0,
            fenced,
            code_tool,
            recover: None,
            recoveries: 0,
        }
    }

    pub(super) async fn run(mut self, task: &str, strategy: &Strategy) -> AgentRun {
        let mut best = None;
        let (answer, stop) = match self.work(task, strategy, &mut best).await {
            Ok(answer) => (Some(answer), StopReason::Answered),
            Err(stop) => (best, stop),
        };
        tracing::debug!(steps = self.steps, stop = %stop, "agent run ended");
        let parts = std::mem::take(&mut self.parts);
        let run = parts.into_run(AgentRun {
            answer,
            stop,
            transcript: self.messages,
            usage: self.usage,
            distinct_prompt_tokens: self.distinct_prompt_tokens,
            steps: self.steps,
            tool_calls: self.tool_calls,
            elapsed: self.started.elapsed(),
            unverified: None,
        });
        self.agent.finish(run)
    }

    /// The whole run as `strategy` says; `best` holds the latest complete draft.
    async fn work(
        &mut self,
        task: &str,
        strategy: &Strategy,
        best: &mut Option<String>,
    ) -> Flow<String> {
        match strategy {
            Strategy::Reflect(reflect) => {
                let draft = self.draft(task, &reflect.around).await?;
                self.reflected(task, draft, reflect.rounds, best).await
            }
            other => self.draft(task, other).await,
        }
    }

    /// `task` worked by `strategy` in this conversation when it is conversational
    /// (this runner's leaf, or a plan), else as a part of its own.
    async fn draft(&mut self, task: &str, strategy: &Strategy) -> Flow<String> {
        match (strategy, self.leaf) {
            (Strategy::Direct, Leaf::Tools) | (Strategy::Written, Leaf::Written) => {
                self.direct(task).await
            }
            (Strategy::Plan(plan), Leaf::Tools) => self.planned(task, plan).await,
            (other, _) => self.part(task, task, other, "draft").await,
        }
    }

    /// `strategy` works `message` as a run of its own, on the same session; the
    /// message and the answer join this conversation (the answer is the `Ok` value);
    /// a part without an answer ends this run for its reason. `question` is what the
    /// answer answers (the task or a subtask).
    async fn part(
        &mut self,
        message: &str,
        question: &str,
        strategy: &Strategy,
        name: &str,
    ) -> Flow<String> {
        if self.expired() {
            return Err(StopReason::WallTime);
        }
        let agent = self.agent.part(strategy.clone(), name);
        let run = agent.run(&mut *self.session, message).await;
        self.parts.add(&run);
        self.question = question.to_string();
        match run.answer.filter(|_| run.stop.is_answered()) {
            Some(answer) => {
                self.messages.push(Message::user(message));
                self.messages.push(Message::assistant(answer.clone()));
                Ok(answer)
            }
            None => Err(run.stop),
        }
    }

    /// The task, then steps with tools until the answer.
    async fn direct(&mut self, task: &str) -> Flow<String> {
        let worded = self.agent.settings.framing.wording.apply(task);
        let message = self.task_message(worded, PromptKind::CodeTask);
        self.messages.push(Message::user(message));
        // A written answer reads the first calls' results in front of its message; a
        // program gets them as the calls and results they are ([`Runner::initial_calls`]).
        self.initial_calls(task).await?;
        self.tool_loop(Phase::Task, task).await
    }

    /// Critique rounds over `draft`, each revising it when the critique finds a fault;
    /// `best` holds the latest complete draft.
    async fn reflected(
        &mut self,
        task: &str,
        mut draft: String,
        rounds: usize,
        best: &mut Option<String>,
    ) -> Flow<String> {
        *best = Some(draft.clone());
        for round in 1..=rounds {
            let verdict = self.critique(task, &draft, round).await?;
            if verdict.ok {
                break;
            }
            let prompt = fill(
                &self.agent.prompts.revise,
                &[
                    ("task", task),
                    ("draft", &draft),
                    ("problem", &verdict.problem),
                ],
            );
            self.messages.push(Message::user(prompt));
            draft = self.tool_loop(Phase::Revision, task).await?;
            *best = Some(draft.clone());
        }
        Ok(draft)
    }

    /// Plan, subtasks (each in this conversation, or worked by `plan.then` as a part),
    /// synthesis.
    async fn planned(&mut self, task: &str, plan: &Plan) -> Flow<String> {
        let prompts = &self.agent.prompts;
        self.messages
            .push(Message::user(fill(&prompts.plan, &[("task", task)])));
        self.initial_calls(task).await?;
        let spec = plan_spec(plan.subtasks);
        let call = self.structured(Phase::Plan, spec).await?;
        let subtasks: Vec<String> = call
            .as_ref()
            .map(|call| subtasks_of(call, plan.subtasks))
            .unwrap_or_default();
        if let Some(call) = &call {
            let ack = if subtasks.is_empty() {
                "No usable plan."
            } else {
                "Plan recorded."
            };
            self.messages.push(Message::tool_result(ack, call));
        }
        self.agent.emit(AgentEvent::Plan {
            subtasks: subtasks.clone(),
        });
        if subtasks.is_empty() {
            // No plan: the task is the only subtask, and its answer is the answer.
            return self.subtask(task, 1, 1, task, &plan.then, &[]).await;
        }
        let count = subtasks.len();
        let mut found = Vec::new();
        for (i, subtask) in subtasks.iter().enumerate() {
            let answer = self
                .subtask(task, i + 1, count, subtask, &plan.then, &found)
                .await?;
            found.push((subtask.clone(), answer));
        }
        let prompt = fill(&prompts.synthesize, &[("task", task)]);
        self.messages.push(Message::user(prompt));
        self.tool_loop(Phase::Synthesis, task).await
    }

    /// Subtask `index` of `count`, worked in this conversation (`then` is `direct`)
    /// or by `then` as a part whose task also lists what the subtasks before it
    /// `found`.
    async fn subtask(
        &mut self,
        task: &str,
        index: usize,
        count: usize,
        subtask: &str,
        then: &Strategy,
        found: &[(String, String)],
    ) -> Flow<String> {
        self.agent.emit(AgentEvent::Subtask {
            index,
            count,
            subtask: subtask.to_string(),
        });
        let (at, of) = (index.to_string(), count.to_string());
        let prompt = fill(
            &self.agent.prompts.subtask,
            &[
                ("task", task),
                ("index", &at),
                ("count", &of),
                ("subtask", subtask),
            ],
        );
        if *then == Strategy::Direct && self.leaf == Leaf::Tools {
            // A subtask is one step, not a word problem: the short code prompt, no examples.
            let prompt = self.task_message(prompt, PromptKind::CodeSubtask);
            self.messages.push(Message::user(prompt));
            return self.tool_loop(Phase::Subtask, subtask).await;
        }
        let mut message = format!("Task: {task}\n\n{prompt}");
        if !found.is_empty() {
            message.push_str("\n\nWhat the subtasks before found:");
            for (done, answer) in found {
                message.push_str(&format!("\n- {done}: {answer}"));
            }
        }
        self.part(&message, subtask, then, &format!("subtask {index}"))
            .await
    }

    /// One critique round: the verdict (an unreadable critique counts as ok).
    async fn critique(&mut self, task: &str, draft: &str, round: usize) -> Flow<Verdict> {
        let prompt = fill(
            &self.agent.prompts.critique,
            &[("task", task), ("draft", draft)],
        );
        self.messages.push(Message::user(prompt));
        let call = self.structured(Phase::Critique, critique_spec()).await?;
        let verdict = call.as_ref().and_then(verdict_of).unwrap_or_else(|| {
            tracing::debug!("unreadable critique; keeping the draft");
            Verdict {
                ok: true,
                problem: String::new(),
            }
        });
        if let Some(call) = &call {
            self.messages
                .push(Message::tool_result("Critique recorded.", call));
        }
        self.agent.emit(AgentEvent::Critique {
            round,
            verdict: verdict.clone(),
        });
        Ok(verdict)
    }

    /// One step whose reply must be a call of `spec` (and nothing else): the call, or
    /// `None` if the reply holds none.
    async fn structured(&mut self, phase: Phase, spec: ToolSpec) -> Flow<Option<ToolCall>> {
        let name = spec.name.clone();
        let calls = Calls {
            choice: ToolChoice::Required,
            tools: Some(vec![spec]),
            max: 1,
        };
        let (_, reply) = self.model_step(phase, calls, "").await?;
        match reply.calls.into_iter().find(|call| call.name == name) {
            Some(call) => {
                let call = self.with_id(call);
                self.messages.push(Message::assistant_with_tool_calls(
                    reply.text.trim(),
                    vec![call.clone()],
                ));
                Ok(Some(call))
            }
            None => {
                self.messages.push(Message::assistant(reply.raw.trim()));
                Ok(None)
            }
        }
    }

    /// Steps with tools until the model answers `question` (the task or the current
    /// subtask) without a call: the answer.
    ///
    /// One assistant turn can span several steps: with fenced code, each closed
    /// ```` ```python ```` block is run and the turn continues after its
    /// ```` ```output ```` block. A reply is never the answer when it is a call in the
    /// wrong shape (re-asked or converted), cut by the token limit (re-asked), empty
    /// after its last output (re-asked), or, once per question, states numbers no tool
    /// result backs (sent back for a check).
    async fn tool_loop(&mut self, phase: Phase, question: &str) -> Flow<String> {
        self.question = question.to_string();
        // The assistant turn so far: text, code blocks and their outputs.
        let mut turn = String::new();
        let mut grounding_checked = self.agent.settings.grounding == Grounding::Off;
        // Where the results of the check in code start in `answered`, once asked for.
        let mut check_from: Option<usize> = None;
        // Whether code that repeated a successful cell was answered by asking for the answer.
        let mut asked_for_answer = false;
        // Whether an answer about the program was sent back to speak to the question.
        let mut rephrased = false;
        // Whether a reply was cut by the per-step token limit and the answer asked for.
        let mut cut = false;
        loop {
            let calls = self.calls(ToolChoice::Auto);
            let (chat, mut reply) = self.model_step(phase, calls, &turn).await?;
            if let Some(block) = reply.code.take() {
                let repeated = self.code_tool.as_ref().is_some_and(|code| {
                    self.adds_nothing(&code.name, Some(&code.arguments(&block.code)))
                });
                if !asked_for_answer && repeated {
                    // The same code again: its output is above, so the answer is asked
                    // for instead of running it again (a second time, the breaker ends it).
                    asked_for_answer = true;
                    turn.push_str(&reply.text);
                    self.ask_for_answer(reply.step, &mut turn);
                    continue;
                }
                turn.push_str(&reply.text);
                let output = self.run_code(reply.step, block.code).await?;
                turn.push_str(&format!("\n```output\n{output}\n```\n"));
                continue;
            }
            if reply.calls.is_empty() && reply.malformed.is_empty() {
                if let Some(intent) = intended_call(&reply.text, &self.callable) {
                    reply = self
                        .redo_bare_call(&chat, reply.step, intent, &mut turn)
                        .await?;
                } else if self.code_tool.is_some() && fenced_body(&reply.text).starts_with('{') {
                    if let Some(code) = code_from_blob(fenced_body(&reply.text)) {
                        self.agent.emit(AgentEvent::BlobConverted {
                            step: reply.step,
                            blob: reply.text.trim().to_string(),
                            code: code.clone(),
                        });
                        let output = self.run_code(reply.step, code.clone()).await?;
                        turn.push_str(&format!(
                            "```python\n{code}\n```\n```output\n{output}\n```\n"
                        ));
                        continue;
                    }
                }
            }
            let unfit = self.unfit(&reply.calls);
            if !unfit.is_empty() {
                reply.calls.retain(|call| !unfit.contains(&call.name));
                self.agent.emit(AgentEvent::Declined {
                    step: reply.step,
                    tools: unfit,
                });
                if reply.calls.is_empty() && reply.malformed.is_empty() {
                    // No tool fits: the step is answered in writing.
                    let calls = self.calls(ToolChoice::None);
                    reply = self
                        .generate(reply.step, &chat, calls, after_last_output(&turn))
                        .await?;
                }
            }
            if !reply.calls.is_empty() || !reply.malformed.is_empty() {
                // The turn's text so far goes with the calls.
                reply.text = format!("{turn}{}", reply.text);
                turn.clear();
                self.handle_calls(reply).await?;
                continue;
            }
            let full = format!("{turn}{}", reply.text);
            turn.clear();
            let answer = after_last_output(&full).trim().to_string();
            let retry = if reply.finish == FinishReason::MaxTokens {
                self.agent.emit(AgentEvent::Truncated { step: reply.step });
                if cut {
                    // Asked for the answer, the model wrote past the limit again: more
                    // asking only spends steps (a written sample once took twelve).
                    self.messages.push(Message::assistant(full.trim()));
                    return Err(StopReason::MaxTokens);
                }
                cut = true;
                true
            } else if self.has_tools() && looks_like_call(&answer) {
                self.agent
                    .emit(AgentEvent::CallShapedAnswer { step: reply.step });
                true
            } else {
                answer.is_empty()
            };
            self.messages.push(Message::assistant(full.trim()));
            if retry {
                self.ask_for_answer(reply.step, &mut turn);
                continue;
            }
            if let (false, Some(code)) = (grounding_checked, &self.code_tool) {
                grounding_checked = true;
                // Only computed results back a number: one copied from a passage or
                // a page is an input of the computation, not its result.
                let results: Vec<&str> = self
                    .answered
                    .iter()
                    .filter(|(tool, _, _)| *tool == code.name)
                    .map(|(_, _, r)| r.as_str())
                    .collect();
                if !is_grounded(&answer, &self.question, &results) {
                    check_from = Some(self.answered.len());
                    self.agent.emit(AgentEvent::Ungrounded {
                        step: reply.step,
                        answer: answer.clone(),
                    });
                    let check = fill(
                        &self.agent.prompts.ground,
                        &[("question", &self.question), ("answer", &answer)],
                    );
                    self.messages.push(Message::user(check));
                    if self.fenced {
                        // The check is code: the reply starts inside a python block.
                        turn.push_str("```python\n");
                    }
                    continue;
                }
            }
            if let Some(kept) = check_from.and_then(|from| self.check_result(from, &answer)) {
                // The check in code printed a result and the answer still states
                // another number: the check is what was asked for, so it stands.
                self.agent.emit(AgentEvent::CheckKept {
                    step: reply.step,
                    answer: answer.clone(),
                    kept: kept.clone(),
                });
                return Ok(kept);
            }
            if self.code_tool.is_some() && speaks_of_program(&answer) {
                // "The output of the function solution() is 42": the answer is the
                // result it names, when that is one short line; else it is asked for
                // in the question's own terms, once.
                if let Some(result) = self
                    .last_code_result()
                    .filter(|r| answer.contains(r.as_str()))
                {
                    return Ok(result);
                }
                if !rephrased {
                    rephrased = true;
                    self.ask_for_answer(reply.step, &mut turn);
                    continue;
                }
            }
            return Ok(answer);
        }
    }

    /// The tools of `calls` that the question never names
    /// ([`jielong_chat::fit::tool_fits`]), when calls are fitted: only tools for a
    /// subject of their own ([`ToolKind::Plain`]) are judged. Each name once.
    fn unfit(&self, calls: &[ToolCall]) -> Vec<String> {
        if self.agent.settings.call_fit != CallFit::Fitted {
            return Vec::new();
        }
        let plain = |call: &ToolCall| {
            self.agent
                .tools
                .get(&call.name)
                .is_some_and(|tool| tool.kind() == ToolKind::Plain)
        };
        let mut unfit: Vec<String> = Vec::new();
        for i in unfit_calls(&self.question, calls, &self.callable, plain) {
            if !unfit.contains(&calls[i].name) {
                unfit.push(calls[i].name.clone());
            }
        }
        unfit
    }

    /// The answer carrying the result of the check in code asked for when `answered`
    /// held `from` results ([`carry_result`]), when that check printed one number and
    /// `answer` does not state it; `None` when the answer agrees with the check or no
    /// check ran.
    fn check_result(&self, from: usize, answer: &str) -> Option<String> {
        let code = self.code_tool.as_ref()?;
        let (_, _, result) = self
            .answered
            .get(from..)?
            .iter()
            .rev()
            .find(|(tool, _, _)| *tool == code.name)?;
        if is_grounded(answer, &self.question, &[result.as_str()]) {
            return None;
        }
        let kept = carry_result(answer, &self.question, result)?;
        Some(if speaks_of_program(&kept) {
            carry_result("", &self.question, result)?
        } else {
            kept
        })
    }

    /// The code tool's latest result when it is one short line (a value, not a
    /// table or a trace).
    fn last_code_result(&self) -> Option<String> {
        let code = self.code_tool.as_ref()?;
        let (_, _, result) = self
            .answered
            .iter()
            .rev()
            .find(|(tool, _, _)| *tool == code.name)?;
        let result = result.trim();
        (!result.is_empty() && !result.contains('\n') && result.chars().count() <= 60)
            .then(|| result.to_string())
    }

    /// Asks for the answer to the current question ([`PromptKind::Answer`]) after
    /// `step`'s reply gave none it could keep; the assistant turn so far (`turn`, when
    /// not blank) is recorded first.
    fn ask_for_answer(&mut self, step: usize, turn: &mut String) {
        if !turn.trim().is_empty() {
            self.messages.push(Message::assistant(turn.trim()));
        }
        turn.clear();
        self.agent.emit(AgentEvent::AnswerRetry { step });
        let nudge = fill(&self.agent.prompts.answer, &[("question", &self.question)]);
        self.messages.push(Message::user(nudge));
    }

    /// Runs fenced (or converted) code on the code tool, as a call of its own: the
    /// result text for the ```` ```output ```` block.
    async fn run_code(&mut self, step: usize, code: String) -> Flow<String> {
        self.agent.emit(AgentEvent::CodeBlock {
            step,
            code: code.clone(),
        });
        let Some(interpreter) = &self.code_tool else {
            return Ok("no tool runs code in this run".into());
        };
        let call = self.with_id(ToolCall::new(
            interpreter.name.clone(),
            interpreter.arguments(&code),
        ));
        let mut results = self
            .execute(step, vec![call])
            .await
            .map_err(|(_, stop)| stop)?;
        Ok(results
            .pop()
            .map(|(_, _, content)| content)
            .unwrap_or_default())
    }

    /// Generates a step again whose reply was a call written as bare JSON: with calls
    /// required when the call would do something new, as prose when it (or the
    /// constrained call) would only repeat a call that succeeded or restate a result.
    async fn redo_bare_call(
        &mut self,
        chat: &Chat,
        step: usize,
        intent: Intent,
        turn: &mut String,
    ) -> Flow<Reply> {
        if !self.adds_nothing(&intent.name, intent.arguments.as_ref()) {
            self.agent.emit(AgentEvent::ConstrainedRetry {
                step,
                tool: intent.name,
            });
            let calls = self.calls(ToolChoice::Required);
            let reply = self.generate(step, chat, calls, "").await?;
            let redundant = !reply.calls.is_empty()
                && reply
                    .calls
                    .iter()
                    .all(|call| self.adds_nothing(&call.name, Some(&call.arguments)));
            if !redundant {
                return Ok(reply);
            }
        }
        self.ask_for_answer(step, turn);
        let chat = self.chat("");
        let calls = self.calls(ToolChoice::None);
        self.generate(step, &chat, calls, "").await
    }

    /// Whether a call of `name` with `arguments` could tell the model nothing new: the
    /// same call succeeded before, or the arguments only restate a result it has.
    fn adds_nothing(&self, name: &str, arguments: Option<&Value>) -> bool {
        let Some(arguments) = arguments else {
            return false;
        };
        let answered = self
            .answered
            .iter()
            .any(|(tool, args, _)| tool == name && args == arguments);
        let results: Vec<&str> = self.answered.iter().map(|(_, _, r)| r.as_str()).collect();
        answered || restates_result(arguments, &results)
    }

    /// Makes the agent's own calls before the first step (step 0 in events).
    /// Then, with [`Prefetch::Tools`], the calls the tools ask for with `task`
    /// ([`jielong_chat::tool::Tool::prefetch`]) whose tool the initial calls do not call.
    /// A written answer gets them too ([`Runner::read_first`]): it calls nothing itself,
    /// but it reads what the agent reads first (a document search's passages), so a
    /// vote between written and computed answers to a question about the user's
    /// documents is a vote between readers, never a guess from memory against them.
    async fn initial_calls(&mut self, task: &str) -> Flow<()> {
        if self.leaf == Leaf::Written {
            if let (Some(context), Some(message)) =
                (self.read_first(task).await?, self.messages.last_mut())
            {
                message.content = format!("{context}\n\n{}", message.content);
            }
            return Ok(());
        }
        let calls = self.first_calls(task);
        if calls.is_empty() {
            return Ok(());
        }
        let reply = Reply {
            step: 0,
            text: String::new(),
            raw: String::new(),
            calls,
            malformed: Vec::new(),
            code: None,
            finish: FinishReason::EndOfText,
        };
        self.handle_calls(reply).await
    }

    /// The agent's own first calls for `task`: [`AgentSettings::initial_calls`], then
    /// with [`Prefetch::Tools`] those the tools ask for whose tool is not called yet.
    ///
    /// [`AgentSettings::initial_calls`]: super::AgentSettings::initial_calls
    fn first_calls(&self, task: &str) -> Vec<ToolCall> {
        let settings = &self.agent.settings;
        let mut calls = settings.initial_calls.clone();
        if settings.prefetch == Prefetch::Tools {
            for call in self.agent.tools.prefetch_calls(task) {
                if !calls.iter().any(|made| made.name == call.name) {
                    calls.push(call);
                }
            }
        }
        calls
    }

    /// The first calls run and their results as text to put in front of the task in
    /// its own message ([`PromptKind::ReadFirst`]); `None` when nothing was read.
    /// Never as a call and its result in the conversation: a model offered no tools
    /// copies that exchange and writes a call as its answer.
    async fn read_first(&mut self, task: &str) -> Flow<Option<String>> {
        let calls = self.first_calls(task);
        if calls.is_empty() {
            return Ok(None);
        }
        let results = match self.execute(0, calls).await {
            Ok(results) => results,
            Err((_, stop)) => return Err(stop),
        };
        let read: Vec<&str> = results
            .iter()
            .filter(|(_, ok, _)| *ok)
            .map(|(_, _, content)| content.trim())
            .filter(|content| !content.is_empty())
            .collect();
        if read.is_empty() {
            return Ok(None);
        }
        let context = fill(
            &self.agent.prompts.read_first,
            &[("results", &read.join("\n\n"))],
        );
        Ok(Some(context.trim().to_string()))
    }

    /// Records a reply with calls, runs them and feeds the results (and any malformed
    /// blocks) back.
    async fn handle_calls(&mut self, reply: Reply) -> Flow<()> {
        let step = reply.step;
        for (raw, error) in &reply.malformed {
            self.agent.emit(AgentEvent::MalformedCall {
                step,
                raw: raw.clone(),
                error: error.clone(),
            });
        }
        let calls: Vec<ToolCall> = reply
            .calls
            .into_iter()
            .map(|call| self.with_id(call))
            .collect();
        if calls.is_empty() {
            self.messages.push(Message::assistant(reply.raw.trim()));
        } else {
            self.messages.push(Message::assistant_with_tool_calls(
                reply.text.trim(),
                calls.clone(),
            ));
        }
        let results = self.execute(step, calls).await;
        // Results that came back go into the transcript even when the run stops.
        let (results, stop) = match results {
            Ok(results) => (results, None),
            Err((results, stop)) => (results, Some(stop)),
        };
        for (call, _, content) in &results {
            self.messages
                .push(Message::tool_result(content.clone(), call));
        }
        if let Some(stop) = stop {
            return Err(stop);
        }
        if !reply.malformed.is_empty() {
            let feedback = self.malformed_feedback(&reply.malformed);
            self.messages.push(Message::user(feedback));
            self.recover = Some("a malformed call".into());
        }
        Ok(())
    }

    /// Runs calls (checking repeats, counting failures, emitting their events): each
    /// call with whether it succeeded and the content the model sees. A failure
    /// marks the next step for recovery sampling. On a stop, the results so far come
    /// with it.
    async fn execute(
        &mut self,
        step: usize,
        calls: Vec<ToolCall>,
    ) -> Result<Vec<(ToolCall, bool, String)>, (Vec<(ToolCall, bool, String)>, StopReason)> {
        for call in &calls {
            self.agent.emit(AgentEvent::ToolCall {
                step,
                call: call.clone(),
            });
        }
        self.check_repeats(&calls)
            .map_err(|stop| (Vec::new(), stop))?;
        self.tool_calls += calls.len();
        let outcomes = Self::dispatch(self.agent, self.deadline, &calls)
            .await
            .map_err(|stop| (Vec::new(), stop))?;
        let mut gave_up: Option<(String, ToolError)> = None;
        let mut results = Vec::with_capacity(calls.len());
        for (call, (result, attempts)) in calls.into_iter().zip(outcomes) {
            let (ok, content) = match result {
                Ok(value) => {
                    self.failures.remove(&call.name);
                    let text = self.result_text(value);
                    self.answered
                        .push((call.name.clone(), call.arguments.clone(), text.clone()));
                    (true, text)
                }
                Err(error) => {
                    let failures = self.failures.entry(call.name.clone()).or_default();
                    *failures += 1;
                    if *failures >= self.agent.settings.max_tool_failures && gave_up.is_none() {
                        gave_up = Some((call.name.clone(), error.clone()));
                    }
                    self.recover = Some(format!("{} failed", call.name));
                    (false, self.truncate(format!("Error: {error}")))
                }
            };
            self.agent.emit(AgentEvent::ToolResult {
                step,
                call_id: call.id.clone(),
                name: call.name.clone(),
                ok,
                content: content.clone(),
                attempts,
            });
            results.push((call, ok, content));
        }
        match gave_up {
            Some((name, error)) => Err((results, StopReason::ToolFailed { name, error })),
            None => Ok(results),
        }
    }

    /// Stops the run if a call was made more often than allowed.
    fn check_repeats(&mut self, calls: &[ToolCall]) -> Flow<()> {
        for call in calls {
            let count = match self
                .seen
                .iter_mut()
                .find(|(name, args, _)| *name == call.name && *args == call.arguments)
            {
                Some(seen) => {
                    seen.2 += 1;
                    seen.2
                }
                None => {
                    self.seen
                        .push((call.name.clone(), call.arguments.clone(), 1));
                    1
                }
            };
            if count > 1 {
                self.recover = Some(format!("{} repeated", call.name));
            }
            if count > self.agent.settings.max_identical_calls {
                return Err(StopReason::RepeatedCall {
                    name: call.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Runs the calls (concurrently when allowed), within the wall-time budget; outcomes
    /// in call order. (Takes no `&self`: a shared borrow of the runner across an await
    /// would need the session to be `Sync`.)
    async fn dispatch(
        agent: &Agent,
        deadline: Option<Deadline>,
        calls: &[ToolCall],
    ) -> Flow<Vec<Outcome>> {
        let work = async move {
            if agent.settings.parallel_calls && calls.len() > 1 {
                join_all(calls.iter().map(|call| call_tool(agent, call))).await
            } else {
                let mut outcomes = Vec::with_capacity(calls.len());
                for call in calls {
                    outcomes.push(call_tool(agent, call).await);
                }
                outcomes
            }
        };
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, work)
                .await
                .map_err(|_| StopReason::WallTime),
            None => Ok(work.await),
        }
    }

    /// Checks the budgets and generates one step on the conversation (and `turn`, the
    /// assistant's reply so far).
    async fn model_step(&mut self, phase: Phase, calls: Calls, turn: &str) -> Flow<(Chat, Reply)> {
        if self.expired() {
            return Err(StopReason::WallTime);
        }
        if self.steps >= self.agent.settings.max_steps {
            return Err(StopReason::MaxSteps);
        }
        if self.spent() >= self.agent.settings.max_total_tokens {
            return Err(StopReason::MaxTokens);
        }
        self.steps += 1;
        let step = self.steps;
        tracing::debug!(step, ?phase, messages = self.messages.len(), "agent step");
        self.agent.emit(AgentEvent::StepStarted { step, phase });
        let chat = self.chat(turn);
        let reply = self
            .generate(step, &chat, calls, after_last_output(turn))
            .await?;
        Ok((chat, reply))
    }

    /// The conversation so far, with the assistant's reply started as `turn`.
    fn chat(&self, turn: &str) -> Chat {
        Chat::new(self.messages.clone())
            .with_tools(self.callable.clone())
            .with_prefill(turn)
    }

    /// The sampling of the next step: the run's own, or, after a failure, a draw at
    /// the recovery temperature with a seed of its own (once per failure).
    fn next_sampling(&mut self, step: usize) -> SamplingParams {
        let settings = &self.agent.settings;
        let base = settings.sampling.clone();
        let Some(reason) = self.recover.take() else {
            return base;
        };
        let temperature = settings.recovery_temperature;
        if temperature <= 0.0 || temperature <= base.temperature {
            return base;
        }
        self.recoveries += 1;
        let seed = base
            .seed
            .wrapping_add(0x9E37_79B9u32.wrapping_mul(self.recoveries));
        self.agent.emit(AgentEvent::Resampled {
            step,
            temperature,
            seed,
            reason,
        });
        SamplingParams {
            temperature,
            seed,
            ..base
        }
    }

    /// One model call on `chat`, streamed into events. With fenced code, generation is
    /// cut right after the first closed ```` ```python ```` block.
    ///
    /// `open` is the end of the prefill that belongs to the reply being written (the
    /// assistant's turn after its last output): a code fence opened there counts as
    /// opened by the reply.
    async fn generate(
        &mut self,
        step: usize,
        chat: &Chat,
        calls: Calls,
        open: &str,
    ) -> Flow<Reply> {
        let settings = &self.agent.settings;
        let remaining = settings.max_total_tokens.saturating_sub(self.spent());
        if remaining == 0 {
            return Err(StopReason::MaxTokens);
        }
        let max_tokens = settings.max_tokens_per_step.min(remaining);
        let sampling = self.next_sampling(step);
        let has_tools = calls
            .tools
            .as_ref()
            .unwrap_or(&chat.tools)
            .iter()
            .next()
            .is_some();
        let choice = calls.choice;
        let request = ChatRequest {
            max_tokens,
            sampling,
            tool_choice: calls.choice,
            call_tools: calls.tools,
            max_calls: calls.max,
            ..ChatRequest::default()
        };
        let mut generation = self.session.respond(chat, &request).map_err(stop_for)?;
        let mut reply = Reply {
            step,
            text: String::new(),
            raw: String::new(),
            calls: Vec::new(),
            malformed: Vec::new(),
            code: None,
            finish: FinishReason::EndOfText,
        };
        // A reply that opens with a bare JSON call is cut as soon as the object is
        // complete: small models tend to repeat it line after line until the budget.
        let mut watch_bare = has_tools && choice == ToolChoice::Auto;
        let watch_code = self.fenced && (!has_tools || choice == ToolChoice::Auto);
        let mut cut = false;
        let completion = loop {
            let event = match self.deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, generation.next()).await {
                        Ok(event) => event,
                        // Dropping the generation cancels it.
                        Err(_) => return Err(StopReason::WallTime),
                    }
                }
                None => generation.next().await,
            };
            match event {
                // After a cut, what the backend still sends is not part of the reply.
                Some(GenerationEvent::Text(_)) if cut => {}
                Some(GenerationEvent::Text(text)) => {
                    reply.text.push_str(&text);
                    self.agent.emit(AgentEvent::Token {
                        step,
                        text: text.clone(),
                    });
                    if watch_bare {
                        match bare_call_state(&reply.text) {
                            BareCall::Complete => {
                                generation.cancel();
                                cut = true;
                                watch_bare = false;
                            }
                            BareCall::Not => watch_bare = false,
                            BareCall::Open => {}
                        }
                    }
                    // A block closes with backticks: only a piece with one can close it.
                    if watch_code
                        && !cut
                        && text.contains('`')
                        && reply.calls.is_empty()
                        && reply.cut_at_code(open)
                    {
                        generation.cancel();
                        cut = true;
                    }
                }
                Some(GenerationEvent::Done(Ok(completion))) => break completion,
                Some(GenerationEvent::Done(Err(error))) => return Err(stop_for(error)),
                Some(_) if cut => {}
                Some(GenerationEvent::Call(call)) => reply.calls.push(call),
                Some(GenerationEvent::Malformed(bad)) => reply.malformed.push((bad.raw, bad.error)),
                Some(GenerationEvent::CallStarted | GenerationEvent::Logprob(_)) => {}
                None => {
                    return Err(StopReason::ModelError(
                        "the generation ended without a result".into(),
                    ))
                }
            }
        };
        if !cut {
            reply.raw = completion.text.clone();
        }
        self.usage.accumulate(&completion.usage);
        self.distinct_prompt_tokens = self
            .distinct_prompt_tokens
            .max(completion.usage.prompt_tokens);
        self.agent.emit(AgentEvent::StepFinished {
            step,
            finish: completion.finish.clone(),
            usage: completion.usage.clone(),
        });
        match completion.finish {
            FinishReason::ContextFull => return Err(StopReason::ContextFull),
            FinishReason::Cancelled if cut => {}
            FinishReason::Cancelled if self.expired() => return Err(StopReason::WallTime),
            FinishReason::Cancelled => {
                return Err(StopReason::ModelError(
                    "the generation was cancelled".into(),
                ))
            }
            // A reply cut by the limit that still closed a code block is complete.
            FinishReason::MaxTokens if reply.code.is_some() || cut => {}
            ref finish => reply.finish = finish.clone(),
        }
        Ok(reply)
    }

    /// `task` as the user's message: with fenced code, wrapped by the code prompt
    /// `kind` (`code_task.md` with worked examples for the task, the short
    /// `code_subtask.md` for a subtask of a plan).
    fn task_message(&self, task: String, kind: PromptKind) -> String {
        if self.fenced {
            fill(self.agent.prompts.get(kind), &[("task", &task)])
        } else {
            task
        }
    }

    /// Whether the agent has any tool (a call-shaped reply can only mean a call then).
    fn has_tools(&self) -> bool {
        self.code_tool.is_some() || !self.callable.is_empty()
    }

    /// Calls of the listed tools with `choice`.
    fn calls(&self, choice: ToolChoice) -> Calls {
        Calls {
            choice,
            tools: None,
            max: self.agent.settings.max_calls_per_step,
        }
    }

    /// `call` with an id: its own, or a fresh one (nine alphanumerics, which every
    /// template accepts).
    fn with_id(&mut self, call: ToolCall) -> ToolCall {
        if call.id.is_some() {
            return call;
        }
        self.next_id += 1;
        let id = format!("call{:05}", self.next_id % 100_000);
        call.with_id(id)
    }

    fn result_text(&self, value: Value) -> String {
        let text = match value {
            Value::String(text) => text,
            Value::Null => "(no output)".to_string(),
            other => other.to_string(),
        };
        self.truncate(text)
    }

    /// `text` cut to the result size limit.
    fn truncate(&self, text: String) -> String {
        let max = self.agent.settings.max_result_chars;
        match text.char_indices().nth(max) {
            None => text,
            Some((cut, _)) => {
                let more = text[cut..].chars().count();
                format!("{}… [{more} more characters cut]", &text[..cut])
            }
        }
    }

    fn malformed_feedback(&self, malformed: &[(String, String)]) -> String {
        let errors: Vec<&str> = malformed.iter().map(|(_, e)| e.as_str()).collect();
        let example = match self.agent.format {
            ToolCallFormat::Llama3 => {
                "<|python_tag|>{\"name\": \"TOOL\", \"parameters\": {...}}".to_string()
            }
            ToolCallFormat::Mistral => {
                "[TOOL_CALLS][{\"name\": \"TOOL\", \"arguments\": {...}}]".to_string()
            }
            format => format!(
                "{}{{\"name\": \"TOOL\", \"arguments\": {{...}}}}{}",
                format.open_marker(),
                format.close_marker().unwrap_or_default()
            ),
        };
        format!(
            "Error: your tool call could not be read ({}). Write a call as {example}, or reply with the final answer.",
            errors.join("; ")
        )
    }

    fn spent(&self) -> usize {
        self.usage.generated_tokens + self.usage.evaluated_tokens
    }

    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Deadline::now() >= d)
    }
}

/// Runs one call, retrying retryable errors as the settings allow.
async fn call_tool(agent: &Agent, call: &ToolCall) -> Outcome {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match agent.tools.call(&call.name, call.arguments.clone()).await {
            Err(error) if error.retryable() && attempts <= agent.settings.tool_retries => {
                tracing::debug!(tool = %call.name, %error, attempts, "retrying tool call");
                tokio::time::sleep(agent.settings.retry_delay).await;
            }
            result => return (result, attempts),
        }
    }
}

/// Why a model error ends the run.
pub(super) fn stop_for(error: RuntimeError) -> StopReason {
    match error {
        RuntimeError::PromptTooLong { .. } => StopReason::ContextFull,
        other => StopReason::ModelError(other.to_string()),
    }
}

/// The `submit_plan` tool: at most `max` short subtasks.
fn plan_spec(max: usize) -> ToolSpec {
    ToolSpec::new(
        SUBMIT_PLAN,
        "Submit the plan: short subtasks, in order.",
        json!({
            "type": "object",
            "properties": {
                "subtasks": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1, "maxLength": 160},
                    "minItems": 1,
                    "maxItems": max,
                }
            },
            "required": ["subtasks"],
            "additionalProperties": false,
        }),
    )
}

/// The `submit_critique` tool.
fn critique_spec() -> ToolSpec {
    ToolSpec::new(
        SUBMIT_CRITIQUE,
        "Submit the critique: is the answer ok, and if not, what is wrong.",
        json!({
            "type": "object",
            "properties": {
                "ok": {"type": "boolean"},
                "problem": {"type": "string", "maxLength": 200},
            },
            "required": ["ok", "problem"],
            "additionalProperties": false,
        }),
    )
}

fn subtasks_of(call: &ToolCall, max: usize) -> Vec<String> {
    call.arguments
        .get("subtasks")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .take(max)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn verdict_of(call: &ToolCall) -> Option<Verdict> {
    let ok = call.arguments.get("ok")?.as_bool()?;
    let problem = call
        .arguments
        .get("problem")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_string();
    Some(Verdict { ok, problem })
}
