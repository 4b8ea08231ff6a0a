//! LLM-as-judge: prompt files, reading ratings and verdicts, the two orders of a pair,
//! and whole judge passes through `Eval` with a scripted judge.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use jielong_eval::judge::{decide, BUILTIN_JUDGE_PROMPTS};
use jielong_eval::{
    apply_grades, pair_examples, read_rating, read_verdict, single_examples, Agreement, Eval,
    Example, JudgeKind, JudgePrompt, Metric, Outcome, PairwiseReport, Row, Summary, System,
    Transcript, Verdict, Winner,
};
use serde_json::json;

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}

#[test]
fn builtin_prompts_cover_every_kind_and_shape() {
    let prompts = JudgePrompt::builtin();
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "single",
            "single-ref",
            "single-multi-turn",
            "single-ref-multi-turn",
            "pair",
            "pair-ref",
            "pair-multi-turn",
            "pair-ref-multi-turn"
        ]
    );
    for p in &prompts {
        assert_eq!(p.multi_turn(), p.name.ends_with("multi-turn"), "{}", p.name);
        assert_eq!(p.needs_reference(), p.name.contains("-ref"), "{}", p.name);
        let kind = if p.name.starts_with("pair") {
            JudgeKind::Pairwise
        } else {
            JudgeKind::Single
        };
        assert_eq!(p.kind, kind, "{}", p.name);
    }
    assert_eq!(
        JudgePrompt::parse(BUILTIN_JUDGE_PROMPTS, Path::new("x"))
            .map(|p| p.len())
            .ok(),
        Some(8)
    );
}

#[test]
fn prompt_files_in_mt_bench_format_and_their_faults() {
    // A line as MT-Bench publishes it.
    let mt_bench = r#"{"name": "single-v1", "type": "single", "system_prompt": "You are a helpful assistant.", "prompt_template": "[Instruction]\nRate it, \"Rating: [[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]", "description": "Prompt for general questions", "category": "general", "output_format": "[[rating]]"}"#;
    let prompts = JudgePrompt::parse(mt_bench, Path::new("judge_prompts.jsonl")).expect("parses");
    assert_eq!(prompts[0].name, "single-v1");
    // No {rubric} in the template: the rubric follows the system message.
    assert_eq!(
        prompts[0].system(Some("Be strict.")),
        "You are a helpful assistant.\n\nBe strict."
    );
    let check_fault = |text: &str, want: &str| {
        let err = JudgePrompt::parse(text, Path::new("p.jsonl")).expect_err(text);
        assert_eq!(err.to_string(), want);
    };
    check_fault("", "p.jsonl: no judge prompts");
    check_fault(
        &format!("{mt_bench}\n{{\"name\": \"x\"}}"),
        "p.jsonl:2: not a judge prompt: missing field `type` at line 1 column 13",
    );
    check_fault(
        r#"{"name": "x", "type": "single", "system_prompt": "s", "prompt_template": "{question} {answr}"}"#,
        "p.jsonl:1: judge prompt `x` uses an unknown placeholder {answr} (known: question, answer, answer_a, answer_b, ref_answer_1, ref_answer_2, question_1, question_2, answer_1, answer_2, answer_a_1, answer_a_2, answer_b_1, answer_b_2, rubric, reference)",
    );
    // Filling needs every placeholder.
    let mut values = BTreeMap::new();
    values.insert("question", "Q".to_string());
    assert_eq!(
        prompts[0].fill(&values),
        Err("judge prompt `single-v1` needs {answer}, which this example does not have".into())
    );
    values.insert("answer", "A".to_string());
    let filled = prompts[0].fill(&values).expect("filled");
    assert!(
        filled.contains("[Question]\nQ\n") && filled.contains("Answer]\nA\n"),
        "{filled}"
    );
    assert!(
        filled.contains("\"Rating: [[5]]\""),
        "literal brackets stay: {filled}"
    );
}

#[test]
fn ratings_and_verdicts_are_read_as_mt_bench_reads_them() {
    let ratings: &[(&str, Option<f64>)] = &[
        ("Good answer.\nRating: [[8]]", Some(8.0)),
        ("Rating: [[7.5]]", Some(7.5)),
        ("first [[3]] then corrected: [[6]]", Some(6.0)),
        ("Rating: [9]", Some(9.0)),
        ("Rating: 4/10", Some(4.0)),
        ("[[11]] is out of range", None),
        ("no number here", None),
    ];
    for (text, want) in ratings {
        assert_eq!(read_rating(text), *want, "{text}");
    }
    let verdicts: &[(&str, Verdict)] = &[
        ("A is clearer. [[A]]", Verdict::First),
        ("[[B]]", Verdict::Second),
        ("[[[B]]]", Verdict::Second),
        ("Both fine: [[C]]", Verdict::Tie),
        ("[[tie]]", Verdict::Tie),
        ("first [[A]], on reflection [[B]]", Verdict::Second),
        ("pair-v1 scores [[8, 6]]", Verdict::First),
        ("[[5,5]]", Verdict::Tie),
        ("Assistant A is better", Verdict::Unreadable),
    ];
    for (text, want) in verdicts {
        assert_eq!(read_verdict(text), *want, "{text}");
    }
}

#[test]
fn both_orders_decide_a_pair() {
    use Verdict::*;
    // (a shown first, b shown first) → winner, agreement.
    let cases = [
        (First, Second, Winner::A, Agreement::Consistent),
        (Second, First, Winner::B, Agreement::Consistent),
        (Tie, Tie, Winner::Tie, Agreement::Consistent),
        // The first position won both times: a flip, so a tie.
        (First, First, Winner::Tie, Agreement::Flipped),
        (Second, Second, Winner::Tie, Agreement::Flipped),
        (First, Tie, Winner::Tie, Agreement::Partial),
        (Tie, First, Winner::Tie, Agreement::Partial),
        (Unreadable, First, Winner::Unreadable, Agreement::Unreadable),
    ];
    for (a_first, b_first, winner, agreement) in cases {
        assert_eq!(
            decide(a_first, b_first),
            (winner, agreement),
            "{a_first:?} {b_first:?}"
        );
    }
}

/// A judge that answers from the filled prompt: a rating from the answer's length,
/// or, pairwise, whatever `pick` says about the text shown as Assistant A.
struct ScriptedJudge {
    calls: AtomicUsize,
    pick: fn(&str) -> &'static str,
}

impl System for ScriptedJudge {
    fn name(&self) -> String {
        "judge:scripted".into()
    }

    fn answer<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Outcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let text = (self.pick)(&example.input);
        Box::pin(async move { Outcome::answered(text) })
    }
}

fn row(id: &str, question: &str, answer: Option<&str>, expected: Option<&str>) -> Row {
    let outcome = match answer {
        Some(a) => Outcome::answered(a),
        None => Outcome::failed("no answer"),
    };
    Row::grade(
        &Example::new(id, question, expected),
        &Metric::Judge,
        outcome,
    )
}

#[test]
fn single_grading_rates_every_answer_and_resumes_from_its_cache() {
    let mut rows = vec![
        row("1", "Capital of France?", Some("Paris."), None),
        row("2", "2+2?", Some("5"), Some("4")),
        row("3", "Say hi", None, None),
        row("4", "Anything", Some("gibberish"), None),
    ];
    assert!(
        rows.iter().all(|r| r.correct.is_none()),
        "ungraded until judged"
    );
    let prompts = JudgePrompt::builtin();
    let transcripts: Vec<Transcript> = rows.iter().filter_map(Transcript::of_row).collect();
    assert_eq!(
        transcripts.len(),
        3,
        "the row without an answer is not judged"
    );
    // Auto: a reference picks the `-ref` prompt.
    let chosen: Vec<&str> = transcripts
        .iter()
        .map(|t| {
            JudgePrompt::choose(&prompts, "auto", JudgeKind::Single, t)
                .expect("a prompt")
                .name
                .as_str()
        })
        .collect();
    assert_eq!(chosen, ["single", "single-ref", "single"]);

    let prompt = prompts.iter().find(|p| p.name == "single").expect("single");
    let inputs = single_examples(prompt, Some("Be fair."), &transcripts).expect("inputs");
    assert!(inputs[0].input.contains("[Rubric]\nBe fair.") && inputs[0].input.contains("Paris."));
    let judge = ScriptedJudge {
        calls: AtomicUsize::new(0),
        pick: |input| {
            if input.contains("Paris.") {
                "Correct and brief. Rating: [[9]]"
            } else if input.contains("gibberish") {
                "I cannot tell."
            } else {
                "Rating: [[2]]"
            }
        },
    };
    let dir = tempfile::tempdir().expect("dir");
    let cache = dir.path().join("judge.jsonl");
    let eval = Eval::new(inputs.clone(), Metric::Judge).cache(&cache);
    let judged = block_on(eval.run(&judge, &())).expect("judged");
    assert_eq!(judge.calls.load(Ordering::SeqCst), 3);
    apply_grades(&mut rows, "single", &judged, 7.0);
    let verdicts: Vec<(Option<bool>, Option<f64>)> = rows
        .iter()
        .map(|r| (r.correct, r.judgement.as_ref().and_then(|j| j.score)))
        .collect();
    assert_eq!(
        verdicts,
        [
            (Some(true), Some(9.0)),
            (Some(false), Some(2.0)),
            (None, None),
            (None, None)
        ]
    );
    assert!(rows[2].judgement.is_none(), "not seen by the judge");
    assert_eq!(
        rows[3].judgement.as_ref().map(|j| j.text.as_str()),
        Some("I cannot tell.")
    );
    let summary = Summary::from_rows(&rows);
    let judge_summary = summary.judge.clone().expect("a judge summary");
    assert_eq!(
        (
            judge_summary.judged,
            judge_summary.rated,
            judge_summary.unreadable
        ),
        (3, 2, 1)
    );
    assert!((judge_summary.mean_score - 5.5).abs() < 1e-9);
    assert_eq!((summary.correct, summary.graded), (1, 2));
    assert!(
        summary
            .to_string()
            .contains("mean rating 5.50 over 2 rated"),
        "{summary}"
    );

    // Again from the cache: no judge call.
    let again = block_on(
        Eval::new(inputs, Metric::Judge)
            .cache(&cache)
            .run(&judge, &()),
    )
    .expect("judged");
    assert_eq!(again.cached, 3);
    assert_eq!(judge.calls.load(Ordering::SeqCst), 3);
}

#[test]
fn multi_turn_transcripts_and_references_come_from_the_row_and_the_dataset() {
    let mut outcome = Outcome::answered("second answer");
    outcome.detail = json!({"turns": [
        {"question": "Q1", "answer": "first answer"},
        {"question": "Q2", "answer": "second answer"},
    ]});
    let example = Example::new("m", "Q1", Some("R1"))
        .with("turns", json!(["Q1", "Q2"]))
        .with("reference", json!(["R1", "R2"]));
    let row = Row::grade(&example, &Metric::Judge, outcome);
    let transcript = Transcript::of_row(&row)
        .expect("answered")
        .with_references(&example);
    assert_eq!(transcript.turns.len(), 2);
    assert_eq!(transcript.references, ["R1", "R2"]);
    let prompts = JudgePrompt::builtin();
    let prompt =
        JudgePrompt::choose(&prompts, "auto", JudgeKind::Single, &transcript).expect("a prompt");
    assert_eq!(prompt.name, "single-ref-multi-turn");
    let input = &single_examples(prompt, Some("r"), std::slice::from_ref(&transcript))
        .expect("filled")[0]
        .input;
    for part in ["Q1", "Q2", "first answer", "second answer", "R1", "R2"] {
        assert!(input.contains(part), "{part} in {input}");
    }
    // One reference for two turns: graded without references.
    let short = Transcript {
        references: vec!["R1".into()],
        ..transcript.clone()
    };
    assert_eq!(
        JudgePrompt::choose(&prompts, "auto", JudgeKind::Single, &short)
            .expect("a prompt")
            .name,
        "single-multi-turn"
    );
    // A named prompt of the wrong kind, or none of that name.
    assert_eq!(
        JudgePrompt::choose(&prompts, "pair", JudgeKind::Single, &transcript).map(|p| &p.name),
        Err("judge prompt `pair` is a pairwise prompt, not a single one".to_string())
    );
    assert!(
        JudgePrompt::choose(&prompts, "nope", JudgeKind::Single, &transcript)
            .expect_err("unknown")
            .starts_with("no judge prompt `nope` (there are: single, single-ref,")
    );
}

#[test]
fn pairwise_judges_both_orders_and_counts_flips() {
    let a_rows = [
        row("1", "q1", Some("GOOD one"), None),
        row("2", "q2", Some("GOOD two"), None),
        row("3", "q3", Some("alpha"), None),
        row("4", "q4", Some("only in a"), None),
        row("5", "q5", Some("same"), None),
    ];
    let b_rows = [
        row("1", "q1", Some("bad one"), None),
        row("2", "q2", Some("bad two"), None),
        row("3", "q3", Some("beta"), None),
        row("5", "q5", Some("same"), None),
        row("6", "q6", Some("only in b"), None),
    ];
    let ta: Vec<Transcript> = a_rows.iter().filter_map(Transcript::of_row).collect();
    let tb: Vec<Transcript> = b_rows.iter().filter_map(Transcript::of_row).collect();
    let prompts = JudgePrompt::builtin();
    let jielong_eval::PairInputs { groups, unmatched } =
        pair_examples(&prompts, "auto", &ta, &tb).expect("pairs");
    assert_eq!(unmatched, 1, "4 has no partner");
    assert_eq!(groups.len(), 1);
    let (name, inputs) = &groups[0];
    assert_eq!(name, "pair");
    assert_eq!(inputs.len(), 8, "4 pairs, 2 orders each");
    assert!(inputs[0].input.find("GOOD one") < inputs[0].input.find("bad one"));
    assert!(inputs[1].input.find("bad one") < inputs[1].input.find("GOOD one"));

    // The judge prefers GOOD wherever it is; otherwise it picks whichever is shown
    // first (a position bias), and calls identical answers a tie.
    let judge = ScriptedJudge {
        calls: AtomicUsize::new(0),
        pick: |input| {
            let a = input.find("Assistant A's Answer]").unwrap_or(0);
            let b = input.find("Assistant B's Answer]").unwrap_or(0);
            let good = input.find("GOOD");
            match good {
                Some(g) if g > a && g < b => "[[A]]",
                Some(_) => "[[B]]",
                None if input.contains("same") => "[[C]]",
                None => "[[A]]",
            }
        },
    };
    let judged = block_on(Eval::new(inputs.clone(), Metric::Judge).run(&judge, &())).expect("ok");
    let report = PairwiseReport::new("A", "B", "judge:scripted", &ta, &judged.rows, unmatched);
    let winners: Vec<(&str, Winner, Agreement)> = report
        .pairs
        .iter()
        .map(|p| (p.id.as_str(), p.winner, p.agreement))
        .collect();
    assert_eq!(
        winners,
        [
            ("1", Winner::A, Agreement::Consistent),
            ("2", Winner::A, Agreement::Consistent),
            ("3", Winner::Tie, Agreement::Flipped),
            ("5", Winner::Tie, Agreement::Consistent),
        ]
    );
    assert_eq!(report.pairs[0].question, "q1");
    assert_eq!((report.a_wins, report.b_wins, report.ties), (2, 0, 2));
    assert_eq!(
        (report.flipped, report.partial, report.unreadable),
        (1, 0, 0)
    );
    assert!((report.flip_share - 0.25).abs() < 1e-9);
    assert!((report.a_win_rate - 0.75).abs() < 1e-9);
    // Decisive verdicts: 1 and 2 (first, second twice: A then B shown first), 3 (first twice).
    assert!((report.first_position_share - 4.0 / 6.0).abs() < 1e-9);
    let shown = report.to_string();
    assert!(shown.contains("flipped 1 (25.0%)"), "{shown}");

    let dir = tempfile::tempdir().expect("dir");
    report
        .write_pairs(&dir.path().join("pairs.jsonl"))
        .expect("pairs");
    report
        .write_summary(&dir.path().join("pairwise.json"))
        .expect("summary");
    let pairs = std::fs::read_to_string(dir.path().join("pairs.jsonl")).expect("read");
    assert_eq!(pairs.lines().count(), 4);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("pairwise.json")).expect("read"),
    )
    .expect("json");
    assert_eq!(summary["flipped"], 1);
    assert!(summary.get("pairs").is_none());
}
