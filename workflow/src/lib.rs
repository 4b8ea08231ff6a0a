//! # jielong-workflow
//!
//! YAML workflows: a typed spec ([`spec`]), validation that names file, line, column
//! and field for every fault ([`validate`]), and execution as a graph of steps with
//! every step's output persisted as it finishes, so a crashed run resumes without
//! redoing finished work ([`store`], [`run`]).
//!
//! ```
//! use std::path::Path;
//! use jielong_workflow::Workflow;
//!
//! let yaml = r#"
//! name: hello
//! inputs:
//!   who: {type: string, default: world}
//! agents:
//!   greeter: {max_steps: 2}
//! steps:
//!   - id: shout
//!     tool: python
//!     args: {code: "print({{ steps.greet.output | tojson }}.upper())"}
//!   - id: greet
//!     agent: greeter
//!     input: "Say hello to {{ inputs.who }}."
//! outputs:
//!   text: "{{ steps.shout.output }}"
//! "#;
//! let workflow = Workflow::from_yaml(yaml, "hello.yaml", Path::new("."))?;
//! // `shout` reads `greet`'s output, so it runs second.
//! assert_eq!(workflow.graph().order, ["greet", "shout"]);
//!
//! // Every fault names its file, line, column and field.
//! let broken = "name: x\nsteps:\n  - id: a\n    agent: writer\n    input: hi\n";
//! let err = Workflow::from_yaml(broken, "bad.yaml", Path::new(".")).unwrap_err();
//! assert_eq!(err.to_string(), "bad.yaml:4:12: steps[0].agent: no agent `writer`: no agents defined");
//! # Ok::<(), jielong_workflow::WorkflowError>(())
//! ```
//!
//! Running needs models: [`Workflow::run`] takes a [`ModelProvider`] (the `jielong`
//! facade's `LocalModels` loads catalog models with llama.cpp) and [`RunOptions`].

pub mod catalog;
pub mod diagnostic;
pub mod error;
pub mod parse;
pub mod run;
pub mod runtime;
pub mod spec;
pub mod store;
pub mod template;
pub mod validate;
pub mod workflow;

pub use catalog::Catalog;
pub use diagnostic::{Diagnostic, Diagnostics};
pub use error::WorkflowError;
pub use runtime::{ModelProvider, RunObserver, RunOptions, RunReport, WorkflowEvent};
pub use spec::WorkflowSpec;
pub use workflow::Workflow;
