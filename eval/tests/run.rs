//! Runs against a scripted system: grading, the resumable cache (reuse, changed
//! inputs, cut-short lines, foreign caches), cancellation and concurrency. `check`
//! runs one evaluation and asserts which examples the system was asked.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jielong_eval::{
    Eval, EvalError, Example, Metric, Observer, Outcome, Report, Row, System, Tokens,
};
use serde_json::{json, Value};

/// Answers from a script (input → answer; "FAIL" is an error, a missing input too)
/// and records every call.
#[derive(Default)]
struct Scripted {
    name: String,
    config: Value,
    script: HashMap<String, String>,
    calls: Mutex<Vec<String>>,
    /// Set this flag while answering this id.
    cancel_on: Option<(String, Arc<AtomicBool>)>,
    /// Each answer takes this long (lets concurrent examples overlap).
    delay: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Scripted {
    fn new(name: &str, script: &[(&str, &str)]) -> Scripted {
        Scripted {
            name: name.into(),
            script: script
                .iter()
                .map(|(q, a)| (q.to_string(), a.to_string()))
                .collect(),
            ..Scripted::default()
        }
    }

    /// The ids asked since the last call, in order.
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().expect("calls"))
    }
}

impl System for Scripted {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn config(&self) -> Value {
        self.config.clone()
    }

    fn answer<'a>(&'a self, example: &'a Example) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.calls.lock().expect("calls").push(example.id.clone());
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            if let Some((id, flag)) = &self.cancel_on {
                if *id == example.id {
                    flag.store(true, Ordering::SeqCst);
                }
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            match self.script.get(&example.input).map(String::as_str) {
                Some("FAIL") | None => Outcome::failed("scripted failure"),
                Some(answer) => Outcome {
                    tokens: Tokens {
                        prompt: 5,
                        cached: 0,
                        evaluated: 5,
                        generated: 2,
                    },
                    tools: vec!["python".into()],
                    seconds: 0.5,
                    ..Outcome::answered(answer)
                },
            }
        })
    }
}

/// Records what the observer is told.
#[derive(Default)]
struct Recorder {
    started: Mutex<Vec<(usize, usize)>>,
    finished: Mutex<Vec<(String, usize, usize)>>,
    warnings: Mutex<Vec<String>>,
}

impl Observer for Recorder {
    fn started(&self, total: usize, cached: usize) {
        self.started.lock().expect("started").push((total, cached));
    }
    fn finished(&self, row: &Row, done: usize, total: usize) {
        self.finished
            .lock()
            .expect("finished")
            .push((row.id.clone(), done, total));
    }
    fn warning(&self, message: &str) {
        self.warnings.lock().expect("warnings").push(message.into());
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// Runs `eval` on `system` and asserts that exactly the ids `asked` were run, in
/// that order.
fn check(eval: &Eval, system: &Scripted, observer: &dyn Observer, asked: &[&str]) -> Report {
    let report = block_on(eval.run(system, observer)).expect("run");
    assert_eq!(system.take_calls(), asked, "examples run");
    report
}

fn examples() -> Vec<Example> {
    vec![
        Example::new("a", "2+2", Some("4")).with("category", "add"),
        Example::new("b", "3+3", Some("6")).with("category", "add"),
        Example::new("c", "2*5", Some("10")).with("category", "mul"),
        Example::new("d", "say hi", None),
    ]
}

fn script() -> Vec<(&'static str, &'static str)> {
    vec![
        ("2+2", "It is 4."),
        ("3+3", "I think 7"),
        ("2*5", "FAIL"),
        ("say hi", "hi"),
    ]
}

fn numeric() -> Metric {
    Metric::parse("numeric").expect("metric")
}

#[test]
fn grades_every_example_in_order() {
    let system = Scripted::new("calc", &script());
    let recorder = Recorder::default();
    let report = check(
        &Eval::new(examples(), numeric()),
        &system,
        &recorder,
        &["a", "b", "c", "d"],
    );
    let verdicts: Vec<(&str, Option<bool>, Option<&str>)> = report
        .rows
        .iter()
        .map(|r| (r.id.as_str(), r.correct, r.extracted.as_deref()))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("a", Some(true), Some("4")),
            ("b", Some(false), Some("7")),
            ("c", Some(false), None),
            ("d", None, None)
        ]
    );
    assert_eq!(report.rows[0].category.as_deref(), Some("add"));
    assert_eq!(
        report.rows[2].outcome.error.as_deref(),
        Some("scripted failure")
    );
    assert!(
        report.rows[2].outcome.seconds > 0.0,
        "measured when not set"
    );
    assert_eq!(report.rows[0].outcome.seconds, 0.5, "kept when set");
    let s = &report.summary;
    assert_eq!((s.examples, s.graded, s.correct, s.errors), (4, 3, 1, 1));
    assert_eq!(s.by_category["add"].accuracy, 0.5);
    assert_eq!(s.tools["python"], 3);
    assert_eq!(s.tokens.generated, 6);
    assert!(!report.interrupted);
    assert_eq!(
        (report.system.as_str(), report.total, report.cached),
        ("calc", 4, 0)
    );
    assert_eq!(*recorder.started.lock().expect("started"), [(4, 0)]);
    let done: Vec<usize> = recorder
        .finished
        .lock()
        .expect("finished")
        .iter()
        .map(|f| f.1)
        .collect();
    assert_eq!(done, [1, 2, 3, 4]);
}

#[test]
fn cache_resumes_without_rerunning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache.jsonl");
    let system = Scripted::new("calc", &script());
    let eval = Eval::new(examples(), numeric()).cache(&cache);
    let first = check(&eval, &system, &(), &["a", "b", "c", "d"]);

    let recorder = Recorder::default();
    let second = check(&eval, &system, &recorder, &[]);
    assert_eq!(second.rows, first.rows);
    assert_eq!(second.cached, 4);
    assert_eq!(*recorder.started.lock().expect("started"), [(4, 4)]);

    // A changed input re-runs that row only; a changed expected answer is re-graded
    // without a run; a new example runs.
    let mut changed = examples();
    changed[1].input = "2+2".into();
    changed[1].expected = Some("4".into());
    changed[0].expected = Some("5".into());
    changed.push(Example::new("e", "3+3", Some("7")));
    let third = check(
        &Eval::new(changed.clone(), numeric()).cache(&cache),
        &system,
        &(),
        &["b", "e"],
    );
    let verdicts: Vec<Option<bool>> = third.rows.iter().map(|r| r.correct).collect();
    assert_eq!(
        verdicts,
        [Some(false), Some(true), Some(false), None, Some(true)]
    );
    // The latest row for `b` wins from now on.
    check(
        &Eval::new(changed, numeric()).cache(&cache),
        &system,
        &(),
        &[],
    );

    // Another metric re-grades the cached rows.
    let contains = Eval::new(examples(), Metric::Contains).cache(&cache);
    let regraded = block_on(contains.run(&system, &())).expect("run");
    assert_eq!(regraded.rows[0].correct, Some(true));
    assert_eq!(regraded.rows[0].extracted.as_deref(), Some("4"));
}

#[test]
fn errors_rerun_only_when_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache.jsonl");
    let system = Scripted::new("calc", &script());
    let eval = Eval::new(examples(), numeric()).cache(&cache);
    check(&eval, &system, &(), &["a", "b", "c", "d"]);
    check(&eval, &system, &(), &[]);
    check(&eval.clone().retry_errors(true), &system, &(), &["c"]);
}

#[test]
fn cut_short_last_line_is_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache.jsonl");
    let system = Scripted::new("calc", &script());
    let eval = Eval::new(examples(), numeric()).cache(&cache);
    check(&eval, &system, &(), &["a", "b", "c", "d"]);

    // Killed while writing the last row: half a line, no newline.
    let text = std::fs::read_to_string(&cache).expect("cache");
    let last_start = text.trim_end().rfind('\n').expect("several lines") + 1;
    std::fs::write(&cache, &text[..last_start + 20]).expect("cut");
    let recorder = Recorder::default();
    let report = check(&eval, &system, &recorder, &["d"]);
    assert_eq!(report.cache_ignored, 1);
    let warnings = recorder.warnings.lock().expect("warnings").clone();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].ends_with("cache.jsonl:5: ignored a corrupt last line (cut short?)"),
        "{warnings:?}"
    );
    // The file is whole again: nothing to ignore or run.
    let again = check(&eval, &system, &(), &[]);
    assert_eq!(again.cache_ignored, 0);
    assert_eq!(Report::read_rows(&cache).expect("rows").len(), 4);

    // A complete last row that lost only its newline is kept.
    let text = std::fs::read_to_string(&cache).expect("cache");
    std::fs::write(&cache, text.trim_end()).expect("cut newline");
    check(&eval, &system, &(), &[]);
    assert!(std::fs::read_to_string(&cache)
        .expect("cache")
        .ends_with("}\n"));

    // A header cut short: the cache starts over.
    std::fs::write(&cache, "{\"system\": \"ca").expect("cut header");
    check(&eval, &system, &(), &["a", "b", "c", "d"]);

    // Corruption before the last line is an error naming the line.
    let text = std::fs::read_to_string(&cache).expect("cache");
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"id\": \"b\", garbage";
    std::fs::write(&cache, lines.join("\n") + "\n").expect("corrupt");
    let err = block_on(eval.run(&system, &())).expect_err("corrupt cache");
    assert!(
        err.to_string().ends_with("cache.jsonl:3: invalid JSON"),
        "{err}"
    );
    assert!(system.take_calls().is_empty());
}

#[test]
fn cache_of_another_system_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache.jsonl");
    let mut system = Scripted::new("calc", &script());
    system.config = json!({"model": "small", "temperature": 0});
    let eval = Eval::new(examples(), numeric()).cache(&cache);
    check(&eval, &system, &(), &["a", "b", "c", "d"]);

    let other = Scripted {
        config: system.config.clone(),
        ..Scripted::new("agent", &script())
    };
    let err = block_on(eval.run(&other, &())).expect_err("other system");
    assert!(matches!(err, EvalError::CacheMismatch { .. }));
    assert!(
        err.to_string().ends_with(
            "cache.jsonl: the cache was written for system `calc` with config {\"model\":\"small\",\"temperature\":0}, not `agent` with config {\"model\":\"small\",\"temperature\":0}; use another cache file or remove it"
        ),
        "{err}"
    );
    let reconfigured = Scripted {
        config: json!({"model": "large", "temperature": 0}),
        ..Scripted::new("calc", &script())
    };
    assert!(matches!(
        block_on(eval.run(&reconfigured, &())),
        Err(EvalError::CacheMismatch { .. })
    ));
    // The same configuration, keys in another order: accepted.
    let same = Scripted {
        config: json!({"temperature": 0, "model": "small"}),
        ..Scripted::new("calc", &script())
    };
    check(&eval, &same, &(), &[]);
    assert!(other.take_calls().is_empty() && reconfigured.take_calls().is_empty());

    // A rows file is not a cache.
    let rows = dir.path().join("rows.jsonl");
    block_on(eval.run(&system, &()))
        .expect("run")
        .write_rows(&rows)
        .expect("rows");
    let err = block_on(
        Eval::new(examples(), numeric())
            .cache(&rows)
            .run(&system, &()),
    )
    .expect_err("rows file")
    .to_string();
    assert!(
        err.ends_with("rows.jsonl:1: not an eval cache (no {\"system\": …} header line)"),
        "{err}"
    );
}

#[test]
fn cancellation_returns_the_rows_done() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache.jsonl");
    let flag = Arc::new(AtomicBool::new(false));
    let mut system = Scripted::new("calc", &script());
    system.cancel_on = Some(("b".into(), flag.clone()));
    let eval = Eval::new(examples(), numeric())
        .cache(&cache)
        .cancel(flag.clone());
    // Cancelled while `b` runs: `b` finishes, nothing new starts.
    let report = check(&eval, &system, &(), &["a", "b"]);
    assert!(report.interrupted);
    let ids: Vec<&str> = report.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!((report.summary.examples, report.total), (2, 4));

    // Still cancelled: nothing runs. Cleared: the rest runs.
    let report = check(&eval, &system, &(), &[]);
    assert!(report.interrupted && report.rows.len() == 2);
    flag.store(false, Ordering::SeqCst);
    system.cancel_on = None;
    let report = check(&eval, &system, &(), &["c", "d"]);
    assert!(!report.interrupted);
    assert_eq!(report.rows.len(), 4);
}

#[test]
fn concurrency_overlaps_examples_and_keeps_order() {
    let many: Vec<Example> = (0..7)
        .map(|i| Example::new(format!("e{i}"), "2+2", Some("4")))
        .collect();
    let mut system = Scripted::new("calc", &script());
    system.delay = Duration::from_millis(20);
    let eval = Eval::new(many, numeric()).concurrency(3);
    let asked: Vec<String> = (0..7).map(|i| format!("e{i}")).collect();
    let asked: Vec<&str> = asked.iter().map(String::as_str).collect();
    let report = check(&eval, &system, &(), &asked);
    assert_eq!(system.max_in_flight.load(Ordering::SeqCst), 3);
    let ids: Vec<&str> = report.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, asked);
    assert_eq!(report.summary.correct, 7);

    // Cancelled with three running: those three finish.
    let flag = Arc::new(AtomicBool::new(false));
    system.cancel_on = Some(("e1".into(), flag.clone()));
    let report = check(
        &eval.clone().cancel(flag),
        &system,
        &(),
        &["e0", "e1", "e2"],
    );
    assert!(report.interrupted);
    assert_eq!(report.rows.len(), 3);
}

#[test]
fn bad_examples_fail_before_running() {
    let system = Scripted::new("calc", &script());
    let mut twice = examples();
    twice[2].id = "a".into();
    let err = block_on(Eval::new(twice, numeric()).run(&system, &())).expect_err("duplicate");
    assert_eq!(
        err.to_string(),
        "example `a`: appears twice (examples 1 and 3)"
    );
    let mut bad_metric = examples();
    bad_metric[3] = bad_metric[3].clone().with("metric", "regex:(");
    let err = block_on(Eval::new(bad_metric, numeric()).run(&system, &())).expect_err("metric");
    assert_eq!(
        err.to_string(),
        "example `d`: metric `regex:(`: unclosed group"
    );
    assert!(system.take_calls().is_empty());
    let unwritable =
        Eval::new(examples(), numeric()).cache(Path::new("/nonexistent/dir/cache.jsonl"));
    let err = block_on(unwritable.run(&system, &()))
        .expect_err("cache")
        .to_string();
    assert!(
        err.starts_with("/nonexistent/dir/cache.jsonl: cannot open: "),
        "{err}"
    );
}

#[test]
fn per_example_metric_is_used() {
    let system = Scripted::new("calc", &[("capital?", "It is Paris, I believe")]);
    let examples = vec![
        Example::new("1", "capital?", Some("paris")),
        Example::new("2", "capital?", Some("paris")).with("metric", "contains"),
    ];
    let report = check(
        &Eval::new(examples, Metric::Exact),
        &system,
        &(),
        &["1", "2"],
    );
    let verdicts: Vec<Option<bool>> = report.rows.iter().map(|r| r.correct).collect();
    assert_eq!(verdicts, [Some(false), Some(true)]);
}

#[test]
fn run_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let eval = Eval::new(examples(), numeric());
    let system = Scripted::new("calc", &script());
    let future = eval.run(&system, &());
    assert_send(&future);
}
