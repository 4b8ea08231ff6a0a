//! `ModelStore::from_env` reads the environment; the only test in this binary, so
//! changing the process environment here cannot race with other tests.

use std::path::PathBuf;

use jielong_models::{
    ModelStore, DEFAULT_HF_ENDPOINT, ENV_HF_ENDPOINT, ENV_MODELS_DIR, ENV_PYTHON,
};

#[test]
fn from_env_reads_variables_and_falls_back() {
    std::env::set_var(ENV_MODELS_DIR, "/tmp/jielong-env-test/models");
    std::env::set_var(ENV_HF_ENDPOINT, "http://127.0.0.1:9999/");
    std::env::set_var(ENV_PYTHON, "/opt/py/bin/python3.12");
    let store = ModelStore::from_env().expect("from_env");
    assert_eq!(store.root(), PathBuf::from("/tmp/jielong-env-test/models"));
    assert_eq!(store.hf_endpoint(), "http://127.0.0.1:9999");
    assert_eq!(store.python(), "/opt/py/bin/python3.12");

    std::env::remove_var(ENV_MODELS_DIR);
    std::env::remove_var(ENV_HF_ENDPOINT);
    std::env::set_var(ENV_PYTHON, "");
    let store = ModelStore::from_env().expect("from_env defaults");
    assert_eq!(store.hf_endpoint(), DEFAULT_HF_ENDPOINT);
    assert_eq!(store.python(), "python3");
    let root = store.root().to_path_buf();
    assert!(root.ends_with("jielong/models"), "{}", root.display());
    assert_eq!(Some(root), ModelStore::default_root());

    // new() reads nothing.
    std::env::set_var(ENV_HF_ENDPOINT, "http://127.0.0.1:1");
    assert_eq!(ModelStore::new("/x").hf_endpoint(), DEFAULT_HF_ENDPOINT);
    std::env::remove_var(ENV_HF_ENDPOINT);
}
