//! Server-sent events as OpenAI streams them: one `data: <json>\n\n` frame per chunk, and a
//! final `data: [DONE]\n\n`.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::{Stream, StreamExt};
use serde::Serialize;

/// The frame that ends every stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// One `data:` frame holding `value` as compact (single-line) JSON.
pub fn frame<T: Serialize>(value: &T) -> Bytes {
    let mut out = b"data: ".to_vec();
    // Serializing our own response types cannot fail (no maps with non-string keys).
    serde_json::to_writer(&mut out, value).expect("response chunks serialize to JSON");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A `text/event-stream` response whose body is `frames`. Dropping the body (the client went
/// away) drops the stream, and with it whatever the stream owns.
pub fn response(frames: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    let mut resp = Response::new(Body::from_stream(frames.map(Ok::<_, Infallible>)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Ask reverse proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_single_line_json_with_a_blank_line_after() {
        let f = frame(&serde_json::json!({"text": "a\nb"}));
        assert_eq!(&f[..], b"data: {\"text\":\"a\\nb\"}\n\n");
    }

    #[tokio::test]
    async fn response_streams_frames_in_order_as_event_stream() {
        let frames = vec![
            frame(&serde_json::json!({"i": 0})),
            Bytes::from_static(DONE),
        ];
        let resp = response(futures::stream::iter(frames));
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(&body[..], b"data: {\"i\":0}\n\ndata: [DONE]\n\n");
    }
}
