//! The one dispatch of [`Strategy`] values and the helpers composed strategies share:
//! an agent for an inner run (its strategy, its tools, its events tagged), and the
//! figures of inner runs folded into the outer one.
//!
//! Conversational strategies (`direct`, `written`, `plan`, `reflect`) run on a
//! [`Runner`]: one conversation, the KV cache reused step to step; an inner strategy
//! that is not conversational runs as a part of its own ([`Runner`] records its task
//! and answer in the conversation). `sample` runs its inner strategies as whole runs
//! (on branches where the backend has them), `fallback` runs its two in turn, `route`
//! one of its two, `tree` searches.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::events::{AgentEvent, AgentRun};
use super::route::needs_tools;
use super::run::{Leaf, Runner};
use super::strategy::{Fallback, Strategy};
use super::{consistency, tree, Agent, EventHandler};
use jielong_chat::generate::Usage;
use jielong_chat::model::ModelSession;
use jielong_chat::tool::ToolRegistry;

/// Works `task` the way `agent`'s strategy says: every run, outer or inner, goes
/// through here.
pub(super) fn work<'a>(
    agent: &'a Agent,
    session: &'a mut dyn ModelSession,
    task: &'a str,
) -> BoxFuture<'a, AgentRun> {
    async move {
        let strategy = &agent.settings.strategy;
        match strategy {
            Strategy::Sample(sample) => consistency::run(agent, session, task, sample).await,
            Strategy::Tree(shape) => tree::run(agent, session, task, *shape).await,
            Strategy::Fallback(fallback) => fall_back(agent, session, task, fallback).await,
            Strategy::Route(route) => {
                let (then, needs) = if needs_tools(task, &agent.tools) {
                    (&route.tools, true)
                } else {
                    (&route.otherwise, false)
                };
                agent.emit(AgentEvent::Routed {
                    needs_tools: needs,
                    then: then.to_string(),
                });
                let started = Instant::now();
                let run = agent.delegate((**then).clone()).run(session, task).await;
                agent.finish(AgentRun {
                    elapsed: started.elapsed(),
                    ..run
                })
            }
            Strategy::Written => {
                Runner::new(agent, session, Leaf::Written)
                    .run(task, strategy)
                    .await
            }
            Strategy::Direct | Strategy::Plan(_) | Strategy::Reflect(_) => {
                Runner::new(agent, session, Leaf::Tools)
                    .run(task, strategy)
                    .await
            }
        }
    }
    .boxed()
}

/// `fallback.first`; when it ends without an answer, `fallback.then`, whose answer is
/// marked unverified.
async fn fall_back(
    agent: &Agent,
    session: &mut dyn ModelSession,
    task: &str,
    fallback: &Fallback,
) -> AgentRun {
    let started = Instant::now();
    let first = agent
        .delegate((*fallback.first).clone())
        .run(session, task)
        .await;
    if first.answer.is_some() && first.stop.is_answered() {
        return agent.finish(AgentRun {
            elapsed: started.elapsed(),
            ..first
        });
    }
    agent.emit(AgentEvent::FellBack {
        reason: first.stop.clone(),
        then: fallback.then.to_string(),
    });
    let then = agent
        .delegate((*fallback.then).clone())
        .run(session, task)
        .await;
    let mut figures = Figures::default();
    figures.add(&first);
    let unverified = then.answer.is_some().then(|| {
        let why = first.stop.to_string();
        let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
        let why: String = why.chars().take(120).collect();
        format!("{} ended without an answer ({why})", fallback.first)
    });
    agent.finish(figures.into_run(AgentRun {
        unverified,
        elapsed: started.elapsed(),
        ..then
    }))
}

/// What inner runs spent, added into an outer run.
#[derive(Debug, Default, Clone)]
pub(super) struct Figures {
    pub usage: Usage,
    pub steps: usize,
    pub tool_calls: usize,
    pub distinct_prompt_tokens: usize,
}

impl Figures {
    /// Adds one inner run's figures.
    pub fn add(&mut self, run: &AgentRun) {
        self.usage.accumulate(&run.usage);
        self.steps += run.steps;
        self.tool_calls += run.tool_calls;
        self.distinct_prompt_tokens = self.distinct_prompt_tokens.max(run.distinct_prompt_tokens);
    }

    /// Adds these figures to an outer run's own.
    pub fn into_run(self, mut run: AgentRun) -> AgentRun {
        run.usage.accumulate(&self.usage);
        run.steps += self.steps;
        run.tool_calls += self.tool_calls;
        run.distinct_prompt_tokens = run.distinct_prompt_tokens.max(self.distinct_prompt_tokens);
        run
    }
}

impl Agent {
    /// The agent of an inner run: `strategy`, `tools`, and events passed through `wrap`
    /// (`None` drops one).
    pub(super) fn derived(
        &self,
        strategy: Strategy,
        tools: ToolRegistry,
        wrap: impl Fn(AgentEvent) -> Option<AgentEvent> + Send + Sync + 'static,
    ) -> Agent {
        let mut settings = self.settings.clone();
        settings.strategy = strategy;
        let events = self.events.clone().map(|handler| {
            Arc::new(move |event: &AgentEvent| {
                if let Some(event) = wrap(event.clone()) {
                    handler(&event)
                }
            }) as EventHandler
        });
        Agent {
            prompts: self.prompts.clone(),
            tools,
            format: self.format,
            settings,
            events,
            thoughts: self.thoughts.clone(),
        }
    }

    /// The agent of a part of a composed run ([`AgentEvent::Part`]), sharing the
    /// tools (a subtask sees the Python state its plan built).
    pub(super) fn part(&self, strategy: Strategy, part: impl Into<String>) -> Agent {
        let part = part.into();
        self.derived(strategy, self.tools.clone(), move |event| {
            Some(AgentEvent::Part {
                part: part.clone(),
                event: Box::new(event),
            })
        })
    }

    /// The agent a strategy hands the whole task to (`route`, `fallback`): its events
    /// are the run's own, but for its `Final` and `Stopped` (the outer run ends with
    /// its own).
    pub(super) fn delegate(&self, strategy: Strategy) -> Agent {
        self.derived(strategy, self.tools.clone(), |event| match event {
            AgentEvent::Final { .. } | AgentEvent::Stopped { .. } => None,
            event => Some(event),
        })
    }
}
