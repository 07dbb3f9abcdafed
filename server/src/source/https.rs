//! `https://host/path`: a model downloaded from a web server into
//! `<cache>/https/<host>[_<port>]/<path>`.
//!
//! - `https://host/path/file.gguf` (any URL not ending in `/`): one GGUF file.
//! - `https://host/path/model/` (ending in `/`): a Hugging Face directory; `config.json`,
//!   `tokenizer.json`, `tokenizer_config.json` (when the server has it) and either
//!   `model.safetensors.index.json` with the shards it names or `model.safetensors` are fetched
//!   from under it.
//!
//! The cache path is the URL's path with every segment reduced to `[A-Za-z0-9._-]` (a segment
//! that had to change gets a short hash of the original, so two URLs never share a path); the
//! query is sent but not part of the key, so a pre-signed URL whose signature changes still finds
//! its file. Once the files are in place (a GGUF file, or a directory with its completion marker)
//! resolving the same URL again makes no request: delete the cache entry to fetch it anew. A
//! lock file keeps concurrent resolves of one URL from downloading twice.
//!
//! With a sha256 pin ([`Sha256Pin`]) the GGUF file or `model.safetensors` is checked while it
//! downloads (a mismatch deletes it) and again, through its sidecar, when found in the cache; a
//! cached file that does not match is downloaded again (the pin may have been updated along with
//! the file on the server) and must then match. Plain `http://` is refused.

use std::path::{Path, PathBuf};

use reqwest::Url;
use sha2::{Digest, Sha256};

use super::cache::{cached_sha256, sidecar_path, write_small, CacheLock};
use super::download::{Client, Expect, HttpOptions, Magic};
use super::pin::{sharded_error, Sha256Pin};
use super::ModelFiles;
use crate::error::{Error, Result};
use crate::safetensors_dir::{read_index, INDEX_FILE, SINGLE_FILE};

/// Written into a directory once all its files are in place.
const MARKER: &str = ".ryzanstein-complete";
/// The lock file of a cache entry (inside a directory entry; beside a file entry, with the file's
/// name).
const LOCK_SUFFIX: &str = ".ryzanstein-lock";
/// What a GGUF file starts with.
const GGUF_MAGIC: &[u8] = b"GGUF";
/// Statuses that mean "no such file" for a file a directory must have (the message then says
/// which file is missing).
const NOT_FOUND: &[u16] = &[404, 410];
/// The same for a file a directory may lack, where a probe also takes 403 as "not there": object
/// stores answer 403 for a missing key when the reader may not list the bucket.
const NOT_FOUND_PROBE: &[u16] = &[403, 404, 410];
/// A file that must be there: every failure is an error.
const REQUIRED: &[u16] = &[];

fn err(spec: &str, what: impl Into<String>) -> Error {
    Error::Source {
        source_spec: spec.to_string(),
        what: what.into(),
    }
}

/// A parsed `https://` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsSpec {
    /// The URL, fragment removed.
    pub url: Url,
    /// It ends in `/`: a Hugging Face directory.
    pub is_dir: bool,
}

impl HttpsSpec {
    /// Parse a source starting with `https://` (or `http://`, which is refused with a message).
    pub fn parse(spec: &str) -> Result<HttpsSpec> {
        let usage = "expected https://host/path/to/model.gguf, or https://host/path/to/model/ \
                     (ending in /) for a Hugging Face directory";
        let mut url =
            Url::parse(spec).map_err(|e| err(spec, format!("not a valid URL ({e}); {usage}")))?;
        if url.scheme() == "http" {
            return Err(err(
                spec,
                "plain http:// is refused: the model would travel unauthenticated and could be \
                 swapped on the way; serve it over https:// (set SSL_CERT_FILE to a PEM file \
                 of the CA for a private certificate authority)",
            ));
        }
        if url.scheme() != "https" {
            return Err(err(spec, format!("not an https:// URL; {usage}")));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(err(spec, format!("the URL has no host; {usage}")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err(
                spec,
                "credentials in the URL (user:password@) are not supported; use a pre-signed \
                 URL or put the model on a volume (pvc://)",
            ));
        }
        url.set_fragment(None);
        if url.path().trim_matches('/').is_empty() {
            return Err(err(spec, format!("the URL has no path; {usage}")));
        }
        let is_dir = url.path().ends_with('/');
        Ok(HttpsSpec { url, is_dir })
    }

    /// `<cache>/https/<host>[_<port>]/<sanitised path>`.
    pub fn cache_path(&self, cache_root: &Path) -> PathBuf {
        let host = self.url.host_str().unwrap_or("_");
        let host = match self.url.port() {
            Some(p) => format!("{host}_{p}"),
            None => host.to_string(),
        };
        let mut p = cache_root.join("https").join(sanitise(&host));
        for seg in self.url.path().split('/').filter(|s| !s.is_empty()) {
            p.push(sanitise(seg));
        }
        p
    }

    /// The URL of `file` inside a directory source (the directory's query kept).
    fn file_url(&self, spec: &str, file: &str) -> Result<Url> {
        let mut u = self
            .url
            .join(file)
            .map_err(|e| err(spec, format!("cannot form the URL of {file:?}: {e}")))?;
        u.set_query(self.url.query());
        Ok(u)
    }

    /// The name a model from this URL is served under by default: the last path segment,
    /// without `.gguf` for a file.
    pub fn default_name(&self) -> String {
        let last = self
            .url
            .path_segments()
            .and_then(|mut s| s.rfind(|s| !s.is_empty()))
            .unwrap_or("model");
        let last = percent_decode(last);
        if self.is_dir {
            return last;
        }
        match last.len().checked_sub(5) {
            Some(i) if last.is_char_boundary(i) && last[i..].eq_ignore_ascii_case(".gguf") => {
                last[..i].to_string()
            }
            _ => last,
        }
    }
}

/// A path segment as a file name: `[A-Za-z0-9._-]` kept, anything else `_`; a segment that had
/// to change (or starts with `.`, kept for the cache's own files) gets `-<8 hex of sha256>` of
/// the original so that distinct URLs keep distinct paths.
fn sanitise(seg: &str) -> String {
    let clean: String = seg
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == seg && !seg.starts_with('.') {
        return clean;
    }
    let h = Sha256::digest(seg.as_bytes());
    let clean = clean.trim_start_matches('.');
    format!("{clean}-{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolve with [`HttpOptions::from_env`] (`SSL_CERT_FILE`). Blocking.
pub fn resolve(spec: &str, cache_root: &Path, pin: Option<&Sha256Pin>) -> Result<ModelFiles> {
    resolve_with(spec, cache_root, pin, &HttpOptions::from_env())
}

/// Resolve an `https://` source into the cache. Blocking (network and disk).
pub fn resolve_with(
    spec: &str,
    cache_root: &Path,
    pin: Option<&Sha256Pin>,
    opts: &HttpOptions,
) -> Result<ModelFiles> {
    let s = HttpsSpec::parse(spec)?;
    let dest = s.cache_path(cache_root);
    if s.is_dir {
        resolve_dir(spec, &s, &dest, pin, opts)
    } else {
        resolve_file(spec, &s, &dest, pin, opts)
    }
}

/// Whether a file in the cache is present and, with a pin, matches it (the sha256 from its
/// sidecar). Changes nothing.
fn cached_ok(path: &Path, pin: Option<&Sha256Pin>) -> Result<bool> {
    if !path.is_file() {
        return Ok(false);
    }
    match pin {
        None => Ok(true),
        Some(pin) => Ok(pin.matches(&cached_sha256(path)?)),
    }
}

/// [`cached_ok`], and a present file that does not match is removed (with its sidecar) so that
/// it is downloaded again. Only under the entry's lock.
fn usable(path: &Path, pin: Option<&Sha256Pin>) -> Result<bool> {
    if cached_ok(path, pin)? {
        return Ok(true);
    }
    let Some(pin) = pin else { return Ok(false) };
    if !path.is_file() {
        return Ok(false);
    }
    let got = cached_sha256(path)?;
    tracing::warn!(
        file = %path.display(),
        sha256 = %got,
        pin = %pin,
        "the cached file does not match the sha256 pin; downloading it again"
    );
    std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    let _ = std::fs::remove_file(sidecar_path(path));
    Ok(false)
}

fn lock_path(dest: &Path, is_dir: bool) -> PathBuf {
    if is_dir {
        return dest.join(LOCK_SUFFIX);
    }
    let name = dest
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    dest.with_file_name(format!(".{name}{LOCK_SUFFIX}"))
}

fn resolve_file(
    spec: &str,
    s: &HttpsSpec,
    dest: &Path,
    pin: Option<&Sha256Pin>,
    opts: &HttpOptions,
) -> Result<ModelFiles> {
    if cached_ok(dest, pin)? {
        return Ok(ModelFiles::Gguf(dest.to_path_buf()));
    }
    // Look again under the lock: a process that waited for it finds the file the other one
    // finished.
    let _lock = CacheLock::acquire(&lock_path(dest, false), s.url.as_str())?;
    if !usable(dest, pin)? {
        let client = Client::new(spec, opts)?;
        client.download(
            &s.url,
            dest,
            REQUIRED,
            Expect {
                magic: Some(Magic {
                    bytes: GGUF_MAGIC,
                    kind: "a GGUF file",
                    hint: "give the URL of a .gguf file, or a URL ending in / for a Hugging \
                           Face model directory",
                }),
                sha256: pin,
            },
        )?;
    }
    Ok(ModelFiles::Gguf(dest.to_path_buf()))
}

fn resolve_dir(
    spec: &str,
    s: &HttpsSpec,
    dir: &Path,
    pin: Option<&Sha256Pin>,
    opts: &HttpOptions,
) -> Result<ModelFiles> {
    let marker = dir.join(MARKER);
    // Without the lock first: a complete directory whose weights match the pin (if any).
    if marker.is_file()
        && (pin.is_none()
            || !dir.join(INDEX_FILE).is_file() && cached_ok(&dir.join(SINGLE_FILE), pin)?)
    {
        return Ok(ModelFiles::HfDir(dir.to_path_buf()));
    }
    let _lock = CacheLock::acquire(&lock_path(dir, true), s.url.as_str())?;
    if marker.is_file() {
        if pin.is_none() {
            return Ok(ModelFiles::HfDir(dir.to_path_buf()));
        }
        // Pinned, and the weights did not pass above: go through the files again (those in place
        // are kept; the weights are checked against the pin and fetched anew when they fail).
        std::fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))?;
    }

    let client = Client::new(spec, opts)?;
    // Files already here came from an earlier, interrupted attempt: each was renamed into place
    // only once complete.
    let fetch = |file: &str, absent: &[u16], expect: Expect| -> Result<bool> {
        let dest = dir.join(file);
        if dest.is_file() {
            return Ok(true);
        }
        client.download(&s.file_url(spec, file)?, &dest, absent, expect)
    };
    let json = Expect::default();
    let layout = "a URL ending in / must be a Hugging Face model directory (config.json, \
                  tokenizer.json, model.safetensors or model.safetensors.index.json and its \
                  shards); for a GGUF file give the file's URL";
    if !fetch("config.json", NOT_FOUND, json)? {
        return Err(err(
            spec,
            format!(
                "there is no config.json at {}: {layout}",
                s.file_url(spec, "config.json")?
            ),
        ));
    }
    if !fetch("tokenizer.json", NOT_FOUND, json)? {
        return Err(err(
            spec,
            format!(
                "there is no tokenizer.json at {}: the server needs the model's tokenizer.json \
                 beside config.json",
                s.file_url(spec, "tokenizer.json")?
            ),
        ));
    }
    fetch("tokenizer_config.json", NOT_FOUND_PROBE, json)?;

    if fetch(INDEX_FILE, NOT_FOUND_PROBE, json)? {
        if pin.is_some() {
            return Err(sharded_error(spec));
        }
        let index = read_index(&dir.join(INDEX_FILE))?;
        for shard in &index.shards {
            fetch(shard, REQUIRED, Expect::default())?;
        }
    } else {
        // A copy left by an earlier attempt that fails the pin is removed, then fetched again.
        usable(&dir.join(SINGLE_FILE), pin)?;
        let expect = Expect {
            magic: None,
            sha256: pin,
        };
        if !fetch(SINGLE_FILE, NOT_FOUND, expect)? {
            return Err(err(
                spec,
                format!(
                    "there is neither {INDEX_FILE} nor {SINGLE_FILE} at {}: {layout}",
                    s.url
                ),
            ));
        }
    }
    write_small(dir, MARKER, "hfdir\n")?;
    Ok(ModelFiles::HfDir(dir.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s = HttpsSpec::parse("https://models.example/a/b/m.Q4_0.gguf?sig=1#frag").unwrap();
        assert!(!s.is_dir);
        assert_eq!(
            s.url.as_str(),
            "https://models.example/a/b/m.Q4_0.gguf?sig=1"
        );
        assert_eq!(s.default_name(), "m.Q4_0");
        let s = HttpsSpec::parse("https://models.example/llama-3.1-8b/").unwrap();
        assert!(s.is_dir);
        assert_eq!(s.default_name(), "llama-3.1-8b");
        assert_eq!(
            s.file_url("x", "config.json").unwrap().as_str(),
            "https://models.example/llama-3.1-8b/config.json"
        );
        let s = HttpsSpec::parse("https://h/d/?t=1").unwrap();
        assert_eq!(
            s.file_url("x", "a.json").unwrap().as_str(),
            "https://h/d/a.json?t=1"
        );

        let e = HttpsSpec::parse("http://h/m.gguf").unwrap_err().to_string();
        assert!(e.contains("plain http:// is refused"), "{e}");
        for (bad, says) in [
            ("https://", "not a valid URL"),
            ("https://h/", "no path"),
            ("https://h", "no path"),
            ("https://u:p@h/m.gguf", "credentials"),
        ] {
            let e = HttpsSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn cache_paths_are_sanitised_and_distinct() {
        let root = Path::new("/c");
        let p = |u: &str| HttpsSpec::parse(u).unwrap().cache_path(root);
        assert_eq!(
            p("https://Models.Example/a/b/m.gguf?sig=1"),
            Path::new("/c/https/models.example/a/b/m.gguf")
        );
        assert_eq!(p("https://h:8443/d/"), Path::new("/c/https/h_8443/d"));
        // `..` is resolved by URL parsing; odd characters are replaced and hashed.
        assert_eq!(p("https://h/a/../m.gguf"), Path::new("/c/https/h/m.gguf"));
        let spaced = p("https://h/my%20model.gguf");
        let under = p("https://h/my_model.gguf");
        assert_ne!(spaced, under);
        assert!(spaced
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("my_20model.gguf-"));
        let hidden = p("https://h/.ryzanstein-complete");
        assert!(!hidden
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with('.'));
        assert_eq!(
            HttpsSpec::parse("https://h/my%20model.gguf")
                .unwrap()
                .default_name(),
            "my model"
        );
    }
}
