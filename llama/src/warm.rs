//! Warm starts: the KV state of opening prompts kept on disk, so a new process
//! evaluates only what follows the part of its prompt that a kept state shares
//! (llama-cli's `--prompt-cache`, per prefix instead of per file).
//!
//! A folder per model file and settings (`PromptCache::dir/<key>/`) holds
//! `index.json` and one `<sha256 of the tokens>.state` per kept prompt, written by
//! llama.cpp's sequence-state API. The index records each state's tokens, size and
//! SHA-256; a state is handed to llama.cpp only when its file has exactly that size and
//! hash, so a truncated, replaced or foreign file is a cache miss (and is dropped),
//! never a crash or a wrong answer. The folder is bounded: after a save the least
//! recently used states go until the rest fit. Two processes writing at once can
//! lose each other's index entry (the later `write_atomic` wins): a miss, not a fault.
//!
//! A long-lived process (`jielong serve` looks a prompt up whenever a slot's branch
//! lends less than half of it) keeps the index in memory, read again only when the
//! file's stamp (modification time and size) changes, and hashes a state file only
//! once per stamp.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use jielong_chat::PromptCache;
use llama_cpp_2::token::LlamaToken;
use serde::{Deserialize, Serialize};

/// The fewest tokens worth keeping or loading: below this evaluating is as quick.
pub(crate) const MIN_TOKENS: usize = 32;

/// The index's format; a different one is read as empty.
const FORMAT: u32 = 1;

/// One kept state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// The state file's name in the folder.
    file: String,
    /// The tokens whose KV state it holds, in order.
    tokens: Vec<i32>,
    /// The file's size in bytes.
    bytes: u64,
    /// The file's SHA-256.
    sha256: String,
    /// When it was last saved or loaded (Unix milliseconds), for eviction.
    used: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Index {
    format: u32,
    entries: Vec<Entry>,
}

/// The states kept for one model file and setting.
pub(crate) struct PromptStore {
    dir: PathBuf,
    max_bytes: u64,
    openings: usize,
    /// The index as last read or written, with the file's stamp then.
    index: Mutex<Option<(Stamp, Index)>>,
    /// State files found intact, by name, with their stamps then.
    verified: Mutex<HashMap<String, Stamp>>,
}

/// What tells a file changed without reading it: its modification time and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

/// `mutex`'s value, even after a panic elsewhere (the values are caches).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A kept state that shares a prefix with a prompt.
pub(crate) struct Match {
    /// The state's file.
    pub(crate) path: PathBuf,
    /// The state's tokens.
    pub(crate) tokens: Vec<LlamaToken>,
    /// How many of them the prompt shares.
    pub(crate) shared: usize,
}

impl PromptStore {
    /// The store for `model` (its path, size and modification time name it, with the
    /// settings that shape a sequence's state and the versions of the code that wrote
    /// it) under `cache`.
    pub(crate) fn open(cache: &PromptCache, model: &Path, settings: &str) -> Option<Self> {
        let meta = std::fs::metadata(model).ok()?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let identity = format!(
            "{}\n{}\n{modified}\n{settings}\njielong-llama {}\nllama-cpp-2 0.1.160",
            std::path::absolute(model)
                .unwrap_or_else(|_| model.to_path_buf())
                .display(),
            meta.len(),
            env!("CARGO_PKG_VERSION"),
        );
        let key = jielong_util::sha256_hex(identity.as_bytes());
        Some(Self {
            dir: cache.dir.join(&key[..24]),
            max_bytes: cache.max_bytes,
            openings: cache.openings,
            index: Mutex::new(None),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The most openings one session keeps ([`PromptCache::openings`]).
    pub(crate) fn openings(&self) -> usize {
        self.openings
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// The index: the copy in memory while the file's stamp is the one it was read
    /// or written with, else the file read again (another process wrote it).
    fn read(&self) -> Index {
        let path = self.index_path();
        let Some(stamp) = Stamp::of(&path) else {
            return Index::default();
        };
        if let Some((seen, index)) = lock(&self.index).as_ref() {
            if *seen == stamp {
                return index.clone();
            }
        }
        let index = match std::fs::read(&path)
            .ok()
            .and_then(|text| serde_json::from_slice::<Index>(&text).ok())
        {
            Some(index) if index.format == FORMAT => index,
            _ => Index::default(),
        };
        *lock(&self.index) = Some((stamp, index.clone()));
        index
    }

    fn write(&self, index: &Index) {
        let path = self.index_path();
        let written = serde_json::to_vec(index)
            .map_err(|e| e.to_string())
            .and_then(|bytes| jielong_util::write_atomic(&path, &bytes).map_err(|e| e.to_string()));
        match written {
            Ok(()) => {
                *lock(&self.index) = Stamp::of(&path).map(|stamp| (stamp, index.clone()));
            }
            Err(error) => tracing::warn!(%error, "prompt cache: cannot write the index"),
        }
    }

    /// Whether `path` is the file `entry` describes (size, then SHA-256; a file whose
    /// stamp has not changed since it was found intact is not hashed again).
    fn intact(&self, path: &Path, entry: &Entry) -> bool {
        let Some(stamp) = Stamp::of(path).filter(|s| s.len == entry.bytes) else {
            return false;
        };
        if lock(&self.verified).get(&entry.file) == Some(&stamp) {
            return true;
        }
        let intact =
            std::fs::read(path).is_ok_and(|bytes| jielong_util::sha256_hex(&bytes) == entry.sha256);
        if intact {
            lock(&self.verified).insert(entry.file.clone(), stamp);
        }
        intact
    }

    /// The kept state sharing the longest prefix with `tokens` (at most `limit` of
    /// them, at least [`MIN_TOKENS`]) whose file is intact; files that are not are
    /// dropped from the index.
    pub(crate) fn find(&self, tokens: &[LlamaToken], limit: usize) -> Option<Match> {
        let mut index = self.read();
        let mut candidates: Vec<(usize, usize)> = index
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let shared = e
                    .tokens
                    .iter()
                    .zip(tokens)
                    .take_while(|(a, b)| **a == b.0)
                    .count();
                (i, shared.min(limit))
            })
            .filter(|&(_, shared)| shared >= MIN_TOKENS)
            .collect();
        candidates.sort_by_key(|&(_, shared)| std::cmp::Reverse(shared));
        let mut broken = Vec::new();
        let mut found = None;
        for (i, shared) in candidates {
            let entry = &index.entries[i];
            let path = self.dir.join(&entry.file);
            if self.intact(&path, entry) {
                found = Some((i, shared, path));
                break;
            }
            tracing::warn!(path = %path.display(), "prompt cache: a kept state is damaged or missing; dropped");
            broken.push(i);
        }
        let result = found.map(|(i, shared, path)| {
            index.entries[i].used = now_ms();
            Match {
                path,
                tokens: index.entries[i]
                    .tokens
                    .iter()
                    .map(|&t| LlamaToken(t))
                    .collect(),
                shared,
            }
        });
        if !broken.is_empty() || result.is_some() {
            let mut k = 0;
            index.entries.retain(|e| {
                let keep = !broken.contains(&k);
                if !keep {
                    let _ = std::fs::remove_file(self.dir.join(&e.file));
                }
                k += 1;
                keep
            });
            self.write(&index);
        }
        result
    }

    /// Forgets the state at `path` (llama.cpp refused it).
    pub(crate) fn forget(&self, found: &Match) {
        let mut index = self.read();
        index
            .entries
            .retain(|e| self.dir.join(&e.file) != found.path);
        let _ = std::fs::remove_file(&found.path);
        self.write(&index);
    }

    /// Keeps the state `save` writes for `tokens` (`save(path)` writes it there), then
    /// drops the least recently used states beyond the bound.
    pub(crate) fn keep(
        &self,
        tokens: &[LlamaToken],
        save: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("{}: cannot create: {e}", self.dir.display()))?;
        let ids: Vec<u8> = tokens.iter().flat_map(|t| t.0.to_le_bytes()).collect();
        let file = format!("{}.state", &jielong_util::sha256_hex(&ids)[..32]);
        let path = self.dir.join(&file);
        let partial = self.dir.join(format!(".{file}.tmp-{}", std::process::id()));
        let written = save(&partial).and_then(|()| {
            let bytes = std::fs::read(&partial)
                .map_err(|e| format!("{}: cannot read back: {e}", partial.display()))?;
            let entry = Entry {
                file: file.clone(),
                tokens: tokens.iter().map(|t| t.0).collect(),
                bytes: bytes.len() as u64,
                sha256: jielong_util::sha256_hex(&bytes),
                used: now_ms(),
            };
            std::fs::rename(&partial, &path)
                .map_err(|e| format!("{}: cannot rename: {e}", path.display()))?;
            let _ = jielong_util::sync_dir(&self.dir);
            Ok(entry)
        });
        let entry = match written {
            Ok(entry) => entry,
            Err(error) => {
                let _ = std::fs::remove_file(&partial);
                return Err(error);
            }
        };
        let mut index = self.read();
        index.format = FORMAT;
        index.entries.retain(|e| e.file != file);
        index.entries.push(entry);
        // The most recently used first; keep what fits.
        index.entries.sort_by_key(|e| std::cmp::Reverse(e.used));
        let mut total = 0u64;
        index.entries.retain(|e| {
            total += e.bytes;
            let keep = total <= self.max_bytes;
            if !keep {
                let _ = std::fs::remove_file(self.dir.join(&e.file));
            }
            keep
        });
        self.write(&index);
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: std::ops::Range<i32>) -> Vec<LlamaToken> {
        ids.map(LlamaToken).collect()
    }

    /// A store in a fresh folder whose "model" is a file of its own.
    fn store(max_bytes: u64) -> (tempfile::TempDir, PromptStore) {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.gguf");
        std::fs::write(&model, b"weights").unwrap();
        let cache = PromptCache {
            max_bytes,
            ..PromptCache::new(dir.path().join("cache"))
        };
        let store = PromptStore::open(&cache, &model, "test").unwrap();
        (dir, store)
    }

    fn keep(store: &PromptStore, tokens: &[LlamaToken], bytes: usize) {
        store
            .keep(tokens, |path| {
                std::fs::write(path, vec![7u8; bytes]).map_err(|e| e.to_string())
            })
            .unwrap();
    }

    #[test]
    fn the_longest_shared_prefix_is_found_and_short_ones_are_not() {
        let (_dir, store) = store(1 << 20);
        keep(&store, &tokens(0..100), 1000);
        let mut other = tokens(0..40);
        other.extend(tokens(500..560));
        keep(&store, &other, 1000);
        let mut prompt = tokens(0..70);
        prompt.extend(tokens(900..910));
        let found = store.find(&prompt, prompt.len() - 1).unwrap();
        assert_eq!((found.shared, found.tokens.len()), (70, 100));
        // The limit caps what counts as shared.
        assert_eq!(store.find(&prompt, 50).unwrap().shared, 50);
        // Fewer than MIN_TOKENS shared is no match.
        assert!(store.find(&tokens(0..20), 19).is_none());
        assert!(store.find(&tokens(1000..1100), 99).is_none());
    }

    #[test]
    fn damaged_or_missing_states_are_misses_and_leave_the_index() {
        let (_dir, store) = store(1 << 20);
        keep(&store, &tokens(0..100), 1000);
        let found = store.find(&tokens(0..100), 99).unwrap();
        // Same size, other bytes: the hash tells (the file's time moves on first, as
        // any later write's does: a file found intact is hashed again only then).
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::write(&found.path, vec![8u8; 1000]).unwrap();
        assert!(store.find(&tokens(0..100), 99).is_none());
        assert!(store.read().entries.is_empty());
        assert!(!found.path.exists());
        keep(&store, &tokens(0..100), 1000);
        let found = store.find(&tokens(0..100), 99).unwrap();
        std::fs::remove_file(&found.path).unwrap();
        assert!(store.find(&tokens(0..100), 99).is_none());
        // A broken index is an empty one.
        std::fs::write(store.index_path(), b"{not json").unwrap();
        assert!(store.find(&tokens(0..100), 99).is_none());
        keep(&store, &tokens(0..100), 1000);
        assert!(store.find(&tokens(0..100), 99).is_some());
    }

    #[test]
    fn another_process_keeping_a_state_is_seen() {
        let (dir, first) = store(1 << 20);
        let cache = PromptCache {
            max_bytes: 1 << 20,
            ..PromptCache::new(dir.path().join("cache"))
        };
        let second = PromptStore::open(&cache, &dir.path().join("model.gguf"), "test").unwrap();
        keep(&first, &tokens(0..100), 1000);
        // The first store holds its index in memory now; the second writes the file.
        assert!(first.find(&tokens(0..100), 99).is_some());
        std::thread::sleep(std::time::Duration::from_millis(50));
        keep(&second, &tokens(100..200), 1000);
        assert!(first.find(&tokens(100..200), 99).is_some());
        assert!(first.find(&tokens(0..100), 99).is_some());
    }

    #[test]
    fn the_least_recently_used_go_past_the_bound() {
        let (_dir, store) = store(2500);
        keep(&store, &tokens(0..100), 1000);
        std::thread::sleep(std::time::Duration::from_millis(5));
        keep(&store, &tokens(100..200), 1000);
        std::thread::sleep(std::time::Duration::from_millis(5));
        // Using the first makes the second the least recent.
        assert!(store.find(&tokens(0..100), 99).is_some());
        std::thread::sleep(std::time::Duration::from_millis(5));
        keep(&store, &tokens(200..300), 1000);
        assert!(store.find(&tokens(0..100), 99).is_some());
        assert!(store.find(&tokens(100..200), 99).is_none());
        assert!(store.find(&tokens(200..300), 99).is_some());
        let files = std::fs::read_dir(&store.dir).unwrap().count();
        assert_eq!(files, 3, "two states and the index");
    }

    #[test]
    fn a_failed_save_leaves_nothing() {
        let (_dir, store) = store(1 << 20);
        let failed = store.keep(&tokens(0..100), |path| {
            std::fs::write(path, b"half").unwrap();
            Err("llama.cpp said no".into())
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_dir(&store.dir).unwrap().count(), 0);
    }
}
