//! Watching files for the reloader: the config file, and the TLS certificate and key.
//! A watch is on the file's directory (editors and config management replace files by
//! rename, Kubernetes swaps a `..data` symlink, so watching the file itself would lose
//! it after the first swap), and events are only a hint to re-read: the contents decide.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last file event before reloading: one save is often several
/// events (truncate, write, rename, chmod).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Starts watching the directories of `files` (and the directories symlinked ones point
/// into). Events are only a hint to re-read; the files' contents decide.
pub(super) fn watch_files(
    files: &[PathBuf],
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<RecommendedWatcher> {
    let mut names = Vec::new();
    let mut dirs = Vec::new();
    for file in files {
        names.extend(file.file_name().map(|n| n.to_os_string()));
        let target = std::fs::canonicalize(file).ok();
        if let Some(t) = &target {
            names.extend(t.file_name().map(|n| n.to_os_string()));
        }
        for dir in std::iter::once(parent_dir(file)).chain(target.as_deref().map(parent_dir)) {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        // Reads of the file (anyone opening it) are not changes.
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|f| {
                names.iter().any(|n| n == f)
                // Kubernetes ConfigMap and Secret volumes swap `..data` to publish.
                || f.to_string_lossy().starts_with("..")
            })
        });
        if relevant {
            let _ = tx.send(());
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Debounce: waits until file events stop for a moment (one save is often several
/// events), but not forever if something keeps touching the files.
pub(super) async fn settle(events: &mut mpsc::UnboundedReceiver<()>) {
    let give_up = tokio::time::Instant::now() + DEBOUNCE * 10;
    loop {
        tokio::select! {
            more = events.recv() => if more.is_none() { break },
            _ = tokio::time::sleep(DEBOUNCE) => break,
            _ = tokio::time::sleep_until(give_up) => break,
        }
    }
}

/// The watch on the certificate and key files, moved when a reload names others.
#[derive(Default)]
pub(super) struct CertWatch {
    files: Vec<PathBuf>,
    watcher: Option<RecommendedWatcher>,
}

impl CertWatch {
    pub(super) fn follow(&mut self, files: Vec<PathBuf>, tx: &mpsc::UnboundedSender<()>) {
        if files == self.files {
            return;
        }
        self.watcher = None;
        if !files.is_empty() {
            match watch_files(&files, tx.clone()) {
                Ok(w) => {
                    let shown: Vec<String> =
                        files.iter().map(|f| f.display().to_string()).collect();
                    tracing::info!(files = %shown.join(","), "watching the TLS certificate and key for changes");
                    self.watcher = Some(w);
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "cannot watch the TLS certificate files; reload them with SIGHUP"
                ),
            }
        }
        self.files = files;
    }
}
