//! `jielong tools` and `jielong tool NAME INPUT`.

use anyhow::Context;
use std::time::Duration;

use jielong::tools::builtin::{
    builtin_registry, builtin_registry_with, BuiltinConfig, BUILTIN_TOOLS,
};
use jielong::tools::web::{SearchBackendKind, WebSearchConfig};

use crate::cli::{ToolArgs, ToolOptions};

/// The tools' set-up from the command line (unset options keep the defaults).
pub fn config(options: &ToolOptions) -> BuiltinConfig {
    let mut config = BuiltinConfig::default();
    if let Some(url) = &options.searxng_url {
        config.web_search = Some(WebSearchConfig {
            backend: Some(SearchBackendKind::Searxng),
            base_url: Some(url.clone()),
            ..WebSearchConfig::default()
        });
    }
    config.fetch_url.allow_hosts = options.allow_hosts.clone();
    if let Some(secs) = options.python_timeout {
        config.python = config.python.wall_time(Duration::from_secs(secs));
    }
    if options.python_unsandboxed {
        config.python = config.python.allow_unsandboxed(true);
    }
    config.rag_index = super::index::index_dir(&options.index).ok();
    config
}

/// Prints every built-in tool with its description and argument schema.
pub fn list() -> anyhow::Result<()> {
    for name in BUILTIN_TOOLS {
        match builtin_registry(&[name.to_string()]) {
            Ok(registry) => {
                for spec in registry.specs() {
                    println!(
                        "{}\n  {}\n  arguments: {}\n",
                        spec.name, spec.description, spec.parameters
                    );
                }
            }
            Err(e) => println!("{name}\n  (unavailable: {e})\n"),
        }
    }
    Ok(())
}

/// Runs one tool with the given input and prints its result.
pub async fn run_one(args: ToolArgs) -> anyhow::Result<()> {
    let registry = builtin_registry_with(
        std::slice::from_ref(&args.name),
        &config(&args.tool_options),
    )?;
    let arguments = if args.name == "python" {
        serde_json::json!({ "code": args.input })
    } else {
        serde_json::from_str(&args.input)
            .with_context(|| format!("the input of `{}` must be JSON arguments", args.name))?
    };
    let output = registry
        .call(&args.name, arguments)
        .await
        .map_err(|e| anyhow::anyhow!("{} {e}", args.name))?;
    match output {
        serde_json::Value::String(text) => println!("{text}"),
        other => println!("{}", serde_json::to_string_pretty(&other)?),
    }
    Ok(())
}
