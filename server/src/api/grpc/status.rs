//! Errors as gRPC statuses, mapped in one place ([`code_for`]) from what the HTTP API answers:
//! the handlers' [`ApiError`]s ([`from_api`]) and the middleware's JSON error responses
//! ([`grpc_errors`]). The caller's `grpc-timeout` is read here too ([`caller_timeout`]).

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use super::super::errors::ApiError;
use super::super::types::ErrorBody;

/// The gRPC code of an HTTP API error, from its status and OpenAI `code`.
pub fn code_for(status: StatusCode, code: Option<&str>) -> Code {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        // An unknown service path reaches the HTTP fallback (`not_found`); an unknown model
        // is a request's mistake.
        StatusCode::NOT_FOUND if code == Some("not_found") => Code::Unimplemented,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// A handler's error as a status, with `retry-after` metadata when the HTTP answer has a
/// `Retry-After` header.
pub fn from_api(err: &ApiError) -> Status {
    let status = err.status();
    let detail = err.body().error;
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), error = ?err, "gRPC request failed");
    } else {
        tracing::debug!(status = status.as_u16(), error = ?err, "gRPC request rejected");
    }
    let mut out = Status::new(code_for(status, detail.code.as_deref()), detail.message);
    if let Some(secs) = err.retry_after() {
        out.metadata_mut()
            .insert("retry-after", MetadataValue::from(secs));
    }
    out
}

/// Whether a request or response is gRPC (by its Content-Type).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Middleware: a gRPC request answered by the HTTP side (the API key check, the tenant's
/// limits, load shedding, the timeout, a panic, an unknown path) gets that answer as a gRPC
/// status in a trailers-only response, its headers (`retry-after`, `x-ratelimit-*`) kept as
/// metadata. Other requests and answers pass untouched.
pub async fn grpc_errors(req: Request, next: Next) -> Response {
    if !is_grpc(req.headers()) {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    if is_grpc(resp.headers()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // The HTTP side's error bodies are small JSON objects.
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let detail = serde_json::from_slice::<ErrorBody>(&bytes)
        .ok()
        .map(|b| b.error);
    let status = match detail {
        Some(d) => Status::new(code_for(parts.status, d.code.as_deref()), d.message),
        None => Status::new(
            code_for(parts.status, None),
            format!("the server answered HTTP {}", parts.status),
        ),
    };
    let mut out = status.into_http::<axum::body::Body>();
    for (name, value) in &parts.headers {
        if name == header::RETRY_AFTER || name.as_str().starts_with("x-ratelimit-") {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.into_response()
}

/// The caller's deadline from its `grpc-timeout` header (digits and a unit: `H`, `M`, `S`,
/// `m`, `u`, `n`), when it sends a valid one.
pub fn caller_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn http_errors_map_to_the_grpc_codes_clients_expect() {
        let cases = [
            (
                ApiError::invalid("temperature", "too hot"),
                Code::InvalidArgument,
            ),
            (
                ApiError::Unauthorized {
                    message: "no key".into(),
                },
                Code::Unauthenticated,
            ),
            (
                ApiError::ModelNotFound {
                    requested: "x".into(),
                    served: "y".into(),
                },
                Code::NotFound,
            ),
            (
                ApiError::RouteNotFound {
                    method: "POST".into(),
                    path: "/a.B/C".into(),
                },
                Code::Unimplemented,
            ),
            (
                ApiError::RateLimited {
                    message: "slow down".into(),
                    retry_after_secs: 7,
                },
                Code::ResourceExhausted,
            ),
            (ApiError::Overloaded, Code::Unavailable),
            (ApiError::Timeout { secs: 3 }, Code::DeadlineExceeded),
            (
                ApiError::Internal {
                    message: "bug".into(),
                },
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let status = from_api(&err);
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(status.message(), err.body().error.message);
        }
        let limited = from_api(&ApiError::RateLimited {
            message: "slow down".into(),
            retry_after_secs: 7,
        });
        assert_eq!(limited.metadata().get("retry-after").unwrap(), "7");
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_bad_ones_are_ignored() {
        let parse = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
            caller_timeout(&h)
        };
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "10", "1x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(caller_timeout(&HeaderMap::new()), None);
    }
}
