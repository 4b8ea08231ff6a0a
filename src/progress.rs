//! Progress bars (indicatif) for model downloads and assembly.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// Shows `jielong_models::Progress` reports as a bar on stderr (hidden when stderr
/// is not a terminal).
pub struct BarProgress {
    bar: Mutex<Option<ProgressBar>>,
}

impl BarProgress {
    /// No bar until a download begins.
    pub fn new() -> Self {
        Self {
            bar: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        if let Ok(mut bar) = self.bar.lock() {
            f(&mut bar);
        }
    }
}

impl jielong::models::Progress for BarProgress {
    fn begin(&self, label: &str, total_bytes: Option<u64>) {
        self.with_bar(|slot| {
            let bar = match total_bytes {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            };
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_message(label.to_string());
            *slot = Some(bar);
        });
    }

    fn advance(&self, bytes: u64) {
        self.with_bar(|slot| {
            if let Some(bar) = slot {
                bar.inc(bytes);
            }
        });
    }

    fn message(&self, msg: &str) {
        self.with_bar(|slot| match slot {
            Some(bar) => bar.set_message(msg.to_string()),
            None => eprintln!("{msg}"),
        });
    }

    fn end(&self) {
        self.with_bar(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        });
    }
}
