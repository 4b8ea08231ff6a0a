//! Slots: the session's branches that requests run on, a bounded queue in front of
//! them, and the bookkeeping that sends a conversation back to the branch that holds
//! its beginning.
//!
//! What an idle slot holds is read from the session's published branch contents
//! ([`BranchedSession::holds`], which never waits for the running batch); a busy
//! slot counts as its prompt plus the cells its request may still add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use jielong_chat::branched::common_prefix_len;
use jielong_chat::{BranchId, BranchedSession};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// One slot: a branch and, while a request runs on it, what it will hold.
#[derive(Debug)]
struct Slot {
    branch: BranchId,
    /// While busy: the running request's prompt length (0 while being emptied).
    prompt: usize,
    /// While busy: cells the running request may still add (its token budget).
    reserved: usize,
    busy: bool,
    /// When it was last handed out (for least-recently-used choices).
    used: u64,
}

/// The slots and the queue.
#[derive(Debug)]
pub struct SlotPool {
    slots: Mutex<Vec<Slot>>,
    permits: Arc<Semaphore>,
    /// Extra branches for `n > 1` (forked per request, dropped afterwards).
    temps: Arc<Semaphore>,
    queue: usize,
    clock: AtomicU64,
    n_ctx: usize,
    /// Held while slots are re-created ([`SlotPool::repair`]).
    repairing: Mutex<()>,
}

/// A slot held by one request; released when dropped.
#[derive(Debug)]
pub struct SlotGuard {
    pool: Arc<SlotPool>,
    index: usize,
    /// The branch to run on.
    pub branch: BranchId,
    /// Prompt tokens the branch is expected to reuse.
    pub expected_reuse: usize,
    evict: Vec<(usize, BranchId)>,
    _permit: OwnedSemaphorePermit,
}

/// Counts a request as queued while it waits.
struct Queued<'a>(&'a Metrics);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SlotPool {
    /// A pool over `branches`, with room for `queue` waiting requests and `temps`
    /// extra branches for `n > 1`, in a KV cache of `n_ctx` cells.
    pub fn new(branches: Vec<BranchId>, queue: usize, temps: usize, n_ctx: usize) -> Self {
        let permits = Arc::new(Semaphore::new(branches.len()));
        Self {
            slots: Mutex::new(
                branches
                    .into_iter()
                    .map(|branch| Slot {
                        branch,
                        prompt: 0,
                        reserved: 0,
                        busy: false,
                        used: 0,
                    })
                    .collect(),
            ),
            permits,
            temps: Arc::new(Semaphore::new(temps)),
            queue,
            clock: AtomicU64::new(1),
            n_ctx,
            repairing: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Slots in all, and idle now.
    pub fn counts(&self) -> (usize, usize) {
        let slots = self.lock();
        (slots.len(), slots.iter().filter(|s| !s.busy).count())
    }

    /// Waits for a slot for a prompt of `tokens` that may add `budget` cells (see
    /// [`choose`]); `held` says what a branch holds now. A full queue is a 503. Idle
    /// slots whose contents would crowd the KV cache are marked for eviction
    /// ([`SlotGuard::evict`]).
    pub async fn acquire(
        self: &Arc<Self>,
        metrics: &Metrics,
        tokens: &[i32],
        budget: usize,
        held: &(dyn Fn(BranchId) -> Vec<i32> + Sync),
    ) -> Result<SlotGuard, ApiError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if metrics.queued.fetch_add(1, Ordering::Relaxed) >= self.queue {
                    metrics.queued.fetch_sub(1, Ordering::Relaxed);
                    metrics.rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(ApiError::overloaded(self.queue));
                }
                let _queued = Queued(metrics);
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ApiError::internal("the server is shutting down"))?
            }
        };
        let mut slots = self.lock();
        // What each idle slot holds (busy ones: nothing read).
        let mut contents: Vec<Vec<i32>> = slots
            .iter()
            .map(|s| if s.busy { Vec::new() } else { held(s.branch) })
            .collect();
        let index = choose(&slots, &contents, tokens)
            .ok_or_else(|| ApiError::internal("no idle slot behind a free permit"))?;
        let expected_reuse = common_prefix_len(&contents[index], tokens);
        contents[index].clear();
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        {
            let slot = &mut slots[index];
            slot.busy = true;
            slot.used = now;
            slot.prompt = tokens.len();
            slot.reserved = budget;
        }
        // Evict idle slots, least recently used first, while the cache would overflow.
        let mut evict = Vec::new();
        let total = |slots: &[Slot], contents: &[Vec<i32>]| -> usize {
            slots
                .iter()
                .zip(contents)
                .map(|(s, held)| s.prompt + s.reserved + held.len())
                .sum()
        };
        while total(&slots, &contents) > self.n_ctx {
            let Some(victim) = slots
                .iter()
                .enumerate()
                .filter(|&(i, s)| !s.busy && !contents[i].is_empty())
                .min_by_key(|(_, s)| s.used)
                .map(|(i, _)| i)
            else {
                break;
            };
            contents[victim].clear();
            let slot = &mut slots[victim];
            slot.prompt = 0;
            slot.busy = true;
            evict.push((victim, slot.branch));
        }
        let branch = slots[index].branch;
        drop(slots);
        Ok(SlotGuard {
            pool: self.clone(),
            index,
            branch,
            expected_reuse,
            evict,
            _permit: permit,
        })
    }

    /// Waits for `n` extra branches' worth of room (for `n > 1`).
    pub async fn temps(self: &Arc<Self>, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let n = u32::try_from(n).map_err(|_| ApiError::invalid_param("n", "n is too large"))?;
        self.temps
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| ApiError::internal("the server is shutting down"))
    }
}

/// The idle slot for a prompt of `tokens`: the one sharing the longest prefix with
/// it among those that keep at least half of what they hold (a conversation coming
/// back to its slot), else an empty one, else the least recently used. So a new
/// conversation does not push an earlier one out of its slot for the sake of a
/// shared system prompt.
/// `contents[i]` is what idle slot `i` holds.
fn choose(slots: &[Slot], contents: &[Vec<i32>], tokens: &[i32]) -> Option<usize> {
    let idle = || slots.iter().enumerate().filter(|(_, s)| !s.busy);
    let kept = idle()
        .map(|(i, s)| (i, common_prefix_len(&contents[i], tokens), s))
        .filter(|&(i, prefix, _)| prefix > 0 && prefix * 2 >= contents[i].len())
        .max_by_key(|&(_, prefix, s)| (prefix, u64::MAX - s.used))
        .map(|(i, _, _)| i);
    kept.or_else(|| {
        idle()
            .find(|&(i, _)| contents[i].is_empty())
            .map(|(i, _)| i)
    })
    .or_else(|| idle().min_by_key(|(_, s)| s.used).map(|(i, _)| i))
}

impl SlotPool {
    /// Re-creates the slots whose branches are gone (the worker clears the whole KV
    /// cache when an evaluation fails). Blocks: call it on a blocking thread.
    pub fn repair(&self, session: &dyn BranchedSession) -> Result<(), jielong_chat::RuntimeError> {
        let _one = self.repairing.lock().unwrap_or_else(|p| p.into_inner());
        let live: Vec<BranchId> = session
            .kv_usage()?
            .branches
            .into_iter()
            .map(|b| b.id)
            .collect();
        let missing: Vec<usize> = {
            let slots = self.lock();
            slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !live.contains(&s.branch))
                .map(|(i, _)| i)
                .collect()
        };
        if !missing.is_empty() {
            tracing::warn!(
                "re-creating {} slots whose branches were cleared",
                missing.len()
            );
        }
        for index in missing {
            let ids = session.fork(BranchId::MAIN, 1)?;
            if let Some(&id) = ids.first() {
                self.lock()[index].branch = id;
            }
        }
        Ok(())
    }
}

impl SlotGuard {
    /// Empties the slots marked for eviction (each branch is dropped and forked anew
    /// from the empty main branch), on a blocking thread that finishes even if the
    /// request goes away.
    pub async fn evict(&mut self, session: Arc<dyn BranchedSession>) -> Result<(), ApiError> {
        let evict = std::mem::take(&mut self.evict);
        if evict.is_empty() {
            return Ok(());
        }
        let pool = self.pool.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut result = Ok(());
            for (index, branch) in evict {
                let renewed = session
                    .drop_branch(branch)
                    .and_then(|()| session.fork(BranchId::MAIN, 1));
                let mut slots = pool.lock();
                match renewed {
                    Ok(ids) => {
                        if let Some(&id) = ids.first() {
                            slots[index].branch = id;
                        }
                    }
                    Err(e) => result = Err(e),
                }
                slots[index].busy = false;
                slots[index].prompt = 0;
                slots[index].reserved = 0;
            }
            result
        });
        done.await
            .map_err(|e| ApiError::internal(format!("eviction failed: {e}")))?
            .map_err(ApiError::from)
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut slots = self.pool.lock();
        if let Some(slot) = slots.get_mut(self.index) {
            slot.busy = false;
            slot.prompt = 0;
            slot.reserved = 0;
        }
        // Marked for eviction but never evicted (the request went away first): their
        // contents are still there, only forgotten here.
        for &(index, _) in &self.evict {
            if let Some(slot) = slots.get_mut(index) {
                slot.busy = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Branch contents as a session would publish them.
    #[derive(Default)]
    struct Board(Mutex<HashMap<BranchId, Vec<i32>>>);

    impl Board {
        fn set(&self, branch: BranchId, tokens: Vec<i32>) {
            self.0.lock().expect("board").insert(branch, tokens);
        }

        fn held(&self) -> impl Fn(BranchId) -> Vec<i32> + Sync + '_ {
            |branch| {
                self.0
                    .lock()
                    .expect("board")
                    .get(&branch)
                    .cloned()
                    .unwrap_or_default()
            }
        }
    }

    #[tokio::test]
    async fn the_slot_holding_the_conversation_is_chosen() {
        let pool = Arc::new(SlotPool::new(vec![BranchId(1), BranchId(2)], 1, 0, 1000));
        let metrics = Metrics::default();
        let board = Board::default();
        let a = pool
            .acquire(&metrics, &[1, 2, 3], 10, &board.held())
            .await
            .expect("a slot");
        board.set(a.branch, vec![1, 2, 3, 4]);
        let first = a.branch;
        drop(a);
        let b = pool
            .acquire(&metrics, &[9, 9], 10, &board.held())
            .await
            .expect("a slot");
        assert_ne!(b.branch, first, "a fresh prompt takes the unused slot");
        drop(b);
        let c = pool
            .acquire(&metrics, &[1, 2, 3, 4, 5], 10, &board.held())
            .await
            .expect("a slot");
        assert_eq!(c.branch, first);
        assert_eq!(c.expected_reuse, 4);
    }

    #[tokio::test]
    async fn a_new_conversation_leaves_an_earlier_one_alone() {
        let pool = Arc::new(SlotPool::new(vec![BranchId(1), BranchId(2)], 1, 0, 1000));
        let metrics = Metrics::default();
        let board = Board::default();
        // Both start with the same system prompt [7, 7].
        let a = pool
            .acquire(&metrics, &[7, 7, 1, 1, 1, 1], 1, &board.held())
            .await
            .expect("a slot");
        board.set(a.branch, vec![7, 7, 1, 1, 1, 1]);
        let first = a.branch;
        drop(a);
        let b = pool
            .acquire(&metrics, &[7, 7, 2, 2, 2, 2], 1, &board.held())
            .await
            .expect("a slot");
        assert_ne!(
            b.branch, first,
            "the empty slot, not the other conversation's"
        );
        board.set(b.branch, vec![7, 7, 2, 2, 2, 2]);
        let second = b.branch;
        drop(b);
        // A third conversation takes the least recently used slot.
        let c = pool
            .acquire(&metrics, &[7, 7, 3, 3, 3, 3], 1, &board.held())
            .await
            .expect("a slot");
        assert_eq!(c.branch, first);
        board.set(c.branch, vec![7, 7, 3, 3, 3, 3]);
        drop(c);
        let d = pool
            .acquire(&metrics, &[7, 7, 2, 2, 2, 2, 5], 1, &board.held())
            .await
            .expect("a slot");
        assert_eq!(d.branch, second);
        assert_eq!(d.expected_reuse, 6);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused() {
        let pool = Arc::new(SlotPool::new(vec![BranchId(1)], 0, 0, 1000));
        let metrics = Metrics::default();
        let board = Board::default();
        let _held = pool
            .acquire(&metrics, &[1], 1, &board.held())
            .await
            .expect("a slot");
        let refused = pool
            .acquire(&metrics, &[2], 1, &board.held())
            .await
            .expect_err("503");
        assert_eq!(refused.status.as_u16(), 503);
    }

    #[tokio::test]
    async fn idle_slots_are_evicted_when_the_cache_would_overflow() {
        let pool = Arc::new(SlotPool::new(vec![BranchId(1), BranchId(2)], 1, 0, 100));
        let metrics = Metrics::default();
        let board = Board::default();
        let a = pool
            .acquire(&metrics, &[1; 60], 0, &board.held())
            .await
            .expect("a slot");
        board.set(a.branch, vec![1; 60]);
        drop(a);
        let b = pool
            .acquire(&metrics, &[2; 50], 10, &board.held())
            .await
            .expect("a slot");
        assert_eq!(b.evict.len(), 1);
    }
}
