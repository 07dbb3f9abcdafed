//! A scripted Kubernetes API for reconcile and leader-election tests: a `tower-test` mock
//! service behind a real `kube::Client`. Each test states the calls it expects, in order, with
//! the method and path checked and the body handed back for assertions; a call that does not
//! come within a few seconds fails the test, and so does an unexpected one.

#![allow(dead_code)] // each test file uses its own subset

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle, SendResponse};

/// How long to wait for a call the scenario expects.
const WAIT: Duration = Duration::from_secs(5);

/// The API server side of the mock.
pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// A client talking to a scripted API server.
pub fn client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer { handle })
}

/// One request the client made.
pub struct Call {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, e.g. `/api/v1/nodes?limit=500`.
    pub uri: String,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
    respond: SendResponse<Response<Body>>,
}

impl Call {
    /// Answers with `status` and `body`.
    pub fn reply(self, status: u16, body: Value) {
        let response = Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }

    /// Answers with a Kubernetes `Status` error.
    pub fn fail(self, code: u16, reason: &str, message: &str) {
        self.reply(
            code,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": reason, "message": message, "code": code,
            }),
        );
    }
}

impl ApiServer {
    /// The next call, which must be `method` on a URI starting with `uri_prefix`.
    pub async fn expect(&mut self, method: &str, uri_prefix: &str) -> Call {
        let next = tokio::time::timeout(WAIT, self.handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("expected {method} {uri_prefix}, but no call came"));
        let (request, respond) = next
            .unwrap_or_else(|| panic!("expected {method} {uri_prefix}, but the client is gone"));
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let call = Call {
            method: parts.method.to_string(),
            uri: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            content_type: parts
                .headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!("{method} {uri_prefix}: body is not JSON ({e}): {bytes:?}")
                })
            },
            respond,
        };
        assert_eq!(
            call.method, method,
            "unexpected call {} {}",
            call.method, call.uri
        );
        assert!(
            call.uri.starts_with(uri_prefix),
            "expected {method} {uri_prefix}, got {} {}",
            call.method,
            call.uri
        );
        call
    }

    /// The next call, or `None` when the client is gone or makes none within `wait`.
    pub async fn next_call(&mut self, wait: Duration) -> Option<Call> {
        let (request, respond) = tokio::time::timeout(wait, self.handle.next_request())
            .await
            .ok()??;
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        Some(Call {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            content_type: None,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            respond,
        })
    }

    /// Fails if the client makes another call within a short while.
    pub async fn expect_no_more_calls(&mut self) {
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(200), self.handle.next_request()).await
        {
            panic!("unexpected call {} {}", request.method(), request.uri());
        }
    }
}
