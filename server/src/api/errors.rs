//! API errors: every failure a client can see, mapped to an HTTP status and an OpenAI-shaped
//! JSON body in exactly one place ([`IntoResponse for ApiError`](ApiError)).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::types::{ErrorBody, ErrorDetail};
use crate::Error;

/// Seconds a client is told to wait (`Retry-After`) when the server is busy or still loading.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 400: the request is malformed or asks for something out of range.
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// 401: no API key, or one the server does not know.
    Unauthorized { message: String },
    /// 404: the request names a model this server does not serve.
    ModelNotFound { requested: String, served: String },
    /// 404: no such route.
    RouteNotFound { method: String, path: String },
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 413: the body is larger than the server accepts.
    PayloadTooLarge { message: String },
    /// 429: the engine queue is full.
    QueueFull { message: String },
    /// 429: the tenant is over one of its limits (see [`ratelimit`](super::ratelimit)).
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// 503: the model is still loading, or the server is shutting down.
    NotReady { message: String },
    /// 503: too many requests in flight at the HTTP layer.
    Overloaded,
    /// 504: the request ran past the server's request timeout.
    Timeout { secs: u64 },
    /// 500: a failure on our side.
    Internal { message: String },
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    pub fn invalid_body(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotFound { .. } | ApiError::RouteNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QueueFull { .. } | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NotReady { .. } | ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds the client should wait before trying again (`Retry-After`), for the errors
    /// that pass.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::QueueFull { .. } | ApiError::NotReady { .. } | ApiError::Overloaded => {
                Some(RETRY_AFTER_SECS)
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The OpenAI-shaped body (also used for errors inside an SSE stream).
    pub fn body(&self) -> ErrorBody {
        let (message, kind, param, code) = match self {
            ApiError::InvalidRequest { message, param } => (
                message.clone(),
                "invalid_request_error",
                param.clone(),
                None,
            ),
            ApiError::Unauthorized { message } => (
                message.clone(),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
            ApiError::ModelNotFound { requested, served } => (
                format!(
                    "the model {requested:?} does not exist on this server; it serves {served:?} \
                     (see GET /v1/models)"
                ),
                "invalid_request_error",
                Some("model".to_owned()),
                Some("model_not_found"),
            ),
            ApiError::RouteNotFound { method, path } => (
                format!(
                    "no route {method} {path}; this server answers POST /v1/chat/completions, \
                     POST /v1/completions, POST /v1/embeddings, GET /v1/models, \
                     POST /tokenize, POST /detokenize, \
                     GET /healthz, GET /readyz, GET /metrics and GET /openapi.json (the whole \
                     API)"
                ),
                "invalid_request_error",
                None,
                Some("not_found"),
            ),
            ApiError::MethodNotAllowed => (
                "this route does not accept that HTTP method".to_owned(),
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            ),
            ApiError::PayloadTooLarge { message } => {
                (message.clone(), "invalid_request_error", None, None)
            }
            ApiError::QueueFull { message } => (
                message.clone(),
                "rate_limit_error",
                None,
                Some("queue_full"),
            ),
            ApiError::RateLimited { message, .. } => (
                message.clone(),
                "rate_limit_error",
                None,
                Some("rate_limit_exceeded"),
            ),
            ApiError::NotReady { message } => (
                message.clone(),
                "service_unavailable",
                None,
                Some("not_ready"),
            ),
            ApiError::Overloaded => (
                format!("the server has too many requests in flight; retry in {RETRY_AFTER_SECS}s"),
                "service_unavailable",
                None,
                Some("overloaded"),
            ),
            ApiError::Timeout { secs } => (
                format!(
                    "the request took longer than the server's {secs}s timeout \
                     (--request-timeout-secs); ask for fewer tokens (max_tokens) or send a \
                     shorter prompt"
                ),
                "timeout_error",
                None,
                Some("timeout"),
            ),
            ApiError::Internal { message } => (message.clone(), "server_error", None, None),
        };
        ErrorBody {
            error: ErrorDetail {
                message,
                kind: kind.to_owned(),
                param,
                code: code.map(str::to_owned),
            },
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::ContextOverflow { .. } => ApiError::invalid("max_tokens", e.to_string()),
            Error::EmptyPrompt | Error::TokenOutOfRange { .. } => {
                ApiError::invalid("prompt", e.to_string())
            }
            Error::QueueFull { .. } => ApiError::QueueFull {
                message: e.to_string(),
            },
            Error::EngineStopped => ApiError::NotReady {
                message: e.to_string(),
            },
            // A chat template that cannot render these messages is a problem with the request
            // (e.g. roles out of the order the template demands).
            Error::ChatTemplate(_) => ApiError::invalid("messages", e.to_string()),
            other => ApiError::Internal {
                message: other.to_string(),
            },
        }
    }
}

/// The answer to a request whose handler panicked: a 500 naming the panic (the panic hook has
/// logged it with its location already).
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = crate::error::panic_message(&*panic);
    ApiError::Internal {
        message: format!("the server failed while handling this request ({what}); other requests are unaffected, retry or report it"),
    }
    .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = ?self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = ?self, "request rejected");
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json_of(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn invalid_request_has_the_openai_shape() {
        let resp = ApiError::invalid("temperature", "too hot").into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            json_of(resp).await,
            serde_json::json!({"error": {"message": "too hot", "type": "invalid_request_error",
                "param": "temperature", "code": null}})
        );
    }

    #[tokio::test]
    async fn busy_answers_carry_retry_after() {
        for e in [
            ApiError::QueueFull {
                message: "full".into(),
            },
            ApiError::NotReady {
                message: "loading".into(),
            },
            ApiError::Overloaded,
        ] {
            let resp = e.into_response();
            assert!(resp.status() == 429 || resp.status() == 503);
            assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        }
        let limited = ApiError::RateLimited {
            message: "over".into(),
            retry_after_secs: 7,
        }
        .into_response();
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "7");
        assert_eq!(
            json_of(limited).await["error"]["code"],
            "rate_limit_exceeded"
        );
    }

    #[tokio::test]
    async fn engine_errors_map_to_statuses() {
        let overflow = ApiError::from(Error::ContextOverflow {
            prompt_tokens: 10,
            max_tokens: 100,
            context_length: 50,
        });
        assert_eq!(overflow.status(), StatusCode::BAD_REQUEST);
        let body = overflow.body();
        assert_eq!(body.error.param.as_deref(), Some("max_tokens"));
        assert!(
            body.error.message.contains("at most 40"),
            "{}",
            body.error.message
        );
        assert_eq!(
            ApiError::from(Error::QueueFull { capacity: 4 }).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ApiError::from(Error::Engine("boom".into())).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let nf = ApiError::ModelNotFound {
            requested: "gpt-4".into(),
            served: "smol".into(),
        };
        assert_eq!(nf.status(), StatusCode::NOT_FOUND);
        assert_eq!(nf.body().error.code.as_deref(), Some("model_not_found"));
    }
}
