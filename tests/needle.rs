//! `jielong eval needle` end to end on the default model: a tiny grid over a folder of
//! paragraphs written here, its JSON and SVG, a resume that runs nothing again, and a
//! length that does not fit the context refused before anything runs.

mod common;

use std::path::Path;

use common::{jielong, model_lock, model_path, text, QWEN};

const PARAGRAPHS: [&str; 4] = [
    "The village of Lindmoor sits at the edge of a wide valley. Its houses are built of grey stone, and most of them have red roofs. In spring the fields around it turn green, and the farmers plant barley and oats. The river that runs past the village is slow and shallow. Children fish in it on summer evenings. The old mill on its bank has not turned for forty years, but the villagers keep its wheel painted.",
    "Every autumn the village holds a market in the square. Traders come from the towns along the coast with cloth, salt and dried fish. The baker sells round loaves with seeds on top. There is music in the evening, and the oldest man in the village tells the story of the great flood. Nobody knows how much of the story is true. The market lasts three days, and on the last day the children race down the hill.",
    "Winters in the valley are long and cold. Snow closes the mountain road for weeks at a time. The villagers store wood in tall stacks beside their doors. They mend tools, weave baskets and visit each other in the afternoons. The school stays open, and the teacher walks to it through the snow. When the thaw comes, the river rises and the meadows flood for a few days.",
    "The valley has a small library in the old customs house. It holds maps, almanacs and the letters of a botanist who lived there a century ago. She wrote about the flowers of the high pastures and the birds that nest in the cliffs. Her drawings hang on the walls. Visitors from the city sometimes come to see them, and they stay at the inn by the bridge.",
];

fn write_docs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (n, paragraph) in PARAGRAPHS.iter().enumerate() {
        std::fs::write(dir.join(format!("{n:02}.txt")), paragraph).unwrap();
    }
    // Not a .txt file: not part of the haystack.
    std::fs::write(dir.join("notes.md"), "Ignored.").unwrap();
}

/// The default model pulled, and a temp folder with the documents in `docs/` and
/// room for the grid in `out/` (the folder is kept while the guard lives).
fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let _ = model_path(QWEN);
    let work = tempfile::tempdir().unwrap();
    let docs = work.path().join("docs");
    write_docs(&docs);
    let out = work.path().join("out");
    (work, docs, out)
}

#[test]
fn a_tiny_grid_finds_the_needle_and_writes_json_and_svg() {
    let _lock = model_lock();
    let (_work, docs, out) = setup();
    let docs_arg = docs.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    let args = [
        "eval",
        "needle",
        docs_arg,
        "--lengths",
        "300,600",
        "--depths",
        "0,100",
        "--out",
        out_arg,
    ];
    let run = jielong(&args);
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{}\n{stdout}", text(&run.stderr));
    assert!(stdout.contains("found/total, plain"), "{stdout}");
    assert!(stdout.contains("found/total, tip"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("needle.json")).unwrap()).unwrap();
    let cells = json["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 8, "{json}");
    for length in [300, 600] {
        for depth in [0.0, 100.0] {
            for variant in ["plain", "tip"] {
                let cell = cells
                    .iter()
                    .find(|c| {
                        c["length"] == length && c["depth"] == depth && c["variant"] == variant
                    })
                    .unwrap_or_else(|| panic!("no cell {length}/{depth}/{variant}: {json}"));
                let context = cell["context_tokens"].as_u64().unwrap();
                assert!(
                    context <= length && context + 60 >= length,
                    "{length}: {context}"
                );
                assert!(cell["tokens"]["prompt"].as_u64().unwrap() > context);
                assert!(cell["seconds"].as_f64().unwrap() > 0.0);
            }
        }
    }
    // The variants of a cell share the prompt: the tip re-reads only its prefill.
    let tip = cells
        .iter()
        .find(|c| c["length"] == 600 && c["depth"] == 0.0 && c["variant"] == "tip")
        .unwrap();
    let (prompt, cached) = (
        tip["tokens"]["prompt"].as_u64().unwrap(),
        tip["tokens"]["cached"].as_u64().unwrap(),
    );
    assert!(prompt - cached < 20, "{tip}");
    // On the default model the short contexts' plain cells find the needle.
    for depth in [0.0, 100.0] {
        let cell = cells
            .iter()
            .find(|c| c["length"] == 300 && c["depth"] == depth && c["variant"] == "plain")
            .unwrap();
        assert_eq!(cell["found"], true, "{cell}");
    }
    let svg = std::fs::read_to_string(out.join("needle.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<rect class=\"cell\"").count(), 8);
    assert!(out.join("cache.jsonl").exists());

    // Resumed: every cell comes from the cache.
    let mut resumed = args.to_vec();
    resumed.push("--resume");
    let again = jielong(&resumed);
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(stdout.contains("8 cells (8 from the cache)"), "{stdout}");
}

#[test]
fn lengths_beyond_the_context_and_bad_folders_are_refused() {
    let _lock = model_lock();
    let (work, docs, out) = setup();
    let run = jielong(&[
        "eval",
        "needle",
        docs.to_str().unwrap(),
        "--lengths",
        "300,1000",
        "--ctx-size",
        "512",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("length 1000 does not fit the context size of 512 tokens"),
        "{stderr}"
    );
    assert!(stderr.contains("--ctx-size 2048"), "{stderr}");
    assert!(!out.exists(), "nothing ran");

    let empty = work.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let run = jielong(&["eval", "needle", empty.to_str().unwrap()]);
    let stderr = text(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("the folder is empty"), "{stderr}");
}
