//! `ryzanstein.v1.Inference`: `Generate` and `Embed` on the HTTP API's path. A request is
//! turned into the JSON request of `/v1/completions` (text or tokens) or
//! `/v1/chat/completions` (chat) and goes through the same validation, tokenizing, tenant
//! charging and engine submission, so limits and error messages are the same; `Embed` is
//! `/v1/embeddings` with float output.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use serde_json::{json, Map, Value};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::super::embeddings::{self, EmbeddingRequest, EmbeddingValue};
use super::super::errors::ApiError;
use super::super::ratelimit::Permit;
use super::super::routes::{prepare_raw, submit};
use super::super::types::RawRequest;
use super::super::validation::Endpoint;
use super::super::{AppState, RequestTimeout};
use super::pb::{self, generate_request::Input};
use super::status::{caller_timeout, from_api};
use crate::engine::GenEvent;

pub struct Inference {
    state: Arc<AppState>,
}

impl Inference {
    pub fn new(state: Arc<AppState>) -> Inference {
        Inference { state }
    }
}

/// What the middleware handed the request: its tenant's permit and the server's timeout.
fn context<T>(req: &Request<T>) -> Result<(Arc<Permit>, RequestTimeout), Status> {
    let permit = req.extensions().get::<Arc<Permit>>().cloned();
    let timeout = req.extensions().get::<RequestTimeout>().copied();
    match (permit, timeout) {
        (Some(p), Some(t)) => Ok((p, t)),
        _ => Err(Status::internal(
            "the gRPC service was reached outside the API middleware; this is a server bug",
        )),
    }
}

/// The `/v1/completions` or `/v1/chat/completions` request a `GenerateRequest` stands for.
pub fn raw_request(msg: pb::GenerateRequest) -> Result<(RawRequest, Endpoint), ApiError> {
    let mut body = Map::new();
    if !msg.model.is_empty() {
        body.insert("model".into(), msg.model.into());
    }
    let endpoint = match msg.input {
        Some(Input::Chat(chat)) => {
            let messages = chat
                .messages
                .into_iter()
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect();
            body.insert("messages".into(), Value::Array(messages));
            Endpoint::Chat
        }
        Some(Input::Text(text)) => {
            body.insert("prompt".into(), text.into());
            Endpoint::Completions
        }
        Some(Input::Tokens(tokens)) => {
            body.insert("prompt".into(), tokens.ids.into());
            Endpoint::Completions
        }
        None => {
            return Err(ApiError::invalid(
                "input",
                "the request has no input: set one of chat (messages), text or tokens",
            ))
        }
    };
    let mut put = |name: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(name.into(), v);
        }
    };
    // JSON has no NaN or infinity (serde_json would make them null, that is unset).
    let real = |name: &str, v: Option<f64>| match v {
        Some(x) if !x.is_finite() => Err(ApiError::invalid(
            name,
            format!("{name} is {x}; send a finite number"),
        )),
        _ => Ok(v.map(Value::from)),
    };
    put("max_tokens", msg.max_tokens.map(Value::from));
    put("temperature", real("temperature", msg.temperature)?);
    put("top_p", real("top_p", msg.top_p)?);
    put("top_k", msg.top_k.map(Value::from));
    put("min_p", real("min_p", msg.min_p)?);
    put(
        "presence_penalty",
        real("presence_penalty", msg.presence_penalty)?,
    );
    put(
        "frequency_penalty",
        real("frequency_penalty", msg.frequency_penalty)?,
    );
    put(
        "repetition_penalty",
        real("repetition_penalty", msg.repetition_penalty)?,
    );
    put("seed", msg.seed.map(Value::from));
    put("stop", (!msg.stop.is_empty()).then(|| msg.stop.into()));
    put("ignore_eos", msg.ignore_eos.then_some(Value::Bool(true)));
    let raw = serde_path_to_error::deserialize(Value::Object(body)).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(path.clone(), format!("field `{path}`: {}", e.into_inner()))
    })?;
    Ok((raw, endpoint))
}

/// The `/v1/embeddings` request an `EmbedRequest` stands for.
pub fn embedding_request(msg: pb::EmbedRequest) -> Result<EmbeddingRequest, ApiError> {
    let input = match (msg.texts.is_empty(), msg.tokens.is_empty()) {
        (false, false) => {
            return Err(ApiError::invalid(
                "input",
                "the request has both texts and tokens; send one of the two lists",
            ))
        }
        (true, true) => None,
        (false, true) => Some(msg.texts.into()),
        (true, false) => Some(Value::Array(
            msg.tokens.into_iter().map(|t| t.ids.into()).collect(),
        )),
    };
    Ok(EmbeddingRequest {
        input,
        model: (!msg.model.is_empty()).then_some(msg.model),
        encoding_format: None,
        dimensions: None,
        user: None,
    })
}

/// One engine event as a stream message; errors end the stream with their status.
fn message(ev: GenEvent, timeout: RequestTimeout) -> Result<pb::GenerateResponse, Status> {
    match ev {
        GenEvent::Token { id, text, .. } => Ok(pb::GenerateResponse {
            token_id: Some(id),
            text,
            ..Default::default()
        }),
        GenEvent::Done {
            finish_reason,
            usage,
            ..
        } => Ok(pb::GenerateResponse {
            finish_reason: finish_reason.as_str().to_owned(),
            usage: Some(pb::Usage {
                prompt_tokens: usage.prompt_tokens as u32,
                completion_tokens: usage.completion_tokens as u32,
                total_tokens: (usage.prompt_tokens + usage.completion_tokens) as u32,
            }),
            ..Default::default()
        }),
        GenEvent::Error(message) => Err(from_api(&ApiError::Internal { message })),
        GenEvent::TimedOut { .. } => Err(from_api(&timeout.error())),
    }
}

type GenerateStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::inference_server::Inference for Inference {
    type GenerateStream = GenerateStream;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<GenerateStream>, Status> {
        let arrived = Instant::now();
        let (permit, timeout) = context(&request)?;
        // The caller's deadline, when sooner than the server's.
        let mut deadline = timeout.deadline_from(arrived);
        if let Some(t) = caller_timeout(request.metadata().as_ref()) {
            deadline = deadline.min(arrived + t);
        }
        let state = &self.state;
        let submitted = async {
            let engine = state.engine()?;
            let (req, prompt_ids) = async {
                let (raw, endpoint) = raw_request(request.into_inner())?;
                prepare_raw(&engine, state, raw, endpoint).await
            }
            .instrument(tracing::info_span!("validate"))
            .await?;
            submit(&engine, &req, prompt_ids, &permit, deadline).await
        }
        .await
        .map_err(|e| from_api(&e))?;
        let Some(choice) = submitted.into_iter().next() else {
            return Err(Status::internal("the engine accepted no sequence"));
        };
        // The stream ends after the first error; dropping it (the client went away)
        // cancels the sequence and frees its KV blocks.
        let stream = choice
            .into_stream()
            .map(move |ev| message(ev, timeout))
            .scan(false, |failed, item| {
                let out = (!*failed).then_some(item);
                if let Some(Err(_)) = &out {
                    *failed = true;
                }
                futures::future::ready(out)
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let (permit, _) = context(&request)?;
        let req = embedding_request(request.into_inner());
        let list = embeddings::serve(&self.state, &permit, req)
            .await
            .map_err(|e| from_api(&e))?;
        let embeddings = list
            .data
            .into_iter()
            .map(|item| match item.embedding {
                EmbeddingValue::Float(values) => Ok(pb::Embedding { values }),
                EmbeddingValue::Base64(_) => Err(Status::internal(
                    "the embedding came back base64-encoded; this is a server bug",
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::EmbedResponse {
            model: list.model,
            embeddings,
            prompt_tokens: list.usage.prompt_tokens as u32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_requests_become_the_http_requests_they_stand_for() {
        let (raw, endpoint) = raw_request(pb::GenerateRequest {
            input: Some(Input::Chat(pb::Chat {
                messages: vec![pb::ChatMessage {
                    role: "user".into(),
                    content: "hi".into(),
                }],
            })),
            max_tokens: Some(5),
            temperature: Some(0.5),
            seed: Some(-3),
            stop: vec!["\n".into()],
            ignore_eos: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(endpoint, Endpoint::Chat);
        assert_eq!(raw.messages.as_ref().unwrap()[0].role, "user");
        assert_eq!(raw.max_tokens, Some(5));
        assert_eq!(raw.temperature, Some(0.5));
        assert_eq!(raw.seed, Some(-3));
        assert_eq!(raw.ignore_eos, Some(true));
        assert!(raw.model.is_none() && raw.top_p.is_none());

        let (raw, endpoint) = raw_request(pb::GenerateRequest {
            model: "smol".into(),
            input: Some(Input::Tokens(pb::TokenIds { ids: vec![1, 2, 3] })),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(endpoint, Endpoint::Completions);
        assert_eq!(raw.model.as_deref(), Some("smol"));
        assert!(matches!(
            raw.prompt,
            Some(super::super::super::types::RawPrompt::Tokens(ref t)) if t == &[1, 2, 3]
        ));

        let err = raw_request(pb::GenerateRequest::default()).unwrap_err();
        assert!(err.body().error.message.contains("no input"), "{err:?}");
        let err = raw_request(pb::GenerateRequest {
            input: Some(Input::Text("x".into())),
            top_p: Some(f64::NAN),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.body().error.param.as_deref(), Some("top_p"));
    }

    use proptest::prelude::*;

    fn input() -> impl Strategy<Value = Option<Input>> {
        prop_oneof![
            Just(None),
            ".{0,20}".prop_map(|t| Some(Input::Text(t))),
            proptest::collection::vec(any::<u32>(), 0..8)
                .prop_map(|ids| Some(Input::Tokens(pb::TokenIds { ids }))),
            proptest::collection::vec(("[a-z]{0,10}", ".{0,10}"), 0..4).prop_map(|m| {
                let messages = m
                    .into_iter()
                    .map(|(role, content)| pb::ChatMessage { role, content })
                    .collect();
                Some(Input::Chat(pb::Chat { messages }))
            }),
        ]
    }

    proptest! {
        /// Any message, however odd its values, is validated or refused with an error naming
        /// what is wrong, never a panic (the gRPC side of the HTTP fuzzing).
        #[test]
        fn any_generate_request_validates_or_is_refused(
            model in prop_oneof![Just(String::new()), Just("smol".to_owned()), ".{0,8}"],
            input in input(),
            max_tokens in proptest::option::of(any::<u32>()),
            floats in proptest::collection::vec(proptest::option::of(any::<f64>()), 6),
            top_k in proptest::option::of(any::<i64>()),
            seed in proptest::option::of(any::<i64>()),
            stop in proptest::collection::vec(".{0,6}", 0..6),
            ignore_eos in any::<bool>(),
        ) {
            let msg = pb::GenerateRequest {
                model,
                input,
                max_tokens,
                temperature: floats[0],
                top_p: floats[1],
                min_p: floats[2],
                presence_penalty: floats[3],
                frequency_penalty: floats[4],
                repetition_penalty: floats[5],
                top_k,
                seed,
                stop,
                ignore_eos,
            };
            let checked = raw_request(msg).and_then(|(raw, endpoint)| {
                super::super::super::validation::validate(raw, endpoint, "smol")
            });
            if let Err(e) = checked {
                prop_assert!(!e.body().error.message.is_empty());
                prop_assert_eq!(e.status().as_u16() / 100, 4, "{:?}", e);
            }
        }
    }

    #[test]
    fn embed_requests_take_one_list() {
        let req = embedding_request(pb::EmbedRequest {
            texts: vec!["a".into(), "b".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(req.input, Some(json!(["a", "b"])));
        let req = embedding_request(pb::EmbedRequest {
            tokens: vec![pb::TokenIds {
                ids: vec![101, 102],
            }],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(req.input, Some(json!([[101, 102]])));
        assert!(embedding_request(pb::EmbedRequest {
            texts: vec!["a".into()],
            tokens: vec![pb::TokenIds { ids: vec![1] }],
            ..Default::default()
        })
        .is_err());
    }
}
