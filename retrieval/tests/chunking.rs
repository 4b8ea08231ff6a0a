//! Chunking: window sizes, overlap, snapping, Markdown sections, and line/byte offsets
//! that match the ingested file.

mod common;

use jielong_retrieval::chunk::{chunk_markdown, chunk_plain, TextChunk};
use jielong_retrieval::{Index, IngestOptions};

/// Asserts the invariants of `chunks` over `text`: trimmed, non-empty, within the size,
/// in order, covering every non-space character, lines matching the offsets, windows
/// overlapping (when asked) and (when `words`) starting and ending at word boundaries.
fn check(name: &str, text: &str, chunks: &[TextChunk], size: usize, overlap: usize, words: bool) {
    let mut covered = vec![false; text.len()];
    for (i, c) in chunks.iter().enumerate() {
        let body = &text[c.byte_start..c.byte_end];
        assert!(!body.is_empty(), "{name}: chunk {i} is empty");
        assert_eq!(body, body.trim(), "{name}: chunk {i} is not trimmed");
        assert!(
            body.chars().count() <= size,
            "{name}: chunk {i} is too long"
        );
        let line_of = |b: usize| text[..b].matches('\n').count() + 1;
        assert_eq!(
            c.line_start,
            line_of(c.byte_start),
            "{name}: chunk {i} line_start"
        );
        assert_eq!(
            c.line_end,
            line_of(c.byte_end - 1),
            "{name}: chunk {i} line_end"
        );
        if words {
            let before = text[..c.byte_start].chars().next_back();
            let after = text[c.byte_end..].chars().next();
            assert!(
                before.map_or(true, char::is_whitespace),
                "{name}: chunk {i} starts mid-word"
            );
            assert!(
                after.map_or(true, char::is_whitespace),
                "{name}: chunk {i} ends mid-word"
            );
        }
        if let Some(next) = chunks.get(i + 1) {
            assert!(
                next.byte_start > c.byte_start,
                "{name}: chunk {} does not advance",
                i + 1
            );
            if overlap > 0 && next.section == c.section {
                assert!(
                    next.byte_start < c.byte_end,
                    "{name}: chunks {i} and {} do not overlap",
                    i + 1
                );
            }
        }
        covered[c.byte_start..c.byte_end]
            .iter_mut()
            .for_each(|b| *b = true);
    }
    for (i, ch) in text.char_indices() {
        assert!(
            ch.is_whitespace() || covered[i],
            "{name}: byte {i} ({ch:?}) is in no chunk"
        );
    }
}

fn words(n: usize, per_line: usize) -> String {
    let vocab = [
        "alpha", "beta", "gamma", "delta", "épsilon", "zeta", "η", "theta", "数据",
    ];
    let mut s = String::new();
    for i in 0..n {
        s.push_str(vocab[i % vocab.len()]);
        s.push_str(&i.to_string());
        s.push(if (i + 1) % per_line == 0 { '\n' } else { ' ' });
    }
    s
}

/// (name, text, chunk_chars, overlap_chars, expected chunk count, word-snapped).
type Case<'a> = (&'a str, &'a str, usize, usize, Option<usize>, bool);

#[test]
fn plain_text_windows() {
    let long = words(2000, 12);
    let one_line = words(800, usize::MAX);
    let paragraphs = format!(
        "{}\n\n\n{}\n   \n{}",
        words(90, 7),
        words(300, 20),
        words(5, 5)
    );
    let giant = "x".repeat(2500);
    // (name, text, chunk_chars, overlap_chars, expected chunk count or None, word-snapped)
    let cases: Vec<Case> = vec![
        ("empty", "", 100, 20, Some(0), true),
        ("blank", " \n\t\n ", 100, 20, Some(0), true),
        ("short", "one short line", 100, 20, Some(1), true),
        ("exact", "abcd efgh", 9, 2, Some(1), true),
        ("long lines", &long, 1000, 200, None, true),
        ("long no overlap", &long, 500, 0, None, true),
        ("one line", &one_line, 300, 60, None, true),
        ("paragraphs", &paragraphs, 250, 50, None, true),
        ("giant word", &giant, 1000, 200, Some(3), false),
        ("tiny windows", "a b c d e f g h i j", 3, 1, None, true),
    ];
    for (name, text, size, overlap, count, snapped) in cases {
        let chunks = chunk_plain(text, size, overlap);
        if let Some(count) = count {
            assert_eq!(chunks.len(), count, "{name}: chunk count");
        }
        check(name, text, &chunks, size, overlap, snapped);
        assert!(
            chunks.iter().all(|c| c.section.is_none()),
            "{name}: plain text has no sections"
        );
    }
    // Windows prefer line breaks: with lines of ~12 words, every chunk but the last
    // ends at the end of a line.
    let chunks = chunk_plain(&long, 1000, 200);
    assert!(chunks.len() > 10);
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(long.as_bytes()[c.byte_end], b'\n', "chunk ends mid-line");
    }
}

#[test]
fn markdown_sections() {
    let md = "Intro before any heading.\n\n# Guide\n\nWelcome to the guide.\n\n## Install #\n\nRun the installer.\n\n```sh\n# not a heading\n```\n\n### Linux\n\nUse apt.\n\n## Use\n\nUse it daily.\n#hashtag is not a heading\n";
    let out = chunk_markdown(md, 1000, 200);
    assert_eq!(out.title.as_deref(), Some("Guide"));
    let sections: Vec<Option<&str>> = out.chunks.iter().map(|c| c.section.as_deref()).collect();
    assert_eq!(
        sections,
        [
            None,
            Some("Guide"),
            Some("Guide › Install"),
            Some("Guide › Install › Linux"),
            Some("Guide › Use")
        ]
    );
    let texts: Vec<&str> = out
        .chunks
        .iter()
        .map(|c| &md[c.byte_start..c.byte_end])
        .collect();
    assert!(texts[2].starts_with("## Install #") && texts[2].contains("# not a heading"));
    assert!(texts[4].ends_with("#hashtag is not a heading"));
    check("markdown", md, &out.chunks, 1000, 200, true);

    // A long section is windowed inside the section; windows never cross headings.
    let long = format!("# A\n\n{}\n# B\n\n{}", words(600, 10), words(50, 10));
    let out = chunk_markdown(&long, 400, 80);
    check("long markdown", &long, &out.chunks, 400, 80, true);
    let b_start = long.find("# B").unwrap();
    for c in &out.chunks {
        let in_a = c.section.as_deref() == Some("A");
        assert_eq!(in_a, c.byte_end <= b_start, "chunk crosses the heading");
    }
    assert!(
        out.chunks
            .iter()
            .filter(|c| c.section.as_deref() == Some("A"))
            .count()
            > 3
    );
    assert_eq!(chunk_markdown("no headings here", 100, 10).title, None);
}

/// The sections of `md` chunked in windows large enough to hold each section whole, with
/// the text each starts with.
fn sections(md: &str) -> (Option<String>, Vec<(Option<String>, String)>) {
    let out = chunk_markdown(md, 2000, 100);
    check("setext", md, &out.chunks, 2000, 100, true);
    let sections = out
        .chunks
        .iter()
        .map(|c| {
            let first_line = md[c.byte_start..c.byte_end].lines().next().unwrap_or("");
            (c.section.clone(), first_line.to_string())
        })
        .collect();
    (out.title, sections)
}

#[test]
fn setext_headings() {
    let md = "Guide\n=====\n\nWelcome to the guide.\n\nInstall\n-------\n\nRun the installer.\n\n### Linux\n\nUse apt.\n\nDaily use\n---\n\nUse it daily.\n\nA heading on\ntwo lines\n=\nThe end.\n";
    let (title, got) = sections(md);
    assert_eq!(title.as_deref(), Some("Guide"));
    let s = |section: &str, first: &str| (Some(section.to_string()), first.to_string());
    assert_eq!(
        got,
        [
            s("Guide", "Guide"),
            s("Guide › Install", "Install"),
            s("Guide › Install › Linux", "### Linux"),
            s("Guide › Daily use", "Daily use"),
            // A multi-line paragraph is one heading, starting at its first line.
            s("A heading on two lines", "A heading on"),
        ]
    );

    // Dashes that follow no paragraph are thematic breaks; front matter, code, quotes,
    // lists and indented code hold no heading; `===` alone is text.
    let md = "---\ntitle: Front matter\nauthor: someone\n---\n\nIntro paragraph.\n\n---\n\nAfter a break.\n***\n\n# Real\n\nText here\n- - -\nmore text\n--- -\n\n```md\nNot a heading\n---\n```\n\n> quoted\n---\n\n- list item\n---\n\n1. numbered\nlazy line\n===\n\n    indented code\n    ---\n\n===\n\nPlain words\n    ---\n";
    let (title, got) = sections(md);
    assert_eq!(title.as_deref(), Some("Real"));
    let paths: Vec<Option<&str>> = got.iter().map(|(s, _)| s.as_deref()).collect();
    assert_eq!(paths, [None, Some("Real")], "{got:?}");
    assert!(got[0].1 == "---" && got[1].1 == "# Real", "{got:?}");

    // Without a closing line, a leading `---` is a thematic break, and what follows can
    // be a heading.
    let (title, got) = sections("---\nNot front matter\n===\n\nbody\n");
    assert_eq!(title.as_deref(), Some("Not front matter"));
    assert_eq!(got.len(), 2, "{got:?}");
    // CRLF line ends and up to three spaces of indentation.
    let (title, _) = sections("  Windows title\r\n   ====  \r\n\r\ntext\r\n");
    assert_eq!(title.as_deref(), Some("Windows title"));

    // Ingested: the setext title names the document and heads its sections.
    let dir = tempfile::tempdir().unwrap();
    let doc =
        "Handbook\n========\n\nPreface.\n\nCooking\n-------\n\nBoil the pasta for ten minutes.\n";
    common::write_files(dir.path(), &[("guide.md", doc.as_bytes())]);
    let index = Index::open_or_create(&dir.path().join("index")).unwrap();
    common::ingest(&index, [dir.path().join("guide.md")]);
    let hits = common::search(&index, "pasta");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].title, "Handbook › Cooking");
    assert_eq!((hits[0].line_start, hits[0].line_end), (6, 9));
    assert_eq!(common::search(&index, "preface")[0].title, "Handbook");
}

/// Every chunk of an ingested text and Markdown file is the file's bytes at its offsets,
/// and its lines hold exactly the line markers it contains.
#[test]
fn ingested_offsets_match_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("\u{feff}");
    for i in 1..=300 {
        text.push_str(&format!(
            "marker{i} common words on line number {i}, ünïcödé\n"
        ));
        if i % 40 == 0 {
            text.push_str(&format!("## Part {i}\n"));
        }
    }
    common::write_files(
        dir.path(),
        &[("doc.txt", text.as_bytes()), ("doc.md", text.as_bytes())],
    );
    let index = Index::open_or_create(&dir.path().join("index")).unwrap();
    let options = IngestOptions {
        chunk_chars: 500,
        overlap_chars: 100,
        ..IngestOptions::default()
    };
    let (report, _) = common::ingest_with(&index, &[dir.path().to_path_buf()], &options);
    assert_eq!(report.added, 2);
    assert_eq!(
        common::search(&index, "common").len(),
        report.chunks,
        "every chunk matches"
    );
    for name in ["doc.txt", "doc.md"] {
        let path = dir.path().join(name);
        let bytes = std::fs::read(&path).unwrap();
        let file = String::from_utf8(bytes.clone()).unwrap();
        let mut hits: Vec<_> = common::search(&index, "common")
            .into_iter()
            .filter(|h| h.source == common::key(&path))
            .collect();
        assert!(hits.len() > 10, "{name}: only {} chunks", hits.len());
        hits.sort_by_key(|h| h.byte_start);
        for h in &hits {
            let at = &file[h.byte_start as usize..h.byte_end as usize];
            assert_eq!(
                at, h.text,
                "{name}: chunk text differs from the file at its offsets"
            );
            let first_line = file[..h.byte_start as usize].matches('\n').count() as u64 + 1;
            assert_eq!(h.line_start, first_line, "{name}: line_start");
            let lines = file.lines().collect::<Vec<_>>();
            let span = lines[h.line_start as usize - 1..h.line_end as usize].join("\n");
            assert!(
                span.contains(h.text.as_str()),
                "{name}: lines do not hold the chunk"
            );
        }
        let md_titles: Vec<&str> = hits.iter().map(|h| h.title.as_str()).collect();
        if name == "doc.md" {
            // The first heading titles the document; later sections add theirs.
            assert!(md_titles.contains(&"Part 40"));
            assert!(md_titles.contains(&"Part 40 › Part 280"));
        } else {
            assert!(md_titles.iter().all(|t| *t == "doc.txt"));
        }
    }
}
