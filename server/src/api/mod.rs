//! The OpenAI-compatible HTTP surface (axum): routes, one middleware stack, graceful shutdown.
//!
//! - `POST /v1/chat/completions`, `POST /v1/completions`: JSON or SSE (`stream: true`).
//! - `POST /v1/embeddings`: sentence embeddings, when started with an embedding model (see
//!   [`embeddings`]).
//! - `GET /v1/models`: the served models.
//! - `POST /tokenize`, `POST /detokenize`: the model's tokenizer (see [`tokenize`]).
//! - `GET /healthz`: 200 while the process is up. `GET /readyz`: 200 once the model (and the
//!   embedding model, if any) is loaded, 503 before that and once shutdown has begun.
//! - `GET /metrics`: Prometheus metrics (see [`metrics`]).
//! - `GET /openapi.json`: the OpenAPI 3.1 document of all of this (`openapi.json` here).
//!
//! With API keys configured ([`auth`]), every route but the probes, `/metrics` and
//! `/openapi.json` needs one.
//!
//! The port is bound before the model loads (see [`AppState::set_engine`]), so readiness can be
//! watched while loading.

pub mod auth;
mod bucket;
pub mod embeddings;
pub mod errors;
pub mod grpc;
pub mod logprobs;
pub mod metrics;
pub mod ratelimit;
pub mod routes;
pub mod sse;
mod stream;
pub mod tokenize;
pub mod tools;
pub mod types;
pub mod validation;
mod watched;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::embeddings::EmbeddingModel;
use crate::engine::EngineHandle;
use embeddings::EmbeddingService;
pub use errors::ApiError;

/// What the handlers share.
pub struct AppState {
    /// The model name clients use (`model` in requests and responses).
    pub served_name: String,
    /// When the server started (the `created` of `/v1/models`).
    pub created: u64,
    engine: OnceLock<EngineHandle>,
    /// The embedding model's side, when the server was started with one.
    embeddings: Option<EmbeddingService>,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(served_name: impl Into<String>) -> Arc<AppState> {
        Self::with_embeddings(served_name, None)
    }

    /// A state that also serves `/v1/embeddings` under `embedding_name` (when given), ready
    /// once [`AppState::set_embedding_model`] is called too.
    pub fn with_embeddings(
        served_name: impl Into<String>,
        embedding_name: Option<String>,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            served_name: served_name.into(),
            created: routes::created_now(),
            engine: OnceLock::new(),
            embeddings: embedding_name.map(EmbeddingService::new),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Makes `/v1/embeddings` servable (ignored when the state has no embedding name).
    pub fn set_embedding_model(&self, model: Arc<EmbeddingModel>) {
        match &self.embeddings {
            Some(e) => e.set_model(model),
            None => tracing::warn!("an embedding model was loaded for a state without one"),
        }
    }

    /// The embedding side, when the server was started with an embedding model.
    pub fn embeddings(&self) -> Option<&EmbeddingService> {
        self.embeddings.as_ref()
    }

    /// The embedding model, or why `/v1/embeddings` cannot be served now.
    pub fn embedding_model(&self) -> Result<(&EmbeddingService, Arc<EmbeddingModel>), ApiError> {
        let Some(service) = &self.embeddings else {
            return Err(ApiError::invalid(
                "model",
                "this server has no embedding model; start it with --embedding-model (for \
                 example --embedding-model bundled://all-minilm-l6-v2) to serve /v1/embeddings",
            ));
        };
        self.engine()?;
        let model = service.model().cloned().ok_or_else(|| ApiError::NotReady {
            message: "the embedding model is still loading; retry when GET /readyz returns 200"
                .into(),
        })?;
        Ok((service, model))
    }

    /// Makes the server ready: requests are served from now on.
    pub fn set_engine(&self, engine: EngineHandle) {
        if self.engine.set(engine).is_err() {
            tracing::warn!("set_engine called twice; keeping the first engine");
        }
    }

    /// Readiness goes false and new generation requests are refused with 503.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun (it does not end).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Ok once every model is loaded and while shutdown has not begun, else why not.
    pub fn readiness(&self) -> Result<(), ApiError> {
        self.engine()?;
        match &self.embeddings {
            Some(e) if e.model().is_none() => Err(ApiError::NotReady {
                message: "the embedding model is still loading".into(),
            }),
            _ => Ok(()),
        }
    }

    /// The engine once loaded, whether or not shutdown has begun (for metrics).
    pub fn loaded_engine(&self) -> Option<&EngineHandle> {
        self.engine.get()
    }

    /// The engine, or why requests cannot be served now.
    pub fn engine(&self) -> Result<EngineHandle, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::NotReady {
                message: "the server is shutting down; send the request to another replica".into(),
            });
        }
        self.engine
            .get()
            .cloned()
            .ok_or_else(|| ApiError::NotReady {
                message: "the model is still loading; retry when GET /readyz returns 200".into(),
            })
    }
}

/// How long a generation request may take, from its arrival: the HTTP layer answers 504 when
/// a response has not begun by then, and the engine ends the request (a stream's too) at that
/// deadline, freeing its KV blocks. Handed to the handlers as an [`axum::Extension`].
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeout(pub Duration);

impl RequestTimeout {
    pub fn deadline_from(self, arrived: std::time::Instant) -> std::time::Instant {
        arrived + self.0
    }

    pub fn error(self) -> ApiError {
        ApiError::Timeout {
            secs: self.0.as_secs(),
        }
    }
}

/// HTTP-level limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A request that has not produced its response (headers, for streams) by then gets 504;
    /// the engine stops generation requests (streams too) at this deadline.
    pub request_timeout: Duration,
    /// Requests handled at once; more are answered 503 with `Retry-After` right away.
    pub max_concurrent_requests: usize,
    /// After SIGTERM/Ctrl-C, in-flight requests get this long to finish.
    pub drain_timeout: Duration,
    /// API keys the API routes require (see [`auth`]); `None`: the API is open.
    pub api_keys: Option<Arc<auth::ApiKeys>>,
    /// Per-tenant limits and counters (see [`ratelimit`]); the default has no limits.
    pub limiter: Arc<ratelimit::RateLimiter>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            request_timeout: Duration::from_secs(600),
            max_concurrent_requests: 256,
            drain_timeout: Duration::from_secs(30),
            api_keys: None,
            limiter: Arc::default(),
        }
    }
}

/// The application: API routes behind one middleware stack (error mapping, load shedding, a
/// global concurrency limit, a timeout, the API key check), probes outside it, tracing around
/// everything.
pub fn router(state: Arc<AppState>, cfg: &ServerConfig) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/completions", post(routes::completions))
        .route(
            "/v1/embeddings",
            post(embeddings::embeddings).layer(DefaultBodyLimit::max(embeddings::MAX_BODY_BYTES)),
        )
        .route("/v1/models", get(routes::models))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .merge(grpc::api_routes(state.clone()));
    let api = guarded(api, cfg);

    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/openapi.json", get(routes::openapi))
        .route(
            "/metrics",
            get(routes::metrics).layer(axum::Extension(cfg.limiter.clone())),
        )
        .merge(api)
        .merge(grpc::public_routes(state.clone()))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn(grpc::status::grpc_errors))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The span of one HTTP request: a server span named `METHOD /path` (a gRPC call's:
/// `package.Service/Method`), whose parent is the caller's W3C `traceparent` (an HTTP header,
/// or gRPC metadata) when it sends one (see [`crate::telemetry`]).
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let path = req.uri().path();
    let grpc = grpc::status::is_grpc(req.headers());
    let name = match grpc {
        true => path.trim_start_matches('/').to_owned(),
        false => format!("{} {path}", req.method()),
    };
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %path,
        rpc.system = grpc.then_some("grpc"),
        trace_id = tracing::field::Empty,
    );
    // Without an exporter there is no OpenTelemetry layer and nothing to attach to.
    if span
        .set_parent(crate::telemetry::remote_parent(req.headers()))
        .is_ok()
    {
        let trace_id = span.context().span().span_context().trace_id();
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// The API routes' middleware, innermost first: a panic while handling a request becomes that
/// request's 500 (OpenAI-shaped; other requests and the process go on; a panic inside a
/// stream's body ends that stream only), then the timeout, the concurrency limit, load
/// shedding and their error mapping, the request timeout for the engine, the tenant's limits,
/// and outermost the API key check (a caller without a valid key uses no slot and no limit).
fn guarded(api: Router<Arc<AppState>>, cfg: &ServerConfig) -> Router<Arc<AppState>> {
    let timeout_secs = cfg.request_timeout.as_secs();
    let middleware = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(
            move |err: tower::BoxError| async move {
                if err.is::<tower::timeout::error::Elapsed>() {
                    ApiError::Timeout { secs: timeout_secs }
                } else if err.is::<tower::load_shed::error::Overloaded>() {
                    ApiError::Overloaded
                } else {
                    ApiError::Internal {
                        message: format!("unhandled middleware error: {err}"),
                    }
                }
            },
        ))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            cfg.max_concurrent_requests,
        ))
        .timeout(cfg.request_timeout);
    let api = api
        .layer(CatchPanicLayer::custom(errors::panic_response))
        .layer(middleware)
        .layer(axum::Extension(RequestTimeout(cfg.request_timeout)))
        .layer(axum::middleware::from_fn_with_state(
            cfg.limiter.clone(),
            ratelimit::limit,
        ));
    match &cfg.api_keys {
        Some(keys) => api.layer(axum::middleware::from_fn_with_state(
            keys.clone(),
            auth::require_key,
        )),
        None => api,
    }
}

/// Serves until SIGTERM or Ctrl-C, then stops accepting, lets in-flight requests finish (up to
/// the drain timeout) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    cfg: ServerConfig,
) -> std::io::Result<()> {
    let app = router(state.clone(), &cfg);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested: readiness off, draining in-flight requests");
        state.begin_shutdown();
        let _ = stop_tx.send(true);
        // Keep the sender alive so the receivers do not see a spurious close.
        std::future::pending::<()>().await;
    });
    let mut graceful = stop_rx.clone();
    let mut drain = stop_rx;
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|stop| *stop).await;
    });
    let drain_timeout = cfg.drain_timeout;
    tokio::select! {
        r = server => r,
        _ = async move {
            let _ = drain.wait_for(|stop| *stop).await;
            tokio::time::sleep(drain_timeout).await;
        } => {
            tracing::warn!(?drain_timeout, "drain timeout reached; exiting with requests in flight");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn call(app: Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn before_the_model_loads_generation_is_503_and_probes_answer() {
        let state = AppState::new("smol");
        let app = router(state.clone(), &ServerConfig::default());
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        assert_eq!(call(app.clone(), get("/healthz")).await.0, StatusCode::OK);
        assert_eq!(
            call(app.clone(), get("/readyz")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let (status, models) = call(app.clone(), get("/v1/models")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(models["data"][0]["id"], "smol");
        assert_eq!(models["data"][0]["owned_by"], "ryzanstein");

        let chat = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            ))
            .unwrap();
        let (status, body) = call(app.clone(), chat).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "not_ready");

        let (status, body) = call(app.clone(), get("/v1/nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let (status, _) = call(app, get("/v1/chat/completions")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn with_keys_the_api_needs_one_and_the_probes_do_not() {
        let keys = auth::ApiKeys::new(&["sk-test".into()], None).unwrap();
        let cfg = ServerConfig {
            api_keys: Some(Arc::new(keys)),
            ..ServerConfig::default()
        };
        let app = router(AppState::new("smol"), &cfg);
        let get = |uri: &str, key: Option<&str>| {
            let mut r = Request::get(uri);
            if let Some(k) = key {
                r = r.header("authorization", format!("Bearer {k}"));
            }
            r.body(Body::empty()).unwrap()
        };
        let (status, body) = call(app.clone(), get("/v1/models", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer"));
        let (status, body) = call(app.clone(), get("/v1/models", Some("sk-nope"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid"));
        let (status, body) = call(app.clone(), get("/v1/models", Some("sk-test"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"][0]["id"], "smol");
        let x = Request::get("/v1/models")
            .header("x-api-key", "sk-test")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(app.clone(), x).await.0, StatusCode::OK);
        assert_eq!(
            call(app.clone(), get("/healthz", None)).await.0,
            StatusCode::OK
        );
        let metrics = app.oneshot(get("/metrics", None)).await.unwrap();
        assert_eq!(metrics.status(), StatusCode::OK);
    }

    /// Every operation of the OpenAPI document is a route of the router (a path it did not
    /// have would answer `not_found`, a method `method_not_allowed`), and the document is
    /// served.
    #[tokio::test]
    async fn the_openapi_document_describes_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(routes::OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let app = router(AppState::new("smol"), &ServerConfig::default());
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(
            paths.len(),
            10,
            "every route of the router, probes included"
        );
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                let req = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(path)
                    .header("content-type", "application/json")
                    .body(Body::from("{}"))
                    .unwrap();
                let resp = app.clone().oneshot(req).await.unwrap();
                assert_ne!(
                    resp.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let body: serde_json::Value =
                    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                assert_ne!(body["error"]["code"], "not_found", "{method} {path}");
            }
        }
        let req = Request::get("/openapi.json").body(Body::empty()).unwrap();
        let (status, served) = call(app, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(served, doc);
    }

    #[tokio::test]
    async fn a_panicking_handler_fails_its_request_only() {
        async fn boom() -> &'static str {
            panic!("boom in a handler")
        }
        let api = Router::new()
            .route("/boom", get(boom))
            .route("/v1/models", get(routes::models));
        let app = guarded(api, &ServerConfig::default()).with_state(AppState::new("smol"));
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let (status, body) = call(app.clone(), get("/boom")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["type"], "server_error");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("boom in a handler"));
        let (status, body) = call(app, get("/v1/models")).await;
        assert_eq!(status, StatusCode::OK, "the next request is served: {body}");
    }
}
