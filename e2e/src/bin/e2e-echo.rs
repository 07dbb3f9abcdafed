//! A tiny HTTP server the node agent's tests run as a pod (image `ryzanstein/e2e-echo`).
//!
//! `e2e-echo --host ADDR --port PORT [--ready-after-ms N] [--greeting-file PATH] [--ignore-sigterm]`
//!
//! - `GET /healthz`: 200 `ok`, or 500 after `GET /sabotage` (for liveness tests);
//! - `GET /readyz`: 200 once `--ready-after-ms` have passed, 503 before and after SIGTERM;
//! - `GET /env`: JSON `{ "args", "env", "cwd", "pid" }` — what the process was started with;
//! - `GET /greeting`: the file `--greeting-file` names, read at each request;
//! - `GET /slow?ms=N`: answers after N ms (an in-flight request for drain tests).
//!
//! On SIGTERM it says so on stdout, stops accepting connections, finishes the requests in
//! flight and exits 0; with `--ignore-sigterm` it says so and carries on (until SIGKILL).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

struct Options {
    host: String,
    port: u16,
    ready_after: Duration,
    greeting_file: Option<String>,
    ignore_sigterm: bool,
}

struct State {
    options: Options,
    started: Instant,
    terminating: AtomicBool,
    sabotaged: AtomicBool,
    in_flight: AtomicUsize,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        host: "127.0.0.1".into(),
        port: 8080,
        ready_after: Duration::ZERO,
        greeting_file: None,
        ignore_sigterm: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--host" => options.host = value()?,
            "--port" => options.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--ready-after-ms" => {
                let ms: u64 = value()?
                    .parse()
                    .map_err(|e| format!("--ready-after-ms: {e}"))?;
                options.ready_after = Duration::from_millis(ms);
            }
            "--greeting-file" => options.greeting_file = Some(value()?),
            "--ignore-sigterm" => options.ignore_sigterm = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("e2e-echo: {e}");
            std::process::exit(2);
        }
    };
    let addr = format!("{}:{}", options.host, options.port);
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("e2e-echo: binding {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {addr}");
    let state = Arc::new(State {
        options,
        started: Instant::now(),
        terminating: AtomicBool::new(false),
        sabotaged: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
    });
    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                state.in_flight.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &state).await;
                    state.in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
            _ = sigterm.recv() => {
                if state.options.ignore_sigterm {
                    println!("received SIGTERM, ignoring it");
                    continue;
                }
                let n = state.in_flight.load(Ordering::SeqCst);
                println!("received SIGTERM, draining {n} in-flight request(s)");
                state.terminating.store(true, Ordering::SeqCst);
                break;
            }
        }
    }
    drop(listener);
    while state.in_flight.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("drained, exiting");
}

async fn serve(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let head = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("read timeout"))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break String::from_utf8_lossy(&buf[..end]).into_owned();
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (status, content_type, body) = respond(path, query, state).await;
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

async fn respond(path: &str, query: &str, state: &State) -> (&'static str, &'static str, String) {
    const OK: &str = "200 OK";
    const TEXT: &str = "text/plain";
    match path {
        "/healthz" if state.sabotaged.load(Ordering::SeqCst) => {
            ("500 Internal Server Error", TEXT, "sabotaged\n".into())
        }
        "/healthz" => (OK, TEXT, "ok\n".into()),
        "/readyz" => {
            let ready = state.started.elapsed() >= state.options.ready_after
                && !state.terminating.load(Ordering::SeqCst);
            if ready {
                (OK, TEXT, "ready\n".into())
            } else {
                ("503 Service Unavailable", TEXT, "not ready\n".into())
            }
        }
        "/sabotage" => {
            state.sabotaged.store(true, Ordering::SeqCst);
            println!("sabotaged: /healthz fails from now on");
            (OK, TEXT, "sabotaged\n".into())
        }
        "/env" => {
            let env: BTreeMap<String, String> = std::env::vars().collect();
            let body = serde_json::json!({
                "args": std::env::args().collect::<Vec<_>>(),
                "env": env,
                "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
                "pid": std::process::id(),
            });
            (OK, "application/json", body.to_string())
        }
        "/greeting" => match &state.options.greeting_file {
            Some(file) => match std::fs::read_to_string(file) {
                Ok(text) => (OK, TEXT, text),
                Err(e) => ("500 Internal Server Error", TEXT, format!("{file}: {e}\n")),
            },
            None => ("404 Not Found", TEXT, "no --greeting-file\n".into()),
        },
        "/slow" => {
            let ms: u64 = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (OK, TEXT, format!("slept {ms} ms\n"))
        }
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}
