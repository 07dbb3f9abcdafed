//! Container logs, laid out like a kubelet's `/var/log/pods`:
//! `<state>/logs/<namespace>_<pod>_<uid>/<container>/<restart count>.log`.

use std::path::{Path, PathBuf};

/// The newest `<n>.log` in a container's log directory.
pub fn latest_log(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

/// kubelet's FallbackToLogsOnError message: the last 80 lines, at most 2 KiB.
pub(super) fn log_tail(path: Option<&Path>) -> Option<String> {
    let text = std::fs::read_to_string(path?).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    let start = (start..=tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(0);
    let tail = tail[start..].to_owned();
    (!tail.is_empty()).then_some(tail)
}
