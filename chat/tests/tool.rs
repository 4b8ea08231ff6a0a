//! Tools through the registry: typed arguments and their schema, argument errors with
//! paths, time limits, unknown names, run-time tools validated by their JSON Schema.

use std::time::Duration;

use jielong_chat::tool::{SchemaTool, Tool, ToolDefinitionError, ToolError, ToolRegistry};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

/// Repeats a word.
struct Repeat;

#[derive(Deserialize, JsonSchema)]
struct RepeatArgs {
    /// The word to repeat.
    word: String,
    /// How many times.
    times: Option<u8>,
    /// Options.
    #[serde(default)]
    style: Style,
}

#[derive(Deserialize, JsonSchema, Default)]
struct Style {
    /// Separator between the words.
    #[serde(default)]
    separator: Option<String>,
}

impl Tool for Repeat {
    type Args = RepeatArgs;
    type Output = String;
    fn name(&self) -> &str {
        "repeat"
    }
    fn description(&self) -> &str {
        "Repeat a word."
    }
    async fn call(&self, args: RepeatArgs) -> Result<String, ToolError> {
        let sep = args.style.separator.unwrap_or_else(|| " ".into());
        Ok(vec![args.word; usize::from(args.times.unwrap_or(2))].join(&sep))
    }
}

/// Never finishes in time.
struct Slow;

#[derive(Deserialize, JsonSchema)]
struct NoArgs {}

impl Tool for Slow {
    type Args = NoArgs;
    type Output = ();
    fn name(&self) -> &str {
        "slow"
    }
    fn description(&self) -> &str {
        "Sleeps."
    }
    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_millis(50))
    }
    async fn call(&self, _: NoArgs) -> Result<(), ToolError> {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(())
    }
}

fn registry() -> ToolRegistry {
    let mut tools = ToolRegistry::new();
    tools.register(Repeat).unwrap();
    tools.register(Slow).unwrap();
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city"],
        "additionalProperties": false
    });
    tools
        .register(
            SchemaTool::new("weather", "Forecast.", schema, |args: Value| async move {
                Ok(json!({"city": args["city"], "sky": "clear"}))
            })
            .unwrap(),
        )
        .unwrap();
    tools
}

/// Calls `tool` with `args` and compares the result (Ok value or error kind + message
/// fragment).
async fn check(tools: &ToolRegistry, tool: &str, args: Value, want: Result<Value, (&str, &str)>) {
    let got = tools.call(tool, args.clone()).await;
    match (&got, &want) {
        (Ok(v), Ok(w)) => assert_eq!(v, w, "{tool} {args}"),
        (Err(e), Err((kind, fragment))) => {
            assert_eq!(e.kind(), *kind, "{tool} {args}: {e}");
            assert!(e.to_string().contains(fragment), "{tool} {args}: {e}");
        }
        _ => panic!("{tool} {args}: got {got:?}, want {want:?}"),
    }
}

#[tokio::test]
async fn calls_through_the_registry() {
    let tools = registry();
    check(&tools, "repeat", json!({"word": "hi"}), Ok(json!("hi hi"))).await;
    check(
        &tools,
        "repeat",
        json!({"word": "a", "times": 3, "style": {"separator": "-"}}),
        Ok(json!("a-a-a")),
    )
    .await;
    check(
        &tools,
        "repeat",
        json!({"times": 3}),
        Err(("invalid_arguments", "missing field `word`")),
    )
    .await;
    check(
        &tools,
        "repeat",
        json!({"word": "a", "times": 300}),
        Err(("invalid_arguments", "at `times`")),
    )
    .await;
    check(
        &tools,
        "repeat",
        json!({"word": "a", "style": {"separator": 5}}),
        Err(("invalid_arguments", "at `style.separator`")),
    )
    .await;
    check(
        &tools,
        "slow",
        json!({}),
        Err(("timeout", "timed out after 0.1 s")),
    )
    .await;
    check(
        &tools,
        "nope",
        json!({}),
        Err(("unknown_tool", "available: repeat, slow, weather")),
    )
    .await;
    check(
        &tools,
        "weather",
        json!({"city": "Oslo"}),
        Ok(json!({"city": "Oslo", "sky": "clear"})),
    )
    .await;
    check(
        &tools,
        "weather",
        json!({"days": 0}),
        Err(("invalid_arguments", "\"city\" is a required property")),
    )
    .await;
    check(
        &tools,
        "weather",
        json!({"city": "Oslo", "days": 0}),
        Err(("invalid_arguments", "at `/days`")),
    )
    .await;
}

#[test]
fn specs_carry_the_schema_from_the_args_type() {
    let tools = registry();
    let specs = tools.specs();
    let repeat = specs.iter().find(|s| s.name == "repeat").unwrap();
    let p = &repeat.parameters;
    assert_eq!(p["type"], "object");
    assert_eq!(p["required"], json!(["word"]));
    assert_eq!(
        p["properties"]["word"]["description"],
        "The word to repeat."
    );
    // Nested types are inlined (no $ref for small models and grammars).
    assert!(
        p["properties"]["style"]["properties"]["separator"].is_object(),
        "{p}"
    );
    assert!(
        p.get("$defs").is_none() && p.get("$schema").is_none(),
        "{p}"
    );
}

#[test]
fn bad_definitions_are_refused() {
    let mut tools = registry();
    assert_eq!(
        tools.register(Repeat),
        Err(ToolDefinitionError::Duplicate("repeat".into()))
    );
    let bad_name = SchemaTool::new("two words", "x", json!({"type": "object"}), |_| async {
        Ok(Value::Null)
    })
    .unwrap();
    assert!(matches!(
        tools.register(bad_name),
        Err(ToolDefinitionError::BadName(_))
    ));
    let bad_schema = SchemaTool::new("t", "x", json!({"type": 5}), |_| async { Ok(Value::Null) });
    assert!(matches!(
        bad_schema,
        Err(ToolDefinitionError::BadSchema { .. })
    ));
}

#[test]
fn retryable_errors() {
    assert!(ToolError::Timeout { seconds: 1.0 }.retryable());
    assert!(ToolError::failed("busy", true).retryable());
    assert!(!ToolError::invalid_arguments("x").retryable());
    assert!(!ToolError::permission_denied("x").retryable());
}
