//! `jielong models list|pull|path`.

use jielong::models::ModelStore;

use crate::cli::{GlobalArgs, ModelsCommand};
use crate::progress::BarProgress;

/// Runs `jielong models …`.
pub async fn models(global: &GlobalArgs, command: ModelsCommand) -> anyhow::Result<()> {
    let store = ModelStore::from_env()?;
    match command {
        ModelsCommand::List => {
            println!(
                "{:<22} {:>8}  {:<10} {:<6} description",
                "name", "size", "status", "tools"
            );
            for m in store.list() {
                let name = if m.is_default {
                    format!("{} (default)", m.name)
                } else {
                    m.name.clone()
                };
                println!(
                    "{:<22} {:>6} MB  {:<10} {:<6} {}",
                    name,
                    m.size / 1_000_000,
                    if m.present { "cached" } else { "not pulled" },
                    if m.native_tool_calls {
                        "native"
                    } else {
                        "generic"
                    },
                    m.description
                );
            }
            println!("\ncache: {}", store.root().display());
        }
        ModelsCommand::Pull { name } => {
            let model = store.parse(name.as_deref().unwrap_or(&global.model))?;
            let path = store.pull(&model, &BarProgress::new()).await?;
            eprintln!("ready: {}", path.display());
        }
        ModelsCommand::Path { name, no_pull } => {
            let model = store.parse(name.as_deref().unwrap_or(&global.model))?;
            let path = if no_pull {
                store.path(&model)?
            } else {
                store.resolve(&model, &BarProgress::new()).await?
            };
            println!("{}", path.display());
        }
    }
    Ok(())
}
