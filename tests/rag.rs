//! The local index from the command line: `jielong index add|search|stats|remove`, and
//! `jielong ask` on the default model finding a needle sentence in a folder of
//! documents and citing the file it came from.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{model_lock, model_path, QWEN};
use serde_json::Value;

fn jielong(args: &[&str], index: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jielong"))
        .args(args)
        .arg("--index")
        .arg(index)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Filler prose on a theme, `paragraphs` paragraphs long, different per `seed`.
fn filler(theme: &str, seed: usize, paragraphs: usize) -> String {
    let subjects = [
        "The committee",
        "A visitor",
        "The old bridge",
        "Every spring the town",
        "The library",
    ];
    let verbs = [
        "considered",
        "described",
        "remembered",
        "rebuilt",
        "measured",
    ];
    let objects = [
        "the river banks",
        "the harvest festival",
        "the northern road",
        "the clock tower",
        "the market square",
    ];
    let mut out = String::new();
    for p in 0..paragraphs {
        for s in 0..5 {
            let k = seed * 7 + p * 5 + s;
            out.push_str(&format!(
                "{} {} {} while thinking about {theme}. ",
                subjects[k % 5],
                verbs[(k / 5) % 5],
                objects[(k / 25) % 5]
            ));
        }
        out.push_str("\n\n");
    }
    out
}

/// A folder of documents; the needle is in `notes/garden.md`.
fn corpus(dir: &Path) {
    let themes = [
        "history",
        "weather",
        "trade",
        "music",
        "architecture",
        "farming",
    ];
    for (i, theme) in themes.iter().enumerate() {
        std::fs::write(dir.join(format!("{theme}.txt")), filler(theme, i, 12)).unwrap();
    }
    std::fs::create_dir_all(dir.join("notes")).unwrap();
    let mut garden = String::from("# Garden notes\n\n");
    garden.push_str(&filler("gardening", 9, 4));
    garden.push_str("The secret ingredient of Grandma Liu's dumplings is star anise.\n\n");
    garden.push_str(&filler("gardening", 10, 4));
    std::fs::write(dir.join("notes/garden.md"), garden).unwrap();
}

#[test]
fn index_commands_add_search_stats_and_remove() {
    let docs = tempfile::tempdir().unwrap();
    let index = tempfile::tempdir().unwrap();
    let index = index.path().join("idx");
    corpus(docs.path());
    let docs_arg = docs.path().to_str().unwrap();

    let out = jielong(&["index", "add", docs_arg], &index);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("7 added"),
        "{}",
        text(&out.stderr)
    );

    // Adding again skips what did not change.
    let out = jielong(&["index", "add", docs_arg], &index);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("7 unchanged"),
        "{}",
        text(&out.stderr)
    );

    let out = jielong(
        &[
            "index",
            "search",
            "Grandma Liu dumplings",
            "-k",
            "3",
            "--json",
        ],
        &index,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hits: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(!hits.is_empty());
    let top = &hits[0];
    assert!(
        top["source"].as_str().unwrap().ends_with("notes/garden.md"),
        "{top}"
    );
    assert!(
        top["text"].as_str().unwrap().contains("star anise"),
        "{top}"
    );
    let (start, end) = (
        top["line_start"].as_u64().unwrap(),
        top["line_end"].as_u64().unwrap(),
    );
    let needle_line = std::fs::read_to_string(docs.path().join("notes/garden.md"))
        .unwrap()
        .lines()
        .position(|l| l.contains("star anise"))
        .unwrap() as u64
        + 1;
    assert!(
        (start..=end).contains(&needle_line),
        "{start}-{end} vs {needle_line}"
    );
    assert!(top["score"].as_f64().unwrap() > 0.0);

    let out = jielong(&["index", "stats"], &index);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("files  7"),
        "{}",
        text(&out.stdout)
    );

    let garden = docs.path().join("notes/garden.md");
    let out = jielong(&["index", "remove", garden.to_str().unwrap()], &index);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = jielong(&["index", "search", "star anise", "--json"], &index);
    assert!(out.status.success());
    assert!(
        !text(&out.stdout).contains("garden.md"),
        "{}",
        text(&out.stdout)
    );

    // A folder that is not an index: a one-line error, nothing written into it.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    let out = jielong(&["index", "stats"], foreign.path());
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    let names: Vec<_> = std::fs::read_dir(foreign.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn ask_finds_the_needle_and_cites_its_file() {
    let _lock = model_lock();
    let _ = model_path(QWEN);
    let docs = tempfile::tempdir().unwrap();
    let index = tempfile::tempdir().unwrap();
    corpus(docs.path());
    let out = jielong(
        &["index", "add", docs.path().to_str().unwrap()],
        index.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = jielong(
        &[
            "ask",
            "What is the secret ingredient of Grandma Liu's dumplings?",
        ],
        index.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    let (answer, sources) = stdout.split_once("\nSources:\n").expect("a source list");
    assert!(answer.to_lowercase().contains("star anise"), "{stdout}");
    // The answer cites a passage, and the first source is the needle's file.
    assert!(
        answer.contains("[1]") || answer.contains("[2]") || answer.contains("[3]"),
        "{stdout}"
    );
    let first = sources.lines().next().unwrap_or_default();
    assert!(first.contains("notes/garden.md:"), "{stdout}");
}
