//! Each supported format is extracted, titled and located; binary, unsupported and
//! unreadable files are skipped with a warning while the rest is ingested.

mod common;

use jielong_retrieval::{Index, IngestOptions, SearchRequest};

const HTML: &str = r#"<!doctype html><html><head><title>Weather  Report</title>
<style>.hidden { content: "stylesecret" }</style>
<script>var scriptsecret = 1;</script></head>
<body><h1>Today</h1><p>Expect <b>heavy</b> rainfall in the valley.</p>
<ul><li>north: windy</li><li>south: calm</li></ul><noscript>noscriptsecret</noscript></body></html>"#;

const JSONL: &str = r#"{"_id": "d1", "title": "Volcanoes", "text": "Magma rises through the crust."}
{"id": 7, "text": "Glaciers carve valleys slowly."}
not json at all
{"_id": "d3", "body": "no text field here"}

{"text": "An anonymous record about deserts."}
"#;

#[test]
fn formats_are_extracted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("docs");
    let pdf = common::pdf(&["Photosynthesis converts sunlight", "into chemical energy."]);
    // A `/Title` in the information dictionary titles the document; a blank one does not.
    let titled_pdf = common::pdf_titled(
        &["Chlorophyll absorbs red and blue light."],
        Some("Plant Biology – Chapter 3"),
    );
    let blank_title_pdf = common::pdf_titled(&["Stomata regulate gas exchange."], Some("  "));
    common::write_files(
        &root,
        &[
            ("plain.txt", b"Line one.\nThe quick brown fox jumps.\n"),
            ("server.log", b"2024-01-01 ERROR disk quota exceeded\n"),
            ("notes.rst", b"Restructured kangaroo notes\n"),
            (
                "guide.md",
                b"# Handbook\n\nPreface.\n\n## Cooking\n\nBoil the pasta for ten minutes.\n",
            ),
            ("page.html", HTML.as_bytes()),
            ("paper.pdf", &pdf),
            ("chapter3.pdf", &titled_pdf),
            ("untitled.pdf", &blank_title_pdf),
            ("records.jsonl", JSONL.as_bytes()),
        ],
    );
    let index = Index::open_or_create(&dir.path().join("index")).unwrap();
    let (report, progress) = common::ingest(&index, [&root]);
    assert_eq!(report.added, 9, "skipped: {:?}", report.skipped);
    assert!(report.skipped.is_empty());
    let jsonl_warning = progress
        .warning_for("records.jsonl")
        .expect("a warning for bad records");
    assert!(
        jsonl_warning.contains("2 JSON Lines record(s) skipped"),
        "{jsonl_warning}"
    );

    let file = |name: &str| common::key(&root.join(name));
    // (query, expected source, expected title, expected line span, snippet must contain)
    let cases = [
        (
            "quick fox",
            file("plain.txt"),
            "plain.txt",
            (1, 2),
            "**fox**",
        ),
        (
            "disk quota",
            file("server.log"),
            "server.log",
            (1, 1),
            "**disk**",
        ),
        (
            "kangaroo",
            file("notes.rst"),
            "notes.rst",
            (1, 1),
            "**kangaroo**",
        ),
        (
            "pasta",
            file("guide.md"),
            "Handbook › Cooking",
            (5, 7),
            "**pasta**",
        ),
        (
            "rainfall",
            file("page.html"),
            "Weather Report",
            (1, 4),
            "**rainfall**",
        ),
        // pdf-extract starts a page with two blank lines and puts one between the lines.
        (
            "photosynthesis sunlight",
            file("paper.pdf"),
            "paper.pdf",
            (3, 5),
            "**Photosynthesis**",
        ),
        (
            "chlorophyll",
            file("chapter3.pdf"),
            "Plant Biology – Chapter 3",
            (3, 3),
            "**Chlorophyll**",
        ),
        (
            "stomata",
            file("untitled.pdf"),
            "untitled.pdf",
            (3, 3),
            "**Stomata**",
        ),
        (
            "magma",
            format!("{}#d1", file("records.jsonl")),
            "Volcanoes",
            (1, 1),
            "**Magma**",
        ),
        (
            "glaciers",
            format!("{}#7", file("records.jsonl")),
            "records.jsonl",
            (2, 2),
            "**Glaciers**",
        ),
        (
            "deserts",
            file("records.jsonl"),
            "records.jsonl",
            (6, 6),
            "**deserts**",
        ),
    ];
    for (query, source, title, lines, snippet) in cases {
        let hits = common::search(&index, query);
        assert_eq!(hits.len(), 1, "{query}: {hits:?}");
        let hit = &hits[0];
        assert_eq!(hit.source, source, "{query}");
        assert_eq!(hit.title, title, "{query}");
        assert_eq!((hit.line_start, hit.line_end), lines, "{query}");
        assert!(
            hit.snippet.contains(snippet),
            "{query}: snippet {:?}",
            hit.snippet
        );
        assert!(hit.score > 0.0 && hit.byte_end > hit.byte_start, "{query}");
    }
    // HTML: script, style and noscript are not text; the title is searchable.
    for hidden in ["scriptsecret", "stylesecret", "noscriptsecret"] {
        assert!(
            common::search(&index, hidden).is_empty(),
            "{hidden} was indexed"
        );
    }
    let html = &common::search(&index, "weather")[0];
    assert!(
        html.text
            .starts_with("Today\nExpect heavy rainfall in the valley.\nnorth: windy\nsouth: calm"),
        "{:?}",
        html.text
    );
    // The PDF's title is searchable, like an HTML title.
    let biology = common::search(&index, "biology");
    assert_eq!(biology.len(), 1, "{biology:?}");
    assert_eq!(biology[0].source, file("chapter3.pdf"));
    // JSON Lines: byte offsets are the record's line in the file.
    let magma = &common::search(&index, "magma")[0];
    let line = &JSONL[magma.byte_start as usize..magma.byte_end as usize];
    assert_eq!(line, JSONL.lines().next().unwrap());
    // A configurable text field.
    let options = IngestOptions {
        jsonl_text_field: "body".to_string(),
        ..IngestOptions::default()
    };
    let other = Index::open_or_create(&dir.path().join("index2")).unwrap();
    let (_, _) = common::ingest_with(&other, &[root.join("records.jsonl")], &options);
    let hits = common::search(&other, "field");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].source, format!("{}#d3", file("records.jsonl")));
}

#[test]
fn bad_files_are_skipped_with_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("docs");
    let empty_pdf = common::pdf(&[]);
    common::write_files(
        &root,
        &[
            ("good.txt", b"the survivor sentence"),
            ("nul.txt", b"text\0with a NUL byte"),
            ("latin1.md", b"caf\xe9 au lait"),
            ("image.png", b"\x89PNG\r\n\x1a\n"),
            ("scan.pdf", &empty_pdf),
            ("broken.pdf", b"%PDF-1.4 this is not really a pdf"),
            ("sub/also-good.md", b"# Second\n\nanother survivor"),
            (".hidden/secret.txt", b"hidden survivor"),
        ],
    );
    std::os::unix::fs::symlink(root.join("missing-target.txt"), root.join("dangling.txt")).unwrap();
    let locked = root.join("locked.txt");
    std::fs::write(&locked, "locked survivor").unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    // Root reads any file: then the unreadable case is the dangling link alone.
    let locked_unreadable = std::fs::read(&locked).is_err();

    let index = Index::open_or_create(&dir.path().join("index")).unwrap();
    let (report, progress) = common::ingest(&index, &[root.clone(), dir.path().join("nope.txt")]);
    // (file name, expected reason fragment)
    let mut expected = vec![
        ("nul.txt", "binary"),
        ("latin1.md", "not UTF-8"),
        ("image.png", "unsupported"),
        ("scan.pdf", "no text layer"),
        ("broken.pdf", "PDF could not be read"),
        ("dangling.txt", "broken link"),
        ("nope.txt", "not found"),
    ];
    if locked_unreadable {
        expected.push(("locked.txt", "cannot read"));
    }
    for (name, reason) in &expected {
        let warning = progress
            .warning_for(name)
            .unwrap_or_else(|| panic!("no warning for {name}"));
        assert!(warning.contains(reason), "{name}: {warning}");
        assert!(
            report
                .skipped
                .iter()
                .any(|(p, r)| p.ends_with(name) && r == &warning),
            "{name} not in the report"
        );
    }
    assert_eq!(report.skipped.len(), expected.len(), "{:?}", report.skipped);
    let survivors: Vec<_> = common::search(&index, "survivor")
        .into_iter()
        .map(|h| h.title)
        .collect();
    let mut want = vec!["Second", "good.txt"];
    if !locked_unreadable {
        want.push("locked.txt");
    }
    let mut got = survivors.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "hidden folders are not walked");
    assert_eq!(index.stats().unwrap().files, want.len());
}

#[test]
fn queries_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    common::write_files(
        dir.path(),
        &[(
            "a.txt",
            b"Rust: safe, fast (and fun) - AND/OR logic \"quoted\" text",
        )],
    );
    let index = Index::open_or_create(&dir.path().join("index")).unwrap();
    common::ingest(&index, &[dir.path().join("a.txt")]);
    let queries = [
        "rust:",
        "title:rust",
        "\"unclosed quote rust",
        "rust AND",
        "OR",
        "NOT rust",
        "(rust",
        "rust)",
        "[1 TO",
        "rust^",
        "~rust",
        "+rust -",
        "\\",
        "*",
        "\"\"",
        "\"quoted text\"",
        "fast]{",
        "a:b:c",
        "",
        "   ",
        "the and of",
        "rust IN [x]",
        "ünïcödé 数据",
    ];
    for q in queries {
        let hits = index.search(&SearchRequest::new(q, 10));
        assert!(hits.is_ok(), "{q:?}: {hits:?}");
    }
    for q in [
        "rust:",
        "title:rust",
        "\"unclosed quote rust",
        "NOT rust",
        "+rust -",
        "\"quoted text\"",
    ] {
        assert_eq!(
            index.search(&SearchRequest::new(q, 10)).unwrap().len(),
            1,
            "{q:?}"
        );
    }
    assert!(
        index
            .search(&SearchRequest::new("\"text quoted\"", 10))
            .unwrap()
            .is_empty(),
        "phrase order"
    );
    assert!(index
        .search(&SearchRequest::new("rust", 0))
        .unwrap()
        .is_empty());
}
