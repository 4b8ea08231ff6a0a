//! `jielong eval` end to end on the real models: the LLM judge (single grading of
//! MT-Bench questions, then two runs compared pairwise in both orders), `--ask` over
//! an index, `--workflow`, and the option faults reported before any model loads.

mod common;

use std::path::Path;
use std::process::Output;

use common::{jielong, model_lock, model_path, text, QWEN, SMOLLM};
use serde_json::Value;

/// The row is graded right and its outcome used `tool`.
fn right_with(row: &Value, tool: &str) {
    assert_eq!(row["correct"], true, "{row}");
    assert!(
        row["outcome"]["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == tool)),
        "{row}"
    );
}

fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

/// `jielong eval DATA --out OUT ARGS…`, which must succeed: its rows, and the folder.
fn eval_rows(data: &Path, out: &Path, args: &[&str]) -> (Vec<Value>, std::path::PathBuf) {
    let mut all = vec![
        "eval",
        data.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ];
    all.extend_from_slice(args);
    succeeded(&jielong(&all));
    (json_lines(&out.join("rows.jsonl")), out.to_path_buf())
}

/// Three MT-Bench questions as published: one turn, two turns, one with a reference.
const QUESTIONS: &str = r#"{"question_id": 1, "category": "writing", "turns": ["Write one sentence about the sea."]}
{"question_id": 2, "category": "writing", "turns": ["Name a fruit.", "Now name a vegetable."]}
{"question_id": 3, "category": "math", "turns": ["What is 6 times 7?"], "reference": ["42"]}
"#;

#[test]
fn the_judge_rates_answers_and_compares_two_runs_in_both_orders() {
    let _lock = model_lock();
    let _ = (model_path(QWEN), model_path(SMOLLM));
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("questions.jsonl");
    std::fs::write(&data, QUESTIONS).expect("write");
    let data = data.to_str().expect("utf-8");
    let run_of = |model: &str| {
        let out = dir.path().join(model);
        let shown = out.to_str().expect("utf-8").to_string();
        let result = jielong(&[
            "--max-tokens",
            "48",
            "-m",
            model,
            "eval",
            data,
            "--metric",
            "judge",
            "--judge-model",
            QWEN,
            "--judge-max-tokens",
            "48",
            "--out",
            &shown,
        ]);
        succeeded(&result);
        (out, result)
    };
    let (qwen, result) = run_of(QWEN);
    let stdout = text(&result.stdout);
    assert!(stdout.contains("judge     mean rating"), "{stdout}");

    let rows = json_lines(&qwen.join("rows.jsonl"));
    let prompts: Vec<&str> = rows
        .iter()
        .map(|r| r["judgement"]["prompt"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(prompts, ["single", "single-multi-turn", "single-ref"]);
    for row in &rows {
        let judgement = &row["judgement"];
        assert!(
            !judgement["text"].as_str().unwrap_or("").is_empty(),
            "{row}"
        );
        // A readable rating decides the verdict (pass at 7); an unreadable one leaves
        // the row ungraded.
        match judgement["score"].as_f64() {
            Some(score) => assert_eq!(row["correct"].as_bool(), Some(score >= 7.0), "{row}"),
            None => assert!(row["correct"].is_null(), "{row}"),
        }
    }
    // The two-turn question was one conversation.
    let turns = rows[1]["outcome"]["detail"]["turns"]
        .as_array()
        .expect("turns kept");
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[1]["question"], "Now name a vegetable.");
    let summary = json_file(&qwen.join("summary.json"));
    assert_eq!(summary["summary"]["judge"]["judged"], 3, "{summary}");

    let (smol, _) = run_of(SMOLLM);
    let out = dir.path().join("pairwise");
    let out_arg = out.to_str().expect("utf-8");
    let (a, b) = (qwen.to_str().expect("utf-8"), smol.to_str().expect("utf-8"));
    let pairwise = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "pairwise",
            a,
            b,
            "--data",
            data,
            "--judge-max-tokens",
            "48",
            "--out",
            out_arg,
        ];
        args.extend_from_slice(extra);
        let result = jielong(&args);
        succeeded(&result);
        result
    };
    let result = pairwise(&[]);
    let stdout = text(&result.stdout);
    assert!(stdout.contains("each pair in both orders"), "{stdout}");
    let pairs = json_lines(&out.join("pairs.jsonl"));
    assert_eq!(pairs.len(), 3);
    for pair in &pairs {
        for order in ["a_first", "b_first"] {
            let verdict = pair[order].as_str().expect("a verdict");
            assert!(
                ["first", "second", "tie", "unreadable"].contains(&verdict),
                "{pair}"
            );
        }
        // A win needs both orders; one that changes sides is a flip and a tie.
        let flipped = pair["a_first"] == pair["b_first"]
            && ["first", "second"].contains(&pair["a_first"].as_str().unwrap_or(""));
        assert_eq!(pair["agreement"] == "flipped", flipped, "{pair}");
        if flipped {
            assert_eq!(pair["winner"], "tie", "{pair}");
        }
    }
    let report = json_file(&out.join("pairwise.json"));
    let count = |k: &str| report[k].as_u64().expect("a count");
    assert_eq!(
        count("a_wins") + count("b_wins") + count("ties") + count("unreadable"),
        3,
        "{report}"
    );
    let flip_share = report["flip_share"].as_f64().expect("a share");
    assert!((0.0..=1.0).contains(&flip_share), "{report}");

    // Again with --resume: every verdict from the cache, the same pairs.
    let again = pairwise(&["--resume"]);
    let stderr = text(&again.stderr);
    assert!(stderr.contains("from the cache"), "{stderr}");
    assert_eq!(json_lines(&out.join("pairs.jsonl")), pairs);
}

#[test]
fn ask_and_workflows_answer_a_dataset() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let dir = tempfile::tempdir().expect("dir");
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus).expect("corpus");
    std::fs::write(
        corpus.join("vellmoor.md"),
        "# Vellmoor\n\nVellmoor is a mountain village. The Vellmoor clock tower was built by the \
         stonemason Oddny Brask in 1871. The village is known for its blue cheese.\n",
    )
    .expect("write");
    std::fs::write(
        corpus.join("harrowgate.md"),
        "# Harrowgate\n\nHarrowgate is a fishing town on the coast. Its harbour wall was finished \
         in 1903 by the engineer Tomas Lindqvist.\n",
    )
    .expect("write");
    let data = dir.path().join("ask.jsonl");
    std::fs::write(
        &data,
        r#"{"id": "tower", "question": "Who built the Vellmoor clock tower?", "answer": "Oddny Brask"}
"#,
    )
    .expect("write");
    let (rows, _) = eval_rows(
        &data,
        &dir.path().join("ask-out"),
        &[
            "--ask",
            "--sources",
            corpus.to_str().expect("utf-8"),
            "--metric",
            "contains",
        ],
    );
    right_with(&rows[0], "rag_search");
    let sources = rows[0]["outcome"]["detail"]["sources"]
        .as_array()
        .expect("cited sources");
    assert!(
        sources
            .iter()
            .any(|s| s["location"].as_str().unwrap_or("").contains("vellmoor.md")),
        "{}",
        rows[0]
    );

    let data = dir.path().join("math.jsonl");
    std::fs::write(
        &data,
        r#"{"id": "pow", "question": "What is 2**20 - 1?", "answer": "1048575"}
"#,
    )
    .expect("write");
    let workflow = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/workflows/math.yaml");
    let (rows, out) = eval_rows(
        &data,
        &dir.path().join("workflow-out"),
        &["--workflow", workflow],
    );
    right_with(&rows[0], "python");
    let run = rows[0]["outcome"]["detail"]["run"]
        .as_str()
        .expect("run id");
    assert!(out
        .join("workflow-runs")
        .join(run)
        .join("outputs.json")
        .exists());
}

/// Each fault of the options, with the words its error must hold. The model named
/// does not exist: every fault is found before a model would load.
#[test]
fn judge_and_workflow_faults_are_named_before_a_model_loads() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"question\": \"q\", \"answer\": \"a\"}\n").expect("write");
    let bad_prompts = dir.path().join("bad.jsonl");
    std::fs::write(&bad_prompts, "{\"name\": \"x\"}\n").expect("write");
    let two_inputs = dir.path().join("two.yaml");
    std::fs::write(
        &two_inputs,
        "name: two\ninputs:\n  a: {type: string}\n  b: {type: string}\nsteps:\n  - id: s\n    tool: python\n    args: {code: \"print(1)\"}\noutputs:\n  x: \"{{ steps.s.output }}\"\n  y: \"{{ inputs.a }}\"\n",
    )
    .expect("write");
    let data = data.to_str().expect("utf-8");
    let (bad, two) = (
        bad_prompts.to_str().expect("utf-8"),
        two_inputs.to_str().expect("utf-8"),
    );
    let check = |args: &[&str], needles: &[&str]| {
        let mut all = vec!["-m", "/nonexistent/model.gguf", "eval", data];
        all.extend_from_slice(args);
        let out = jielong(&all);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("nonexistent"),
            "{args:?} loaded a model: {stderr}"
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} not in {stderr}"
            );
        }
    };
    check(
        &["--metric", "judge", "--judge-prompt", "nope"],
        &["--judge-prompt nope: no such prompt (there are: single,"],
    );
    check(
        &["--metric", "judge", "--judge-prompts", bad],
        &["bad.jsonl:1: not a judge prompt: missing field `type`"],
    );
    check(
        &["--metric", "judge", "--pass-score", "11"],
        &["--pass-score 11: give a rating from 0 to 10"],
    );
    check(
        &["--metric", "judge", "--rubric", "/missing-rubric.md"],
        &["cannot read the rubric /missing-rubric.md"],
    );
    check(
        &["--workflow", two],
        &["has several inputs (a, b): say which field feeds each with --map INPUT=FIELD"],
    );
    check(
        &["--workflow", two, "--map", "a=question", "--map", "b"],
        &["--map b: write INPUT=FIELD"],
    );
    check(
        &[
            "--workflow",
            two,
            "--map",
            "a=question",
            "--map",
            "b=answer",
        ],
        &["has several outputs (x, y): choose the answer with --output NAME"],
    );
    check(
        &[
            "--workflow",
            two,
            "--map",
            "a=question",
            "--map",
            "c=answer",
        ],
        &["--map c=answer: ", "has no input `c` (it has: a, b)"],
    );
    check(
        &[
            "--workflow",
            two,
            "--map",
            "a=question",
            "--map",
            "b=missing",
            "--output",
            "x",
        ],
        &["example `1` has no field `missing` (for --map)"],
    );
}
