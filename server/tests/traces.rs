//! OpenTelemetry traces from the real server process: an in-process OTLP/HTTP receiver (an
//! axum server in this test, decoding the OTLP JSON encoding) gets the spans of a chat request
//! that carried a W3C `traceparent`: the request's server span is a child of the caller's span
//! in the caller's trace, and the validate, queue, prefill and decode spans are its children.
//! A request without `traceparent` starts a trace of its own. With `--log-format json`, the
//! log lines of a request carry its trace id. A gRPC call's `traceparent` metadata is its
//! parent the same way.

mod api_harness;
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_harness::{client, Server};
use serde_json::{json, Value};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Starts the receiver on a free loopback port; the spans it received (flattened).
fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = spans.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let store = store.clone();
                    async move {
                        let v: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                        let mut out = store.lock().unwrap();
                        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                            let service = rs["resource"]["attributes"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .find(|a| a["key"] == "service.name")
                                .map(|a| a["value"]["stringValue"].clone());
                            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                                for span in ss["spans"].as_array().into_iter().flatten() {
                                    let mut span = span.clone();
                                    span["service"] = service.clone().unwrap_or(Value::Null);
                                    out.push(span);
                                }
                            }
                        }
                        axum::Json(json!({}))
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (format!("http://{addr}"), spans)
}

/// Waits (bounded) until the spans named `names` of trace `trace` have arrived.
fn wait_for(spans: &Mutex<Vec<Value>>, trace: &str, names: &[&str]) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<Value> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s["traceId"].as_str() == Some(trace))
            .cloned()
            .collect();
        if names
            .iter()
            .all(|n| got.iter().any(|s| s["name"].as_str() == Some(n)))
        {
            return got;
        }
        assert!(
            Instant::now() < until,
            "spans {names:?} of trace {trace} did not arrive; got {got:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn chat(server: &Server, traceparent: Option<&str>) {
    let mut req = client().post(server.url("/v1/chat/completions")).json(
        &json!({"messages": [{"role": "user", "content": "Say hi."}],
                      "max_tokens": 6, "temperature": 0}),
    );
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    assert_eq!(req.send().unwrap().status().as_u16(), 200);
}

#[test]
fn spans_reach_an_otlp_receiver_under_the_callers_trace() {
    let (endpoint, spans) = receiver();
    let server = Server::start_with_env(
        &["--log-format", "json"],
        &[
            ("RUST_LOG", "warn,ryzanstein_server::api=debug"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "ryzanstein-test"),
        ],
    );
    chat(&server, Some(&format!("00-{TRACE_ID}-{CALLER_SPAN}-01")));
    let names = [
        "POST /v1/chat/completions",
        "validate",
        "queue",
        "prefill",
        "decode",
    ];
    let got = wait_for(&spans, TRACE_ID, &names);
    let by_name = |n: &str| {
        got.iter()
            .find(|s| s["name"].as_str() == Some(n))
            .unwrap_or_else(|| panic!("no span {n}"))
    };
    let request = by_name("POST /v1/chat/completions");
    assert_eq!(request["parentSpanId"], CALLER_SPAN, "{request:#}");
    assert_eq!(request["kind"], 2, "a server span: {request:#}");
    assert_eq!(request["service"], "ryzanstein-test");
    let request_id = request["spanId"].as_str().unwrap();
    for n in ["validate", "queue", "prefill", "decode"] {
        let s = by_name(n);
        assert_eq!(s["parentSpanId"], request_id, "{n}: {s:#}");
    }
    // The phases follow each other in time.
    let nanos = |s: &Value, k: &str| -> u128 {
        let v = &s[k];
        v.as_str()
            .map(|t| t.parse().unwrap())
            .or_else(|| v.as_u64().map(u128::from))
            .unwrap_or_else(|| panic!("{k} of {s:#}"))
    };
    let (queue, prefill, decode) = (by_name("queue"), by_name("prefill"), by_name("decode"));
    assert!(nanos(queue, "endTimeUnixNano") <= nanos(prefill, "startTimeUnixNano") + 1);
    assert!(nanos(prefill, "endTimeUnixNano") <= nanos(decode, "startTimeUnixNano") + 1);
    assert!(nanos(request, "startTimeUnixNano") <= nanos(queue, "startTimeUnixNano"));

    // The JSON log lines written while handling the request carry its trace id.
    let logs = server.stderr();
    let queued: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "request queued")
        .unwrap_or_else(|| panic!("no JSON line `request queued` in\n{logs}"));
    assert_eq!(queued["span"]["trace_id"], TRACE_ID, "{queued:#}");
    assert_eq!(queued["level"], "DEBUG");

    // Without traceparent: a new trace, whose request span has no parent.
    let before: Vec<String> = spans
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s["traceId"].as_str().map(str::to_owned))
        .collect();
    chat(&server, None);
    let until = Instant::now() + Duration::from_secs(30);
    let fresh = loop {
        let found = spans.lock().unwrap().iter().find_map(|s| {
            let t = s["traceId"].as_str()?;
            (s["name"] == "POST /v1/chat/completions" && !before.iter().any(|b| b == t))
                .then(|| s.clone())
        });
        if let Some(s) = found {
            break s;
        }
        assert!(Instant::now() < until, "no span of the second request");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(fresh["traceId"], TRACE_ID);
    assert!(
        fresh["parentSpanId"].as_str().unwrap_or("").is_empty(),
        "{fresh:#}"
    );

    // A gRPC call's traceparent comes in its metadata; its span is named after the method.
    grpc_generate(&server, &format!("00-{GRPC_TRACE_ID}-{CALLER_SPAN}-01"));
    let method = "ryzanstein.v1.Inference/Generate";
    let got = wait_for(
        &spans,
        GRPC_TRACE_ID,
        &[method, "validate", "prefill", "decode"],
    );
    let call = got.iter().find(|s| s["name"] == method).unwrap();
    assert_eq!(call["parentSpanId"], CALLER_SPAN, "{call:#}");
    assert_eq!(call["kind"], 2, "a server span: {call:#}");
    for n in ["validate", "prefill", "decode"] {
        let s = got.iter().find(|s| s["name"] == n).unwrap();
        assert_eq!(s["parentSpanId"], call["spanId"], "{n}: {s:#}");
    }
}

const GRPC_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// One greedy `Generate` call carrying `traceparent`, read to its end.
fn grpc_generate(server: &Server, traceparent: &str) {
    use futures::StreamExt;
    use ryzanstein_server::api::grpc::pb;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = pb::inference_client::InferenceClient::connect(server.url(""))
            .await
            .unwrap();
        let mut req = tonic::Request::new(pb::GenerateRequest {
            input: Some(pb::generate_request::Input::Text("Say hi.".into())),
            max_tokens: Some(6),
            temperature: Some(0.0),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        let mut stream = client.generate(req).await.unwrap().into_inner();
        while let Some(msg) = stream.next().await {
            msg.unwrap();
        }
    });
}
