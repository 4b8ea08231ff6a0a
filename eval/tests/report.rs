//! Statistics and reports: Wilson intervals, McNemar p-values, nearest-rank
//! percentiles (known values through `check`), summaries, their text and files, and
//! paired comparisons.

use jielong_eval::{
    compare, mcnemar_p, nearest_rank, wilson, Example, Metric, Outcome, Report, Row, Summary,
    Tokens,
};

/// Each case is (what, got, want); all must agree within `tolerance`.
fn check(tolerance: f64, cases: &[(String, f64, f64)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter(|(_, got, want)| (got - want).abs() > tolerance)
        .map(|(what, got, want)| format!("{what}: got {got}, want {want}"))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn wilson_known_values() {
    let mut cases = Vec::new();
    for (k, n, low, high) in [
        (50, 100, 0.403_829_8, 0.596_170_2),
        (0, 10, 0.0, 0.277_540_2),
        (10, 10, 0.722_459_8, 1.0),
        (1, 2, 0.094_528_7, 0.905_471_3),
        (81, 100, 0.722_209_8, 0.874_853_5),
        (1, 1000, 0.000_176_5, 0.005_642_7),
        (0, 0, 0.0, 1.0),
    ] {
        let (l, h) = wilson(k, n);
        cases.push((format!("wilson({k}, {n}) low"), l, low));
        cases.push((format!("wilson({k}, {n}) high"), h, high));
    }
    check(1e-6, &cases);
}

#[test]
fn mcnemar_known_values() {
    let cases: Vec<(String, f64, f64)> = [
        (10, 2, 0.038_574_218_75),
        (2, 10, 0.038_574_218_75),
        (0, 5, 0.0625),
        (0, 10, 0.001_953_125),
        (3, 9, 0.145_996_093_75),
        (5, 5, 1.0),
        (1, 0, 1.0),
        (0, 0, 1.0),
        (600, 400, 2.728_464_156e-10),
        (2000, 2100, 0.122_064_980),
    ]
    .into_iter()
    .map(|(b, c, want)| (format!("mcnemar({b}, {c})"), mcnemar_p(b, c), want))
    .collect();
    check(1e-9, &cases);
    // Far past where 0.5^n underflows.
    assert!(mcnemar_p(3000, 3000) > 0.9);
    assert!(mcnemar_p(0, 5000) >= 0.0);
}

#[test]
fn nearest_rank_percentiles() {
    let ten: Vec<f64> = (1..=10).map(f64::from).collect();
    let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
    let cases: Vec<(String, f64, f64)> = [
        ("p50 of 1..=10", nearest_rank(&ten, 50.0), 5.0),
        ("p95 of 1..=10", nearest_rank(&ten, 95.0), 10.0),
        ("p0 of 1..=10", nearest_rank(&ten, 0.0), 1.0),
        ("p100 of 1..=10", nearest_rank(&ten, 100.0), 10.0),
        ("p95 of 1..=100", nearest_rank(&hundred, 95.0), 95.0),
        ("p50 of one", nearest_rank(&[3.5], 50.0), 3.5),
        ("p50 of none", nearest_rank(&[], 50.0), 0.0),
    ]
    .into_iter()
    .map(|(what, got, want)| (what.to_owned(), got, want))
    .collect();
    check(0.0, &cases);
}

/// A graded row: `answer` to `input` (expected `expected`), scored numerically.
fn row(id: &str, expected: Option<&str>, answer: Option<&str>, seconds: f64) -> Row {
    let outcome = Outcome {
        seconds,
        tokens: Tokens {
            prompt: 10,
            cached: 4,
            evaluated: 6,
            generated: 3,
        },
        ..match answer {
            Some(a) => Outcome::answered(a),
            None => Outcome::failed("model crashed"),
        }
    };
    Row::grade(
        &Example::new(id, format!("question {id}"), expected),
        &Metric::parse("numeric").expect("metric"),
        outcome,
    )
}

#[test]
fn summary_aggregates_rows() {
    let mut rows = vec![
        row("1", Some("4"), Some("4"), 1.0),
        row("2", Some("5"), Some("6"), 2.0),
        row("3", Some("6"), None, 3.0),
        row("4", None, Some("whatever"), 4.0),
    ];
    rows[0].category = Some("easy".into());
    rows[1].category = Some("easy".into());
    rows[2].category = Some("hard".into());
    rows[0].outcome.tools = vec!["python".into(), "python".into(), "web_search".into()];
    rows[1].outcome.tools = vec!["python".into()];
    rows[3].outcome.stop = "max_steps".into();
    let s = Summary::from_rows(&rows);
    assert_eq!((s.examples, s.graded, s.correct, s.errors), (4, 3, 1, 1));
    assert!((s.accuracy - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(s.ci95, wilson(1, 3));
    assert_eq!(
        (s.latency_p50, s.latency_p95, s.latency_mean),
        (2.0, 4.0, 2.5)
    );
    assert_eq!(
        s.tokens,
        Tokens {
            prompt: 40,
            cached: 16,
            evaluated: 24,
            generated: 12
        }
    );
    let stops: Vec<(&str, usize)> = s.stops.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(stops, [("answered", 2), ("error", 1), ("max_steps", 1)]);
    let tools: Vec<(&str, usize)> = s.tools.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(tools, [("python", 2), ("web_search", 1)]);
    let easy = &s.by_category["easy"];
    assert_eq!(
        (easy.examples, easy.graded, easy.correct, easy.accuracy),
        (2, 2, 1, 0.5)
    );
    assert_eq!(s.by_category["hard"].accuracy, 0.0);
    assert_eq!(s.by_category.len(), 2);

    let text = s.to_string();
    for line in [
        "examples  4 (graded 3)",
        "accuracy  33.3% (1/3), 95% CI [6.1%, 79.2%]",
        "latency   p50 2.00s, p95 4.00s, mean 2.50s",
        "tokens    prompt 40 (cached 16, evaluated 24), generated 12",
        "errors    1",
        "stops     answered 2, error 1, max_steps 1",
        "tools     python 2, web_search 1",
        "category  examples  graded  correct  accuracy",
        "easy             2       2        1     50.0%",
        "hard             1       1        0      0.0%",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }

    let empty = Summary::from_rows(&[]);
    assert_eq!(
        (empty.accuracy, empty.ci95, empty.latency_p95),
        (0.0, (0.0, 1.0), 0.0)
    );
    assert!(empty.to_string().contains("stops     -"));
}

#[test]
fn rows_and_summary_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rows = vec![
        row("a", Some("1"), Some("1"), 0.5),
        row("b", None, None, 0.25),
    ];
    rows[0].outcome.detail = serde_json::json!({"trace": [{"type": "step", "n": 1}]});
    let report = Report {
        system: "test".into(),
        summary: Summary::from_rows(&rows),
        rows,
        interrupted: false,
        total: 2,
        cached: 0,
        cache_ignored: 0,
    };
    let rows_path = dir.path().join("rows.jsonl");
    report.write_rows(&rows_path).expect("write rows");
    assert_eq!(
        Report::read_rows(&rows_path).expect("read rows"),
        report.rows
    );
    let text = std::fs::read_to_string(&rows_path).expect("rows text");
    assert_eq!(text.lines().count(), 2);

    let summary_path = dir.path().join("summary.json");
    report.write_summary(&summary_path).expect("write summary");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).expect("summary text"))
            .expect("summary JSON");
    assert_eq!(value["system"], "test");
    let mut summary: Summary = serde_json::from_value(value["summary"].clone()).expect("summary");
    // serde_json reads floats back to within an ulp.
    assert!((summary.ci95.0 - report.summary.ci95.0).abs() < 1e-15);
    summary.ci95 = report.summary.ci95;
    assert_eq!(summary, report.summary);
    // Nothing but the two files: the temporary files were renamed.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 2);

    std::fs::write(
        &rows_path,
        format!("{}\n{{\"id\": 3}}\n", text.lines().next().unwrap_or("")),
    )
    .expect("write");
    let err = Report::read_rows(&rows_path)
        .expect_err("bad row")
        .to_string();
    assert!(err.contains("rows.jsonl:2: not a row: "), "{err}");
    assert!(!err.contains('\n'));
}

#[test]
fn comparison_pairs_by_id() {
    // a right on 1-12, b right on 1-2 and 13-14: discordant 10 vs 2.
    let verdicts = |right: &dyn Fn(usize) -> bool| -> Vec<Row> {
        (1..=20)
            .map(|i| {
                let answer = if right(i) { "1" } else { "0" };
                row(&i.to_string(), Some("1"), Some(answer), 1.0)
            })
            .collect()
    };
    let mut a = verdicts(&|i| i <= 12);
    let mut b = verdicts(&|i| i <= 2 || (13..=14).contains(&i));
    a.push(row("only-a", Some("1"), Some("1"), 1.0));
    b.push(row("only-b", Some("1"), Some("1"), 1.0));
    b.push(row("ungraded", None, Some("1"), 1.0));
    a.push(row("ungraded", None, Some("1"), 1.0));
    let mut changed_input = row("moved", Some("1"), Some("1"), 1.0);
    a.push(changed_input.clone());
    changed_input.input_hash = "another".into();
    b.push(changed_input);

    let c = compare("base", &a, "new", &b);
    assert_eq!(
        (c.paired, c.both_right, c.only_a, c.only_b, c.both_wrong),
        (20, 2, 10, 2, 6)
    );
    assert_eq!((c.unmatched, c.ungraded), (4, 1));
    assert_eq!((c.accuracy_a, c.accuracy_b), (0.6, 0.2));
    assert!((c.p_value - 0.038_574_218_75).abs() < 1e-12);
    assert!(c.significant(0.05));
    assert_eq!(c.changed.len(), 12);
    assert_eq!(
        (
            c.changed[0].id.as_str(),
            c.changed[0].a_correct,
            c.changed[0].b_correct
        ),
        ("3", true, false)
    );
    let text = c.to_string();
    assert!(text.contains("significant at 0.05: yes"), "{text}");
    assert!(text.contains("only base     10"), "{text}");

    let same = compare("x", &a, "y", &a);
    assert_eq!((same.p_value, same.changed.len()), (1.0, 0));
    assert!(same.to_string().contains("significant at 0.05: no"));
}
