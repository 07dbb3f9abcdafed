//! A real `ryzanstein serve` process on 127.0.0.1 (a free port), killed when dropped, and small
//! HTTP helpers for the API tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long loading the model may take before a test gives up (not a performance assertion:
/// only a bound on waiting for a server that will never come up).
const READY_WITHIN: Duration = Duration::from_secs(300);

pub struct Server {
    child: Child,
    pub base: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server on the test model with `extra` arguments and waits for `/readyz`.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with_env(extra, &[])
    }

    /// [`Server::start`] with environment variables `env` for the server.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let model = super::common::model_path();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ryzanstein"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--model"])
            .arg(&model)
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the ryzanstein binary");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ryzanstein: listening on ") {
                    let url = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = addr_tx.send(url);
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut server = Server {
            child,
            base: String::new(),
            stderr,
        };
        server.base = match addr_rx.recv_timeout(READY_WITHIN) {
            Ok(url) => url,
            Err(_) => panic!(
                "the server never printed its address; stderr:\n{}",
                server.stderr()
            ),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the server exited ({status}) before becoming ready; stderr:\n{}",
                    self.stderr()
                );
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send() {
                if r.status() == 200 {
                    return;
                }
                assert_eq!(r.status(), 503, "/readyz answers 200 or 503");
            }
            assert!(
                Instant::now() < deadline,
                "the server did not become ready; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (after a signal); panics if it outlives `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs `body` as JSON; returns the status and the parsed JSON answer.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = client()
            .post(self.url(path))
            .json(body)
            .send()
            .expect("POST");
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered non-JSON ({e}): {text:?}"));
        (status, value)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = client().get(self.url(path)).send().expect("GET");
        (r.status().as_u16(), r.json().unwrap())
    }

    /// POSTs a streaming request; returns the response to read SSE frames from.
    pub fn post_stream(&self, path: &str, body: &Value) -> SseReader {
        let r = client()
            .post(self.url(path))
            .json(body)
            .send()
            .expect("POST");
        assert_eq!(r.status(), 200, "streaming request refused");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        SseReader {
            reader: BufReader::new(Box::new(r)),
        }
    }

    /// A streaming request read to the end: every `data:` payload, `[DONE]` included.
    pub fn stream_all(&self, path: &str, body: &Value) -> Vec<String> {
        let mut s = self.post_stream(path, body);
        let mut frames = Vec::new();
        while let Some(f) = s.next_frame() {
            frames.push(f);
        }
        frames
    }

    /// A greedy chat completion's content and finish reason.
    pub fn chat_text(&self, user: &str, extra: Value) -> (String, String, Value) {
        let mut body = json!({"messages": [{"role": "user", "content": user}], "temperature": 0});
        merge(&mut body, extra);
        let (status, v) = self.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{v}");
        (
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned(),
            v["choices"][0]["finish_reason"]
                .as_str()
                .unwrap()
                .to_owned(),
            v,
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

/// Copies `extra`'s fields into `body`.
pub fn merge(body: &mut Value, extra: Value) {
    if let Value::Object(extra) = extra {
        body.as_object_mut().unwrap().extend(extra);
    }
}

/// Reads `data: ...` frames of an SSE body one at a time.
pub struct SseReader {
    reader: BufReader<Box<dyn Read + Send>>,
}

impl SseReader {
    /// The next frame's payload; `None` at the end of the body.
    pub fn next_frame(&mut self) -> Option<String> {
        let mut data = None;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap() == 0 {
                return data;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_some() {
                    return data;
                }
                continue;
            }
            let payload = line
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("an SSE line that is not `data: `: {line:?}"));
            assert!(data.is_none(), "one data line per event");
            data = Some(payload.to_owned());
        }
    }
}
