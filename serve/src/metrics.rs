//! Counters for `GET /metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use jielong_chat::KvUsage;

/// What the server has done so far.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered, by endpoint and status.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Prompt tokens of finished generations.
    pub prompt_tokens: AtomicU64,
    /// Of those, tokens reused from the KV cache.
    pub cached_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Requests generating now.
    pub in_flight: AtomicUsize,
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// Requests refused because the queue was full.
    pub rejected: AtomicU64,
    /// Generations cut short because the client went away.
    pub cancelled: AtomicU64,
    /// Replies that meant a call but could not be taken as written, generated again
    /// with the call required.
    pub regenerated: AtomicU64,
    /// Calls dropped because the request does not name their tool's subject.
    pub declined: AtomicU64,
    /// Calls added because the request names more items than the reply called for.
    pub added_calls: AtomicU64,
    /// Loops the loop guard broke in constrained output.
    pub loops_broken: AtomicU64,
    /// Prompts rendered and tokenized (one per request, one more per reply generated
    /// again on a changed chat).
    pub prepared: AtomicU64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(&self, endpoint: &'static str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.entry((endpoint, status)).or_default() += 1;
    }

    /// Adds a finished generation's token counts.
    pub fn tokens(&self, usage: &jielong_chat::Usage) {
        self.prompt_tokens
            .fetch_add(usage.prompt_tokens as u64, Ordering::Relaxed);
        self.cached_tokens
            .fetch_add(usage.cached_tokens as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(usage.generated_tokens as u64, Ordering::Relaxed);
        self.loops_broken
            .fetch_add(usage.loops_broken as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the KV cache's state (`None`: not known
    /// right now) and the slot count.
    pub fn render(&self, kv: Option<&KvUsage>, slots: usize) -> String {
        let mut out = String::new();
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP jielong_requests_total Requests answered, by endpoint and HTTP status.\n# TYPE jielong_requests_total counter"
        );
        for ((endpoint, status), count) in &requests {
            let _ = writeln!(
                out,
                "jielong_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {count}"
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "jielong_prompt_tokens_total",
            "Prompt tokens of finished generations.",
            load(&self.prompt_tokens),
        );
        counter(
            &mut out,
            "jielong_prompt_tokens_cached_total",
            "Prompt tokens reused from the KV cache.",
            load(&self.cached_tokens),
        );
        counter(
            &mut out,
            "jielong_generated_tokens_total",
            "Tokens generated.",
            load(&self.generated_tokens),
        );
        counter(
            &mut out,
            "jielong_requests_rejected_total",
            "Requests refused with 503 because the queue was full.",
            load(&self.rejected),
        );
        counter(
            &mut out,
            "jielong_requests_cancelled_total",
            "Generations cut short because the client went away.",
            load(&self.cancelled),
        );
        counter(
            &mut out,
            "jielong_prompts_prepared_total",
            "Prompts rendered and tokenized: one per request, one more per reply generated again on a changed chat.",
            load(&self.prepared),
        );
        counter(
            &mut out,
            "jielong_calls_regenerated_total",
            "Replies that meant a call but could not be taken as written, generated again with the call required.",
            load(&self.regenerated),
        );
        counter(
            &mut out,
            "jielong_calls_declined_total",
            "Calls dropped because the request does not name their tool's subject.",
            load(&self.declined),
        );
        counter(
            &mut out,
            "jielong_calls_added_total",
            "Calls added because the request names more items than the reply called for.",
            load(&self.added_calls),
        );
        counter(
            &mut out,
            "jielong_loops_broken_total",
            "Loops the loop guard broke in grammar-constrained calls and JSON replies.",
            load(&self.loops_broken),
        );
        gauge(
            &mut out,
            "jielong_requests_in_flight",
            "Requests holding a slot now.",
            self.in_flight.load(Ordering::Relaxed) as u64,
        );
        gauge(
            &mut out,
            "jielong_queue_depth",
            "Requests waiting for a slot.",
            self.queued.load(Ordering::Relaxed) as u64,
        );
        gauge(
            &mut out,
            "jielong_slots",
            "Slots (parallel requests).",
            slots as u64,
        );
        if let Some(kv) = kv {
            gauge(
                &mut out,
                "jielong_kv_cells_used",
                "KV-cache cells in use (shared prefixes count once).",
                kv.cells as u64,
            );
            gauge(
                &mut out,
                "jielong_kv_cells_total",
                "KV-cache cells in the context window.",
                u64::from(kv.context),
            );
            gauge(
                &mut out,
                "jielong_kv_branches",
                "Live branches of the session.",
                kv.branches.len() as u64,
            );
            gauge(
                &mut out,
                "jielong_kv_branch_tokens",
                "Tokens held by all branches together (shared ones once per branch).",
                kv.branches.iter().map(|b| b.tokens as u64).sum(),
            );
        }
        out
    }
}
