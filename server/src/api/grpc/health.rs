//! `grpc.health.v1.Health` from the server's readiness: SERVING once the models are loaded,
//! NOT_SERVING while loading and once draining, for the whole server (service "") and for
//! `ryzanstein.v1.Inference`; other service names are unknown. `Watch` streams end when the
//! server begins to drain.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::super::AppState;
use super::pb::inference_server::InferenceServer;

/// How often `Watch` looks at the readiness.
const WATCH_EVERY: Duration = Duration::from_millis(250);

pub struct Health {
    state: Arc<AppState>,
}

impl Health {
    pub fn new(state: Arc<AppState>) -> Health {
        Health { state }
    }

    /// The status of `service`; `None` for a service this server does not have.
    fn status_of(&self, service: &str) -> Option<ServingStatus> {
        let known = service.is_empty()
            || service == <InferenceServer<super::inference::Inference> as NamedService>::NAME;
        known.then(|| match self.state.is_ready() {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        })
    }
}

fn reply(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Health {
    type WatchStream = WatchStream;

    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.status_of(&service) {
            Some(status) => Ok(Response::new(reply(status))),
            None => Err(Status::not_found(format!(
                "no service {service:?} here; ask for \"\" (the server) or \
                 \"ryzanstein.v1.Inference\""
            ))),
        }
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let service = request.into_inner().service;
        let health = Health::new(self.state.clone());
        // The current status, then each change. Once shutdown has begun the stream ends
        // after saying so, or an open watch would hold the drain until its timeout.
        let stream = async_stream::stream! {
            let mut last = None;
            loop {
                let now = health.status_of(&service).unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(now) {
                    last = Some(now);
                    yield Ok(reply(now));
                }
                if health.state.is_shutting_down() {
                    break;
                }
                tokio::time::sleep(WATCH_EVERY).await;
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
