//! Startup, readiness and liveness probes, run as a kubelet runs them: against the pod's IP,
//! after `initialDelaySeconds`, every `periodSeconds`, each attempt limited to `timeoutSeconds`,
//! a result changing only after `successThreshold` successes or `failureThreshold` failures in a
//! row. The startup probe runs first; readiness and liveness start once it has succeeded.
//! `httpGet` (success: a status from 200 to 399, redirects not followed) and `tcpSocket` probes
//! are supported; `exec` and `grpc` probes fail with a message saying they are not.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::time::Instant;

use crate::control_plane::Binaries;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    /// As in kubelet's messages ("Readiness probe failed: ...").
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }
}

/// A change of a probe's thresholded result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReport {
    pub kind: ProbeKind,
    /// Readiness: ready; startup: started; liveness: alive.
    pub healthy: bool,
    /// The last attempt's failure, or empty.
    pub message: String,
}

/// The HTTP client for probes and `httpGet` lifecycle handlers: no proxy, no redirects, no
/// connection reuse (kubelet disables keep-alive for probes), no certificate checks for HTTPS
/// (kubelet does not verify either).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .danger_accept_invalid_certs(true)
        .build()
        .expect("probe HTTP client")
}

/// Consecutive results and the current thresholded state of one probe.
#[derive(Clone, Debug)]
pub struct Threshold {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    state: bool,
}

impl Threshold {
    /// Readiness starts unready, liveness alive, startup not started.
    pub fn new(kind: ProbeKind, probe: &Probe) -> Threshold {
        let positive =
            |v: Option<i32>, default: u32| v.filter(|v| *v > 0).map_or(default, |v| v as u32);
        Threshold {
            success_threshold: positive(probe.success_threshold, 1),
            failure_threshold: positive(probe.failure_threshold, 3),
            successes: 0,
            failures: 0,
            state: kind == ProbeKind::Liveness,
        }
    }

    /// Record one attempt; the new state when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.state && self.successes >= self.success_threshold {
                self.state = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.state && self.failures >= self.failure_threshold {
                self.state = false;
                return Some(false);
            }
            // A startup probe that never succeeds fails once the threshold is reached.
        }
        None
    }

    /// Failures in a row (startup probes give up at the failure threshold).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold
    }
}

fn seconds(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.filter(|v| *v >= 0).map_or(default, |v| v as u64))
}

/// The probe's period (default 10 s).
pub fn period(probe: &Probe) -> Duration {
    seconds(probe.period_seconds.filter(|p| *p > 0), 10)
}

/// Run a container's probes from `started` (the container's start) until aborted, reporting
/// every change. Without a startup probe the container counts as started at once (the caller
/// knows that); without a readiness probe it is ready once started; without a liveness probe it
/// is never restarted for health.
pub async fn run(
    http: reqwest::Client,
    container: Container,
    pod_ip: IpAddr,
    started: Instant,
    report: impl Fn(ProbeReport) + Send + Sync + Clone + 'static,
) {
    if let Some(probe) = &container.startup_probe {
        let mut t = Threshold::new(ProbeKind::Startup, probe);
        tokio::time::sleep_until(started + seconds(probe.initial_delay_seconds, 0)).await;
        loop {
            let result = attempt(&http, probe, &container, pod_ip).await;
            let failed = result.clone().err().unwrap_or_default();
            if t.observe(result.is_ok()) == Some(true) {
                report(ProbeReport {
                    kind: ProbeKind::Startup,
                    healthy: true,
                    message: String::new(),
                });
                break;
            }
            if t.failures() >= t.failure_threshold() {
                report(ProbeReport {
                    kind: ProbeKind::Startup,
                    healthy: false,
                    message: failed,
                });
                return;
            }
            tokio::time::sleep(period(probe)).await;
        }
    }
    let readiness = loop_probe(
        &http,
        ProbeKind::Readiness,
        &container,
        pod_ip,
        started,
        &report,
    );
    let liveness = loop_probe(
        &http,
        ProbeKind::Liveness,
        &container,
        pod_ip,
        started,
        &report,
    );
    tokio::join!(readiness, liveness);
}

async fn loop_probe(
    http: &reqwest::Client,
    kind: ProbeKind,
    container: &Container,
    pod_ip: IpAddr,
    started: Instant,
    report: &(impl Fn(ProbeReport) + Send + Sync),
) {
    let probe = match kind {
        ProbeKind::Readiness => container.readiness_probe.as_ref(),
        ProbeKind::Liveness => container.liveness_probe.as_ref(),
        ProbeKind::Startup => container.startup_probe.as_ref(),
    };
    let Some(probe) = probe else {
        return;
    };
    let mut t = Threshold::new(kind, probe);
    tokio::time::sleep_until(started + seconds(probe.initial_delay_seconds, 0)).await;
    loop {
        let result = attempt(http, probe, container, pod_ip).await;
        let message = result.clone().err().unwrap_or_default();
        if let Some(healthy) = t.observe(result.is_ok()) {
            report(ProbeReport {
                kind,
                healthy,
                message,
            });
            if kind == ProbeKind::Liveness && !healthy {
                return; // the container is restarted; a new prober starts with it
            }
        }
        tokio::time::sleep(period(probe)).await;
    }
}

/// One probe attempt: `Ok` or the failure, worded like kubelet's.
pub async fn attempt(
    http: &reqwest::Client,
    probe: &Probe,
    container: &Container,
    pod_ip: IpAddr,
) -> Result<(), String> {
    let timeout = seconds(probe.timeout_seconds.filter(|t| *t > 0), 1);
    if let Some(action) = &probe.http_get {
        let code = http_get(http, action, container, pod_ip, timeout).await?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    } else if let Some(action) = &probe.tcp_socket {
        let port = resolve_port(&action.port, container)?;
        let host = match &action.host {
            Some(h) if !h.is_empty() => {
                h.parse::<IpAddr>().map_err(|e| format!("host {h}: {e}"))?
            }
            _ => pod_ip,
        };
        let addr = SocketAddr::new(host, port);
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        }
    } else if probe.exec.is_some() {
        Err(
            "exec probes are not supported by the e2e node agent (no container to exec into)"
                .into(),
        )
    } else if probe.grpc.is_some() {
        Err("grpc probes are not supported by the e2e node agent".into())
    } else {
        Err("probe has no handler".into())
    }
}

/// GET an `httpGet` action's URL (probes and lifecycle handlers); the status code.
pub async fn http_get(
    http: &reqwest::Client,
    action: &HTTPGetAction,
    container: &Container,
    pod_ip: IpAddr,
    timeout: Duration,
) -> Result<u16, String> {
    let port = resolve_port(&action.port, container)?;
    let host = match &action.host {
        Some(h) if !h.is_empty() => h.clone(),
        _ => match pod_ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        },
    };
    let scheme = action
        .scheme
        .as_deref()
        .unwrap_or("HTTP")
        .to_ascii_lowercase();
    let path = action.path.as_deref().unwrap_or("/");
    let slash = if path.starts_with('/') { "" } else { "/" };
    let url = format!("{scheme}://{host}:{port}{slash}{path}");
    let (major, minor) = kube_minor();
    let mut request = http
        .get(&url)
        .timeout(timeout)
        .header("User-Agent", format!("kube-probe/{major}.{minor}"))
        .header("Accept", "*/*");
    for header in action.http_headers.iter().flatten() {
        request = request.header(&header.name, &header.value);
    }
    match request.send().await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) if e.is_timeout() => Err(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Err(e) => Err(format!("Get \"{url}\": {}", error_chain(&e))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `1.35` from the pinned Kubernetes version.
fn kube_minor() -> (&'static str, &'static str) {
    let v = Binaries::kubernetes_version().trim_start_matches('v');
    let mut parts = v.split('.');
    (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"))
}

/// A port number, or a port name looked up in the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(p) => p,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("port name {name:?} is not one of the container's ports"))?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {number}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Probe::default()
        }
    }

    #[test]
    fn readiness_needs_successes_in_a_row_and_falls_after_failures_in_a_row() {
        let mut t = Threshold::new(ProbeKind::Readiness, &probe(2, 3));
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
    }

    #[test]
    fn liveness_starts_alive() {
        let mut t = Threshold::new(ProbeKind::Liveness, &Probe::default());
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        };
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("9090".into()), &c),
            Ok(9090)
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert!(resolve_port(&IntOrString::String("grpc".into()), &c)
            .unwrap_err()
            .contains("grpc"));
    }

    #[tokio::test]
    async fn http_and_tcp_attempts() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let code = if req.starts_with("GET /ok ") && req.contains("kube-probe/") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {code}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let http = http_client();
        let c = Container::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let get = |path: &str| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(port as i32),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        };
        assert_eq!(attempt(&http, &get("/ok"), &c, ip).await, Ok(()));
        assert_eq!(
            attempt(&http, &get("/no"), &c, ip).await,
            Err("HTTP probe failed with statuscode: 503".into())
        );
        let tcp = Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::Int(port as i32),
                host: None,
            }),
            ..Probe::default()
        };
        assert_eq!(attempt(&http, &tcp, &c, ip).await, Ok(()));
        // Nothing listens on another loopback address.
        let refused = attempt(&http, &get("/ok"), &c, "127.0.0.2".parse().unwrap())
            .await
            .unwrap_err();
        assert!(refused.contains("Get \"http://127.0.0.2:"), "{refused}");
    }
}
