//! `https://` sources against a real HTTPS server on 127.0.0.1: rustls with a certificate from a
//! throw-away CA made here with rcgen, one thread per connection, every request counted. The CA
//! reaches the client through `HttpOptions::extra_ca_file` (what `SSL_CERT_FILE` feeds), so no
//! test changes the process environment.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use ryzanstein_server::gguf::GgufWriter;
use ryzanstein_server::gguf::Value;
use ryzanstein_server::models;
use ryzanstein_server::safetensors_dir::HfDir;
use ryzanstein_server::source::download::HttpOptions;
use ryzanstein_server::source::https::resolve_with;
use ryzanstein_server::source::pin::Sha256Pin;
use ryzanstein_server::source::{self, ModelFiles};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// The server

/// One response.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// A Content-Length larger than the body, then the connection closes (a cut download).
    claimed_len: Option<usize>,
    /// Send this many bytes of the body, then go quiet for the duration (a stalled download).
    stall: Option<(usize, Duration)>,
    /// Wait this long before answering (a slow server).
    delay: Duration,
}

fn ok(body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status: 200,
        body: body.into(),
        claimed_len: None,
        stall: None,
        delay: Duration::ZERO,
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    config: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "https_source test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    Pki {
        _dir: dir,
        ca_file,
        config: Arc::new(config),
    }
}

/// An HTTPS server on 127.0.0.1 serving `routes` (path -> reply; anything else is a 404),
/// recording the path of every request. Its threads end with the test process.
struct Server {
    base: String,
    pki: Pki,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(routes: HashMap<String, Reply>) -> Server {
        let pki = pki();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (config, log2, routes) = (pki.config.clone(), log.clone(), Arc::new(routes));
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let (config, log, routes) = (config.clone(), log2.clone(), routes.clone());
                std::thread::spawn(move || serve_one(tcp, config, &log, &routes));
            }
        });
        Server { base, pki, log }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Options that trust the test CA, with short timeouts.
    fn opts(&self) -> HttpOptions {
        HttpOptions {
            extra_ca_file: Some(self.pki.ca_file.clone()),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(20),
            progress_every: Duration::from_millis(1),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn serve_one(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    log: &Mutex<Vec<String>>,
    routes: &HashMap<String, Reply>,
) {
    // A client that goes quiet must not keep this thread forever.
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let path = {
        let mut reader = BufReader::new(&mut tls);
        let mut line = String::new();
        // A failed handshake (an untrusting client) ends here.
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        line.split_whitespace().nth(1).unwrap_or("").to_string()
    };
    log.lock().unwrap().push(path.clone());
    let reply = routes.get(&path).cloned().unwrap_or(Reply {
        status: 404,
        ..ok(&b"no such file"[..])
    });
    std::thread::sleep(reply.delay);
    let head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
         Connection: close\r\n\r\n",
        reply.status,
        reply.claimed_len.unwrap_or(reply.body.len())
    );
    let _ = tls.write_all(head.as_bytes());
    match reply.stall {
        Some((n, pause)) => {
            let _ = tls.write_all(&reply.body[..n]);
            let _ = tls.flush();
            std::thread::sleep(pause);
        }
        None => {
            let _ = tls.write_all(&reply.body);
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The tiny Llama fixture as an F32 GGUF file (llama.cpp tensor names, ggml dimension order).
fn tiny_gguf() -> Vec<u8> {
    let hf = HfDir::open(common::test_data("hf_tiny_llama")).unwrap();
    let c = hf.config();
    let u = |k: &str| Value::U32(c[k].as_u64().unwrap() as u32);
    let f = |k: &str| Value::F32(c[k].as_f64().unwrap() as f32);
    let mut w = GgufWriter::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("llama.embedding_length", u("hidden_size"))
        .kv("llama.block_count", u("num_hidden_layers"))
        .kv("llama.feed_forward_length", u("intermediate_size"))
        .kv("llama.attention.head_count", u("num_attention_heads"))
        .kv("llama.attention.head_count_kv", u("num_key_value_heads"))
        .kv("llama.attention.key_length", u("head_dim"))
        .kv("llama.context_length", u("max_position_embeddings"))
        .kv("llama.rope.freq_base", f("rope_theta"))
        .kv("llama.attention.layer_norm_rms_epsilon", f("rms_norm_eps"));
    let layer_names = [
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    for name in hf.tensor_names() {
        let gguf_name = match name.as_str() {
            "model.embed_tokens.weight" => "token_embd.weight".to_string(),
            "model.norm.weight" => "output_norm.weight".to_string(),
            n => {
                let rest = n.strip_prefix("model.layers.").unwrap();
                let (i, what) = rest.split_once('.').unwrap();
                let what = what.strip_suffix(".weight").unwrap();
                let g = layer_names.iter().find(|(h, _)| *h == what).unwrap().1;
                format!("blk.{i}.{g}.weight")
            }
        };
        let t = hf.tensor(name).unwrap();
        let dims: Vec<u64> = t.shape.iter().rev().map(|d| *d as u64).collect();
        w = w.f32_tensor(&gguf_name, &dims, &t.to_f32_vec());
    }
    w.to_bytes()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pin(hex: &str) -> Sha256Pin {
    Sha256Pin::parse(hex).unwrap()
}

/// Every file under `dir`, relative, sorted (partial downloads would show here).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn no_partials(dir: &Path) {
    let partial: Vec<String> = files_under(dir)
        .into_iter()
        .filter(|f| f.ends_with(".partial"))
        .collect();
    assert!(partial.is_empty(), "temporary files left: {partial:?}");
}

fn gguf_server() -> (Server, Vec<u8>) {
    let gguf = tiny_gguf();
    let routes = HashMap::from([("/models/tiny.gguf".to_string(), ok(gguf.clone()))]);
    (Server::start(routes), gguf)
}

// ---------------------------------------------------------------------------------------------
// GGUF files

#[test]
fn a_gguf_file_downloads_loads_and_comes_from_the_cache_the_second_time() {
    let (server, gguf) = gguf_server();
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/models/tiny.gguf");

    let files = resolve_with(&url, cache.path(), None, &server.opts()).unwrap();
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    let expected = cache
        .path()
        .join(format!("https/127.0.0.1_{port}/models/tiny.gguf"));
    assert_eq!(files, ModelFiles::Gguf(expected.clone()));
    assert_eq!(std::fs::read(&expected).unwrap(), gguf);
    let model = models::load(&files, 1).unwrap();
    assert_eq!(model.architecture(), "llama");
    assert_eq!(model.vocab_size(), 48);
    assert_eq!(server.requests(), vec!["/models/tiny.gguf"]);
    no_partials(cache.path());

    // Again, and again with the right pin (checked through the sidecar): no request.
    let again = resolve_with(&url, cache.path(), None, &server.opts()).unwrap();
    assert_eq!(again, files);
    let pinned = resolve_with(
        &url,
        cache.path(),
        Some(&pin(&sha256_hex(&gguf))),
        &server.opts(),
    )
    .unwrap();
    assert_eq!(pinned, files);
    assert_eq!(server.requests().len(), 1);

    // `source::resolve` routes https:// here (the cache hit needs no CA and no network).
    assert_eq!(source::resolve(&url, cache.path()).unwrap(), files);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_sha256_pin_is_checked_and_a_bad_download_is_not_cached() {
    let (server, gguf) = gguf_server();
    let url = server.url("/models/tiny.gguf");
    let good = sha256_hex(&gguf);
    let bad = "ab".repeat(32);

    // A good pin.
    let cache = tempfile::tempdir().unwrap();
    let files = resolve_with(&url, cache.path(), Some(&pin(&good)), &server.opts()).unwrap();
    assert_eq!(std::fs::read(files.path()).unwrap(), gguf);

    // A bad pin: an error naming both digests, and nothing left in the cache.
    let cache = tempfile::tempdir().unwrap();
    let e = resolve_with(&url, cache.path(), Some(&pin(&bad)), &server.opts())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sha256 mismatch") && e.contains(&good) && e.contains(&bad),
        "{e}"
    );
    assert!(e.contains("deleted"), "{e}");
    let left: Vec<String> = files_under(cache.path())
        .into_iter()
        .filter(|f| !f.ends_with("-lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A cached file that does not match a (changed) pin is fetched again, then must match.
    let cache = tempfile::tempdir().unwrap();
    resolve_with(&url, cache.path(), None, &server.opts()).unwrap();
    let before = server.requests().len();
    let e = resolve_with(&url, cache.path(), Some(&pin(&bad)), &server.opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&good) && e.contains(&bad), "{e}");
    assert_eq!(server.requests().len(), before + 1);
    assert!(files_under(cache.path())
        .iter()
        .all(|f| !f.ends_with(".gguf")));
}

#[test]
fn http_errors_name_the_status_and_the_url() {
    let (server, _) = gguf_server();
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/models/absent.gguf");
    let e = resolve_with(&url, cache.path(), None, &server.opts())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP 404") && e.contains(&url) && e.contains("check the URL"),
        "{e}"
    );
    assert!(
        e.contains("no such file"),
        "the server's words are passed on: {e}"
    );
    assert!(files_under(cache.path())
        .iter()
        .all(|f| f.ends_with("-lock")));
}

#[test]
fn a_truncated_body_is_an_error_and_is_not_cached() {
    let gguf = tiny_gguf();
    let claimed = gguf.len() + 1000;
    let server = Server::start(HashMap::from([(
        "/cut.gguf".to_string(),
        Reply {
            claimed_len: Some(claimed),
            ..ok(gguf.clone())
        },
    )]));
    let cache = tempfile::tempdir().unwrap();
    let e = resolve_with(&server.url("/cut.gguf"), cache.path(), None, &server.opts())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cut off")
            && e.contains(&format!("received {} of the {claimed} bytes", gguf.len())),
        "{e}"
    );
    assert!(files_under(cache.path())
        .iter()
        .all(|f| f.ends_with("-lock")));
}

#[test]
fn a_stalled_download_times_out() {
    let gguf = tiny_gguf();
    let server = Server::start(HashMap::from([(
        "/slow.gguf".to_string(),
        Reply {
            stall: Some((100, Duration::from_secs(4))),
            ..ok(gguf)
        },
    )]));
    let cache = tempfile::tempdir().unwrap();
    let opts = HttpOptions {
        stall_timeout: Duration::from_secs(1),
        ..server.opts()
    };
    let e = resolve_with(&server.url("/slow.gguf"), cache.path(), None, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("stalled") && e.contains("no data for 1s"), "{e}");
    no_partials(cache.path());
}

#[test]
fn an_untrusted_certificate_fails_with_a_tls_message() {
    let (server, _) = gguf_server();
    let cache = tempfile::tempdir().unwrap();
    let opts = HttpOptions {
        extra_ca_file: None,
        ..server.opts()
    };
    let e = resolve_with(&server.url("/models/tiny.gguf"), cache.path(), None, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("TLS failure")
            && e.contains("not signed by a certificate authority")
            && e.contains("SSL_CERT_FILE"),
        "{e}"
    );
    assert!(server.requests().is_empty());
}

#[test]
fn a_file_that_is_not_gguf_is_refused() {
    let server = Server::start(HashMap::from([(
        "/index.html".to_string(),
        ok(&b"<!doctype html><p>sign in</p>"[..]),
    )]));
    let cache = tempfile::tempdir().unwrap();
    let e = resolve_with(
        &server.url("/index.html"),
        cache.path(),
        None,
        &server.opts(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("not a GGUF file") && e.contains("<!do") && e.contains("ending in /"),
        "{e}"
    );
    assert!(files_under(cache.path())
        .iter()
        .all(|f| f.ends_with("-lock")));
}

#[test]
fn connection_refused_and_plain_http_are_explained() {
    // A port nobody listens on any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{port}/m.gguf");
    let e = resolve_with(&url, cache.path(), None, &HttpOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("connection refused") && e.contains(&format!("127.0.0.1:{port}")),
        "{e}"
    );

    let e = source::resolve(&format!("http://127.0.0.1:{port}/m.gguf"), cache.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("plain http:// is refused"), "{e}");
}

#[test]
fn concurrent_resolves_download_once() {
    let gguf = tiny_gguf();
    let server = Server::start(HashMap::from([(
        "/m.gguf".to_string(),
        Reply {
            // Slow enough that the others arrive while the first downloads.
            delay: Duration::from_millis(500),
            ..ok(gguf)
        },
    )]));
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/m.gguf");
    let opts = server.opts();
    let results: Vec<ModelFiles> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| resolve_with(&url, cache.path(), None, &opts).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(server.requests().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Hugging Face directories

fn hf_routes(prefix: &str) -> HashMap<String, Reply> {
    let dir = common::test_data("hf_tiny_llama");
    [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    .iter()
    .map(|f| {
        (
            format!("{prefix}{f}"),
            ok(std::fs::read(dir.join(f)).unwrap()),
        )
    })
    .collect()
}

#[test]
fn a_hugging_face_directory_downloads_loads_and_is_cached() {
    let server = Server::start(hf_routes("/repo/tiny/"));
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/repo/tiny/");
    let files = resolve_with(&url, cache.path(), None, &server.opts()).unwrap();
    let ModelFiles::HfDir(dir) = &files else {
        panic!("{files:?}")
    };
    assert!(dir.ends_with("repo/tiny"), "{}", dir.display());
    let model = models::load(&files, 1).unwrap();
    assert_eq!(model.vocab_size(), 48);
    assert_eq!(
        server.requests(),
        vec![
            "/repo/tiny/config.json",
            "/repo/tiny/tokenizer.json",
            "/repo/tiny/tokenizer_config.json",
            "/repo/tiny/model.safetensors.index.json",
            "/repo/tiny/model-00001-of-00002.safetensors",
            "/repo/tiny/model-00002-of-00002.safetensors",
        ]
    );
    no_partials(cache.path());
    assert!(HfDir::open(dir).unwrap().tokenizer_json().is_some());

    // The second resolve is served from the cache.
    assert_eq!(
        resolve_with(&url, cache.path(), None, &server.opts()).unwrap(),
        files
    );
    assert_eq!(server.requests().len(), 6);

    // A pin cannot cover shards.
    let e = resolve_with(
        &url,
        cache.path(),
        Some(&pin(&"0".repeat(64))),
        &server.opts(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("shards"), "{e}");
}

#[test]
fn a_single_file_directory_is_pinned_by_its_weights() {
    let weights = b"pretend safetensors".to_vec();
    let mut routes = hf_routes("/d/");
    routes.retain(|k, _| k.ends_with("config.json") || k.ends_with("tokenizer.json"));
    routes.remove("/d/tokenizer_config.json");
    routes.insert("/d/model.safetensors".into(), ok(weights.clone()));
    let server = Server::start(routes);
    let url = server.url("/d/");
    let good = sha256_hex(&weights);

    let cache = tempfile::tempdir().unwrap();
    let files = resolve_with(&url, cache.path(), Some(&pin(&good)), &server.opts()).unwrap();
    let dir = files.path().to_path_buf();
    // The optional tokenizer_config.json and the index were asked for and are absent.
    assert_eq!(
        files_under(&dir)
            .into_iter()
            .filter(|f| !f.starts_with(".ryzanstein"))
            .collect::<Vec<_>>(),
        vec![
            "config.json",
            "config.json.sha256",
            "model.safetensors",
            "model.safetensors.sha256",
            "tokenizer.json",
            "tokenizer.json.sha256",
        ]
    );

    let cache = tempfile::tempdir().unwrap();
    let bad = "cd".repeat(32);
    let e = resolve_with(&url, cache.path(), Some(&pin(&bad)), &server.opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&good) && e.contains(&bad), "{e}");
    assert!(files_under(cache.path())
        .iter()
        .all(|f| !f.ends_with("model.safetensors")));
}

#[test]
fn a_directory_without_config_json_is_not_a_model() {
    let server = Server::start(HashMap::new());
    let cache = tempfile::tempdir().unwrap();
    let e = resolve_with(&server.url("/nothing/"), cache.path(), None, &server.opts())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no config.json") && e.contains("Hugging Face model directory"),
        "{e}"
    );
}
