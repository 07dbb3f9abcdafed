//! The gRPC API (tonic), served on the HTTP port over HTTP/2 (h2c): `ryzanstein.v1.Inference`
//! (`Generate`, server-streaming, and `Embed`; `proto/ryzanstein/v1/inference.proto`),
//! `grpc.health.v1.Health` and `grpc.reflection.v1.ServerReflection`.
//!
//! The Inference service is a route of the same router as the HTTP API, behind the same
//! middleware (API key, tenant limits, concurrency limit, timeout, panic isolation), and its
//! handlers run the HTTP handlers' validation, tokenizing and submission ([`inference`]).
//! Errors the middleware answers in HTTP's JSON are turned into gRPC statuses by
//! [`status::grpc_errors`]. Health and reflection need no key, like `/readyz` and
//! `/openapi.json`.

mod health;
mod inference;
pub mod status;

use std::sync::Arc;

use axum::Router;
use tonic::server::NamedService;

use super::AppState;

/// The code generated from `inference.proto` (messages, server and client).
pub mod pb {
    tonic::include_proto!("ryzanstein.v1");

    /// The encoded descriptors of `inference.proto` (for reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));
}

/// The route of every method of a tonic service: `/{package.Service}/{Method}`.
fn service_path<S: NamedService>(_: &S) -> String {
    format!("/{}/{{*method}}", S::NAME)
}

/// The Inference service's routes, to be put behind the API's middleware.
pub fn api_routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    type Server = pb::inference_server::InferenceServer<inference::Inference>;
    let server = Server::new(inference::Inference::new(state))
        .max_decoding_message_size(super::embeddings::MAX_BODY_BYTES);
    Router::new().route_service(&service_path(&server), server)
}

/// Health and reflection, open like the probes.
pub fn public_routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    type Health = tonic_health::pb::health_server::HealthServer<health::Health>;
    let health = Health::new(health::Health::new(state));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled-in descriptor sets decode");
    Router::new()
        .route_service(&service_path(&health), health)
        .route_service(&service_path(&reflection), reflection)
}
