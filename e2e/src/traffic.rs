//! Traffic to a ModelDeployment as a tenant's clients send it: streamed OpenAI chat completions
//! spread over the client Service's ready endpoints.
//!
//! Mocked because it cannot run here: kube-proxy (no netfilter rules in a test). The client does
//! what kube-proxy does for a ClusterIP Service instead: it watches the Service's EndpointSlices
//! (written by the real controller-manager's EndpointSlice controller) and sends each request to
//! the next ready endpoint, round robin. Like kube-proxy, it sees an endpoint leave only when the
//! slice changes, so a pod that stops without first going unready (a crash) still gets requests
//! until then; a pod shut down gracefully is dropped from the slice during its preStop sleep.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The ready endpoints of one Service, kept current by a watch on its EndpointSlices.
pub struct ServiceEndpoints {
    store: Store<EndpointSlice>,
    port_name: String,
    task: JoinHandle<()>,
}

impl ServiceEndpoints {
    /// Watches the EndpointSlices of Service `service` in `namespace`; requests go to the port
    /// named `port_name`.
    pub fn watch(client: &kube::Client, namespace: &str, service: &str, port_name: &str) -> Self {
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
        let config =
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, config))
            .default_backoff()
            .touched_objects();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while stream.next().await.is_some() {}
        });
        ServiceEndpoints {
            store,
            port_name: port_name.to_owned(),
            task,
        }
    }

    /// The addresses kube-proxy would send new connections to: every endpoint with
    /// `conditions.ready` true (ready and not terminating), sorted.
    pub fn ready(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for slice in self.store.state() {
            let Some(port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(&self.port_name))
                .and_then(|p| p.port)
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(false);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<std::net::IpAddr>() {
                        out.push(SocketAddr::new(ip, port as u16));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl Drop for ServiceEndpoints {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A finished streamed chat completion.
#[derive(Clone, Debug)]
pub struct Completion {
    pub text: String,
    /// `usage.completion_tokens` of the final chunk.
    pub completion_tokens: u64,
    pub finish_reason: String,
}

/// One request and what became of it.
#[derive(Clone, Debug)]
pub struct Record {
    /// The endpoint it was sent to; `None` when there was none ready.
    pub endpoint: Option<SocketAddr>,
    pub started: Instant,
    pub finished: Instant,
    pub outcome: Result<Completion, String>,
}

impl Record {
    pub fn ok(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// Sends chat completions to a Service's ready endpoints, round robin.
pub struct ChatClient {
    http: reqwest::Client,
    endpoints: ServiceEndpoints,
    model: String,
    next: AtomicUsize,
}

impl ChatClient {
    pub fn new(endpoints: ServiceEndpoints, model: &str) -> ChatClient {
        ChatClient {
            http: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(120))
                .build()
                .expect("HTTP client"),
            endpoints,
            model: model.to_owned(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn endpoints(&self) -> &ServiceEndpoints {
        &self.endpoints
    }

    /// One streamed chat completion of `prompt` (`max_tokens`, greedy; `ignore_eos` makes it
    /// generate all of them) at the next ready endpoint.
    pub async fn chat(&self, prompt: &str, max_tokens: u32, ignore_eos: bool) -> Record {
        let started = Instant::now();
        let ready = self.endpoints.ready();
        if ready.is_empty() {
            return Record {
                endpoint: None,
                started,
                finished: Instant::now(),
                outcome: Err("no ready endpoint".into()),
            };
        }
        let endpoint = ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()];
        let body = json!({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": ignore_eos,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let outcome = self.stream(endpoint, &body).await;
        Record {
            endpoint: Some(endpoint),
            started,
            finished: Instant::now(),
            outcome,
        }
    }

    async fn stream(&self, endpoint: SocketAddr, body: &Value) -> Result<Completion, String> {
        let url = format!("http://{endpoint}/v1/chat/completions");
        let resp = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("{url}: {e:#}"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("{url}: {status}: {text}"));
        }
        let mut parser = SseChat::default();
        let mut bytes = resp.bytes_stream();
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(|e| format!("{url}: stream broke: {e:#}"))?;
            parser.feed(&chunk)?;
            if parser.done {
                break;
            }
        }
        parser.finish().map_err(|e| format!("{url}: {e}"))
    }
}

/// Accumulates a chat completion from server-sent events.
#[derive(Default)]
struct SseChat {
    buffer: Vec<u8>,
    text: String,
    finish_reason: Option<String>,
    completion_tokens: Option<u64>,
    done: bool,
}

impl SseChat {
    fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.buffer.extend_from_slice(bytes);
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let event = String::from_utf8_lossy(&event);
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    self.done = true;
                    continue;
                }
                let chunk: Value =
                    serde_json::from_str(data).map_err(|e| format!("bad chunk {data:?}: {e}"))?;
                if let Some(error) = chunk.get("error") {
                    return Err(format!("error event: {error}"));
                }
                if let Some(choice) = chunk["choices"].get(0) {
                    if let Some(piece) = choice["delta"]["content"].as_str() {
                        self.text.push_str(piece);
                    }
                    if let Some(reason) = choice["finish_reason"].as_str() {
                        self.finish_reason = Some(reason.to_owned());
                    }
                }
                if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
                    self.completion_tokens = Some(n);
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Completion, String> {
        if !self.done {
            return Err("the stream ended without [DONE]".into());
        }
        Ok(Completion {
            text: self.text,
            completion_tokens: self
                .completion_tokens
                .ok_or("no usage chunk before [DONE]")?,
            finish_reason: self.finish_reason.ok_or("no finish_reason")?,
        })
    }
}

/// Clients that each send one streamed chat completion after another until stopped.
pub struct Load {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    records: Arc<Mutex<Vec<Record>>>,
}

/// What each load client sends.
#[derive(Clone, Debug)]
pub struct LoadShape {
    pub clients: usize,
    pub prompt: String,
    pub max_tokens: u32,
}

impl Load {
    /// Starts `shape.clients` clients on `client`.
    pub fn start(client: Arc<ChatClient>, shape: &LoadShape) -> Load {
        let (stop, _) = watch::channel(false);
        let records = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..shape.clients)
            .map(|_| {
                let client = client.clone();
                let records = records.clone();
                let mut stop = stop.subscribe();
                let shape = shape.clone();
                tokio::spawn(async move {
                    while !*stop.borrow() {
                        let record = client.chat(&shape.prompt, shape.max_tokens, true).await;
                        let failed_without_endpoint = record.endpoint.is_none();
                        records.lock().unwrap().push(record);
                        if failed_without_endpoint {
                            // Nothing to send to: wait a moment rather than spin.
                            let _ =
                                tokio::time::timeout(Duration::from_millis(200), stop.changed())
                                    .await;
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            records,
        }
    }

    /// Every request finished so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    /// Lets each client finish the request it is in, then returns every record.
    pub async fn stop(mut self) -> Vec<Record> {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        let records = self.records.lock().unwrap().clone();
        records
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> String {
        format!("data: {data}\n\n")
    }

    #[test]
    fn chunks_split_anywhere_add_up() {
        let stream = [
            event(r#"{"choices":[{"delta":{"role":"assistant"},"finish_reason":null}]}"#),
            event(r#"{"choices":[{"delta":{"content":"Par"},"finish_reason":null}]}"#),
            event(r#"{"choices":[{"delta":{"content":"is"},"finish_reason":"length"}]}"#),
            event(r#"{"choices":[],"usage":{"completion_tokens":2}}"#),
            event("[DONE]"),
        ]
        .concat();
        for split in [1, 7, 50, stream.len()] {
            let mut p = SseChat::default();
            for piece in stream.as_bytes().chunks(split) {
                p.feed(piece).unwrap();
            }
            let c = p.finish().unwrap();
            assert_eq!(
                (
                    c.text.as_str(),
                    c.completion_tokens,
                    c.finish_reason.as_str()
                ),
                ("Paris", 2, "length")
            );
        }
    }

    #[test]
    fn a_stream_cut_short_or_an_error_event_fails() {
        let mut p = SseChat::default();
        p.feed(event(r#"{"choices":[{"delta":{"content":"a"}}]}"#).as_bytes())
            .unwrap();
        assert!(p.finish().unwrap_err().contains("[DONE]"));
        let mut p = SseChat::default();
        let err = p
            .feed(event(r#"{"error":{"message":"boom"}}"#).as_bytes())
            .unwrap_err();
        assert!(err.contains("boom"), "{err}");
    }
}
