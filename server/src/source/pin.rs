//! The sha256 pin of a model (`--model-sha256`, which the operator fills from a ModelDeployment's
//! `spec.model.sha256`): which file it covers and how it is checked.
//!
//! A pin covers one file: the GGUF file, or the `model.safetensors` of a Hugging Face directory.
//! A directory whose weights are sharded (`model.safetensors.index.json`) has no single file to
//! pin, so a pin on one is refused rather than silently ignored.
//!
//! Downloads from `https://` sources are checked while they stream and a file that does not match
//! is deleted, never cached ([`super::download`]). Files already on disk are checked before they
//! load: through the sidecar for files in the cache, in full for local files (which are only
//! read, never written next to: a `pvc://` volume is mounted read-only).

use std::fmt;
use std::path::{Path, PathBuf};

use super::cache::{cached_sha256, sha256_file};
use super::ModelFiles;
use crate::error::{Error, Result};
use crate::safetensors_dir::{INDEX_FILE, SINGLE_FILE};

/// A sha256 digest the model must have: 64 hexadecimal characters, kept in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Pin(String);

impl Sha256Pin {
    /// Parse a pin as written by a user (either case; surrounding spaces ignored).
    pub fn parse(text: &str) -> std::result::Result<Sha256Pin, String> {
        let t = text.trim();
        if t.len() != 64 {
            return Err(format!(
                "the sha256 pin {t:?} has {} characters; a sha256 digest is 64 hexadecimal \
                 characters (as `sha256sum FILE` prints)",
                t.chars().count()
            ));
        }
        if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "the sha256 pin {t:?} may only contain hexadecimal characters (0-9, a-f)"
            ));
        }
        Ok(Sha256Pin(t.to_ascii_lowercase()))
    }

    /// The digest in lower-case hex.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// Whether `digest` (hex, either case) is this one.
    pub fn matches(&self, digest: &str) -> bool {
        digest.eq_ignore_ascii_case(&self.0)
    }
}

impl fmt::Display for Sha256Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(spec: &str, what: impl Into<String>) -> Error {
    Error::Source {
        source_spec: spec.to_string(),
        what: what.into(),
    }
}

/// The error for a file whose digest is not the pin. `what` names the file (a URL or a path) and
/// `then` says what happened to it.
pub fn mismatch(spec: &str, what: &str, pin: &Sha256Pin, got: &str, then: &str) -> Error {
    err(
        spec,
        format!(
            "sha256 mismatch for {what}: the pin (--model-sha256 / spec.model.sha256) is {pin} \
             but the file's sha256 is {got}; {then}. If the model changed on purpose, update the \
             pin; otherwise the file is corrupt or not the one you meant"
        ),
    )
}

/// The file of `dir` (a Hugging Face directory) that a pin covers, or why there is none.
pub fn pinned_weights(spec: &str, dir: &Path) -> Result<PathBuf> {
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(single);
    }
    Err(if dir.join(INDEX_FILE).is_file() {
        sharded_error(spec)
    } else {
        err(
            spec,
            format!(
                "a sha256 pin covers the model's {SINGLE_FILE}, and {} has none",
                dir.display()
            ),
        )
    })
}

/// A pin on a model whose weights are several shards.
pub fn sharded_error(spec: &str) -> Error {
    err(
        spec,
        format!(
            "a sha256 pin covers one file (a GGUF file or {SINGLE_FILE}), but this model's \
             weights are shards listed in {INDEX_FILE}; remove the pin (--model-sha256 / \
             spec.model.sha256) or serve a single-file model"
        ),
    )
}

/// Check `pin` against files already on disk. `in_cache`: the files belong to the cache, so the
/// digest may come from (and be recorded in) a sidecar; otherwise the file is hashed in full and
/// nothing is written.
pub fn verify(spec: &str, files: &ModelFiles, pin: &Sha256Pin, in_cache: bool) -> Result<()> {
    let file = match files {
        ModelFiles::Gguf(p) => p.clone(),
        ModelFiles::HfDir(d) => pinned_weights(spec, d)?,
    };
    let got = if in_cache {
        cached_sha256(&file)?
    } else {
        tracing::info!(file = %file.display(), "checking the model's sha256 pin");
        sha256_file(&file)?
    };
    if pin.matches(&got) {
        return Ok(());
    }
    let then = if in_cache {
        "it is in the cache: delete it (and its .sha256 sidecar) to download it again"
    } else {
        "the file was left as it is"
    };
    Err(mismatch(spec, &file.display().to_string(), pin, &got, then))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn pins_parse() {
        let p = Sha256Pin::parse(&format!(" {} ", ABC.to_uppercase())).unwrap();
        assert_eq!(p.hex(), ABC);
        assert!(p.matches(&ABC.to_uppercase()));
        let e = Sha256Pin::parse("abc").unwrap_err();
        assert!(e.contains("has 3 characters"), "{e}");
        let e = Sha256Pin::parse(&"g".repeat(64)).unwrap_err();
        assert!(e.contains("hexadecimal"), "{e}");
    }

    #[test]
    fn files_on_disk_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("m.gguf");
        std::fs::write(&f, b"abc").unwrap();
        let good = Sha256Pin::parse(ABC).unwrap();
        let bad = Sha256Pin::parse(&"0".repeat(64)).unwrap();
        verify("s", &ModelFiles::Gguf(f.clone()), &good, false).unwrap();
        assert!(!super::super::cache::sidecar_path(&f).exists());
        let e = verify("s", &ModelFiles::Gguf(f.clone()), &bad, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(ABC) && e.contains(&"0".repeat(64)), "{e}");
        assert!(f.exists(), "a local file is never deleted");
        verify("s", &ModelFiles::Gguf(f.clone()), &good, true).unwrap();
        assert!(super::super::cache::sidecar_path(&f).exists());

        // Directories: model.safetensors is pinned; shards cannot be.
        let dir = ModelFiles::HfDir(d.path().to_path_buf());
        let e = verify("s", &dir, &good, false).unwrap_err().to_string();
        assert!(e.contains("has none"), "{e}");
        std::fs::write(d.path().join(INDEX_FILE), b"{}").unwrap();
        let e = verify("s", &dir, &good, false).unwrap_err().to_string();
        assert!(e.contains("shards"), "{e}");
        std::fs::write(d.path().join(SINGLE_FILE), b"abc").unwrap();
        verify("s", &dir, &good, false).unwrap();
    }
}
