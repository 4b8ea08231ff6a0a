//! `jielong ask "QUESTION"`: the agent answers from a local index with `rag_search`,
//! citing passages as `[n]`; the sources it cited are listed under the answer.

use std::sync::Arc;

use jielong::chat::tool::ToolRegistry;
use jielong::retrieval::Index;
use jielong::tools::builtin::{BuiltinConfig, PythonTool};
use jielong::tools::rag::{Citation, RagSearchTool, DEFAULT_PASSAGE_CHARS};

use super::run::{drive, AgentOptions, NoAnswer};
use crate::cli::{AskArgs, ComputeArg};

/// The system prompt of `ask`.
pub(crate) const ASK_SYSTEM: &str = include_str!("../../prompts/ask_system.md");

/// Runs `jielong ask`.
pub async fn ask(global: &crate::cli::GlobalArgs, args: AskArgs) -> anyhow::Result<()> {
    let dir = super::index::index_dir(&args.index)?;
    let index = Arc::new(Index::open(&dir)?);
    let model = super::load_model(global).await?;
    let answered = answer(global, model.as_ref(), index, &args).await?;
    println!("{}", answered.answer);
    if answered.sources.is_empty() {
        eprintln!("jielong: note: no passage supports this answer");
    } else {
        println!("\nSources:");
        for source in &answered.sources {
            println!(
                "[{}] {} ({})",
                source.number,
                source.location(),
                source.title
            );
        }
    }
    Ok(())
}

/// What `ask` found: the answer and the passages behind it.
pub(crate) struct Answered {
    /// The answer, with the citation markers the model left out appended.
    pub answer: String,
    /// The passages the answer cites (or, failing markers, those that contain it).
    pub sources: Vec<Citation>,
    /// Every passage the searches showed the model.
    pub shown: Vec<Citation>,
    /// Tokens of the run's model calls, added up.
    pub usage: jielong::Usage,
    /// Model steps taken.
    pub steps: usize,
    /// Searches made.
    pub tool_calls: usize,
}

/// Answers `args.question` from `index` with the ask agent (`args.index` is not read);
/// [`NoAnswer`] when the run ends without an answer.
pub(crate) async fn answer(
    global: &crate::cli::GlobalArgs,
    model: &dyn jielong::LanguageModel,
    index: Arc<Index>,
    args: &AskArgs,
) -> anyhow::Result<Answered> {
    let tool = RagSearchTool::new(index, usize::from(args.k), DEFAULT_PASSAGE_CHARS);
    let citations = tool.citation_book();
    let mut registry = ToolRegistry::new();
    registry.register(tool)?;
    // Search, then compute: a question that asks for a number the passages may only
    // give the parts of gets the code tool too (fenced code, the code prompt's way),
    // and the agent's grounding check sends an answer whose number no program computed
    // back for a check in code, whose result then stands.
    let computes = args.compute == ComputeArg::Auto && jielong::agent::computes(&args.question);
    if computes {
        registry.register(PythonTool::new(BuiltinConfig::default().python))?;
    }

    let mut session = model.open_session(&super::session_options(global))?;
    let options = AgentOptions {
        system: Some(ASK_SYSTEM.trim().to_string()),
        strategy: Default::default(),
        max_steps: args.max_steps,
        trace: args.trace.clone(),
        // The first search is rag_search's own prefetch (the question).
        initial_calls: Vec::new(),
        code_actions: Default::default(),
        prompts: None,
        framing: Default::default(),
        thoughts: std::sync::Arc::new(jielong::agent::FreeThoughts),
        settings: None,
    };
    let run = drive(
        global,
        model,
        session.as_mut(),
        registry,
        &options,
        &args.question,
    )
    .await?;
    let stop = run.stop.clone();
    let (usage, steps, tool_calls) = (run.usage.clone(), run.steps, run.tool_calls);
    let Some(answer) = run.answer.filter(|_| stop.is_answered()) else {
        return Err(NoAnswer(stop).into());
    };
    let mut sources = citations.sources_of(&answer);
    if sources.is_empty() && computes {
        // A computed answer ("77") is in no passage: its sources are the passages
        // whose figures the program took.
        let work: Vec<String> = run
            .transcript
            .iter()
            .filter(|m| m.role == jielong::chat::Role::Assistant)
            .flat_map(|m| {
                let calls = m
                    .tool_calls
                    .iter()
                    .filter(|call| call.name != RagSearchTool::NAME)
                    .map(|call| call.arguments.to_string());
                std::iter::once(m.content.clone()).chain(calls)
            })
            .collect();
        sources = citations.sources_of_figures(&work.join("\n"));
    }
    let cites = sources
        .iter()
        .any(|s| answer.contains(&format!("[{}]", s.number)));
    let answer = if cites || sources.is_empty() {
        answer
    } else {
        // Attributed after the fact: the markers the model left out.
        let marks: Vec<String> = sources.iter().map(|s| format!("[{}]", s.number)).collect();
        format!("{} {}", answer.trim_end(), marks.join(""))
    };
    Ok(Answered {
        answer,
        sources,
        shown: citations.all(),
        usage,
        steps,
        tool_calls,
    })
}
