//! Cache helpers: temporary files renamed into place, sha256 of large files remembered in a
//! sidecar keyed by size and modification time, and a lock file that keeps two processes from
//! downloading the same thing at once.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A file written under a temporary name beside its destination, removed on drop unless
/// [`TempFile::persist`] renames it into place (an atomic rename on one file system).
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl TempFile {
    /// Create a fresh temporary file in `dir` for the eventual file `final_name`.
    pub fn new_in(dir: &Path, final_name: &str) -> Result<TempFile> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let base = Path::new(final_name)
            .file_name()
            .map_or_else(|| "download".into(), |n| n.to_string_lossy().into_owned());
        for attempt in 0u32..100 {
            let path = dir.join(format!(
                ".{base}.{}.{nanos}.{attempt}.partial",
                std::process::id()
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Err(Error::io(
            dir,
            std::io::Error::other("could not create a unique temporary file"),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&mut self) -> &mut std::fs::File {
        self.file.as_mut().expect("the file is open until persist")
    }

    /// Flush to disk and rename to `dest`.
    pub fn persist(mut self, dest: &Path) -> Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|e| Error::io(&self.path, e))?;
        }
        std::fs::rename(&self.path, dest).map_err(|e| Error::io(dest, e))?;
        // Renamed: nothing left to clean up.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A writer that hashes what passes through it.
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }
    pub fn hex_digest(self) -> String {
        hex(&self.hasher.finalize())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Size and modification time (ns since the epoch) identify a file's version for the sidecar.
fn stamp(path: &Path) -> Result<(u64, u128)> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((m.len(), mtime))
}

/// The sidecar that remembers a file's sha256: `<file>.sha256`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// The file's sha256, from the sidecar when its size and mtime still match, else computed (and
/// the sidecar rewritten). Sidecar format: `<hex sha256> <size> <mtime ns>`.
pub fn cached_sha256(path: &Path) -> Result<String> {
    let (size, mtime) = stamp(path)?;
    let side = sidecar_path(path);
    if let Ok(text) = std::fs::read_to_string(&side) {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if let [hash, s, m] = parts[..] {
            if s == size.to_string() && m == mtime.to_string() && hash.len() == 64 {
                return Ok(hash.to_string());
            }
        }
    }
    let hash = sha256_file(path)?;
    write_sidecar(path, &hash)?;
    Ok(hash)
}

/// Record `hash` as the sha256 of `path` as it is now.
pub fn write_sidecar(path: &Path, hash: &str) -> Result<()> {
    let (size, mtime) = stamp(path)?;
    let side = sidecar_path(path);
    let dir = side.parent().unwrap_or(Path::new("."));
    let name = side
        .file_name()
        .map_or_else(|| "sidecar".into(), |n| n.to_string_lossy().into_owned());
    let mut tmp = TempFile::new_in(dir, &name)?;
    writeln!(tmp.file(), "{hash} {size} {mtime}").map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(&side)
}

/// Write a small file atomically (a temporary file renamed into place).
pub fn write_small(dir: &Path, name: &str, text: &str) -> Result<()> {
    let mut tmp = TempFile::new_in(dir, name)?;
    tmp.file()
        .write_all(text.as_bytes())
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(&dir.join(name))
}

/// An exclusive advisory lock (`flock`) on a lock file, held until dropped. Two processes (or two
/// threads with their own `CacheLock`) resolving the same source take turns: the second one waits,
/// then finds the first one's files in place. The lock file itself is left behind (removing it
/// would race with a waiter that already opened it); it is empty.
#[derive(Debug)]
pub struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    /// Lock `path` (created if needed), waiting for another holder to finish. `what` names the
    /// download in the log line written while waiting.
    pub fn acquire(path: &Path, what: &str) -> Result<CacheLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if !try_lock(&file).map_err(|e| Error::io(path, e))? {
            tracing::info!(lock = %path.display(), "another process is downloading {what}; waiting for it");
            lock(&file).map_err(|e| Error::io(path, e))?;
        }
        Ok(CacheLock { _file: file })
    }
}

#[cfg(unix)]
fn flock(file: &std::fs::File, op: libc::c_int) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: flock on a file descriptor this `File` owns and keeps open; no memory is shared.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if op & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(e),
        }
    }
}

#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    flock(file, libc::LOCK_EX | libc::LOCK_NB)
}

#[cfg(unix)]
fn lock(file: &std::fs::File) -> std::io::Result<bool> {
    flock(file, libc::LOCK_EX)
}

// Elsewhere no locking: concurrent downloads still each write their own temporary file and
// rename it into place, so the worst case is a wasted download.
#[cfg(not(unix))]
fn try_lock(_: &std::fs::File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(not(unix))]
fn lock(_: &std::fs::File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn temp_files_vanish_unless_persisted() {
        let d = tempfile::tempdir().unwrap();
        let mut t = TempFile::new_in(d.path(), "x.bin").unwrap();
        t.file().write_all(b"abc").unwrap();
        let p = t.path().to_path_buf();
        assert!(p.exists());
        drop(t);
        assert!(!p.exists());

        let mut t = TempFile::new_in(d.path(), "x.bin").unwrap();
        t.file().write_all(b"abc").unwrap();
        t.persist(&d.path().join("x.bin")).unwrap();
        assert_eq!(std::fs::read(d.path().join("x.bin")).unwrap(), b"abc");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn sidecar_is_used_while_size_and_mtime_match() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(cached_sha256(&p).unwrap(), ABC);
        let side = std::fs::read_to_string(sidecar_path(&p)).unwrap();
        assert!(side.starts_with(ABC), "{side}");

        // A sidecar with a different recorded hash but the same stamp is believed (that is the
        // point: no rehash) ...
        let forged = side.replacen(ABC, &"0".repeat(64), 1);
        std::fs::write(sidecar_path(&p), &forged).unwrap();
        assert_eq!(cached_sha256(&p).unwrap(), "0".repeat(64));
        // ... and a changed file (new size) is rehashed.
        std::fs::write(&p, b"abcd").unwrap();
        assert_eq!(
            cached_sha256(&p).unwrap(),
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
        // A garbled sidecar is ignored.
        std::fs::write(sidecar_path(&p), "junk").unwrap();
        assert_eq!(cached_sha256(&p).unwrap().len(), 64);
    }

    #[cfg(unix)]
    #[test]
    fn cache_locks_take_turns() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub").join("x.lock");
        let first = CacheLock::acquire(&path, "x").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let _second = CacheLock::acquire(&p, "x").unwrap();
            tx.send(()).unwrap();
        });
        // The second holder waits while the first holds the lock ...
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(first);
        // ... and gets it once the first lets go.
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
    }

    #[test]
    fn hashing_writer_hashes_what_it_writes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        assert_eq!((w.written, w.inner.clone()), (3, b"abc".to_vec()));
        assert_eq!(w.hex_digest(), ABC);
    }
}
