//! How an agent works a task: a [`Strategy`] value that carries its own parameters and
//! may wrap others, so ways of working compose (`reflect(vote(written, direct, n=5))`).
//!
//! One spelling for every entry point: the text form below is what `--strategy`
//! takes, what a YAML `strategy:` string holds, and what [`fmt::Display`] writes
//! ([`Strategy::parse`] reads it back to the same value); YAML and JSON may also write
//! the nested form (`{reflect: {around: {sample: {of: [written, direct], n: 5}}}}`).
//!
//! ```text
//! strategy := name | name "(" arg ("," arg)* ")"
//! arg      := strategy | key "=" value
//! direct | written
//! plan(INNER = direct, subtasks=5)          reflect(INNER = direct, rounds=1)
//! vote(INNER…, n=5)   judge(INNER…, n=5)    adaptive(INNER…, n=5)
//! sample(INNER…, n=5, pick=vote|judge|check, draw=all|adaptive)
//! fallback(FIRST, THEN)                     route(TOOLS, OTHERWISE = written)
//! tree(breadth=3, beam=3, depth=4)
//! presets: self-consistency = vote(direct, n=N), best-of-n = judge(direct, n=N),
//!          mixed = vote(written, direct, n=N), plan+reflect = reflect(plan),
//!          tree-of-thoughts = tree      (N: the caller's default samples, 5)
//! ```

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::tree::TreeSearch;

/// How an agent works a task. Leaves answer; the others wrap leaves or each other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// The task, then steps with the agent's tools until the model answers (the
    /// default).
    #[default]
    Direct,
    /// The model answers in writing: no tools offered, no system prompt but one the
    /// user gave (the plain model's answer, inside the agent's budgets and checks). It
    /// reads what the agent reads before any step (a document search's passages with
    /// the task), so it answers a question about the user's documents from them.
    Written,
    /// Plan first: subtasks through `submit_plan`, each worked by the inner strategy,
    /// then a synthesis.
    Plan(Plan),
    /// The inner strategy's answer is the draft; the model criticises it through
    /// `submit_critique` and revises it when the critique finds a fault.
    Reflect(Reflect),
    /// Several runs of inner strategies, one answer picked among them.
    Sample(Sample),
    /// The first strategy; when it ends without an answer, the second, whose answer
    /// is then marked unverified ([`AgentRun::unverified`](crate::AgentRun::unverified)).
    Fallback(Fallback),
    /// Tree of Thoughts: a beam search over partial solutions of the agent's
    /// [`ThoughtSpace`](crate::ThoughtSpace). No tools are called.
    Tree(TreeSearch),
    /// The first strategy when the task needs the agent's tools, the second when it
    /// does not ([`needs_tools`](crate::needs_tools): a search or page tool is always
    /// needed; the code tool only for a task with numbers or counting in it).
    Route(Route),
}

/// [`Strategy::Route`]'s parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// For a task that needs the tools.
    #[schemars(with = "Strategy")]
    pub tools: Box<Strategy>,
    /// For any other task (default `written`).
    #[serde(default = "written")]
    #[schemars(with = "Strategy")]
    pub otherwise: Box<Strategy>,
}

/// [`Strategy::Plan`]'s parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// How each subtask is worked (default `direct`: in the plan's own conversation).
    #[serde(default = "direct")]
    #[schemars(with = "Strategy")]
    pub then: Box<Strategy>,
    /// The most subtasks, 1 to 5 (default 5).
    #[serde(default = "Plan::default_subtasks")]
    pub subtasks: usize,
}

impl Plan {
    /// The most subtasks a plan may have.
    pub const MAX_SUBTASKS: usize = 5;

    fn default_subtasks() -> usize {
        Self::MAX_SUBTASKS
    }
}

/// [`Strategy::Reflect`]'s parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reflect {
    /// What writes the draft (default `direct`).
    #[serde(default = "direct")]
    #[schemars(with = "Strategy")]
    pub around: Box<Strategy>,
    /// The most critique rounds, 1 to 8 (default 1).
    #[serde(default = "one")]
    pub rounds: usize,
}

/// [`Strategy::Sample`]'s parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// The ways of answering, taken in turn: sample `i` is worked by `of[i % len]`
    /// (default `[direct]`). The first sample of each way decodes greedily when the
    /// agent does; the others sample at [`SAMPLE_TEMPERATURE`](crate::SAMPLE_TEMPERATURE).
    #[serde(default = "just_direct")]
    #[schemars(with = "Vec<Strategy>")]
    pub of: Vec<Strategy>,
    /// How many runs at most, 1 to [`Sample::MAX`] (default 5).
    #[serde(default = "Sample::default_n")]
    pub n: usize,
    /// How the answer is picked among the runs' answers (default by vote).
    #[serde(default)]
    pub pick: Pick,
    /// How many runs are drawn (default all `n`).
    #[serde(default)]
    pub draw: Draw,
}

impl Sample {
    /// The most runs of one sample.
    pub const MAX: usize = 16;
    /// The default number of runs.
    pub const DEFAULT_N: usize = 5;

    fn default_n() -> usize {
        Self::DEFAULT_N
    }
}

/// How [`Strategy::Sample`] picks its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Pick {
    /// The answer most runs gave ([`vote_key`](crate::vote_key)); among equals, the
    /// first to appear.
    #[default]
    Vote,
    /// The model judges the distinct answers pairwise, in both orders; the vote
    /// decides between equals.
    Judge,
    /// Each distinct answer (the four with the most votes) is checked by a run of the
    /// other way of answering — a program for an answer written without one, a
    /// written answer for a program's — told the answer and asked to work the task
    /// again; an answer its checker agrees with gains [`CHECK_WEIGHT`] votes.
    Check,
}

/// The votes an answer gains when its checker agrees with it ([`Pick::Check`]):
/// agreement between two ways of answering counts for more than one more sample.
pub const CHECK_WEIGHT: usize = 2;

impl Pick {
    /// The name it is written as.
    pub fn name(self) -> &'static str {
        match self {
            Pick::Vote => "vote",
            Pick::Judge => "judge",
            Pick::Check => "check",
        }
    }
}

/// How many runs [`Strategy::Sample`] draws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Draw {
    /// All `n` at once (on branches where the backend has them).
    #[default]
    All,
    /// One run of each way first; more, a round of each way at a time, only while
    /// the answers disagree: until one answer leads the next by two votes, or all
    /// answers so far agree, or `n` runs are drawn.
    Adaptive,
}

/// [`Strategy::Fallback`]'s parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// Tried first.
    #[schemars(with = "Strategy")]
    pub first: Box<Strategy>,
    /// Tried when the first ends without an answer; its answer is unverified.
    #[schemars(with = "Strategy")]
    pub then: Box<Strategy>,
}

fn direct() -> Box<Strategy> {
    Box::new(Strategy::Direct)
}

fn written() -> Box<Strategy> {
    Box::new(Strategy::Written)
}

fn just_direct() -> Vec<Strategy> {
    vec![Strategy::Direct]
}

fn one() -> usize {
    1
}

/// The most leaf runs one strategy may make (a sample of samples multiplies).
pub const MAX_RUNS: usize = 64;

/// The most critique rounds of [`Strategy::Reflect`].
pub const MAX_ROUNDS: usize = 8;

impl Strategy {
    /// `plan(inner)` with the default number of subtasks.
    pub fn plan(inner: Strategy) -> Strategy {
        Strategy::Plan(Plan {
            then: Box::new(inner),
            subtasks: Plan::MAX_SUBTASKS,
        })
    }

    /// `reflect(inner)`: one critique round.
    pub fn reflect(inner: Strategy) -> Strategy {
        Strategy::Reflect(Reflect {
            around: Box::new(inner),
            rounds: 1,
        })
    }

    /// `n` runs of `of` (taken in turn), the answer picked by vote.
    pub fn vote(of: Vec<Strategy>, n: usize) -> Strategy {
        Strategy::Sample(Sample {
            of,
            n,
            pick: Pick::Vote,
            draw: Draw::All,
        })
    }

    /// `n` runs of `of` (taken in turn), the answer picked by the model as judge.
    pub fn judge(of: Vec<Strategy>, n: usize) -> Strategy {
        Strategy::Sample(Sample {
            of,
            n,
            pick: Pick::Judge,
            draw: Draw::All,
        })
    }

    /// At most `n` runs of `of`, drawn while they disagree, the answer voted.
    pub fn adaptive(of: Vec<Strategy>, n: usize) -> Strategy {
        Strategy::Sample(Sample {
            of,
            n,
            pick: Pick::Vote,
            draw: Draw::Adaptive,
        })
    }

    /// `first`, else `then` (unverified).
    pub fn fallback(first: Strategy, then: Strategy) -> Strategy {
        Strategy::Fallback(Fallback {
            first: Box::new(first),
            then: Box::new(then),
        })
    }

    /// `tools` for a task that needs the tools, else `otherwise`.
    pub fn route(tools: Strategy, otherwise: Strategy) -> Strategy {
        Strategy::Route(Route {
            tools: Box::new(tools),
            otherwise: Box::new(otherwise),
        })
    }

    /// The vote across ways of answering: `n` runs alternating a written answer and
    /// the agent's tools, voted (the preset `mixed`).
    pub fn mixed(n: usize) -> Strategy {
        Strategy::vote(vec![Strategy::Written, Strategy::Direct], n)
    }

    /// Reads the text form; `samples` is the `n` of the presets that sample
    /// (`self-consistency`, `best-of-n`, `mixed`) and of sampling forms that do not
    /// say (`vote(direct)`).
    pub fn parse(text: &str, samples: usize) -> Result<Strategy, StrategyError> {
        let mut parser = Parser {
            text,
            pos: 0,
            samples,
        };
        let strategy = parser.strategy()?;
        parser.space();
        if parser.pos < text.len() {
            return Err(parser.error("expected the end after a whole strategy"));
        }
        strategy.check().map_err(|detail| StrategyError {
            text: text.to_string(),
            at: None,
            detail,
        })?;
        Ok(strategy)
    }

    /// Why the value is out of range, if it is (every node checked, and the runs it
    /// makes at most [`MAX_RUNS`]).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Strategy::Direct | Strategy::Written => {}
            Strategy::Plan(plan) => {
                if !(1..=Plan::MAX_SUBTASKS).contains(&plan.subtasks) {
                    return Err(format!(
                        "plan subtasks = {} is out of range (1 to {})",
                        plan.subtasks,
                        Plan::MAX_SUBTASKS
                    ));
                }
                plan.then.check()?;
            }
            Strategy::Reflect(reflect) => {
                if !(1..=MAX_ROUNDS).contains(&reflect.rounds) {
                    return Err(format!(
                        "reflect rounds = {} is out of range (1 to {MAX_ROUNDS})",
                        reflect.rounds
                    ));
                }
                reflect.around.check()?;
            }
            Strategy::Sample(sample) => {
                if !(1..=Sample::MAX).contains(&sample.n) {
                    return Err(format!(
                        "n = {} is out of range (1 to {})",
                        sample.n,
                        Sample::MAX
                    ));
                }
                if sample.of.is_empty() {
                    return Err("a sample needs at least one way of answering".into());
                }
                for inner in &sample.of {
                    inner.check()?;
                }
            }
            Strategy::Fallback(fallback) => {
                fallback.first.check()?;
                fallback.then.check()?;
            }
            Strategy::Route(route) => {
                route.tools.check()?;
                route.otherwise.check()?;
            }
            Strategy::Tree(shape) => shape.check()?,
        }
        let runs = self.runs();
        if runs > MAX_RUNS {
            return Err(format!(
                "`{self}` makes up to {runs} runs; at most {MAX_RUNS} are allowed"
            ));
        }
        Ok(())
    }

    /// The most leaf runs the strategy makes.
    pub fn runs(&self) -> usize {
        match self {
            Strategy::Direct | Strategy::Written | Strategy::Tree(_) => 1,
            Strategy::Plan(plan) => match *plan.then {
                Strategy::Direct => 1,
                ref inner => plan.subtasks.saturating_mul(inner.runs()).saturating_add(1),
            },
            Strategy::Reflect(reflect) => reflect.around.runs().saturating_add(1),
            Strategy::Sample(sample) => {
                let most = sample.of.iter().map(Strategy::runs).max().unwrap_or(1);
                let checks = if sample.pick == Pick::Check {
                    crate::MAX_JUDGED
                } else {
                    0
                };
                sample.n.saturating_mul(most).saturating_add(checks)
            }
            Strategy::Fallback(fallback) => {
                fallback.first.runs().saturating_add(fallback.then.runs())
            }
            Strategy::Route(route) => route.tools.runs().max(route.otherwise.runs()),
        }
    }

    /// Whether it answers in one conversation of its own (`direct`, `written`).
    pub fn is_leaf(&self) -> bool {
        matches!(self, Strategy::Direct | Strategy::Written)
    }

    /// Whether any node of it is a tree search (which needs a thought space).
    pub fn searches_trees(&self) -> bool {
        self.any(&|s| matches!(s, Strategy::Tree(_)))
    }

    /// Whether `test` holds for it or any strategy inside it.
    pub fn any(&self, test: &dyn Fn(&Strategy) -> bool) -> bool {
        if test(self) {
            return true;
        }
        match self {
            Strategy::Plan(plan) => plan.then.any(test),
            Strategy::Reflect(reflect) => reflect.around.any(test),
            Strategy::Sample(sample) => sample.of.iter().any(|s| s.any(test)),
            Strategy::Fallback(f) => f.first.any(test) || f.then.any(test),
            Strategy::Route(r) => r.tools.any(test) || r.otherwise.any(test),
            _ => false,
        }
    }

    /// The name of its outermost node (`sample` for every sampling form).
    pub fn kind(&self) -> &'static str {
        match self {
            Strategy::Direct => "direct",
            Strategy::Written => "written",
            Strategy::Plan(_) => "plan",
            Strategy::Reflect(_) => "reflect",
            Strategy::Sample(_) => "sample",
            Strategy::Fallback(_) => "fallback",
            Strategy::Route(_) => "route",
            Strategy::Tree(_) => "tree",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Direct => f.write_str("direct"),
            Strategy::Written => f.write_str("written"),
            Strategy::Plan(plan) => {
                let mut args = Vec::new();
                if *plan.then != Strategy::Direct {
                    args.push(plan.then.to_string());
                }
                if plan.subtasks != Plan::MAX_SUBTASKS {
                    args.push(format!("subtasks={}", plan.subtasks));
                }
                call(f, "plan", &args)
            }
            Strategy::Reflect(reflect) => {
                let mut args = Vec::new();
                if *reflect.around != Strategy::Direct {
                    args.push(reflect.around.to_string());
                }
                if reflect.rounds != 1 {
                    args.push(format!("rounds={}", reflect.rounds));
                }
                call(f, "reflect", &args)
            }
            Strategy::Sample(sample) => {
                let name = match (sample.pick, sample.draw) {
                    (Pick::Vote, Draw::All) => "vote",
                    (Pick::Judge, Draw::All) => "judge",
                    (Pick::Vote, Draw::Adaptive) => "adaptive",
                    _ => "sample",
                };
                let mut args: Vec<String> = sample.of.iter().map(|s| s.to_string()).collect();
                args.push(format!("n={}", sample.n));
                if name == "sample" {
                    args.push(format!("pick={}", sample.pick.name()));
                    if sample.draw == Draw::Adaptive {
                        args.push("draw=adaptive".into());
                    }
                }
                call(f, name, &args)
            }
            Strategy::Fallback(fallback) => call(
                f,
                "fallback",
                &[fallback.first.to_string(), fallback.then.to_string()],
            ),
            Strategy::Route(route) => {
                let mut args = vec![route.tools.to_string()];
                if *route.otherwise != Strategy::Written {
                    args.push(route.otherwise.to_string());
                }
                call(f, "route", &args)
            }
            Strategy::Tree(shape) => {
                if *shape == TreeSearch::default() {
                    f.write_str("tree")
                } else {
                    write!(
                        f,
                        "tree(breadth={}, beam={}, depth={})",
                        shape.breadth, shape.beam, shape.depth
                    )
                }
            }
        }
    }
}

fn call(f: &mut fmt::Formatter<'_>, name: &str, args: &[String]) -> fmt::Result {
    if args.is_empty() {
        f.write_str(name)
    } else {
        write!(f, "{name}({})", args.join(", "))
    }
}

/// Text that is not a strategy: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid strategy `{text}`{}: {detail}", at.map(|at| format!(" at column {}", at + 1)).unwrap_or_default())]
pub struct StrategyError {
    /// The text read.
    pub text: String,
    /// The byte offset of the problem, when it has one place.
    pub at: Option<usize>,
    /// What is wrong.
    pub detail: String,
}

impl std::str::FromStr for Strategy {
    type Err = StrategyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Strategy::parse(text, Sample::DEFAULT_N)
    }
}

/// Every name the text form knows, for help and error texts.
pub const NAMES: &str =
    "direct, written, plan, reflect, vote, judge, adaptive, sample, fallback, route, tree; \
presets: self-consistency, best-of-n, mixed, plan+reflect, tree-of-thoughts";

struct Parser<'t> {
    text: &'t str,
    pos: usize,
    samples: usize,
}

enum Arg {
    Inner(Strategy),
    Named(String, String, usize),
}

impl Parser<'_> {
    fn error(&self, detail: impl Into<String>) -> StrategyError {
        self.error_at(self.pos, detail)
    }

    fn error_at(&self, at: usize, detail: impl Into<String>) -> StrategyError {
        StrategyError {
            text: self.text.to_string(),
            at: Some(at),
            detail: detail.into(),
        }
    }

    fn space(&mut self) {
        while self.text[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.text[self.pos..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.space();
        if self.text[self.pos..].starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn word(&mut self) -> (usize, &str) {
        self.space();
        let start = self.pos;
        let rest = &self.text[start..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '+'))
            .unwrap_or(rest.len());
        self.pos += len;
        (start, &self.text[start..start + len])
    }

    fn strategy(&mut self) -> Result<Strategy, StrategyError> {
        let (at, name) = self.word();
        let name = name.to_ascii_lowercase();
        if name.is_empty() {
            return Err(self.error(format!("expected a strategy ({NAMES})")));
        }
        let args = if self.eat('(') {
            self.args()?
        } else {
            Vec::new()
        };
        self.build(at, &name, args)
    }

    fn args(&mut self) -> Result<Vec<Arg>, StrategyError> {
        let mut args = Vec::new();
        if self.eat(')') {
            return Ok(args);
        }
        loop {
            let save = self.pos;
            let (at, word) = self.word();
            let word = word.to_string();
            if !word.is_empty() && self.eat('=') {
                let (_, value) = self.word();
                if value.is_empty() {
                    return Err(self.error(format!("`{word}=` needs a value")));
                }
                args.push(Arg::Named(word.to_ascii_lowercase(), value.to_string(), at));
            } else {
                self.pos = save;
                args.push(Arg::Inner(self.strategy()?));
            }
            if self.eat(')') {
                return Ok(args);
            }
            if !self.eat(',') {
                return Err(self.error("expected `,` or `)`"));
            }
        }
    }

    fn build(&self, at: usize, name: &str, args: Vec<Arg>) -> Result<Strategy, StrategyError> {
        let mut inner = Vec::new();
        let mut named = Vec::new();
        for arg in args {
            match arg {
                Arg::Inner(s) => inner.push(s),
                Arg::Named(key, value, at) => named.push((key, value, at)),
            }
        }
        let number = |key: &str, value: &str, at: usize| {
            value
                .parse::<usize>()
                .map_err(|_| self.error_at(at, format!("`{key}` must be a whole number")))
        };
        let allow = |keys: &[&str]| {
            for (key, _, at) in &named {
                if !keys.contains(&key.as_str()) {
                    let known = if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    };
                    return Err(
                        self.error_at(*at, format!("`{name}` has no `{key}` (it has: {known})"))
                    );
                }
            }
            Ok(())
        };
        let inner_count = |range: std::ops::RangeInclusive<usize>, what: &str| {
            if range.contains(&inner.len()) {
                Ok(())
            } else {
                Err(self.error_at(at, format!("`{name}` takes {what}")))
            }
        };
        let samples = self.samples;
        let strategy = match name {
            "direct" | "written" | "self-consistency" | "best-of-n" | "mixed" | "plan+reflect"
            | "tree-of-thoughts" => {
                allow(&[])?;
                inner_count(0..=0, "no strategies")?;
                match name {
                    "direct" => Strategy::Direct,
                    "written" => Strategy::Written,
                    "self-consistency" => Strategy::vote(just_direct(), samples),
                    "best-of-n" => Strategy::judge(just_direct(), samples),
                    "mixed" => Strategy::mixed(samples),
                    "plan+reflect" => Strategy::reflect(Strategy::plan(Strategy::Direct)),
                    _ => Strategy::Tree(TreeSearch::default()),
                }
            }
            "plan" => {
                allow(&["subtasks"])?;
                inner_count(0..=1, "at most one strategy (how each subtask is worked)")?;
                let mut plan = Plan {
                    then: Box::new(inner.pop().unwrap_or_default()),
                    subtasks: Plan::MAX_SUBTASKS,
                };
                for (key, value, at) in &named {
                    plan.subtasks = number(key, value, *at)?;
                }
                Strategy::Plan(plan)
            }
            "reflect" => {
                allow(&["rounds"])?;
                inner_count(0..=1, "at most one strategy (what writes the draft)")?;
                let mut reflect = Reflect {
                    around: Box::new(inner.pop().unwrap_or_default()),
                    rounds: 1,
                };
                for (key, value, at) in &named {
                    reflect.rounds = number(key, value, *at)?;
                }
                Strategy::Reflect(reflect)
            }
            "vote" | "judge" | "adaptive" | "sample" => {
                if name == "sample" {
                    allow(&["n", "pick", "draw"])?;
                } else {
                    allow(&["n"])?;
                }
                let mut sample = Sample {
                    of: if inner.is_empty() {
                        just_direct()
                    } else {
                        inner
                    },
                    n: samples,
                    pick: if name == "judge" {
                        Pick::Judge
                    } else {
                        Pick::Vote
                    },
                    draw: if name == "adaptive" {
                        Draw::Adaptive
                    } else {
                        Draw::All
                    },
                };
                for (key, value, at) in &named {
                    match key.as_str() {
                        "n" => sample.n = number(key, value, *at)?,
                        "pick" => {
                            sample.pick = match value.as_str() {
                                "vote" => Pick::Vote,
                                "judge" => Pick::Judge,
                                "check" => Pick::Check,
                                _ => {
                                    return Err(
                                        self.error_at(*at, "`pick` is `vote`, `judge` or `check`")
                                    )
                                }
                            }
                        }
                        _ => {
                            sample.draw = match value.as_str() {
                                "all" => Draw::All,
                                "adaptive" => Draw::Adaptive,
                                _ => {
                                    return Err(self.error_at(*at, "`draw` is `all` or `adaptive`"))
                                }
                            }
                        }
                    }
                }
                Strategy::Sample(sample)
            }
            "fallback" => {
                allow(&[])?;
                inner_count(2..=2, "two strategies (the first, then the fallback)")?;
                let then = inner.pop().unwrap_or_default();
                let first = inner.pop().unwrap_or_default();
                Strategy::fallback(first, then)
            }
            "route" => {
                allow(&[])?;
                inner_count(
                    1..=2,
                    "one or two strategies (for tasks that need the tools, then for the others)",
                )?;
                let otherwise = if inner.len() == 2 {
                    inner.pop().unwrap_or_default()
                } else {
                    Strategy::Written
                };
                Strategy::route(inner.pop().unwrap_or_default(), otherwise)
            }
            "tree" => {
                allow(&["breadth", "beam", "depth"])?;
                inner_count(0..=0, "no strategies")?;
                let mut shape = TreeSearch::default();
                for (key, value, at) in &named {
                    let value = number(key, value, *at)?;
                    match key.as_str() {
                        "breadth" => shape.breadth = value,
                        "beam" => shape.beam = value,
                        _ => shape.depth = value,
                    }
                }
                Strategy::Tree(shape)
            }
            other => {
                return Err(self.error_at(
                    at,
                    format!("unknown strategy `{other}`; strategies: {NAMES}"),
                ))
            }
        };
        Ok(strategy)
    }
}

/// The nested form of a strategy (YAML, JSON): one key naming the kind.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
enum Node {
    Plan(Plan),
    Reflect(Reflect),
    Sample(Sample),
    Fallback(Fallback),
    Route(Route),
    Tree(TreeSearch),
}

/// The text form's first word, for the JSON Schema (the parser checks the rest).
const TEXT_PATTERN: &str = r"^\s*(direct|written|plan|reflect|vote|judge|adaptive|sample|fallback|route|tree|self-consistency|best-of-n|mixed|plan\+reflect|tree-of-thoughts)\s*(\(.*\))?\s*$";

impl JsonSchema for Strategy {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Strategy".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let nested = generator.subschema_for::<Node>();
        schemars::json_schema!({
            "description": "How an agent works a task: the text form (`direct`, `written`, `plan(S)`, `reflect(S)`, `vote(S, T, n=5)`, `judge(…)`, `adaptive(…)`, `fallback(S, T)`, `route(S, T)`, `tree(…)`, presets `self-consistency`, `best-of-n`, `mixed`, `plan+reflect`, `tree-of-thoughts`) or the nested form (one key: plan, reflect, sample, fallback, route, tree).",
            "anyOf": [
                {"type": "string", "pattern": TEXT_PATTERN},
                nested
            ]
        })
    }
}

impl Serialize for Strategy {
    /// The text form: it reads back to the same value.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Strategy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Strategy;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a strategy: text such as `reflect(vote(written, direct, n=5))`, or a map with one of plan, reflect, sample, fallback, route, tree")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Strategy, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Strategy, A::Error> {
                let node = Node::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let strategy = match node {
                    Node::Plan(plan) => Strategy::Plan(plan),
                    Node::Reflect(reflect) => Strategy::Reflect(reflect),
                    Node::Sample(sample) => Strategy::Sample(sample),
                    Node::Fallback(fallback) => Strategy::Fallback(fallback),
                    Node::Route(route) => Strategy::Route(route),
                    Node::Tree(shape) => Strategy::Tree(shape),
                };
                strategy.check().map_err(serde::de::Error::custom)?;
                Ok(strategy)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `text` and checks what it reads as, and that the value writes back to
    /// `canonical` (which reads back to the same value).
    fn check(text: &str, canonical: &str) {
        let strategy = Strategy::parse(text, 5).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(strategy.to_string(), canonical, "{text}");
        assert_eq!(Strategy::parse(canonical, 5).as_ref(), Ok(&strategy));
        let json = serde_json::to_string(&strategy).unwrap_or_default();
        let back: Strategy = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, strategy, "{json}");
    }

    #[test]
    fn text_forms_read_and_write_back() {
        check("direct", "direct");
        check(" Written ", "written");
        check("plan", "plan");
        check("plan()", "plan");
        check("plan(direct, subtasks=3)", "plan(subtasks=3)");
        check("plan+reflect", "reflect(plan)");
        check("reflect(plan)", "reflect(plan)");
        check("self-consistency", "vote(direct, n=5)");
        check("best-of-n", "judge(direct, n=5)");
        check("mixed", "vote(written, direct, n=5)");
        check("vote(plan, n=5)", "vote(plan, n=5)");
        check(
            "reflect(mixed, rounds=2)",
            "reflect(vote(written, direct, n=5), rounds=2)",
        );
        check(
            "adaptive(written, direct, n=7)",
            "adaptive(written, direct, n=7)",
        );
        check(
            "sample(direct, pick=judge, draw=adaptive)",
            "sample(direct, n=5, pick=judge, draw=adaptive)",
        );
        check("sample(direct, pick=judge)", "judge(direct, n=5)");
        check(
            "sample(written, direct, pick=check)",
            "sample(written, direct, n=5, pick=check)",
        );
        check("fallback(direct, written)", "fallback(direct, written)");
        check("route(direct)", "route(direct)");
        check(
            "route(adaptive(written, direct), written)",
            "route(adaptive(written, direct, n=5))",
        );
        check("route(direct, plan)", "route(direct, plan)");
        check("tree-of-thoughts", "tree");
        check(
            "tree(breadth=2, beam=3, depth=4)",
            "tree(breadth=2, beam=3, depth=4)",
        );
        check(
            "plan(vote(direct, n=3), subtasks=2)",
            "plan(vote(direct, n=3), subtasks=2)",
        );
    }

    #[test]
    fn bad_text_says_what_and_where() {
        let error = |text: &str| {
            Strategy::parse(text, 5)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            error("bogus").contains("unknown strategy `bogus`"),
            "{}",
            error("bogus")
        );
        assert!(error("plan(direct, rounds=2)").contains("`plan` has no `rounds`"));
        assert!(error("plan(direct, rounds=2)").contains("column 14"));
        assert!(error("vote(direct, n=x)").contains("`n` must be a whole number"));
        assert!(error("vote(direct, n=17)").contains("out of range"));
        assert!(error("fallback(direct)").contains("two strategies"));
        assert!(error("vote(vote(direct, n=16), n=16)").contains("at most 64"));
        assert!(error("plan(direct").contains("expected `,` or `)`"));
        assert!(error("plan) x").contains("expected the end"));
        assert!(error("").contains("expected a strategy"));
    }

    #[test]
    fn the_nested_form_reads_as_the_text_form() {
        let nested: Strategy = serde_json::from_str(
            r#"{"reflect": {"around": {"sample": {"of": ["written", "direct"], "n": 4}}, "rounds": 2}}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            nested.to_string(),
            "reflect(vote(written, direct, n=4), rounds=2)"
        );
        let error = serde_json::from_str::<Strategy>(r#"{"sample": {"n": 40}}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("out of range"), "{error}");
        let error = serde_json::from_str::<Strategy>(r#"{"plan": {"thn": "direct"}}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("unknown field `thn`"), "{error}");
    }
}
