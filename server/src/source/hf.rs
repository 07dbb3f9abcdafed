//! `hf://org/repo[@rev][#file.gguf]`: files from a Hugging Face Hub (or a mirror at
//! `HF_ENDPOINT`), downloaded into `<cache>/hf/<org>/<repo>/<commit>/`.
//!
//! Listing: `GET {endpoint}/api/models/{org}/{repo}/revision/{rev}` (JSON with `sha` and
//! `siblings[].rfilename`). Files: `GET {endpoint}/{org}/{repo}/resolve/{commit}/{file}`, streamed
//! to a temporary file and renamed. A repository with `.gguf` files resolves to one of them
//! (`#file` picks; else the first of Q4_1, Q4_0, Q8_0, F16, BF16, F32 by name); otherwise to a
//! Hugging Face directory (config.json, tokenizer files, safetensors weights and shards).
//!
//! `<cache>/hf/<org>/<repo>/refs/<rev>` remembers the commit a revision resolved to and a
//! snapshot marker records a complete download, so resolving the same spec again makes no
//! network request. Delete the refs file to pick up a newer commit of a branch.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cache::{write_small, TempFile};
use super::ModelFiles;
use crate::error::{Error, Result};
use crate::safetensors_dir::{read_index, INDEX_FILE, SINGLE_FILE};

/// The public Hugging Face Hub, used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Written into a snapshot once the default selection is complete: `gguf <file>` or `hfdir`.
const MARKER: &str = ".ryzanstein-complete";
/// Preferred GGUF quantisations, best first (those the kernels compute with).
const GGUF_PREFERENCE: &[&str] = &["q4_1", "q4_0", "q8_0", "f16", "bf16", "f32"];
/// Files fetched beside the weights of a Hugging Face directory, when the repository has them.
const DIR_EXTRAS: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
];

/// Where and as whom to talk to the Hub.
#[derive(Debug, Clone)]
pub struct HfOptions {
    /// Base URL without a trailing slash.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

impl HfOptions {
    /// `HF_ENDPOINT` (default [`DEFAULT_ENDPOINT`]) and `HF_TOKEN`.
    pub fn from_env() -> HfOptions {
        let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        HfOptions {
            endpoint: nonempty("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            token: nonempty("HF_TOKEN").map(|t| t.trim().to_string()),
        }
    }
}

/// A parsed `hf://` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfSpec {
    pub org: String,
    pub repo: String,
    pub rev: String,
    /// `#file`: the GGUF file to use.
    pub file: Option<String>,
}

fn err(spec: &str, what: impl Into<String>) -> Error {
    Error::Source {
        source_spec: spec.to_string(),
        what: what.into(),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A relative path from the repository that is safe to create under the snapshot directory.
fn safe_rel_path(f: &str) -> bool {
    !f.is_empty()
        && !f.contains('\\')
        && f.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with(".ryzanstein"))
}

impl HfSpec {
    /// Parse the part after `hf://`: `org/repo[@rev][#file]`.
    pub fn parse(spec: &str, body: &str) -> Result<HfSpec> {
        let usage = "expected hf://org/repo, hf://org/repo@revision or hf://org/repo#file.gguf";
        let (rest, file) = match body.split_once('#') {
            Some((r, f)) => (r, Some(f.to_string())),
            None => (body, None),
        };
        let (repo_path, rev) = match rest.split_once('@') {
            Some((p, r)) => (p, r.to_string()),
            None => (rest, "main".to_string()),
        };
        let mut parts = repo_path.trim_end_matches('/').split('/');
        let (org, repo) = match (parts.next(), parts.next(), parts.next()) {
            (Some(o), Some(r), None) if is_name(o) && is_name(r) => (o.to_string(), r.to_string()),
            _ => {
                return Err(err(
                    spec,
                    format!("{repo_path:?} is not an org/repo name; {usage}"),
                ))
            }
        };
        if rev.is_empty() || !rev.split('/').all(is_name) {
            return Err(err(spec, format!("bad revision {rev:?}; {usage}")));
        }
        if let Some(f) = &file {
            if !safe_rel_path(f) || !f.to_lowercase().ends_with(".gguf") {
                return Err(err(
                    spec,
                    format!("#{f} must name a .gguf file of the repository; {usage}"),
                ));
            }
        }
        Ok(HfSpec {
            org,
            repo,
            rev,
            file,
        })
    }

    /// The revision as one URL path segment (`refs/pr/1` -> `refs%2Fpr%2F1`).
    fn rev_segment(&self) -> String {
        self.rev.replace('/', "%2F")
    }

    fn repo_dir(&self, cache_root: &Path) -> PathBuf {
        cache_root.join("hf").join(&self.org).join(&self.repo)
    }
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolve with [`HfOptions::from_env`]. Blocking.
pub fn resolve(spec: &str, body: &str, cache_root: &Path) -> Result<ModelFiles> {
    resolve_with(spec, body, cache_root, &HfOptions::from_env())
}

/// Resolve `hf://` + `body` against `opts.endpoint`. Blocking (network and disk).
pub fn resolve_with(
    spec: &str,
    body: &str,
    cache_root: &Path,
    opts: &HfOptions,
) -> Result<ModelFiles> {
    let s = HfSpec::parse(spec, body)?;
    let repo_dir = s.repo_dir(cache_root);
    let ref_file = repo_dir.join("refs").join(s.rev_segment());

    // Offline: a known commit with a complete snapshot.
    let known = if is_commit(&s.rev) {
        Some(s.rev.to_lowercase())
    } else {
        std::fs::read_to_string(&ref_file)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|c| is_commit(c))
    };
    if let Some(commit) = &known {
        if let Some(found) = complete_snapshot(&s, &repo_dir.join(commit)) {
            return Ok(found);
        }
    }

    // Online: list the revision, choose, download what is missing.
    let hub = Hub::new(spec, opts)?;
    let listing = hub.list(&s)?;
    let snapshot = repo_dir.join(&listing.sha);
    let choice = choose(spec, &s, &listing.files)?;
    let mut wanted: Vec<String> = match &choice {
        Choice::Gguf(f) => vec![f.clone()],
        Choice::Dir { files } => files.clone(),
    };
    let mut i = 0;
    while i < wanted.len() {
        let f = wanted[i].clone();
        hub.fetch(&s, &listing.sha, &f, &snapshot)?;
        if f == INDEX_FILE {
            let index = read_index(&snapshot.join(INDEX_FILE))?;
            for shard in index.shards {
                if !listing.files.contains(&shard) {
                    return Err(err(
                        spec,
                        format!(
                            "{INDEX_FILE} names shard {shard:?}, which the repository does not \
                             have at {}",
                            listing.sha
                        ),
                    ));
                }
                if !wanted.contains(&shard) {
                    wanted.push(shard);
                }
            }
        }
        i += 1;
    }

    if s.file.is_none() {
        let marker = match &choice {
            Choice::Gguf(f) => format!("gguf {f}\n"),
            Choice::Dir { .. } => "hfdir\n".to_string(),
        };
        write_small(&snapshot, MARKER, &marker)?;
    }
    if !is_commit(&s.rev) {
        write_small(&repo_dir.join("refs"), &s.rev_segment(), &listing.sha)?;
    }
    Ok(match choice {
        Choice::Gguf(f) => ModelFiles::Gguf(snapshot.join(f)),
        Choice::Dir { .. } => ModelFiles::HfDir(snapshot),
    })
}

/// What a complete snapshot resolves to for `s`, if it is complete.
fn complete_snapshot(s: &HfSpec, snapshot: &Path) -> Option<ModelFiles> {
    if let Some(f) = &s.file {
        // Files are renamed into place only once fully downloaded.
        let p = snapshot.join(f);
        return p.is_file().then_some(ModelFiles::Gguf(p));
    }
    let marker = std::fs::read_to_string(snapshot.join(MARKER)).ok()?;
    let marker = marker.trim();
    if marker == "hfdir" {
        return Some(ModelFiles::HfDir(snapshot.to_path_buf()));
    }
    let f = marker.strip_prefix("gguf ")?;
    let p = snapshot.join(f);
    (safe_rel_path(f) && p.is_file()).then_some(ModelFiles::Gguf(p))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    Gguf(String),
    Dir { files: Vec<String> },
}

fn choose(spec: &str, s: &HfSpec, files: &[String]) -> Result<Choice> {
    let ggufs: Vec<&String> = files
        .iter()
        .filter(|f| f.to_lowercase().ends_with(".gguf"))
        .collect();
    if let Some(f) = &s.file {
        return if files.contains(f) {
            Ok(Choice::Gguf(f.clone()))
        } else {
            Err(err(
                spec,
                format!(
                    "the repository has no file {f:?} at revision {}; its .gguf files: {}",
                    s.rev,
                    list(&ggufs)
                ),
            ))
        };
    }
    if !ggufs.is_empty() {
        for q in GGUF_PREFERENCE {
            if let Some(f) = ggufs.iter().find(|f| quant_tag(f).as_deref() == Some(q)) {
                return Ok(Choice::Gguf((*f).clone()));
            }
        }
        if ggufs.len() == 1 {
            return Ok(Choice::Gguf(ggufs[0].clone()));
        }
        return Err(err(
            spec,
            format!(
                "the repository has several .gguf files and none is Q4_1, Q4_0, Q8_0, F16, BF16 \
                 or F32; pick one with hf://{}/{}#FILE: {}",
                s.org,
                s.repo,
                list(&ggufs)
            ),
        ));
    }
    let has = |f: &str| files.iter().any(|x| x == f);
    if !has("config.json") {
        return Err(err(
            spec,
            format!(
                "the repository has neither .gguf files nor config.json at revision {}; it is not \
                 a model this server can load",
                s.rev
            ),
        ));
    }
    let weights = if has(SINGLE_FILE) {
        SINGLE_FILE
    } else if has(INDEX_FILE) {
        INDEX_FILE
    } else {
        return Err(err(
            spec,
            format!(
                "the repository has config.json but neither {SINGLE_FILE} nor {INDEX_FILE} \
                 (PyTorch .bin weights are not supported; use a safetensors or GGUF repository)"
            ),
        ));
    };
    let mut out = vec!["config.json".to_string()];
    out.extend(DIR_EXTRAS.iter().filter(|f| has(f)).map(|f| f.to_string()));
    out.push(weights.to_string());
    Ok(Choice::Dir { files: out })
}

/// The quantisation tag of a GGUF file name: the last `-` or `.` separated part before
/// `.gguf`, lower-cased (`SmolLM2-135M-Instruct.Q4_1.gguf` -> `q4_1`).
fn quant_tag(f: &str) -> Option<String> {
    let name = f.rsplit('/').next()?;
    let stem = &name[..name.len().checked_sub(5)?];
    stem.rsplit(['-', '.']).next().map(|t| t.to_lowercase())
}

fn list(files: &[&String]) -> String {
    if files.is_empty() {
        "none".to_string()
    } else {
        files
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Listing {
    sha: String,
    files: Vec<String>,
}

/// A blocking HTTP client for one endpoint.
struct Hub<'a> {
    spec: &'a str,
    opts: &'a HfOptions,
    client: reqwest::blocking::Client,
}

impl<'a> Hub<'a> {
    fn new(spec: &'a str, opts: &'a HfOptions) -> Result<Hub<'a>> {
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("ryzanstein/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // Model files are large: no overall deadline.
            .timeout(None::<Duration>)
            .build()
            .map_err(|e| err(spec, format!("could not build an HTTP client: {e}")))?;
        Ok(Hub { spec, opts, client })
    }

    fn get(&self, url: &str) -> Result<reqwest::blocking::Response> {
        let mut req = self.client.get(url);
        if let Some(t) = &self.opts.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().map_err(|e| {
            err(
                self.spec,
                format!(
                    "GET {url} failed: {e}; check network access to {} (set HF_ENDPOINT for a \
                     mirror)",
                    self.opts.endpoint
                ),
            )
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let mut body = String::new();
        let _ = resp.take(512).read_to_string(&mut body);
        let hint = match status.as_u16() {
            401 | 403 => {
                if self.opts.token.is_some() {
                    "the token in HF_TOKEN has no access to this repository (for a gated model, \
                     accept its terms on the Hub first)"
                } else {
                    "the repository is private or gated: set HF_TOKEN to an access token"
                }
            }
            404 => "check the repository name, the revision and the file name",
            429 => "rate limited: wait and try again, or set HF_TOKEN",
            500..=599 => "the server failed: try again later",
            _ => "unexpected response",
        };
        let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
        Err(err(
            self.spec,
            format!(
                "HTTP {status} from GET {url}: {hint}{}",
                if body.is_empty() {
                    String::new()
                } else {
                    format!(" (server said: {body})")
                }
            ),
        ))
    }

    fn list(&self, s: &HfSpec) -> Result<Listing> {
        let url = format!(
            "{}/api/models/{}/{}/revision/{}",
            self.opts.endpoint,
            s.org,
            s.repo,
            s.rev_segment()
        );
        let resp = self.get(&url)?;
        let json: serde_json::Value = resp
            .json()
            .map_err(|e| err(self.spec, format!("GET {url} returned invalid JSON: {e}")))?;
        let sha = json
            .get("sha")
            .and_then(|v| v.as_str())
            .filter(|v| is_name(v))
            .ok_or_else(|| {
                err(
                    self.spec,
                    format!("GET {url} returned no usable \"sha\" (commit id)"),
                )
            })?
            .to_string();
        let files = json
            .get("siblings")
            .and_then(|v| v.as_array())
            .ok_or_else(|| {
                err(
                    self.spec,
                    format!("GET {url} returned no \"siblings\" (file list)"),
                )
            })?
            .iter()
            .filter_map(|f| f.get("rfilename")?.as_str())
            .filter(|f| safe_rel_path(f))
            .map(str::to_string)
            .collect();
        Ok(Listing { sha, files })
    }

    /// Download `file` at `commit` into `snapshot/file` unless it is already there.
    fn fetch(&self, s: &HfSpec, commit: &str, file: &str, snapshot: &Path) -> Result<()> {
        let dest = snapshot.join(file);
        if dest.is_file() {
            return Ok(());
        }
        let url = format!(
            "{}/{}/{}/resolve/{commit}/{file}",
            self.opts.endpoint, s.org, s.repo
        );
        let mut resp = self.get(&url)?;
        let expected = resp.content_length();
        let dir = dest.parent().unwrap_or(snapshot);
        let mut tmp = TempFile::new_in(dir, file)?;
        tracing::info!(%url, dest = %dest.display(), bytes = expected, "downloading");
        let n = std::io::copy(&mut resp, tmp.file()).map_err(|e| {
            err(
                self.spec,
                format!("downloading {url} to {}: {e}", tmp.path().display()),
            )
        })?;
        if let Some(len) = expected {
            if n != len {
                return Err(err(
                    self.spec,
                    format!(
                        "downloading {url}: got {n} of {len} bytes (connection cut); try again"
                    ),
                ));
            }
        }
        tmp.persist(&dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(body: &str) -> Result<HfSpec> {
        HfSpec::parse(&format!("hf://{body}"), body)
    }

    #[test]
    fn specs_parse() {
        let s = p("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        assert_eq!(
            (s.org.as_str(), s.repo.as_str(), s.rev.as_str(), s.file),
            ("HuggingFaceTB", "SmolLM2-135M-Instruct", "main", None)
        );
        let s = p("a/b@v1.0#sub/m.Q4_0.gguf").unwrap();
        assert_eq!(
            (s.rev.as_str(), s.file.as_deref()),
            ("v1.0", Some("sub/m.Q4_0.gguf"))
        );
        assert_eq!(p("a/b@refs/pr/1").unwrap().rev_segment(), "refs%2Fpr%2F1");
        for bad in [
            "a",
            "a/b/c",
            "../b",
            "a/..",
            "a/b@",
            "a/b@x y",
            "a/b#x.bin",
            "a/b#../x.gguf",
            "/a/b",
        ] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains("expected hf://org/repo"), "{bad}: {e}");
        }
    }

    #[test]
    fn quant_tags_and_choice() {
        assert_eq!(
            quant_tag("SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(),
            Some("q4_1")
        );
        assert_eq!(quant_tag("x/model-q8_0.gguf").as_deref(), Some("q8_0"));
        let s = p("a/b").unwrap();
        let files = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = choose(
            "x",
            &s,
            &files(&["m.Q4_K_M.gguf", "m.Q8_0.gguf", "m.Q4_0.gguf"]),
        )
        .unwrap();
        assert_eq!(c, Choice::Gguf("m.Q4_0.gguf".into()));
        let c = choose("x", &s, &files(&["only.gguf", "README.md"])).unwrap();
        assert_eq!(c, Choice::Gguf("only.gguf".into()));
        let e = choose("x", &s, &files(&["m.Q4_K_M.gguf", "m.Q5_K.gguf"])).unwrap_err();
        assert!(e.to_string().contains("#FILE") && e.to_string().contains("m.Q5_K.gguf"));

        let c = choose(
            "x",
            &s,
            &files(&[
                "config.json",
                "tokenizer.json",
                INDEX_FILE,
                "a.safetensors",
                "README.md",
            ]),
        )
        .unwrap();
        assert_eq!(
            c,
            Choice::Dir {
                files: files(&["config.json", "tokenizer.json", INDEX_FILE])
            }
        );
        let e = choose("x", &s, &files(&["config.json", "pytorch_model.bin"])).unwrap_err();
        assert!(e.to_string().contains(".bin weights are not supported"));
        let e = choose("x", &s, &files(&["README.md"])).unwrap_err();
        assert!(e
            .to_string()
            .contains("neither .gguf files nor config.json"));

        let s = p("a/b#m.Q4_K_M.gguf").unwrap();
        let c = choose("x", &s, &files(&["m.Q4_K_M.gguf", "m.Q4_0.gguf"])).unwrap();
        assert_eq!(c, Choice::Gguf("m.Q4_K_M.gguf".into()));
        let e = choose("x", &s, &files(&["m.Q4_0.gguf"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no file \"m.Q4_K_M.gguf\"") && e.contains("m.Q4_0.gguf"),
            "{e}"
        );
    }

    #[test]
    fn unsafe_repository_paths_are_refused() {
        for bad in [
            "../x",
            "a/../b",
            "/abs",
            "a//b",
            "a\\b",
            ".ryzanstein-complete",
            "",
        ] {
            assert!(!safe_rel_path(bad), "{bad}");
        }
        assert!(safe_rel_path("1_Pooling/config.json"));
    }
}
