//! GGUF header checks on synthetic files (and the real smollm2 file when cached).

mod common;

use common::{gguf_bytes, put_str, sample_gguf, T, V};
use jielong_models::gguf::{self, MetaValue};
use jielong_models::{ModelError, ModelRef, ModelStore, NoProgress};

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

#[test]
fn valid_file_passes_and_metadata_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = sample_gguf();
    let p = write(&dir, "ok.gguf", &bytes);
    let info = gguf::inspect(&p).expect("valid gguf");
    assert_eq!(info.version, 3);
    assert_eq!(info.architecture.as_deref(), Some("llama"));
    assert_eq!(info.name.as_deref(), Some("Tiny Test"));
    assert_eq!(
        info.chat_template.as_deref(),
        Some("{% for m in messages %}{{ m.content }}{% endfor %}")
    );
    assert_eq!(info.tensor_count, 3);
    assert_eq!(info.kv_count, 10);
    assert_eq!(info.file_size, bytes.len() as u64);
    assert_eq!(info.data_end, bytes.len() as u64);
    assert_eq!(info.alignment, 32);
    assert_eq!(info.data_offset % 32, 0);
    assert_eq!(info.context_length(), Some(2048));
    assert_eq!(info.get_u64("general.parameter_count"), Some(1234));
    assert_eq!(info.get_str("general.architecture"), Some("llama"));
    assert_eq!(
        info.metadata.get("tokenizer.ggml.tokens"),
        Some(&MetaValue::Array {
            element_type: 8,
            len: 3
        })
    );
    assert_eq!(
        info.metadata.get("tokenizer.add_bos"),
        Some(&MetaValue::Bool(true))
    );
}

#[test]
fn custom_alignment_and_no_tensors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = gguf_bytes(
        &[
            ("general.architecture", V::Str("qwen2".into())),
            ("general.alignment", V::U32(64)),
        ],
        &[T::f32("a", &[3]), T::f32("b", &[5, 2])],
        64,
    );
    let info = gguf::inspect(write(&dir, "a64.gguf", &bytes)).expect("valid");
    assert_eq!(info.alignment, 64);
    assert_eq!(info.data_offset % 64, 0);
    assert_eq!(info.data_end, bytes.len() as u64);

    let empty = gguf_bytes(&[], &[], 32);
    let info = gguf::inspect(write(&dir, "empty.gguf", &empty)).expect("valid");
    assert_eq!(info.tensor_count, 0);
    assert_eq!(info.architecture, None);
    assert_eq!(info.chat_template, None);
}

#[test]
fn truncated_file_is_reported_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = sample_gguf();
    let short = &bytes[..bytes.len() - 10];
    let p = write(&dir, "short.gguf", short);
    match gguf::inspect(&p) {
        Err(e @ ModelError::Truncated { .. }) => {
            let ModelError::Truncated { size, needed, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*size, short.len() as u64);
            assert_eq!(*needed, bytes.len() as u64);
            assert_eq!(
                e.to_string(),
                format!(
                    "model file {} is truncated: {} bytes, the tensors need at least {}",
                    p.display(),
                    short.len(),
                    bytes.len()
                )
            );
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn wrong_magic_empty_and_bad_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = sample_gguf();
    bytes[..4].copy_from_slice(b"GGML");
    let p = write(&dir, "magic.gguf", &bytes);
    assert!(matches!(gguf::inspect(&p), Err(ModelError::NotGguf { .. })));
    let p = write(&dir, "html.gguf", b"<html>Entry not found</html>");
    let err = gguf::inspect(&p).expect_err("html");
    assert!(
        err.to_string().contains("is not a GGUF model file"),
        "{err}"
    );
    let p = write(&dir, "empty.gguf", b"");
    assert!(matches!(gguf::inspect(&p), Err(ModelError::NotGguf { .. })));

    let mut v1 = sample_gguf();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    let p = write(&dir, "v1.gguf", &v1);
    assert!(matches!(
        gguf::inspect(&p),
        Err(ModelError::UnsupportedVersion { version: 1, .. })
    ));
    let mut v2 = sample_gguf();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert!(gguf::inspect(write(&dir, "v2.gguf", &v2)).is_ok());
}

fn header(tensors: u64, kvs: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&tensors.to_le_bytes());
    out.extend_from_slice(&kvs.to_le_bytes());
    out
}

#[test]
fn hostile_sizes_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();

    // A key length of 2^64-1.
    let mut b = header(0, 1);
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    cases.push(("huge key", b, "metadata key"));

    // A string value claiming 1 TB.
    let mut b = header(0, 1);
    put_str(&mut b, "general.name");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    b.extend_from_slice(b"short");
    cases.push(("huge string", b, "exceeds the file size"));

    // A string value just over the file end but small.
    let mut b = header(0, 1);
    put_str(&mut b, "general.name");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&100u64.to_le_bytes());
    b.extend_from_slice(b"short");
    cases.push(("string past end", b, "is truncated"));

    // An array claiming 2^62 uint32 elements (overflowing byte count).
    let mut b = header(0, 1);
    put_str(&mut b, "tokenizer.ggml.scores");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    cases.push(("huge array", b, "exceeds the file size"));

    // An array of strings claiming 2^60 elements.
    let mut b = header(0, 1);
    put_str(&mut b, "tokenizer.ggml.tokens");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    cases.push(("huge string array", b, "exceeds the file size"));

    // An unknown value type.
    let mut b = header(0, 1);
    put_str(&mut b, "x");
    b.extend_from_slice(&99u32.to_le_bytes());
    b.extend_from_slice(&[0u8; 16]);
    cases.push(("bad type", b, "unknown metadata value type 99"));

    // A tensor with 1000 dimensions.
    let mut b = header(1, 0);
    put_str(&mut b, "t");
    b.extend_from_slice(&1000u32.to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    cases.push(("many dims", b, "1000 dimensions"));

    // A tensor whose dimensions overflow u64 bytes.
    let mut b = header(1, 0);
    put_str(&mut b, "t");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    cases.push(("overflowing dims", b, "impossible dimensions"));

    // A 2^63 tensor count in a tiny file.
    let b = header(1 << 63, 0);
    cases.push(("huge tensor count", b, "truncated"));

    for (name, bytes, want) in cases {
        let p = write(&dir, "hostile.gguf", &bytes);
        match gguf::inspect(&p) {
            Ok(info) => panic!("{name}: accepted {info:?}"),
            Err(e) => assert!(e.to_string().contains(want), "{name}: {e}"),
        }
    }
}

#[test]
fn unknown_tensor_type_offsets_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = T::f32("w", &[8]);
    t.ggml_type = 200;
    let good = gguf_bytes(&[], &[t], 32);
    assert!(gguf::inspect(write(&dir, "u.gguf", &good)).is_ok());
    // Point the offset far past the end.
    let mut t = T::f32("w", &[8]);
    t.ggml_type = 200;
    let mut bad = gguf_bytes(&[], &[t], 32);
    let off_pos = 24 + 8 + 1 + 4 + 8 + 4; // header, name, n_dims, dim, type
    bad[off_pos..off_pos + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert!(matches!(
        gguf::inspect(write(&dir, "u2.gguf", &bad)),
        Err(ModelError::Truncated { .. })
    ));
}

#[test]
fn every_prefix_and_corruption_is_handled_without_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = sample_gguf();
    let p = dir.path().join("fuzz.gguf");
    for len in 0..bytes.len() {
        std::fs::write(&p, &bytes[..len]).expect("write");
        assert!(gguf::inspect(&p).is_err(), "prefix {len} accepted");
    }
    // Deterministic byte corruption: must never panic (Ok or Err are both fine).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..400 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed % b.len() as u64) as usize;
            b[i] = (seed >> 32) as u8;
        }
        std::fs::write(&p, &b).expect("write");
        let _ = gguf::inspect(&p);
    }
}

#[tokio::test]
async fn local_refs_are_checked_not_copied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ModelStore::new(dir.path().join("store"));
    let good = write(&dir, "good.gguf", &sample_gguf());
    let r = ModelRef::Local(good.clone());
    assert_eq!(store.pull(&r, &NoProgress).await.ok(), Some(good.clone()));
    assert_eq!(
        store.resolve(&r, &NoProgress).await.ok(),
        Some(good.clone())
    );
    assert_eq!(store.path(&r).ok(), Some(good.clone()));
    assert!(store.is_present(&r));
    assert!(!dir.path().join("store").exists(), "nothing copied");

    let missing = ModelRef::Local(dir.path().join("nope.gguf"));
    let err = store
        .resolve(&missing, &NoProgress)
        .await
        .expect_err("missing");
    assert!(matches!(err, ModelError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nope.gguf"));
    assert!(!store.is_present(&missing));

    let d = ModelRef::Local(dir.path().to_path_buf());
    let err = store.pull(&d, &NoProgress).await.expect_err("dir");
    assert!(matches!(err, ModelError::NotAFile { .. }), "{err}");

    // Cut inside the tensor data, and cut inside the header: both are truncation.
    let b = sample_gguf();
    for len in [b.len() - 1, b.len() / 2, 30] {
        let short = write(&dir, "short.gguf", &b[..len]);
        let err = store
            .pull(&ModelRef::Local(short), &NoProgress)
            .await
            .expect_err("short");
        assert!(matches!(err, ModelError::Truncated { .. }), "{len}: {err}");
    }
}

#[test]
fn real_smollm2_in_cache_validates() {
    let store = match ModelStore::from_env() {
        Ok(s) => s,
        Err(e) => {
            println!("note: skipping, no model cache: {e}");
            return;
        }
    };
    let r = ModelRef::Catalog("smollm2-135m".into());
    let Ok(path) = store.path(&r) else {
        println!("note: skipping, smollm2-135m not in the catalog");
        return;
    };
    if !path.is_file() {
        println!(
            "note: skipping real smollm2 check, {} is not in the cache",
            path.display()
        );
        return;
    }
    let info = gguf::inspect(&path).expect("real smollm2 validates");
    assert_eq!(info.architecture.as_deref(), Some("llama"));
    assert!(info.chat_template.as_deref().is_some_and(|t| !t.is_empty()));
    assert_eq!(info.file_size, 98_362_432);
}
