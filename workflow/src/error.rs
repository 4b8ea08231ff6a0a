//! [`WorkflowError`]: why a workflow could not be loaded or run.

use std::path::PathBuf;

use crate::diagnostic::Diagnostics;
use crate::store::StoreError;

/// Why a workflow could not be loaded or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The file has faults (each with file:line:col and the field).
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
    /// A file could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// An input value is missing, unknown or of the wrong type.
    #[error("input `{name}`: {message}")]
    Input {
        /// The input.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A model could not be loaded or a session opened.
    #[error("model `{model}`: {message}")]
    Model {
        /// The model's key or reference.
        model: String,
        /// What failed.
        message: String,
    },
    /// A tool could not be set up (a missing index, a bad configuration).
    #[error("{0}")]
    ToolSetup(String),
    /// The run store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A run cannot be resumed by this workflow.
    #[error("cannot resume run {run}: {message}")]
    Resume {
        /// The run.
        run: String,
        /// Why.
        message: String,
    },
    /// A step failed; the run stopped after the steps in progress finished. Finished
    /// steps are kept: `--resume` continues from them.
    #[error("step `{step}` failed: {message} (run {run}; finished steps are kept, resume with --resume {run})")]
    StepFailed {
        /// The run.
        run: String,
        /// The step.
        step: String,
        /// What happened.
        message: String,
    },
    /// An output template failed to render.
    #[error("output `{name}`: {message}")]
    Output {
        /// The output.
        name: String,
        /// What failed.
        message: String,
    },
}
