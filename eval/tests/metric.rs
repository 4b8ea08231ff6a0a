//! Metrics: one table of (answer, expected, metric, correct, extracted) run through
//! `check`, plus metric names and per-example overrides.

use jielong_eval::{metric_for, Example, Metric, Metrics};

/// Scores `answer` against `expected` with the metric named `metric` and compares
/// the verdict and the extracted value; every failure is listed at once.
fn check(cases: &[(&str, &str, &str, bool, Option<&str>)]) {
    let mut failures = Vec::new();
    for &(answer, expected, metric, correct, extracted) in cases {
        let parsed = Metric::parse(metric).expect("metric name");
        let score = parsed.score(answer, expected);
        if score.correct != correct || score.extracted.as_deref() != extracted {
            failures.push(format!(
                "{metric} {answer:?} vs {expected:?}: got ({}, {:?}), want ({correct}, {extracted:?})",
                score.correct, score.extracted
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn numeric() {
    check(&[
        ("$1,234.50", "1234.5", "numeric", true, Some("1234.5")),
        ("The answer is 18.", "18", "numeric", true, Some("18")),
        ("18 eggs and then 20", "20", "numeric", true, Some("20")),
        ("18 eggs and then 20", "18", "numeric", false, Some("20")),
        ("3/4", "0.75", "numeric", true, Some("0.75")),
        ("-5", "-5", "numeric", true, Some("-5")),
        (
            "It dropped to -5 degrees",
            "5",
            "numeric",
            false,
            Some("-5"),
        ),
        ("1e3", "1000", "numeric", true, Some("1000")),
        ("2.5E-3", "0.0025", "numeric", true, Some("0.0025")),
        ("no number", "5", "numeric", false, None),
        ("", "5", "numeric", false, None),
        ("12.0", "12", "numeric", true, Some("12")),
        ("12", "12.0", "numeric", true, Some("12")),
        ("12.4", "12", "numeric", false, Some("12.4")),
        ("0.333", "1/3", "numeric", false, Some("0.333")),
        ("1/3", "0.333", "numeric", true, Some("0.3333333333333333")),
        ("about 0.3337", "0.334", "numeric", true, Some("0.3337")),
        ("50%", "50", "numeric", true, Some("50")),
        ("a 12.5% rise", "12.5%", "numeric", true, Some("12.5")),
        (
            "1,000,000 people",
            "1000000",
            "numeric",
            true,
            Some("1000000"),
        ),
        (
            "The total is 12,345.",
            "12,345",
            "numeric",
            true,
            Some("12345"),
        ),
        ("1,2,3", "3", "numeric", true, Some("3")),
        ("-$5", "-5", "numeric", true, Some("-5")),
        ("costs US$7", "7", "numeric", true, Some("7")),
        ("step 2", "2", "numeric", true, Some("2")),
        ("x2", "2", "numeric", false, None),
        ("H2O and 3", "3", "numeric", true, Some("3")),
        ("COVID-19", "19", "numeric", true, Some("19")),
        ("pages 3-4", "4", "numeric", true, Some("4")),
        ("= -7", "-7", "numeric", true, Some("-7")),
        (
            "\\boxed{42} after 3 steps",
            "42",
            "numeric",
            true,
            Some("42"),
        ),
        (
            "\\boxed{\\frac{3}{4}}",
            "0.75",
            "numeric",
            true,
            Some("0.75"),
        ),
        ("\\boxed{1{,}234}", "1234", "numeric", true, Some("1234")),
        (
            "so x = \\dfrac{-1}{2}",
            "-0.5",
            "numeric",
            true,
            Some("-0.5"),
        ),
        ("1/0", "0", "numeric", true, Some("0")),
        // The tolerance is relative: 1e-6 of a million is 1.
        ("1000001", "1000000", "numeric", true, Some("1000001")),
        ("1000002", "1000000", "numeric", false, Some("1000002")),
        ("1010000", "1000000", "numeric:0.01", true, Some("1010000")),
        ("0.5", "0.51", "numeric:0.01", true, Some("0.5")),
        ("0.5", "0.52", "numeric:0.01", false, Some("0.5")),
        ("0", "-0", "numeric", true, Some("0")),
        ("7", "seven", "numeric", false, Some("7")),
    ]);
}

#[test]
fn exact_contains_regex() {
    check(&[
        ("  Paris. ", "paris", "exact", true, Some("paris")),
        (
            "The  Big\nApple",
            "the big apple",
            "exact",
            true,
            Some("the big apple"),
        ),
        ("Paris..", "paris", "exact", false, Some("paris.")),
        ("London", "Paris", "exact", false, Some("london")),
        (
            "I think it is Paris, France",
            "paris",
            "contains",
            true,
            Some("paris"),
        ),
        (
            "New   York\tCity",
            "new york.",
            "contains",
            true,
            Some("new york"),
        ),
        ("Lyon", "Paris", "contains", false, None),
        (
            "the answer: B",
            "b",
            r"regex:answer: (\w+)",
            true,
            Some("B"),
        ),
        (
            "the answer: C",
            "b",
            r"regex:answer: (\w+)",
            false,
            Some("C"),
        ),
        ("no verdict", "b", r"regex:answer: (\w+)", false, None),
        ("yes, sir", "", "regex:^(?i)yes", true, Some("yes")),
        ("no, sir", "", "regex:^(?i)yes", false, None),
    ]);
}

/// A checker of the caller's own: the answer's number is even and equals the expected.
#[derive(Debug)]
struct Even;

impl jielong_eval::Checker for Even {
    fn name(&self) -> &str {
        "even"
    }

    fn check(&self, answer: &str, expected: &str) -> jielong_eval::Score {
        let n = answer.trim().parse::<i64>().ok();
        jielong_eval::Score {
            correct: n.is_some_and(|n| n % 2 == 0 && n.to_string() == expected),
            extracted: n.map(|n| n.to_string()),
        }
    }
}

#[test]
fn checkers_are_metrics_by_name() {
    let metrics = Metrics::new().with(std::sync::Arc::new(Even));
    let even = metrics.parse("even").expect("the checker");
    assert_eq!(even.to_string(), "even");
    assert!(even.score("4", "4").correct);
    assert!(!even.score("3", "3").correct);
    // The built-in names still parse; an unknown one lists the checker too.
    assert_eq!(
        metrics.parse("numeric").expect("built in").to_string(),
        "numeric"
    );
    let err = metrics.parse("odd").expect_err("unknown").to_string();
    assert!(err.ends_with("regex:PATTERN or even)"), "{err}");
    // Without the checker the name is unknown, and an example naming it is refused.
    assert!(Metric::parse("even").is_err());
    let example = Example::new("1", "q", Some("4")).with("metric", "even");
    assert!(metric_for(&example, &Metric::Exact, &Metrics::new()).is_err());
    let metric = metric_for(&example, &Metric::Exact, &metrics).expect("known");
    assert!(metric.score("4", "4").correct);
}

#[test]
fn names() {
    for name in [
        "exact",
        "contains",
        "numeric",
        "numeric:0.01",
        "judge",
        r"regex:^\d+$",
    ] {
        let metric = Metric::parse(name).expect(name);
        assert_eq!(metric.to_string(), name);
    }
    for (name, message) in [
        ("fuzzy", "metric `fuzzy`: unknown metric (expected exact, numeric, numeric:TOLERANCE, contains, judge or regex:PATTERN)"),
        ("numeric:x", "metric `numeric:x`: tolerance `x` is not a non-negative number"),
        ("numeric:-1", "metric `numeric:-1`: tolerance `-1` is not a non-negative number"),
        ("regex:(", "metric `regex:(`: unclosed group"),
    ] {
        let err = Metric::parse(name).expect_err(name).to_string();
        assert_eq!(err, message);
        assert!(!err.contains('\n'), "{err}");
    }
}

/// A checker of its own kind for [`Metrics`] (answers that are palindromes).
#[derive(Debug)]
struct Palindrome;

impl jielong_eval::metric::Checker for Palindrome {
    fn name(&self) -> &str {
        "palindrome"
    }

    fn check(&self, answer: &str, _expected: &str) -> jielong_eval::metric::Score {
        let text: Vec<char> = answer.trim().chars().collect();
        let reversed: Vec<char> = text.iter().rev().copied().collect();
        jielong_eval::metric::Score {
            correct: text == reversed,
            extracted: Some(answer.trim().to_string()),
        }
    }
}

#[test]
fn added_checkers_are_known_by_name_and_keep_the_builtins_errors() {
    let metrics = Metrics::new().with(std::sync::Arc::new(Palindrome));
    let metric = metrics.parse("palindrome").expect("the checker");
    assert!(metric.score("level", "").correct);
    assert!(!metric.score("levels", "").correct);
    for (name, message) in [
        ("fuzzy", "metric `fuzzy`: unknown metric (expected exact, numeric, numeric:TOLERANCE, contains, judge, regex:PATTERN or palindrome)"),
        ("numeric:x", "metric `numeric:x`: tolerance `x` is not a non-negative number"),
        ("regex:(", "metric `regex:(`: unclosed group"),
    ] {
        let err = metrics.parse(name).expect_err(name).to_string();
        assert_eq!(err, message);
    }
}

#[test]
fn per_example_override() {
    let default = Metric::Exact;
    let plain = Example::new("1", "q", Some("4"));
    assert_eq!(
        metric_for(&plain, &default, &Metrics::new())
            .expect("default")
            .to_string(),
        "exact"
    );
    let numeric = plain.clone().with("metric", "numeric");
    let metric = metric_for(&numeric, &default, &Metrics::new()).expect("override");
    assert!(metric.score("It is 4.0", "4").correct);
    let not_a_string = plain.clone().with("metric", 3);
    assert_eq!(
        metric_for(&not_a_string, &default, &Metrics::new())
            .expect("ignored")
            .to_string(),
        "exact"
    );
    let bad = plain.with("metric", "nope");
    let err = metric_for(&bad, &default, &Metrics::new())
        .expect_err("bad metric")
        .to_string();
    assert!(
        err.starts_with("example `1`: metric `nope`: unknown metric"),
        "{err}"
    );
}
