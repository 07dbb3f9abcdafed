//! A configuration file that is read again when it changes (a mounted Secret or ConfigMap that
//! the kubelet updates in place): the API key file and the tenant limits file.
//!
//! A change is a new modification time or length (an edit within the file system's timestamp
//! granularity usually changes the length). A file that no longer reads or parses keeps the
//! contents read last, and the failure is logged once per change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How often watched files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

type Stamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The parsed contents of a file, replaced when the file changes and still parses.
pub struct WatchedFile<T> {
    path: PathBuf,
    /// What the file is, for messages ("API key file").
    what: &'static str,
    parse: fn(&str) -> Result<T, String>,
    current: RwLock<(Arc<T>, Option<Stamp>)>,
}

impl<T> std::fmt::Debug for WatchedFile<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.what, self.path.display())
    }
}

impl<T> WatchedFile<T> {
    /// Reads and parses `path`; the error names the file and what is wrong.
    pub fn open(
        path: PathBuf,
        what: &'static str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<WatchedFile<T>, String> {
        let (value, modified) = read(&path, what, parse)?;
        Ok(WatchedFile {
            path,
            what,
            parse,
            current: RwLock::new((Arc::new(value), modified)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The contents in force now.
    pub fn get(&self) -> Arc<T> {
        self.current.read().expect("watched file lock").0.clone()
    }

    /// Reads the file again when it changed; true when the contents were replaced.
    pub fn reload_if_changed(&self) -> bool {
        let modified = stamp(&self.path);
        if modified == self.current.read().expect("watched file lock").1 {
            return false;
        }
        match read(&self.path, self.what, self.parse) {
            Ok((value, m)) => {
                tracing::info!(file = %self.path.display(), "{} reloaded", self.what);
                *self.current.write().expect("watched file lock") = (Arc::new(value), m);
                true
            }
            Err(e) => {
                tracing::error!("{e}; keeping what was read before");
                // Do not log again until the file changes once more.
                self.current.write().expect("watched file lock").1 = modified;
                false
            }
        }
    }
}

fn read<T>(
    path: &Path,
    what: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<(T, Option<Stamp>), String> {
    let modified = stamp(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    let value =
        parse(&text).map_err(|e| format!("the {what} {} is invalid: {e}", path.display()))?;
    Ok((value, modified))
}

/// Calls `reload(owner)` every [`RELOAD_EVERY`] for as long as `owner` lives.
pub fn spawn_reloader<S: Send + Sync + 'static>(owner: &Arc<S>, reload: fn(&S)) {
    let owner = Arc::downgrade(owner);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        loop {
            tick.tick().await;
            let Some(owner) = owner.upgrade() else { break };
            reload(&owner);
        }
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Gives `path` the modification time `secs` after the epoch (so a rewrite within the
    /// timestamp granularity still reads as a change).
    pub(crate) fn set_mtime(path: &Path, secs: u64) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    fn parse_number(text: &str) -> Result<u32, String> {
        text.trim().parse().map_err(|e| format!("{e}"))
    }

    #[test]
    fn changes_are_read_and_broken_edits_keep_the_last_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1\n").unwrap();
        let w = WatchedFile::open(path.clone(), "number file", parse_number).unwrap();
        assert_eq!(*w.get(), 1);
        assert!(!w.reload_if_changed(), "unchanged");
        std::fs::write(&path, "2\n").unwrap();
        set_mtime(&path, 1_000);
        assert!(w.reload_if_changed());
        assert_eq!(*w.get(), 2);
        std::fs::write(&path, "two\n").unwrap();
        set_mtime(&path, 2_000);
        assert!(!w.reload_if_changed());
        assert_eq!(*w.get(), 2, "kept");
        let e =
            WatchedFile::open(dir.path().join("missing"), "number file", parse_number).unwrap_err();
        assert!(e.contains("cannot read the number file"), "{e}");
        std::fs::write(&path, "x").unwrap();
        let e = WatchedFile::open(path, "number file", parse_number).unwrap_err();
        assert!(e.contains("is invalid"), "{e}");
    }
}
