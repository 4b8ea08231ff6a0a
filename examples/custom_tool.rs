//! An app's own tool in an agent: a stock lookup over the app's data, defined as a Rust
//! type. The model sees the tool's name, description and the JSON Schema of its
//! arguments; its calls are grammar-constrained to that schema, so `call` always gets
//! valid `StockArgs`.
//!
//! ```sh
//! cargo run --release --example custom_tool -- "How many blue mugs are in stock?"
//! ```

use jielong::agent::{Agent, AgentEvent};
use jielong::chat::tool::{Tool, ToolError, ToolRegistry};
use jielong::SessionOptions;
use schemars::JsonSchema;
use serde::Deserialize;

/// The app's data: items and how many are in stock.
struct Stock(Vec<(&'static str, u32)>);

/// Arguments of `stock`.
#[derive(Deserialize, JsonSchema)]
struct StockArgs {
    /// The item to look up, e.g. "red mug".
    item: String,
}

impl Tool for Stock {
    type Args = StockArgs;
    type Output = String;

    fn name(&self) -> &str {
        "stock"
    }

    fn description(&self) -> &str {
        "Look up how many units of an item are in stock."
    }

    async fn call(&self, args: StockArgs) -> Result<String, ToolError> {
        let wanted = args.item.trim().to_lowercase();
        match self.0.iter().find(|(item, _)| wanted.contains(item)) {
            Some((item, count)) => Ok(format!("{count} units of {item} in stock")),
            None => Err(ToolError::not_found(format!(
                "no item `{}`; known items: {}",
                args.item,
                self.0
                    .iter()
                    .map(|(i, _)| *i)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let task = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "How many blue mugs are in stock?".into());

    let mut tools = ToolRegistry::new();
    tools.register(Stock(vec![("red mug", 12), ("blue mug", 7), ("teapot", 3)]))?;

    let model = jielong::open_model("qwen2.5-coder-0.5b", &jielong::models::NoProgress).await?;
    let mut session = model.session(&SessionOptions::default())?;
    let agent = Agent::for_model(&model)
        .tools(tools)
        .max_steps(4)
        .on_event(|event| match event {
            AgentEvent::ToolCall { call, .. } => eprintln!("→ {}({})", call.name, call.arguments),
            AgentEvent::ToolResult { content, .. } => eprintln!("← {content}"),
            _ => {}
        })
        .build()?;

    let run = agent.run(&mut session, &task).await;
    match run.answer {
        Some(answer) if run.stop.is_answered() => println!("{answer}"),
        _ => eprintln!("no answer: {}", run.stop),
    }
    Ok(())
}
