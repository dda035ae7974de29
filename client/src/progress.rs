//! The progress bar of online commands: one indicatif bar on stderr, shown only when stderr is a
//! terminal and `--quiet` was not given. It counts archives while the daemon makes them local, then
//! bytes while blobs stream in or files are written.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_client::api::Resolved;
use cairn_client::fetch::FetchReporter;
use cairn_client::materialize::Reporter;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A [`FetchReporter`] drawing one bar (hidden when not on a terminal).
pub struct Progress {
    bar: ProgressBar,
    /// Compressed bytes the daemon downloaded so far.
    downloaded: AtomicU64,
}

impl Progress {
    /// A bar on stderr when it is a terminal and `quiet` is off; a hidden one otherwise.
    pub fn new(quiet: bool) -> Progress {
        let bar = if !quiet && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(Self::count_style());
        bar.set_message("resolving");
        Progress {
            bar,
            downloaded: AtomicU64::new(0),
        }
    }

    fn count_style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {msg:<40!} [{bar:30}] {pos}/{len} archives")
            .expect("valid template")
            .progress_chars("=> ")
    }

    fn bytes_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{spinner} {msg:<40!} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .expect("valid template")
        .progress_chars("=> ")
    }

    /// Remove the bar before the summary is printed.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Reporter for Progress {
    fn on_start(&self, _files: u64, bytes: u64) {
        self.bar.set_style(Self::bytes_style());
        self.bar.set_length(bytes);
        self.bar.set_position(0);
        self.bar.set_message("writing files");
    }

    fn on_file_written(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn on_file_skipped(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

impl FetchReporter for Progress {
    fn on_resolved(&self, resolved: &[Resolved]) {
        // Until the first archive is local the bar shows 0 of the archives found, not an empty
        // (and so full-looking) bar.
        let found = resolved
            .iter()
            .filter(|r| r.status == cairn_client::api::Status::Found)
            .count() as u64;
        self.bar.inc_length(found);
        self.bar.set_message(format!(
            "making {} archive(s) local",
            self.bar.length().unwrap_or(0)
        ));
    }

    fn on_archive_ready(&self, artifact: &str, done: u64, total: u64, downloaded_bytes: u64) {
        let downloaded = self
            .downloaded
            .fetch_add(downloaded_bytes, Ordering::Relaxed)
            + downloaded_bytes;
        self.bar.set_length(total);
        self.bar.set_position(done);
        self.bar.set_message(format!(
            "{artifact} ({} downloaded)",
            indicatif::HumanBytes(downloaded)
        ));
    }

    fn on_blob_bytes(&self, bytes: u64) {
        if self.bar.message() != "receiving blobs" {
            self.bar.set_style(Self::bytes_style());
            self.bar.set_length(0);
            self.bar.set_position(0);
            self.bar.set_message("receiving blobs");
        }
        // The total is unknown up front (only needed blobs are counted): grow it as bytes arrive.
        self.bar.inc_length(bytes);
        self.bar.inc(bytes);
    }
}
