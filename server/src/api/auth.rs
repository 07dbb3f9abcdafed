//! API keys: which callers may use the API, and the tenant each key belongs to.
//!
//! Keys come from `--api-key` (tenant `default`) and from `--api-key-file`, a file (a mounted
//! Secret, typically) with one key per line: `TENANT KEY`, or a bare `KEY` for tenant
//! `default`; blank lines and lines starting with `#` are skipped. The file is read again
//! when it changes (checked every [`RELOAD_EVERY`]); a file that no longer parses keeps the
//! keys read last and logs why.
//!
//! A request presents its key as `Authorization: Bearer KEY` (the OpenAI clients' way) or
//! `X-Api-Key: KEY`. Keys are compared as SHA-256 digests, every stored key in turn and with no
//! early exit, so the time taken says nothing about how much of a key matched or which one.
//! The probes and `/metrics` need no key. With no key configured, the API is open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiError;

/// How often `--api-key-file` is checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The tenant a request's key belongs to (a request extension once the key is checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

/// Tenant of keys given without one.
pub const DEFAULT_TENANT: &str = "default";

type Digest32 = [u8; 32];

fn digest(key: &[u8]) -> Digest32 {
    Sha256::digest(key).into()
}

/// Equality of two digests in time independent of where they differ.
fn same(a: &Digest32, b: &Digest32) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The accepted keys (as digests) and their tenants.
#[derive(Clone, Default)]
pub struct KeyTable {
    entries: Vec<(Digest32, String)>,
}

impl KeyTable {
    /// Keys of one tenant each, given on the command line.
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> KeyTable {
        KeyTable {
            entries: keys
                .into_iter()
                .map(|k| (digest(k.as_bytes()), DEFAULT_TENANT.to_owned()))
                .collect(),
        }
    }

    /// Parses a key file (see the module docs); the error names the line and what is wrong.
    pub fn parse(text: &str) -> Result<KeyTable, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (tenant, key) = match fields[..] {
                [key] => (DEFAULT_TENANT, key),
                [tenant, key] => (tenant, key),
                _ => {
                    return Err(format!(
                        "line {}: expected `TENANT KEY` or `KEY`, found {} fields",
                        i + 1,
                        fields.len()
                    ))
                }
            };
            entries.push((digest(key.as_bytes()), tenant.to_owned()));
        }
        Ok(KeyTable { entries })
    }

    /// Adds the entries of `other`.
    pub fn extend(&mut self, other: KeyTable) {
        self.entries.extend(other.entries);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tenant of `key`, comparing it with every entry.
    pub fn tenant_of(&self, key: &str) -> Option<&str> {
        let d = digest(key.as_bytes());
        let mut found = None;
        for (k, tenant) in &self.entries {
            if same(k, &d) && found.is_none() {
                found = Some(tenant.as_str());
            }
        }
        found
    }
}

/// The keys in force: those of the command line and those of the key file, reloaded when the
/// file changes.
pub struct ApiKeys {
    fixed: KeyTable,
    file: Option<PathBuf>,
    current: RwLock<(Arc<KeyTable>, Option<Stamp>)>,
}

/// What tells a changed key file: its modification time and length (an edit within the
/// file system's timestamp granularity usually changes the length).
type Stamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Counts only: not even a key's digest goes to a log.
impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyTable({} keys)", self.entries.len())
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.table().len())
            .field("file", &self.file)
            .finish()
    }
}

fn read_file(path: &Path) -> Result<(KeyTable, Option<Stamp>), String> {
    let modified = stamp(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?;
    let table = KeyTable::parse(&text)
        .map_err(|e| format!("the API key file {} is invalid: {e}", path.display()))?;
    Ok((table, modified))
}

impl ApiKeys {
    /// The keys of `keys` and of `file`; fails when the file cannot be read or parsed, or
    /// when the two give no key at all (which would leave the API open unawares).
    pub fn new(keys: &[String], file: Option<PathBuf>) -> Result<ApiKeys, String> {
        if keys.iter().any(|k| k.trim().is_empty()) {
            return Err("an --api-key is empty; give each key some characters".into());
        }
        let fixed = KeyTable::from_keys(keys.iter().map(String::as_str));
        let mut table = fixed.clone();
        let mut modified = None;
        if let Some(path) = &file {
            let (from_file, m) = read_file(path)?;
            table.extend(from_file);
            modified = m;
        }
        if table.is_empty() {
            return Err(format!(
                "no API key given: {} holds no key; add lines `TENANT KEY`, or leave out \
                 --api-key-file to serve without keys",
                file.as_deref().unwrap_or(Path::new("--api-key")).display()
            ));
        }
        Ok(ApiKeys {
            fixed,
            file,
            current: RwLock::new((Arc::new(table), modified)),
        })
    }

    /// The table in force now.
    pub fn table(&self) -> Arc<KeyTable> {
        self.current.read().expect("key table lock").0.clone()
    }

    /// Reads the key file again when its modification time or length changed; true when the keys were
    /// replaced. A file that cannot be read or parsed keeps the keys in force.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.file else {
            return false;
        };
        let modified = stamp(path);
        if modified == self.current.read().expect("key table lock").1 {
            return false;
        }
        match read_file(path) {
            Ok((from_file, m)) => {
                let mut table = self.fixed.clone();
                table.extend(from_file);
                tracing::info!(keys = table.len(), file = %path.display(), "API keys reloaded");
                *self.current.write().expect("key table lock") = (Arc::new(table), m);
                true
            }
            Err(e) => {
                tracing::error!("{e}; keeping the keys read before");
                // Do not log again until the file changes once more.
                self.current.write().expect("key table lock").1 = modified;
                false
            }
        }
    }

    /// Watches the key file for changes (a no-op without one).
    pub fn spawn_reloader(self: &Arc<Self>) {
        if self.file.is_none() {
            return;
        }
        let keys = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            loop {
                tick.tick().await;
                let Some(keys) = keys.upgrade() else { break };
                keys.reload_if_changed();
            }
        });
    }
}

/// The key a request presents, if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

/// Middleware: lets a request through with its [`Tenant`] when its key is valid, else 401.
pub async fn require_key(
    State(keys): State<Arc<ApiKeys>>,
    mut req: Request,
    next: Next,
) -> Response {
    let table = keys.table();
    let tenant = match presented(req.headers()) {
        None => {
            return ApiError::Unauthorized {
                message: "this server requires an API key: send `Authorization: Bearer KEY` \
                          (or `X-Api-Key: KEY`)"
                    .into(),
            }
            .into_response()
        }
        Some(key) => match table.tenant_of(key) {
            Some(t) => t.to_owned(),
            None => {
                return ApiError::Unauthorized {
                    message: "the API key is not valid for this server; check the key your \
                              platform team gave you"
                        .into(),
                }
                .into_response()
            }
        },
    };
    req.extensions_mut().insert(Tenant(tenant));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_map_keys_to_tenants_and_bad_lines_are_named() {
        let t = KeyTable::parse("# keys\nteam-a sk-a1\n\nteam-b sk-b1\nsk-plain\n").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.tenant_of("sk-a1"), Some("team-a"));
        assert_eq!(t.tenant_of("sk-b1"), Some("team-b"));
        assert_eq!(t.tenant_of("sk-plain"), Some(DEFAULT_TENANT));
        assert_eq!(t.tenant_of("sk-a"), None, "a prefix of a key is not a key");
        assert_eq!(t.tenant_of(""), None);
        let e = KeyTable::parse("team-a sk-1\nteam b sk-2\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("3 fields"), "{e}");
    }

    #[test]
    fn digests_compare_whole() {
        let a = digest(b"k1");
        let mut b = a;
        assert!(same(&a, &b));
        b[31] ^= 1;
        assert!(!same(&a, &b));
    }

    #[test]
    fn the_file_is_reloaded_when_it_changes_and_kept_when_it_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "team-a sk-old\n").unwrap();
        let keys = ApiKeys::new(&["sk-cli".into()], Some(path.clone())).unwrap();
        assert_eq!(keys.table().tenant_of("sk-old"), Some("team-a"));
        assert!(!keys.reload_if_changed(), "unchanged file");

        let set_mtime = |secs: u64| {
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .unwrap();
        };
        std::fs::write(&path, "team-a sk-new\n").unwrap();
        set_mtime(1_000);
        assert!(keys.reload_if_changed());
        let t = keys.table();
        assert_eq!(t.tenant_of("sk-old"), None, "a removed key stops working");
        assert_eq!(t.tenant_of("sk-new"), Some("team-a"));
        assert_eq!(
            t.tenant_of("sk-cli"),
            Some(DEFAULT_TENANT),
            "command-line keys stay"
        );

        std::fs::write(&path, "a b c\n").unwrap();
        set_mtime(2_000);
        assert!(!keys.reload_if_changed());
        assert_eq!(keys.table().tenant_of("sk-new"), Some("team-a"), "kept");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# nothing\n").unwrap();
        let e = ApiKeys::new(&[], Some(empty)).err().unwrap();
        assert!(e.contains("no API key"), "{e}");
        let e = ApiKeys::new(&[" ".into()], None).err().unwrap();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert("x-api-key", "sk-x".parse().unwrap());
        assert_eq!(presented(&h), Some("sk-x"));
        h.insert("authorization", "Bearer sk-b".parse().unwrap());
        assert_eq!(presented(&h), Some("sk-b"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(presented(&h), None);
    }
}
