//! The agent's own log: one line per decision, in `<state>/agent.log`, and on stderr too when
//! `RYZANSTEIN_E2E_VERBOSE=1`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;

#[derive(Clone, Debug)]
pub struct Log {
    file: Arc<Mutex<Option<File>>>,
    path: PathBuf,
    stderr: bool,
}

impl Log {
    pub fn open(path: &Path) -> Log {
        let file = OpenOptions::new().create(true).append(true).open(path).ok();
        Log {
            file: Arc::new(Mutex::new(file)),
            path: path.to_path_buf(),
            stderr: std::env::var("RYZANSTEIN_E2E_VERBOSE").as_deref() == Ok("1"),
        }
    }

    pub fn line(&self, message: fmt::Arguments<'_>) {
        let line = format!("{} {message}\n", Timestamp::now());
        if self.stderr {
            eprint!("node-agent: {line}");
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(line.as_bytes());
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
