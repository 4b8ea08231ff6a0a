//! Datasets: loading (one `check` over file contents and what they must give),
//! GSM8K answers, splits and samples.

use std::path::Path;

use jielong_eval::{load_jsonl, normalize_answer, sample, Example, Fields, Split};

/// An example as compared: (id, input, expected).
type Loaded<'a> = (&'a str, &'a str, Option<&'a str>);

/// Writes `content` as `data.jsonl`, loads it with `fields`, and compares with
/// `want`: the (id, input, expected) of each example, or the error message with the
/// folder left out (`data.jsonl:7: …`).
fn check(content: &[u8], fields: &Fields, want: Result<&[Loaded], &str>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data.jsonl");
    std::fs::write(&path, content).expect("write data");
    let got = load_jsonl(&path, fields);
    let shown = String::from_utf8_lossy(content);
    match (got, want) {
        (Ok(examples), Ok(want)) => {
            let got: Vec<Loaded> = examples
                .iter()
                .map(|e| (e.id.as_str(), e.input.as_str(), e.expected.as_deref()))
                .collect();
            assert_eq!(got, want, "{shown}");
        }
        (Err(err), Err(want)) => {
            let prefix = format!("{}/", dir.path().display());
            let message = err.to_string().replace(&prefix, "");
            assert_eq!(message, want, "{shown}");
            assert!(!message.contains('\n'));
        }
        (got, want) => panic!("{shown}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn loads_rows() {
    let default = Fields::default();
    check(
        b"{\"id\": \"a\", \"question\": \"2+2?\", \"answer\": \"4\"}\n\n{\"question\": \"x\", \"answer\": 18}\n{\"id\": 7, \"question\": \"y\", \"answer\": 2.5}\n{\"question\": \"z\"}\n",
        &default,
        Ok(&[
            ("a", "2+2?", Some("4")),
            ("3", "x", Some("18")),
            ("7", "y", Some("2.5")),
            ("5", "z", None),
        ]),
    );
    // GSM8K: the reasoning is dropped, commas too.
    check(
        "\u{feff}{\"question\": \"q\", \"answer\": \"She has 3 + 4 = <<3+4=7>>7.\\n#### 1,234\"}\r\n{\"question\": \"r\", \"answer\": null}".as_bytes(),
        &default,
        Ok(&[("1", "q", Some("1234")), ("2", "r", None)]),
    );
    let custom = Fields {
        input: "problem".into(),
        answer: "solution".into(),
        id: None,
    };
    check(
        b"{\"id\": \"ignored\", \"problem\": \"p\", \"solution\": \"s\"}\n",
        &custom,
        Ok(&[("1", "p", Some("s"))]),
    );
}

#[test]
fn mt_bench_questions_as_published() {
    check(
        br#"{"question_id": 81, "category": "writing", "turns": ["Write a blog post.", "Rewrite it."]}
{"question_id": 111, "category": "math", "turns": ["Area of the triangle?", "And the circle?"], "reference": ["Area is 3", "5pi"]}
{"question_id": 7, "turns": []}
"#,
        &Fields::default(),
        Err("data.jsonl:3: no field \"question\""),
    );
    check(
        br#"{"question_id": 81, "category": "writing", "turns": ["Write a blog post.", "Rewrite it."]}
{"question_id": 111, "category": "math", "turns": ["Area of the triangle?", "And the circle?"], "reference": ["Area is 3", "5pi"]}
"#,
        &Fields::default(),
        Ok(&[
            ("81", "Write a blog post.", None),
            ("111", "Area of the triangle?", Some("Area is 3")),
        ]),
    );
}

#[test]
fn load_errors_name_file_and_line() {
    let default = Fields::default();
    let cases: &[(&[u8], &str)] = &[
        (b"", "data.jsonl: no examples"),
        (b"\n  \n", "data.jsonl: no examples"),
        (b"{\"question\": \"a\"}\n[1, 2]\n", "data.jsonl:2: not a JSON object"),
        (b"{\"question\": \"a\"}\n{\"q\": 1}\n", "data.jsonl:2: no field \"question\""),
        (b"{\"question\": 5}\n", "data.jsonl:1: field \"question\" is not a string"),
        (
            b"{\"question\": \"a\", \"answer\": [1]}\n",
            "data.jsonl:1: field \"answer\" is not a string or a number",
        ),
        (
            b"{\"question\": \"a\", \"id\": true}\n",
            "data.jsonl:1: field \"id\" is not a string or an integer",
        ),
        (
            b"{\"id\": \"x\", \"question\": \"a\"}\n{\"question\": \"b\"}\n{\"id\": \"x\", \"question\": \"c\"}\n",
            "data.jsonl:3: duplicate id \"x\" (first on line 1)",
        ),
        (
            b"{\"question\": \"a\"}\n{\"id\": \"1\", \"question\": \"b\"}\n",
            "data.jsonl:2: duplicate id \"1\" (first on line 1)",
        ),
        (
            b"{\"question\": \"a\"}\n{\"question\": \"b\"\n",
            "data.jsonl:2: invalid JSON: EOF while parsing an object (column 16)",
        ),
        (b"{\"question\": \"\xff\"}\n", "data.jsonl:1: not UTF-8"),
    ];
    for &(content, message) in cases {
        check(content, &default, Err(message));
    }
    let missing = load_jsonl(Path::new("/nonexistent/data.jsonl"), &default).expect_err("missing");
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/data.jsonl: cannot read: "),
        "{missing}"
    );
}

#[test]
fn gsm8k_answers() {
    for (text, want) in [
        (
            "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 18",
            "18",
        ),
        ("a\n#### 1,234,567 ", "1234567"),
        ("#### -3.5", "-3.5"),
        ("first #### 1\nthen #### 2", "2"),
        ("plain text, no marker", "plain text, no marker"),
    ] {
        assert_eq!(normalize_answer(text), want, "{text:?}");
    }
}

#[test]
fn splits() {
    let items: Vec<u32> = (0..200).collect();
    for (text, start, end, len) in [
        ("100:", 100, None, 100),
        (":100", 0, Some(100), 100),
        ("50:150", 50, Some(150), 100),
        ("0:", 0, None, 200),
        (":", 0, None, 200),
        (" 10 : 20 ", 10, Some(20), 10),
        ("150:500", 150, Some(500), 50),
        ("300:", 300, None, 0),
        ("5:5", 5, Some(5), 0),
    ] {
        let split: Split = text.parse().expect(text);
        assert_eq!((split.start(), split.end()), (start, end), "{text}");
        let slice = split.apply(&items);
        assert_eq!(slice.len(), len, "{text}");
        if let Some(first) = slice.first() {
            assert_eq!(*first as usize, start, "{text}");
        }
    }
    assert_eq!(Split::parse("50:150").expect("split").to_string(), "50:150");
    for (text, message) in [
        (
            "100",
            "split `100`: expected START:END, e.g. `100:`, `:100` or `50:150`",
        ),
        (
            "a:5",
            "split `a:5`: start `a` is not a non-negative integer",
        ),
        (
            "-1:5",
            "split `-1:5`: start `-1` is not a non-negative integer",
        ),
        (
            "1:2:3",
            "split `1:2:3`: end `2:3` is not a non-negative integer",
        ),
        ("150:50", "split `150:50`: end is before start"),
    ] {
        assert_eq!(Split::parse(text).expect_err(text).to_string(), message);
    }
}

#[test]
fn samples_are_seeded_and_ordered() {
    let examples: Vec<Example> = (0..100)
        .map(|i| Example::new(i.to_string(), format!("q{i}"), None))
        .collect();
    let ids = |v: &[Example]| {
        v.iter()
            .map(|e| e.id.parse::<u32>().expect("id"))
            .collect::<Vec<_>>()
    };
    let a = ids(&sample(&examples, 10, 42));
    assert_eq!(a.len(), 10);
    assert_eq!(a, ids(&sample(&examples, 10, 42)), "same seed, same sample");
    assert!(
        a.windows(2).all(|w| w[0] < w[1]),
        "dataset order kept: {a:?}"
    );
    assert_ne!(
        a,
        ids(&sample(&examples, 10, 43)),
        "another seed, another sample"
    );
    assert_ne!(a, (0..10).collect::<Vec<_>>(), "not just the first ten");
    assert_eq!(sample(&examples, 500, 1).len(), 100);
    assert!(sample(&examples, 0, 1).is_empty());
    // Every position can be drawn: over many seeds all 100 show up.
    let mut seen = [false; 100];
    for seed in 0..200 {
        for i in ids(&sample(&examples, 5, seed)) {
            seen[i as usize] = true;
        }
    }
    assert!(seen.iter().all(|&s| s));
}
