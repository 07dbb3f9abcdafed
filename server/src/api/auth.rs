//! API keys: which callers may use the API, and the tenant each key belongs to.
//!
//! Keys come from `--api-key` (tenant `default`) and from `--api-key-file`, a file (a mounted
//! Secret, typically) with one key per line: `TENANT KEY`, or a bare `KEY` for tenant
//! `default`; blank lines and lines starting with `#` are skipped. The file is read again
//! when it changes (see [`watched`]); a file that no longer parses keeps the keys read last
//! and logs why.
//!
//! A request presents its key as `Authorization: Bearer KEY` (the OpenAI clients' way) or
//! `X-Api-Key: KEY`. Keys are compared as SHA-256 digests, every stored key in turn and with no
//! early exit, so the time taken says nothing about how much of a key matched or which one.
//! The probes and `/metrics` need no key. With no key configured, the API is open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::watched::{self, WatchedFile};
use super::ApiError;

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
    file: Option<WatchedFile<KeyTable>>,
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
            .field("keys", &self.len())
            .field("file", &self.file)
            .finish()
    }
}

impl ApiKeys {
    /// The keys of `keys` and of `file`; fails when the file cannot be read or parsed, or
    /// when the two give no key at all (which would leave the API open unawares).
    pub fn new(keys: &[String], file: Option<PathBuf>) -> Result<ApiKeys, String> {
        if keys.iter().any(|k| k.trim().is_empty()) {
            return Err("an --api-key is empty; give each key some characters".into());
        }
        let fixed = KeyTable::from_keys(keys.iter().map(String::as_str));
        let file = file
            .map(|path| WatchedFile::open(path, "API key file", KeyTable::parse))
            .transpose()?;
        let keys = ApiKeys { fixed, file };
        if keys.is_empty() {
            return Err(format!(
                "no API key given: {} holds no key; add lines `TENANT KEY`, or leave out \
                 --api-key-file to serve without keys",
                keys.file
                    .as_ref()
                    .map_or(Path::new("--api-key"), |f| f.path())
                    .display()
            ));
        }
        Ok(keys)
    }

    /// Keys in force now.
    pub fn len(&self) -> usize {
        self.fixed.len() + self.file.as_ref().map_or(0, |f| f.get().len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tenant of `key`, comparing it with every key in force (command line first).
    pub fn tenant_of(&self, key: &str) -> Option<String> {
        let from_file = self.file.as_ref().map(|f| f.get());
        let in_file = from_file.as_ref().and_then(|t| t.tenant_of(key));
        self.fixed.tenant_of(key).or(in_file).map(str::to_owned)
    }

    /// Reads the key file again when it changed; true when the keys were replaced. A file
    /// that cannot be read or parsed keeps the keys in force.
    pub fn reload_if_changed(&self) -> bool {
        self.file.as_ref().is_some_and(|f| f.reload_if_changed())
    }

    /// Watches the key file for changes (a no-op without one).
    pub fn spawn_reloader(self: &Arc<Self>) {
        if self.file.is_some() {
            watched::spawn_reloader(self, |keys| {
                keys.reload_if_changed();
            });
        }
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
    let tenant = match presented(req.headers()) {
        None => {
            return ApiError::Unauthorized {
                message: "this server requires an API key: send `Authorization: Bearer KEY` \
                          (or `X-Api-Key: KEY`)"
                    .into(),
            }
            .into_response()
        }
        Some(key) => match keys.tenant_of(key) {
            Some(t) => t,
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
    use super::super::watched::tests::set_mtime;
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
        assert_eq!(keys.tenant_of("sk-old").as_deref(), Some("team-a"));
        assert!(!keys.reload_if_changed(), "unchanged file");

        std::fs::write(&path, "team-a sk-new\n").unwrap();
        set_mtime(&path, 1_000);
        assert!(keys.reload_if_changed());
        assert_eq!(
            keys.tenant_of("sk-old"),
            None,
            "a removed key stops working"
        );
        assert_eq!(keys.tenant_of("sk-new").as_deref(), Some("team-a"));
        assert_eq!(
            keys.tenant_of("sk-cli").as_deref(),
            Some(DEFAULT_TENANT),
            "command-line keys stay"
        );

        std::fs::write(&path, "a b c\n").unwrap();
        set_mtime(&path, 2_000);
        assert!(!keys.reload_if_changed());
        assert_eq!(keys.tenant_of("sk-new").as_deref(), Some("team-a"), "kept");

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
