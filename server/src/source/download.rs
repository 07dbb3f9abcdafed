//! HTTPS downloads into the cache.
//!
//! One blocking client: rustls trusting the webpki roots plus, when `SSL_CERT_FILE` names a PEM
//! file, the certificates in it (how clusters usually hand a private CA to a pod). Only `https://`
//! is spoken, redirects included. Each file is streamed to a temporary file beside its
//! destination (never held in memory), hashed on the way, checked (Content-Length, the leading
//! magic bytes, the sha256 pin) and only then renamed into place with its `.sha256` sidecar; a
//! file that fails a check is deleted. A progress line goes to the log every few seconds.
//!
//! Timeouts: connecting gives up after [`HttpOptions::connect_timeout`]. There is no deadline for
//! a whole body (models are gigabytes), but waiting longer than [`HttpOptions::stall_timeout`] for
//! the response headers or for the next piece of the body fails the download.

use std::error::Error as StdError;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Url;

use super::cache::{write_sidecar, HashingWriter, TempFile};
use super::pin::{mismatch, Sha256Pin};
use crate::error::{Error, Result};

/// The environment variable naming a PEM file of extra CA certificates.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// How to talk HTTPS.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// A PEM file of CA certificates trusted beside the webpki roots (`SSL_CERT_FILE`).
    pub extra_ca_file: Option<PathBuf>,
    /// Longest wait for a TCP and TLS connection.
    pub connect_timeout: Duration,
    /// Longest wait for the response headers, or for the next bytes of a body.
    pub stall_timeout: Duration,
    /// How often a download in progress is logged.
    pub progress_every: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            extra_ca_file: None,
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(120),
            progress_every: Duration::from_secs(5),
        }
    }
}

impl HttpOptions {
    /// The defaults, with `SSL_CERT_FILE` (when set and not empty) as the extra CA file.
    pub fn from_env() -> HttpOptions {
        HttpOptions {
            extra_ca_file: std::env::var_os(SSL_CERT_FILE)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            ..HttpOptions::default()
        }
    }

    fn trusted(&self) -> String {
        match &self.extra_ca_file {
            Some(f) => format!(
                "trusted: the webpki roots and the certificates in {SSL_CERT_FILE}={}",
                f.display()
            ),
            None => format!("trusted: the webpki roots only ({SSL_CERT_FILE} is not set)"),
        }
    }
}

/// The bytes a file must start with.
#[derive(Debug, Clone, Copy)]
pub struct Magic<'a> {
    pub bytes: &'a [u8],
    /// What such a file is ("a GGUF file").
    pub kind: &'a str,
    /// What to do when the file is something else.
    pub hint: &'a str,
}

/// What a downloaded file must be.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect<'a> {
    pub magic: Option<Magic<'a>>,
    /// The file's sha256.
    pub sha256: Option<&'a Sha256Pin>,
}

fn err(spec: &str, what: impl Into<String>) -> Error {
    Error::Source {
        source_spec: spec.to_string(),
        what: what.into(),
    }
}

/// A blocking HTTPS client for one model source.
pub struct Client<'a> {
    spec: &'a str,
    opts: &'a HttpOptions,
    http: reqwest::blocking::Client,
}

impl<'a> Client<'a> {
    /// Build the client; an unreadable or empty `extra_ca_file` is an error (a CA the user meant
    /// to trust must not be silently missing).
    pub fn new(spec: &'a str, opts: &'a HttpOptions) -> Result<Client<'a>> {
        let mut b = reqwest::blocking::Client::builder()
            .user_agent(concat!("ryzanstein/", env!("CARGO_PKG_VERSION")))
            .https_only(true)
            .connect_timeout(opts.connect_timeout)
            // The blocking client applies this to the wait for the response and to each read of
            // the body: a stall timeout, not a deadline for the whole download.
            .timeout(opts.stall_timeout);
        if let Some(file) = &opts.extra_ca_file {
            let fix = format!(
                "point {SSL_CERT_FILE} at a PEM file of CA certificates, or unset it to trust the \
                 webpki roots only"
            );
            let pem = std::fs::read(file).map_err(|e| {
                err(
                    spec,
                    format!("cannot read {SSL_CERT_FILE}={}: {e}; {fix}", file.display()),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                err(
                    spec,
                    format!(
                        "{SSL_CERT_FILE}={} is not a PEM certificate file: {e}; {fix}",
                        file.display()
                    ),
                )
            })?;
            if certs.is_empty() {
                return Err(err(
                    spec,
                    format!(
                        "{SSL_CERT_FILE}={} holds no PEM certificates \
                         (-----BEGIN CERTIFICATE-----); {fix}",
                        file.display()
                    ),
                ));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| err(spec, format!("could not build an HTTPS client: {e}")))?;
        Ok(Client { spec, opts, http })
    }

    /// Download `url` into `dest`. When the server answers with one of the `absent` statuses
    /// (e.g. `[404, 410]` for a file that may not exist): `Ok(false)`, nothing written; other
    /// failures are errors. `Ok(true)`: `dest` is in place, checked against `expect`, with its
    /// sha256 sidecar.
    pub fn download(&self, url: &Url, dest: &Path, absent: &[u16], expect: Expect) -> Result<bool> {
        let mut resp = self
            .http
            .get(url.clone())
            .send()
            .map_err(|e| self.send_error(url, &e))?;
        let status = resp.status();
        if absent.contains(&status.as_u16()) {
            tracing::debug!(%url, %status, "not there");
            return Ok(false);
        }
        if !status.is_success() {
            return Err(self.status_error(url, resp));
        }
        let total = resp.content_length();
        let dir = dest.parent().unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .map_or_else(|| "download".into(), |n| n.to_string_lossy().into_owned());
        let mut tmp = TempFile::new_in(dir, &name)?;
        let tmp_path = tmp.path().to_path_buf();
        let io_err = |e| Error::io(&tmp_path, e);
        tracing::info!(
            %url,
            dest = %dest.display(),
            bytes = total,
            "downloading"
        );

        let started = Instant::now();
        let mut last_log = started;
        let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp.file()));
        let mut head = Vec::with_capacity(8);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.body_error(url, &e, out.written, total)),
            };
            let chunk = &buf[..n];
            if let Some(m) = expect.magic {
                if head.len() < m.bytes.len() {
                    let take = (m.bytes.len() - head.len()).min(n);
                    head.extend_from_slice(&chunk[..take]);
                    if head.len() == m.bytes.len() && head != m.bytes {
                        return Err(self.magic_error(url, &head, m));
                    }
                }
            }
            out.write_all(chunk).map_err(io_err)?;
            if last_log.elapsed() >= self.opts.progress_every {
                last_log = Instant::now();
                log_progress(url, out.written, total, started);
            }
        }
        if let Some(len) = total {
            if out.written != len {
                return Err(truncated(self.spec, url, out.written, len));
            }
        }
        if let Some(m) = expect.magic {
            if head.len() < m.bytes.len() {
                return Err(self.magic_error(url, &head, m));
            }
        }
        out.flush().map_err(io_err)?;
        let written = out.written;
        let digest = out.hex_digest();
        if let Some(pin) = expect.sha256 {
            if !pin.matches(&digest) {
                // `tmp` is dropped here, which deletes the download: nothing bad is cached.
                return Err(mismatch(
                    self.spec,
                    url.as_str(),
                    pin,
                    &digest,
                    "the download was deleted",
                ));
            }
        }
        tmp.persist(dest)?;
        write_sidecar(dest, &digest)?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            %url,
            dest = %dest.display(),
            mib = format!("{:.1}", mib(written)),
            seconds = format!("{secs:.1}"),
            sha256 = %digest,
            "downloaded"
        );
        Ok(true)
    }

    /// A request that got no response.
    fn send_error(&self, url: &Url, e: &reqwest::Error) -> Error {
        let host = host_port(url);
        let chain = chain_text(e);
        if let Some(tls) = find::<rustls::Error>(e) {
            // The rustls error says it all; the layers around it add nothing.
            return err(
                self.spec,
                format!("GET {url}: {}", tls_message(&host, tls, self.opts)),
            );
        }
        let what = if e.is_redirect() && chain.contains("scheme is not allowed") {
            "the server redirected to a plain http:// address, which is refused (only https:// \
             is fetched); fix the URL or the server's redirect"
                .to_string()
        } else if e.is_timeout() {
            format!(
                "no response from {host} within {}s (connecting: {}s); check that the host is \
                 reachable from here (network policy, proxy, firewall)",
                self.opts.stall_timeout.as_secs(),
                self.opts.connect_timeout.as_secs()
            )
        } else if io_kind(e, std::io::ErrorKind::ConnectionRefused) {
            format!(
                "connection refused by {host}: nothing accepts connections there; check the \
                 host and port in the URL and that the server is up"
            )
        } else if chain.contains("dns error") {
            format!("cannot resolve the host name of {host}; check the URL and the DNS setup")
        } else if e.is_connect() {
            format!("cannot connect to {host}; check the URL and network access to that host")
        } else {
            "the request failed".to_string()
        };
        err(self.spec, format!("GET {url}: {what} ({chain})"))
    }

    /// A response that is not a success.
    fn status_error(&self, url: &Url, resp: reqwest::blocking::Response) -> Error {
        let status = resp.status();
        let mut body = String::new();
        let _ = resp.take(300).read_to_string(&mut body);
        let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let hint = match status.as_u16() {
            401 | 403 => {
                "the server refused access; a URL needing credentials can only be used as a \
                 pre-signed URL (the signature in its query), otherwise put the model on a \
                 volume (pvc://)"
            }
            404 | 410 => "there is no file at that address; check the URL",
            429 => "the server is rate limiting; try again later",
            500..=599 => "the server failed; try again later",
            _ => "unexpected response",
        };
        err(
            self.spec,
            format!(
                "HTTP {status} from GET {url}: {hint}{}",
                if body.is_empty() {
                    String::new()
                } else {
                    format!(" (the server said: {body})")
                }
            ),
        )
    }

    /// A body that stopped before its end.
    fn body_error(
        &self,
        url: &Url,
        e: &std::io::Error,
        received: u64,
        total: Option<u64>,
    ) -> Error {
        let chain = chain_text(e);
        let timed_out = e.kind() == std::io::ErrorKind::TimedOut
            || find::<reqwest::Error>(e).is_some_and(|r| r.is_timeout());
        if timed_out {
            return err(
                self.spec,
                format!(
                    "GET {url}: the download stalled: no data for {}s after {received} bytes{}; \
                     try again, or check the server and the network",
                    self.opts.stall_timeout.as_secs(),
                    total.map_or(String::new(), |t| format!(" of {t}"))
                ),
            );
        }
        match total {
            Some(len) if received < len => err(
                self.spec,
                format!("{} ({chain})", truncated_text(url, received, len)),
            ),
            _ => err(
                self.spec,
                format!(
                    "GET {url}: the connection failed after {received} bytes: {chain}; try again"
                ),
            ),
        }
    }

    fn magic_error(&self, url: &Url, head: &[u8], m: Magic) -> Error {
        let shown: String = head
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() {
                    (b as char).to_string()
                } else {
                    format!("\\x{b:02x}")
                }
            })
            .collect();
        err(
            self.spec,
            format!(
                "GET {url}: the response is not {} (it starts with \"{shown}\"), so it was \
                 deleted; {}",
                m.kind, m.hint
            ),
        )
    }
}

fn truncated_text(url: &Url, received: u64, len: u64) -> String {
    format!(
        "GET {url}: the body was cut off: received {received} of the {len} bytes the server \
         announced (Content-Length); the connection dropped or the server is misconfigured: \
         try again"
    )
}

fn truncated(spec: &str, url: &Url, received: u64, len: u64) -> Error {
    err(spec, truncated_text(url, received, len))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn log_progress(url: &Url, done: u64, total: Option<u64>, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let rate = format!("{:.1}", mib(done) / secs);
    match total.filter(|t| *t > 0) {
        Some(t) => tracing::info!(
            %url,
            mib = format!("{:.1}", mib(done)),
            of_mib = format!("{:.1}", mib(t)),
            percent = format!("{:.0}", 100.0 * done as f64 / t as f64),
            mib_per_s = rate,
            "downloading"
        ),
        None => tracing::info!(
            %url,
            mib = format!("{:.1}", mib(done)),
            mib_per_s = rate,
            "downloading"
        ),
    }
}

/// `host:port` of a URL, for messages.
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// An error and its causes, looking inside `io::Error`s too (whose `source()` skips the error
/// they wrap; the TLS connector wraps the handshake's `io::Error` in another one).
fn causes<'e>(e: &'e (dyn StdError + 'static)) -> Vec<&'e (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(c) = cur {
        out.push(c);
        if out.len() > 32 {
            break;
        }
        cur = match c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            // The payload's own source() is what the io::Error's source() returns.
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => c.source(),
        };
    }
    out
}

fn find<'e, T: StdError + 'static>(e: &'e (dyn StdError + 'static)) -> Option<&'e T> {
    causes(e).into_iter().find_map(|c| c.downcast_ref::<T>())
}

fn io_kind(e: &(dyn StdError + 'static), kind: std::io::ErrorKind) -> bool {
    causes(e)
        .into_iter()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == kind)
}

/// The messages of an error and its causes, `: `-joined, repeats dropped.
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in causes(e) {
        let s = c.to_string();
        if !parts.iter().any(|p| p == &s || p.ends_with(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn tls_message(host: &str, e: &rustls::Error, opts: &HttpOptions) -> String {
    use rustls::CertificateError as C;
    let why = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => format!(
                "the certificate of {host} is not signed by a certificate authority this server \
                 trusts"
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the certificate of {host} is not issued for that name; use the host name the \
                 certificate names in the URL"
            ),
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => format!(
                "the certificate of {host} has expired or is not valid yet (check the server's \
                 certificate and this machine's clock)"
            ),
            _ => format!("the certificate of {host} was refused"),
        },
        _ => format!("the TLS handshake with {host} failed (does it speak HTTPS on that port?)"),
    };
    format!(
        "TLS failure: {why} ({e}; {}). If the server uses a private CA, set {SSL_CERT_FILE} to \
         a PEM file holding that CA's certificate",
        opts.trusted()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_look_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        assert!(find::<rustls::Error>(&io).is_some());
        let text = chain_text(&io);
        assert_eq!(text, "invalid peer certificate: UnknownIssuer");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(io_kind(&refused, std::io::ErrorKind::ConnectionRefused));
    }

    #[test]
    fn tls_messages_say_what_to_do() {
        let opts = HttpOptions::default();
        let m = tls_message(
            "h:443",
            &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            &opts,
        );
        assert!(
            m.contains("not signed by a certificate authority")
                && m.contains("SSL_CERT_FILE is not set")
                && m.contains("set SSL_CERT_FILE"),
            "{m}"
        );
    }

    #[test]
    fn a_bad_ca_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        for file in [f, d.path().join("absent.pem")] {
            let opts = HttpOptions {
                extra_ca_file: Some(file),
                ..HttpOptions::default()
            };
            let e = Client::new("s", &opts).err().unwrap().to_string();
            assert!(e.contains("SSL_CERT_FILE="), "{e}");
        }
    }
}
