//! The `jielong` command line.
//!
//! Exit codes: 0 success; 1 the work failed; 2 invalid usage; 3 the model is not
//! available (unknown name, missing or corrupt file, failed download or checksum);
//! 4 the agent stopped without an answer (step, token or time budget, repeated call,
//! failing tool). `jielong workflow`: 2 for an invalid workflow or input, 1 for a failed
//! step, 130 when stopped with Ctrl-C.

mod cli;
mod cmd;
mod progress;

use std::process::ExitCode;

use cli::{Cli, Command};

/// Exit code when the model cannot be had.
const EXIT_MODEL: u8 = 3;
/// Exit code for other failures.
const EXIT_FAILURE: u8 = 1;
/// Exit code when the agent stopped without an answer (a budget, a failing tool).
pub const EXIT_NO_ANSWER: u8 = 4;
/// Exit code when a workflow run was stopped with Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;
/// Exit code for invalid usage.
const EXIT_USAGE: u8 = 2;

/// The ids of the arguments the command line (or their environment variables) gave,
/// at the top and in the subcommand.
fn given_on_the_command_line(matches: &clap::ArgMatches) -> Vec<String> {
    let given = |m: &clap::ArgMatches| -> Vec<String> {
        m.ids()
            .filter(|id| {
                matches!(
                    m.value_source(id.as_str()),
                    Some(
                        clap::parser::ValueSource::CommandLine
                            | clap::parser::ValueSource::EnvVariable
                    )
                )
            })
            .map(|id| id.as_str().to_string())
            .collect()
    };
    let mut ids = given(matches);
    if let Some((_, sub)) = matches.subcommand() {
        ids.extend(given(sub));
    }
    ids.sort();
    ids.dedup();
    ids
}

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let mut cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    cli.global.given = given_on_the_command_line(&matches);
    init_tracing(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jielong: error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cmd::run::run(&cli.global, *args).await,
            Command::Chat(args) => cmd::chat::chat(&cli.global, args).await,
            Command::Generate(args) => cmd::generate::generate(&cli.global, args).await,
            Command::Models(command) => cmd::models::models(&cli.global, command).await,
            Command::Tools => cmd::tools::list(),
            Command::Tool(args) => cmd::tools::run_one(args).await,
            Command::Index(command) => cmd::index::index(command).await,
            Command::Ask(args) => cmd::ask::ask(&cli.global, args).await,
            Command::Workflow(command) => cmd::workflow::workflow(&cli.global, command).await,
            Command::Runs(command) => cmd::runs::runs(command),
            Command::Bench(args) => cmd::bench::bench(&cli.global, args).await,
            Command::Eval(args) => cmd::eval::eval(&cli.global, *args).await,
            Command::Serve(args) => cmd::serve::serve(&cli.global, args).await,
            Command::Game24(args) => cmd::game24::write(&args),
            Command::Optimize(args) => cmd::optimize::optimize(&cli.global, *args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jielong: error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The documented exit code for an error.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<cmd::run::NoAnswer>().is_some() {
            return EXIT_NO_ANSWER;
        }
        if cause.downcast_ref::<jielong::ModelError>().is_some()
            || matches!(
                cause.downcast_ref::<jielong::OpenModelError>(),
                Some(jielong::OpenModelError::Model(_))
            )
        {
            return EXIT_MODEL;
        }
        if let Some(jielong::OpenModelError::Runtime(e)) = cause.downcast_ref() {
            return runtime_exit_code(e);
        }
        if let Some(e) = cause.downcast_ref::<jielong::RuntimeError>() {
            return runtime_exit_code(e);
        }
        if cause.downcast_ref::<cmd::workflow::Interrupted>().is_some() {
            return EXIT_INTERRUPTED;
        }
        if cause
            .downcast_ref::<cmd::workflow::InvalidFiles>()
            .is_some()
        {
            return EXIT_USAGE;
        }
        match cause.downcast_ref::<jielong::workflow::WorkflowError>() {
            Some(
                jielong::workflow::WorkflowError::Invalid(_)
                | jielong::workflow::WorkflowError::Input { .. },
            ) => return EXIT_USAGE,
            Some(jielong::workflow::WorkflowError::Model { .. }) => return EXIT_MODEL,
            _ => {}
        }
    }
    EXIT_FAILURE
}

fn runtime_exit_code(e: &jielong::RuntimeError) -> u8 {
    match e {
        jielong::RuntimeError::ModelNotFound { .. } | jielong::RuntimeError::ModelLoad { .. } => {
            EXIT_MODEL
        }
        jielong::RuntimeError::InvalidRequest(_) => EXIT_USAGE,
        // No server at the address, or it does not serve the model: the model is not
        // available, as for a local file that is missing.
        jielong::RuntimeError::Remote {
            kind: jielong::chat::RemoteFault::Unreachable | jielong::chat::RemoteFault::UnknownModel,
            ..
        } => EXIT_MODEL,
        _ => EXIT_FAILURE,
    }
}

/// `-v` shows Jielong's own info, `-vv` adds llama.cpp's log; `RUST_LOG` overrides.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 | 1 => "warn,llama-cpp-2=off",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
