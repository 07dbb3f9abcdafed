//! The gRPC API on the real server process with the real models, through tonic's generated
//! client over h2c on the HTTP port: `Generate` streams the tokens `/v1/completions` and
//! `/v1/chat/completions` answer with, `Embed` gives `/v1/embeddings`' vectors, health follows
//! readiness, reflection lists the services; API keys, tenant limits, validation, the caller's
//! `grpc-timeout` and cancellation take the HTTP API's path and come back as gRPC statuses.

mod api_harness;
mod common;

use std::time::{Duration, Instant};

use api_harness::{client, Server};
use futures::StreamExt;
use ryzanstein_server::api::grpc::pb;
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::Code;

type Client = pb::inference_client::InferenceClient<tonic::transport::Channel>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn channel(server: &Server) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(server.url(""))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects over h2c on the HTTP port")
}

fn with_key<T>(msg: T, key: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(k) = key {
        let v: MetadataValue<_> = format!("Bearer {k}").parse().unwrap();
        req.metadata_mut().insert("authorization", v);
    }
    req
}

fn text_request(prompt: &str, max_tokens: u32) -> pb::GenerateRequest {
    pb::GenerateRequest {
        input: Some(pb::generate_request::Input::Text(prompt.into())),
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..Default::default()
    }
}

/// A whole `Generate` call: token ids, text, and the last message.
async fn generate(
    client: &mut Client,
    req: tonic::Request<pb::GenerateRequest>,
) -> Result<(Vec<u32>, String, pb::GenerateResponse), tonic::Status> {
    let mut stream = client.generate(req).await?.into_inner();
    let (mut ids, mut text, mut last) = (Vec::new(), String::new(), None);
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        assert!(last.is_none(), "a message after the last one: {msg:?}");
        match msg.token_id {
            Some(id) => {
                ids.push(id);
                text.push_str(&msg.text);
            }
            None => last = Some(msg),
        }
    }
    Ok((ids, text, last.expect("a last message with finish_reason")))
}

#[test]
fn generate_and_embed_answer_as_the_http_api_does() {
    let server = Server::start(&["--embedding-model", "bundled://all-minilm-l6-v2"]);
    let prompt = "The capital of France is";
    let (status, http) = server.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(status, 200, "{http}");
    let (http_chat, _, _) = server.chat_text("Say hi.", json!({"max_tokens": 10}));
    let (status, http_embed) = server.post(
        "/v1/embeddings",
        &json!({"input": ["a red apple", "the stock market"]}),
    );
    assert_eq!(status, 200, "{http_embed}");
    let (status, tok) = server.post("/tokenize", &json!({"content": prompt}));
    assert_eq!(status, 200, "{tok}");

    runtime().block_on(async {
        let ch = channel(&server).await;
        let mut client = Client::new(ch.clone());

        let (ids, text, last) = generate(&mut client, with_key(text_request(prompt, 12), None))
            .await
            .unwrap();
        assert_eq!(text, http["choices"][0]["text"].as_str().unwrap());
        assert_eq!(last.finish_reason, http["choices"][0]["finish_reason"]);
        let usage = last.usage.unwrap();
        assert_eq!(usage.completion_tokens as usize, ids.len());
        assert_eq!(usage.prompt_tokens, http["usage"]["prompt_tokens"]);
        assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens + usage.completion_tokens
        );

        // Token ids in, as /v1/completions takes them: the same continuation.
        let prompt_ids: Vec<u32> = serde_json::from_value(tok["tokens"].clone()).unwrap();
        let by_ids = pb::GenerateRequest {
            input: Some(pb::generate_request::Input::Tokens(pb::TokenIds {
                ids: prompt_ids,
            })),
            ..text_request("", 12)
        };
        let (ids_again, _, _) = generate(&mut client, with_key(by_ids, None)).await.unwrap();
        assert_eq!(ids_again, ids);

        // Chat turns go through the chat template, as /v1/chat/completions does.
        let chat = pb::GenerateRequest {
            input: Some(pb::generate_request::Input::Chat(pb::Chat {
                messages: vec![pb::ChatMessage {
                    role: "user".into(),
                    content: "Say hi.".into(),
                }],
            })),
            ..text_request("", 10)
        };
        let (_, chat_text, _) = generate(&mut client, with_key(chat, None)).await.unwrap();
        assert_eq!(chat_text, http_chat);

        let embedded = client
            .embed(with_key(
                pb::EmbedRequest {
                    texts: vec!["a red apple".into(), "the stock market".into()],
                    ..Default::default()
                },
                None,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(embedded.model, http_embed["model"]);
        assert_eq!(embedded.prompt_tokens, http_embed["usage"]["prompt_tokens"]);
        assert_eq!(embedded.embeddings.len(), 2);
        for (got, want) in embedded
            .embeddings
            .iter()
            .zip(http_embed["data"].as_array().unwrap())
        {
            let want: Vec<f32> = serde_json::from_value(want["embedding"].clone()).unwrap();
            assert_eq!(got.values, want);
        }

        // Health follows readiness; unknown services are NOT_FOUND.
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
        let mut health = HealthClient::new(ch.clone());
        for service in ["", "ryzanstein.v1.Inference"] {
            let r = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
        }
        let e = health
            .check(HealthCheckRequest {
                service: "nope.Service".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let mut watch = health
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.next().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::Serving as i32);

        // Reflection lists the services.
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut reflection = ServerReflectionClient::new(ch);
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(futures::stream::iter([ask]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.next().await.unwrap().unwrap().message_response
        else {
            panic!("not a service list")
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "ryzanstein.v1.Inference",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
    });
}

const KEYS: &str = "team-a sk-a\nteam-b sk-b\n";
const LIMITS: &str = r#"{"tenants": {"team-a": {"requestsPerMinute": 1}}}"#;

#[test]
fn keys_limits_validation_deadlines_and_cancellation_take_the_http_path() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, limits) = (dir.path().join("keys"), dir.path().join("limits.json"));
    std::fs::write(&keys, KEYS).unwrap();
    std::fs::write(&limits, LIMITS).unwrap();
    let server = Server::start(&[
        "--api-key-file",
        keys.to_str().unwrap(),
        "--tenant-limits",
        limits.to_str().unwrap(),
    ]);
    // The HTTP API's message for the same mistake.
    let (status, http_err) = {
        let r = client()
            .post(server.url("/v1/completions"))
            .bearer_auth("sk-b")
            .json(&json!({"prompt": "x", "temperature": 9}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    assert_eq!(status, 400);

    let metrics = runtime().block_on(async {
        let mut client = Client::new(channel(&server).await);
        let req = || text_request("Hello", 3);

        let e = generate(&mut client, with_key(req(), None))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert!(e.message().contains("Bearer"), "{e:?}");
        let e = generate(&mut client, with_key(req(), Some("sk-nope")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

        // team-a: one request a minute; the second is refused with the limit's metadata,
        // while team-b is served.
        generate(&mut client, with_key(req(), Some("sk-a")))
            .await
            .unwrap();
        let e = generate(&mut client, with_key(req(), Some("sk-a")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        let retry: u64 = e
            .metadata()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "retry-after {retry}");
        assert_eq!(e.metadata().get("x-ratelimit-limit-requests").unwrap(), "1");
        assert_eq!(
            e.metadata().get("x-ratelimit-remaining-requests").unwrap(),
            "0"
        );
        generate(&mut client, with_key(req(), Some("sk-b")))
            .await
            .unwrap();

        // Validation: the HTTP API's message, as INVALID_ARGUMENT; an unknown model NOT_FOUND.
        let hot = pb::GenerateRequest {
            temperature: Some(9.0),
            ..req()
        };
        let e = generate(&mut client, with_key(hot, Some("sk-b")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.message(), http_err["error"]["message"]);
        let other = pb::GenerateRequest {
            model: "gpt-4".into(),
            ..req()
        };
        let e = generate(&mut client, with_key(other, Some("sk-b")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let none = pb::GenerateRequest {
            input: None,
            ..req()
        };
        let e = generate(&mut client, with_key(none, Some("sk-b")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        // Embed without an embedding model: the HTTP API's advice.
        let e = client
            .embed(with_key(
                pb::EmbedRequest {
                    texts: vec!["x".into()],
                    ..Default::default()
                },
                Some("sk-b"),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("--embedding-model"), "{e:?}");

        // The caller's grpc-timeout ends a long generation with DEADLINE_EXCEEDED.
        let long = pb::GenerateRequest {
            ignore_eos: true,
            ..text_request("Once upon a time", 4000)
        };
        let mut timed = with_key(long.clone(), Some("sk-b"));
        timed.set_timeout(Duration::from_millis(600));
        let e = generate(&mut client, timed).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");

        // A cancelled call frees its sequence and KV blocks.
        let mut stream = client
            .generate(with_key(long, Some("sk-b")))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..3 {
            assert!(stream.next().await.unwrap().unwrap().token_id.is_some());
        }
        drop(stream);
        let url = server.url("/metrics");
        tokio::task::spawn_blocking(move || {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let text = api_harness::client()
                    .get(&url)
                    .send()
                    .unwrap()
                    .text()
                    .unwrap();
                let freed = text.lines().any(|l| {
                    l.starts_with("ryzanstein_kv_cache_blocks{")
                        && l.contains("state=\"used\"")
                        && l.ends_with(" 0")
                }) && text.lines().any(|l| {
                    l.starts_with("ryzanstein_num_requests_running{") && l.ends_with(" 0")
                });
                if freed {
                    return text;
                }
                assert!(
                    Instant::now() < until,
                    "the cancelled call still holds blocks:\n{text}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .unwrap()
    });
    // The tenants' metrics count the gRPC calls.
    let count = |tenant: &str, reason: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("ryzanstein_tenant_rejected_requests_total{")
                    && l.contains(&format!("tenant=\"{tenant}\""))
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no rejections of {tenant} for {reason}:\n{metrics}"))
    };
    assert_eq!(count("team-a", "requests_per_minute"), 1);
}

/// SIGTERM under load: gRPC calls and HTTP streams in flight all finish whole, the health
/// watch says NOT_SERVING and ends, and the server exits well before its drain timeout.
#[test]
fn sigterm_lets_every_accepted_call_finish() {
    const TOKENS: u32 = 24;
    let mut server = Server::start(&["--parallel", "8", "--drain-timeout-secs", "600"]);
    let long = || pb::GenerateRequest {
        ignore_eos: true,
        ..text_request("Once upon a time", TOKENS)
    };
    let mut http: Vec<_> = (0..3)
        .map(|_| {
            let mut s = server.post_stream(
                "/v1/completions",
                &json!({"prompt": "Once upon a time", "max_tokens": TOKENS, "temperature": 0,
                        "ignore_eos": true, "stream": true}),
            );
            assert!(s.next_frame().is_some());
            s
        })
        .collect();
    let rt = runtime();
    let (calls, mut watch) = rt.block_on(async {
        let ch = channel(&server).await;
        let mut calls = Vec::new();
        for _ in 0..4 {
            let mut stream = Client::new(ch.clone())
                .generate(long())
                .await
                .unwrap()
                .into_inner();
            let first = stream.next().await.unwrap().unwrap();
            assert!(first.token_id.is_some());
            calls.push(stream);
        }
        use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
        let mut watch = HealthClient::new(ch)
            .watch(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(watch.next().await.unwrap().unwrap().status, 1, "SERVING");
        (calls, watch)
    });

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    rt.block_on(async {
        for mut stream in calls {
            // One token was read before the signal.
            let mut tokens = 1;
            let mut last = None;
            while let Some(msg) = stream.next().await {
                let msg = msg.expect("no call is cut short");
                match msg.token_id {
                    Some(_) => tokens += 1,
                    None => last = Some(msg),
                }
            }
            assert_eq!(tokens, TOKENS);
            assert_eq!(last.unwrap().finish_reason, "length");
        }
        assert_eq!(
            watch.next().await.unwrap().unwrap().status,
            2,
            "NOT_SERVING"
        );
        let end = tokio::time::timeout(Duration::from_secs(60), watch.next()).await;
        assert!(
            matches!(end, Ok(None)),
            "the watch ends when draining: {end:?}"
        );
    });
    for s in &mut http {
        let mut frames = Vec::new();
        while let Some(f) = s.next_frame() {
            frames.push(f);
        }
        assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    }
    let status = server.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "exit status {status}");
}
