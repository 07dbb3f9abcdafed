//! `hf://` against a fake Hub: a std HTTP server on 127.0.0.1 serving the Hub's listing and
//! file URLs for one repository, counting requests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ryzanstein_server::safetensors_dir::HfDir;
use ryzanstein_server::source::hf::{resolve_with, HfOptions};
use ryzanstein_server::source::{self, ModelFiles};
use safetensors::tensor::{Dtype, TensorView};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// One response: status, body, and an optional Content-Length that lies (for cut downloads).
#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    claimed_len: Option<usize>,
}

#[derive(Default)]
struct Log {
    paths: Vec<String>,
    auth: Vec<Option<String>>,
}

struct FakeHub {
    endpoint: String,
    log: Arc<Mutex<Log>>,
}

impl FakeHub {
    /// Serve `routes` (path -> reply); anything else is a 404 with a Hub-like JSON error.
    fn start(routes: HashMap<String, Reply>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            auth = Some(v.trim().to_string());
                        }
                    }
                }
                {
                    let mut l = log2.lock().unwrap();
                    l.paths.push(path.clone());
                    l.auth.push(auth);
                }
                let reply = routes.get(&path).cloned().unwrap_or(Reply {
                    status: 404,
                    body: br#"{"error":"Repository not found"}"#.to_vec(),
                    claimed_len: None,
                });
                let head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    reply.status,
                    reply.claimed_len.unwrap_or(reply.body.len())
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&reply.body);
                let _ = stream.flush();
            }
        });
        FakeHub { endpoint, log }
    }

    fn opts(&self, token: Option<&str>) -> HfOptions {
        HfOptions {
            endpoint: self.endpoint.clone(),
            token: token.map(str::to_string),
        }
    }

    fn requests(&self) -> usize {
        self.log.lock().unwrap().paths.len()
    }

    fn paths(&self) -> Vec<String> {
        self.log.lock().unwrap().paths.clone()
    }
}

fn ok(body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status: 200,
        body: body.into(),
        claimed_len: None,
    }
}

fn shard(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.to_string(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, &None).unwrap()
}

/// A sharded safetensors repository: routes and the files' bytes by name.
fn sharded_repo(org_repo: &str) -> (HashMap<String, Reply>, HashMap<&'static str, Vec<u8>>) {
    let mut files: HashMap<&'static str, Vec<u8>> = HashMap::new();
    files.insert("config.json", br#"{"model_type": "llama"}"#.to_vec());
    files.insert("tokenizer.json", br#"{"version": "1.0"}"#.to_vec());
    files.insert(
        "tokenizer_config.json",
        br#"{"chat_template": "x"}"#.to_vec(),
    );
    files.insert("README.md", b"# not fetched".to_vec());
    files.insert("pytorch_model.bin", b"not fetched either".to_vec());
    files.insert(
        "model-00001-of-00002.safetensors",
        shard(&[("a", vec![2], vec![1.0, 2.0])]),
    );
    files.insert(
        "model-00002-of-00002.safetensors",
        shard(&[("b", vec![1, 2], vec![3.0, 4.0])]),
    );
    files.insert(
        "model.safetensors.index.json",
        br#"{"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}"#
            .to_vec(),
    );
    let siblings: Vec<serde_json::Value> = files
        .keys()
        .map(|f| serde_json::json!({ "rfilename": f }))
        .collect();
    let listing = serde_json::json!({ "id": org_repo, "sha": SHA, "siblings": siblings });
    let mut routes = HashMap::new();
    routes.insert(
        format!("/api/models/{org_repo}/revision/main"),
        ok(listing.to_string()),
    );
    for (name, bytes) in &files {
        routes.insert(
            format!("/{org_repo}/resolve/{SHA}/{name}"),
            ok(bytes.clone()),
        );
    }
    (routes, files)
}

#[test]
fn sharded_repo_lands_in_the_cache_and_is_reused_offline() {
    let (routes, files) = sharded_repo("acme/tiny");
    let hub = FakeHub::start(routes);
    let cache = tempfile::tempdir().unwrap();
    let spec = "hf://acme/tiny";
    let got = resolve_with(spec, "acme/tiny", cache.path(), &hub.opts(Some("secret"))).unwrap();
    let snapshot = cache.path().join("hf/acme/tiny").join(SHA);
    assert_eq!(got, ModelFiles::HfDir(snapshot.clone()));

    for name in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert_eq!(
            std::fs::read(snapshot.join(name)).unwrap(),
            files[name],
            "{name}"
        );
    }
    assert!(!snapshot.join("README.md").exists());
    assert!(!snapshot.join("pytorch_model.bin").exists());
    // One listing and six files, each with the token.
    assert_eq!(hub.requests(), 7, "{:?}", hub.paths());
    assert!(hub
        .log
        .lock()
        .unwrap()
        .auth
        .iter()
        .all(|a| a.as_deref() == Some("Bearer secret")));

    let hf = HfDir::open(&snapshot).unwrap();
    assert_eq!(hf.tensor("b").unwrap().to_f32_vec(), vec![3.0, 4.0]);
    assert_eq!(hf.tensor("b").unwrap().shape, vec![1, 2]);

    // Again: no network at all, by branch name and by commit.
    let again = resolve_with(spec, "acme/tiny", cache.path(), &hub.opts(None)).unwrap();
    assert_eq!(again, got);
    let by_commit = format!("acme/tiny@{SHA}");
    let again = resolve_with(spec, &by_commit, cache.path(), &hub.opts(None)).unwrap();
    assert_eq!(again, got);
    assert_eq!(hub.requests(), 7);
}

#[test]
fn gguf_repo_prefers_a_supported_quantisation_and_honours_file_selection() {
    let org_repo = "acme/tiny-gguf";
    let names = ["m.Q4_K_M.gguf", "m.Q8_0.gguf", "m.Q4_1.gguf", "README.md"];
    let siblings: Vec<serde_json::Value> = names
        .iter()
        .map(|f| serde_json::json!({ "rfilename": f }))
        .collect();
    let mut routes = HashMap::new();
    routes.insert(
        format!("/api/models/{org_repo}/revision/v2"),
        ok(serde_json::json!({ "sha": SHA, "siblings": siblings }).to_string()),
    );
    for n in names {
        routes.insert(
            format!("/{org_repo}/resolve/{SHA}/{n}"),
            ok(format!("GGUF bytes of {n}")),
        );
    }
    let hub = FakeHub::start(routes);
    let cache = tempfile::tempdir().unwrap();
    let snapshot = cache.path().join("hf").join(org_repo).join(SHA);

    let got = resolve_with("s", "acme/tiny-gguf@v2", cache.path(), &hub.opts(None)).unwrap();
    assert_eq!(got, ModelFiles::Gguf(snapshot.join("m.Q4_1.gguf")));
    assert_eq!(
        std::fs::read_to_string(snapshot.join("m.Q4_1.gguf")).unwrap(),
        "GGUF bytes of m.Q4_1.gguf"
    );
    assert_eq!(hub.requests(), 2);
    assert!(!snapshot.join("m.Q8_0.gguf").exists());

    let pick = "acme/tiny-gguf@v2#m.Q8_0.gguf";
    let got = resolve_with("s", pick, cache.path(), &hub.opts(None)).unwrap();
    assert_eq!(got, ModelFiles::Gguf(snapshot.join("m.Q8_0.gguf")));
    assert_eq!(hub.requests(), 4);

    // Both selections are now served from the cache.
    resolve_with("s", "acme/tiny-gguf@v2", cache.path(), &hub.opts(None)).unwrap();
    resolve_with("s", pick, cache.path(), &hub.opts(None)).unwrap();
    assert_eq!(hub.requests(), 4);

    let e = resolve_with(
        "s",
        "acme/tiny-gguf@v2#nope.gguf",
        cache.path(),
        &hub.opts(None),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no file \"nope.gguf\"") && e.contains("m.Q4_1.gguf"),
        "{e}"
    );
}

#[test]
fn http_errors_name_status_url_and_what_to_do() {
    let mut routes = HashMap::new();
    routes.insert(
        "/api/models/acme/private/revision/main".to_string(),
        Reply {
            status: 401,
            body: br#"{"error":"Invalid credentials"}"#.to_vec(),
            claimed_len: None,
        },
    );
    let hub = FakeHub::start(routes);
    let cache = tempfile::tempdir().unwrap();

    let e = resolve_with(
        "hf://acme/missing",
        "acme/missing",
        cache.path(),
        &hub.opts(None),
    )
    .unwrap_err()
    .to_string();
    let url = format!("{}/api/models/acme/missing/revision/main", hub.endpoint);
    assert!(e.contains("404") && e.contains(&url), "{e}");
    assert!(
        e.contains("check the repository name") && e.contains("hf://acme/missing"),
        "{e}"
    );
    assert!(e.contains("Repository not found"), "{e}");

    let e = resolve_with("s", "acme/private", cache.path(), &hub.opts(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && e.contains("set HF_TOKEN"), "{e}");
    let e = resolve_with("s", "acme/private", cache.path(), &hub.opts(Some("t")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && e.contains("has no access"), "{e}");

    // Nothing listens here any more.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let opts = HfOptions {
        endpoint: dead.clone(),
        token: None,
    };
    let e = resolve_with("s", "acme/x", cache.path(), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("failed") && e.contains(&dead), "{e}");
}

#[test]
fn a_cut_download_leaves_nothing_behind() {
    let (mut routes, _) = sharded_repo("acme/cut");
    let key = format!("/acme/cut/resolve/{SHA}/model-00002-of-00002.safetensors");
    let mut r = routes[&key].clone();
    r.claimed_len = Some(r.body.len() + 100);
    routes.insert(key, r);
    let hub = FakeHub::start(routes);
    let cache = tempfile::tempdir().unwrap();
    let e = resolve_with("s", "acme/cut", cache.path(), &hub.opts(None)).unwrap_err();
    assert!(
        e.to_string().contains("model-00002-of-00002.safetensors"),
        "{e}"
    );
    let snapshot = cache.path().join("hf/acme/cut").join(SHA);
    assert!(!snapshot.join("model-00002-of-00002.safetensors").exists());
    assert!(!snapshot.join(".ryzanstein-complete").exists());
    assert!(!cache.path().join("hf/acme/cut/refs/main").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&snapshot)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The public entry point reads HF_ENDPOINT and HF_TOKEN (the only test here that sets them).
#[test]
fn resolve_reads_endpoint_and_token_from_the_environment() {
    let (routes, _) = sharded_repo("acme/env");
    let hub = FakeHub::start(routes);
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HF_ENDPOINT", format!("{}/", hub.endpoint));
    std::env::set_var("HF_TOKEN", "from-env");
    let got = source::resolve("hf://acme/env", cache.path()).unwrap();
    assert_eq!(
        got,
        ModelFiles::HfDir(cache.path().join("hf/acme/env").join(SHA))
    );
    assert_eq!(
        hub.log.lock().unwrap().auth[0].as_deref(),
        Some("Bearer from-env")
    );
    assert!(Path::new(got.path()).join("config.json").is_file());
}
