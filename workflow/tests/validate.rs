//! Parsing and validation of workflow files.
//!
//! `tests/broken/*.yaml` are workflows with faults; each announces the diagnostics it
//! must produce in `# expect: LINE:COL FIELD: message substring` comment lines (`-`
//! for an empty field). `check` runs parse + validate on every one of them and
//! requires exactly the announced diagnostics. `tests/valid/*.yaml` must pass, and
//! their graphs and schema conformance are checked below.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jielong_workflow::parse::{parse, schema, SCHEMA_ID};
use jielong_workflow::validate::{validate, Graph};
use jielong_workflow::{Diagnostic, Diagnostics};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// The `.yaml` files of a test folder, sorted.
fn yaml_files(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir(folder))
        .expect("test folder")
        .map(|entry| entry.expect("folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Parse, then validate: the diagnostics, or the graph.
fn load(source: &str, file: &str, base_dir: &Path) -> Result<Graph, Diagnostics> {
    let spec = parse(source, file)?;
    validate(&spec, file, base_dir, &catalog())
}

/// The catalog `jielong` offers: the built-in spaces and the Game of 24.
fn catalog() -> jielong_workflow::Catalog {
    jielong_workflow::Catalog::default().with_thought_spaces(
        jielong_agent::ThoughtSpaces::new()
            .with(std::sync::Arc::new(jielong_puzzles::thoughts::Game24)),
    )
}

/// One `# expect:` line.
#[derive(Debug)]
struct Expected {
    line: u32,
    column: u32,
    field: String,
    message: String,
}

fn expectations(source: &str) -> Result<Vec<Expected>, String> {
    let mut out = Vec::new();
    for (n, text) in source.lines().enumerate() {
        let Some(rest) = text.strip_prefix("# expect:") else {
            continue;
        };
        let bad = || format!("line {}: malformed expectation `{text}`", n + 1);
        let (position, rest) = rest.trim_start().split_once(' ').ok_or_else(bad)?;
        let (line, column) = position.split_once(':').ok_or_else(bad)?;
        let (field, message) = rest.split_once(": ").ok_or_else(bad)?;
        out.push(Expected {
            line: line.parse().map_err(|_| bad())?,
            column: column.parse().map_err(|_| bad())?,
            field: if field == "-" {
                String::new()
            } else {
                field.to_string()
            },
            message: message.to_string(),
        });
    }
    Ok(out)
}

/// Runs one broken workflow; on a mismatch, what differs.
fn check(path: &Path) -> Result<(), String> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let expected = expectations(&source).map_err(|e| format!("{name}: {e}"))?;
    if expected.is_empty() {
        return Err(format!("{name}: no `# expect:` line"));
    }
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let diagnostics = match load(&source, &name, base_dir) {
        Ok(_) => return Err(format!("{name}: no diagnostics, expected {expected:#?}")),
        Err(Diagnostics(diagnostics)) => diagnostics,
    };
    let mut problems = Vec::new();
    let positions: Vec<(u32, u32)> = diagnostics.iter().map(|d| (d.line, d.column)).collect();
    if !positions.is_sorted() {
        problems.push(format!("diagnostics not sorted by position: {positions:?}"));
    }
    for d in &diagnostics {
        if d.file != name {
            problems.push(format!("diagnostic names file `{}`: {d}", d.file));
        }
        if d.message.contains('\n') {
            problems.push(format!("multi-line message: {d:?}"));
        }
    }
    let mut unmatched: Vec<&Diagnostic> = diagnostics.iter().collect();
    for e in &expected {
        let found = unmatched.iter().position(|d| {
            d.line == e.line
                && d.column == e.column
                && d.field == e.field
                && d.message.contains(&e.message)
        });
        match found {
            Some(i) => {
                unmatched.remove(i);
            }
            None => problems.push(format!(
                "missing {}:{} {}: …{}…",
                e.line, e.column, e.field, e.message
            )),
        }
    }
    for d in unmatched {
        problems.push(format!("unexpected {d}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{name}:\n  {}\n  all diagnostics:\n    {}",
            problems.join("\n  "),
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n    ")
        ))
    }
}

#[test]
fn broken_workflows_report_their_faults() {
    let files = yaml_files("broken");
    assert!(files.len() >= 30, "only {} broken workflows", files.len());
    let failures: Vec<String> = files.iter().filter_map(|f| check(f).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} broken workflows failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn check_refuses_a_file_without_expectations() {
    let file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), "name: x\nstepz: []\n").expect("write");
    let err = check(file.path()).expect_err("a file without `# expect:` must fail");
    assert!(err.contains("no `# expect:` line"), "{err}");
}

#[test]
fn check_reports_unexpected_and_missing_diagnostics() {
    let file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    // The fault is at 3:1, the expectation says 2:1.
    std::fs::write(
        file.path(),
        "# expect: 2:1 stepz: unknown field\nname: x\nstepz: []\n",
    )
    .expect("write");
    let err = check(file.path()).expect_err("wrong position must fail");
    assert!(err.contains("missing 2:1 stepz"), "{err}");
    assert!(err.contains("unexpected"), "{err}");
}

#[test]
fn valid_workflows_pass() {
    let files = yaml_files("valid");
    assert!(files.len() >= 4);
    for path in files {
        let source = std::fs::read_to_string(&path).expect("read");
        let name = path.display().to_string();
        if let Err(d) = load(&source, &name, &dir("valid")) {
            panic!("{name} does not validate:\n{d}");
        }
    }
}

fn valid(name: &str) -> (jielong_workflow::WorkflowSpec, Graph) {
    let path = dir("valid").join(name);
    let source = std::fs::read_to_string(&path).expect("read");
    let spec = parse(&source, name).unwrap_or_else(|d| panic!("{d}"));
    let graph = validate(&spec, name, &dir("valid"), &catalog()).unwrap_or_else(|d| panic!("{d}"));
    (spec, graph)
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn graph_joins_needs_and_template_references() {
    let (_, graph) = valid("research.yaml");
    let needs: Vec<(&str, BTreeSet<String>)> = graph
        .needs
        .iter()
        .map(|(id, needs)| (id.as_str(), needs.clone()))
        .collect();
    assert_eq!(
        needs,
        vec![
            ("news", set(&[])),
            ("papers", set(&[])),
            ("summary", set(&["news", "papers"])),
            ("publish", set(&["review", "summary"])),
            ("review", set(&["summary"])),
        ]
    );
    // File order among ready steps; `publish` waits for `review`, written after it.
    assert_eq!(
        graph.order,
        ["news", "papers", "summary", "review", "publish"]
    );
    assert_eq!(graph.dependents("summary"), ["publish", "review"]);
    assert_eq!(graph.dependents("publish"), Vec::<&str>::new());
    assert_eq!(graph.downstream("news"), ["summary", "review", "publish"]);
    assert_eq!(graph.downstream("review"), ["publish"]);
}

#[test]
fn for_each_step() {
    let (spec, graph) = valid("for_each.yaml");
    let step = &spec.steps[0];
    let for_each = step.for_each.as_ref().expect("for_each");
    assert_eq!(for_each.value, "inputs.questions");
    // `    for_each: inputs.questions` on line 9.
    assert_eq!(
        (for_each.referenced.line(), for_each.referenced.column()),
        (9, 15)
    );
    assert_eq!(graph.needs["answers"], set(&[]));
    assert_eq!(graph.needs["count"], set(&["answers"]));
    assert_eq!(graph.order, ["answers", "count"]);
}

#[test]
fn when_reads_steps_and_dynamic_reads_need_needs() {
    let (spec, graph) = valid("when.yaml");
    assert!(spec.steps[1].when.is_some());
    // `when` reads `check`; `pick` reads `steps['explain']` and lists both in `needs`.
    assert_eq!(graph.needs["explain"], set(&["check"]));
    assert_eq!(graph.needs["pick"], set(&["check", "explain"]));
    assert_eq!(graph.order, ["check", "explain", "pick"]);

    // Without `needs`, the dynamic read is refused.
    let source = std::fs::read_to_string(dir("valid").join("when.yaml"))
        .expect("read")
        .replace("    needs: [check, explain]\n", "");
    let Err(Diagnostics(diagnostics)) = load(&source, "when.yaml", &dir("valid")) else {
        panic!("a dynamic read without needs must fail");
    };
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    // `    input: "{{ steps['explain']…` is line 16 once `needs` is gone.
    assert_eq!(
        (d.line, d.column, d.field.as_str()),
        (16, 12, "steps[2].input")
    );
    assert!(d.message.contains("without a literal id"), "{}", d.message);
}

#[test]
fn a_single_model_is_the_default() {
    // rag.yaml has one model and an agent without `model`: that is fine.
    let (spec, _) = valid("rag.yaml");
    assert_eq!(spec.models.len(), 1);
    assert!(spec.agents["reader"].model.is_none());
}

#[test]
fn source_map_places_values_and_keys() {
    let (spec, _) = valid("research.yaml");
    let map = &spec.source_map;
    // `  depth: {type: integer, default: 2}` on line 7.
    let depth = map.place("inputs.depth").expect("inputs.depth");
    assert_eq!(depth.key.map(|l| (l.line(), l.column())), Some((7, 3)));
    assert_eq!((depth.value.line(), depth.value.column()), (7, 10));
    // The literal block of `summary`'s input starts on the line after `input: |`.
    let input = map.value("steps[2].input").expect("steps[2].input");
    assert_eq!((input.line(), input.column()), (28, 7));
    // `      code: "print(…)"` inside a block mapping, line 35.
    let code = map.value("steps[3].args.code").expect("code");
    assert_eq!((code.line(), code.column()), (35, 13));
    // List elements have no key.
    let need = map.place("steps[3].needs[0]").expect("needs[0]");
    assert_eq!(need.key, None);
    assert_eq!((need.value.line(), need.value.column()), (33, 13));
}

#[test]
fn spanned_fields_have_clean_paths() {
    let cases = [
        ("name: x\nsteps:\n  - id: [1]\n", "steps[0].id", (3, 9)),
        (
            "name: x\nsteps:\n  - id: a\n    needs: [b, [c]]\n",
            "steps[0].needs[1]",
            (4, 16),
        ),
        (
            "name: x\nsteps: []\noutputs:\n  value: [1]\n",
            "outputs.value",
            (4, 10),
        ),
        (
            "name: x\nsteps: []\nmodels:\n  m: {model: [q]}\n",
            "models.m.model",
            (4, 14),
        ),
        (
            "name: x\nsteps: []\nagents:\n  a: {tools: [[x]]}\n",
            "agents.a.tools[0]",
            (4, 15),
        ),
        (
            "name: x\nsteps: []\nagents:\n  a: {system_file: {}}\n",
            "agents.a.system_file",
            (4, 20),
        ),
        (
            "name: x\nsteps: []\ntools:\n  rag_search: {index: i, sources: [[s]]}\n",
            "tools.rag_search.sources[0]",
            (4, 36),
        ),
    ];
    for (source, field, (line, column)) in cases {
        let Err(Diagnostics(d)) = parse(source, "t.yaml") else {
            panic!("{source:?} parsed");
        };
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].field.as_str(), d[0].line, d[0].column),
            (field, line, column),
            "{source:?}: {}",
            d[0]
        );
        assert!(
            d[0].message.starts_with("expected a single value, found a"),
            "{}",
            d[0]
        );
    }
}

#[test]
fn yaml_bombs_are_refused_quickly() {
    let mut source =
        String::from("name: bomb\nsteps:\n  - id: boom\n    tool: python\n    args:\n");
    source.push_str(
        "      a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        let items = vec![format!("*{prev}"); 9].join(",");
        source.push_str(&format!("      {name}: &{name} [{items}]\n"));
    }
    let started = Instant::now();
    let Err(Diagnostics(d)) = parse(&source, "bomb.yaml") else {
        panic!("a billion laughs parsed");
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(d.len(), 1);
    assert!(
        d[0].message.contains("too large or too complex"),
        "{}",
        d[0]
    );
    assert!((7..=14).contains(&d[0].line), "{}", d[0]);

    let huge = "#".repeat(jielong_workflow::parse::MAX_SOURCE_BYTES + 1);
    let Err(Diagnostics(d)) = parse(&huge, "huge.yaml") else {
        panic!("a huge file parsed");
    };
    assert!(d[0].message.contains("too large"), "{}", d[0]);
}

#[test]
fn yaml_1_2_booleans() {
    // `no` is text, as in YAML 1.2: the Norway problem does not reach tool arguments.
    let source = "name: x\nsteps:\n  - id: a\n    tool: python\n    args: {code: no, n: 3}\n";
    let spec = parse(source, "t.yaml").unwrap_or_else(|d| panic!("{d}"));
    let args = &spec.steps[0].args.as_ref().expect("args").value;
    assert_eq!(args["code"], "no");
    assert_eq!(args["n"], 3);
}

#[test]
fn schema_describes_the_format() {
    let schema = schema();
    assert_eq!(schema["$id"], SCHEMA_ID);
    assert_eq!(schema["title"], "Jielong workflow");
    for property in [
        "name", "steps", "agents", "models", "inputs", "outputs", "tools",
    ] {
        assert!(
            schema["properties"].get(property).is_some(),
            "no `{property}` in {schema:#}"
        );
    }
    assert!(schema["properties"].get("source_map").is_none());
    let required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        required.contains(&"name") && required.contains(&"steps"),
        "{required:?}"
    );
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn valid_workflows_conform_to_the_schema() {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    for path in yaml_files("valid") {
        let source = std::fs::read_to_string(&path).expect("read");
        let instance: serde_json::Value = serde_saphyr::from_str(&source).expect("YAML to JSON");
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
    // And the schema catches a misspelt key, like the parser.
    let instance = serde_json::json!({"name": "x", "stepz": []});
    assert!(!validator.is_valid(&instance));
}

#[test]
fn models_entries_and_strategies_in_the_schema() {
    use jielong_agent::Strategy;
    let (spec, _) = valid("served.yaml");
    assert_eq!(spec.models["small"].model.value, "qwen2.5-coder-0.5b");
    assert_eq!(
        spec.models["served"].served_reference().as_deref(),
        Some("openai:http://127.0.0.1:8080/v1#qwen2.5-7b-instruct;api_key_env=LLM_API_KEY")
    );
    let strategy = |agent: &str| spec.agents[agent].strategy().to_string();
    assert_eq!(strategy("planner"), "reflect(plan)");
    assert_eq!(strategy("solver"), "reflect");
    assert_eq!(
        strategy("nested"),
        "plan(vote(written, direct, n=3), subtasks=3)"
    );
    assert_eq!(strategy("judged"), "judge(direct, n=3)");
    // A bare string entry points at its value, for diagnostics.
    let small = &spec.models["small"].model;
    assert_eq!(
        (small.referenced.line(), small.referenced.column()),
        (4, 10)
    );

    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let flow = |agent: serde_json::Value, model: serde_json::Value| {
        serde_json::json!({
            "name": "x",
            "models": {"m": model},
            "agents": {"a": agent},
            "steps": [{"id": "s", "agent": "a", "input": "hi"}],
        })
    };
    for strategy in [
        serde_json::json!("direct"),
        serde_json::json!("plan+reflect"),
        serde_json::json!("reflect(vote(written, direct, n=5))"),
        serde_json::json!({"sample": {"of": ["written", {"plan": {}}], "n": 4, "pick": "judge"}}),
        serde_json::json!({"fallback": {"first": "direct", "then": "written"}}),
        serde_json::json!({"tree": {"beam": 2}}),
    ] {
        let instance = flow(
            serde_json::json!({"strategy": strategy}),
            serde_json::json!("qwen2.5-coder-0.5b"),
        );
        assert!(validator.is_valid(&instance), "{strategy}");
        let parsed: Strategy = serde_json::from_value(strategy.clone()).unwrap();
        assert!(parsed.check().is_ok(), "{strategy}");
    }
    assert!(!validator.is_valid(&flow(
        serde_json::json!({"strategy": {"sample": {"of": ["direct"], "m": 3}}}),
        serde_json::json!("m")
    )));
    let served = serde_json::json!({"base_url": "http://h/v1", "model": "m"});
    assert!(validator.is_valid(&flow(serde_json::json!({}), served)));
    assert!(!validator.is_valid(&flow(
        serde_json::json!({"strategy": "bogus"}),
        serde_json::json!("m")
    )));
    assert!(!validator.is_valid(&flow(serde_json::json!({}), serde_json::json!(3))));
    assert!(!validator.is_valid(&flow(
        serde_json::json!({}),
        serde_json::json!({"base_url": "http://h/v1"})
    )));
}
