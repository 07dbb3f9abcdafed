//! What every controller's reconcile gets: the API client, the metrics, the event recorder and
//! the operator's configuration.

use std::sync::Arc;

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::autoscaler::Autoscaler;
use crate::config::OperatorConfig;
use crate::grants::Grants;
use crate::metrics::Metrics;

/// The one field manager for every server-side apply the operator makes (status and children).
pub const FIELD_MANAGER: &str = "ryzanstein-operator";

/// Shared state of the controllers.
#[derive(Clone)]
pub struct Context {
    /// Kubernetes API client.
    pub client: Client,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes events on the objects the operator decides about.
    pub recorder: Recorder,
    /// The configuration file's settings.
    pub config: Arc<OperatorConfig>,
    /// The autoscaler's decisions (written by its loop, read by the ModelDeployment reconcile).
    pub autoscaler: Arc<Autoscaler>,
    /// Quota grants, and the lock every quota decision takes.
    pub grants: Arc<Grants>,
}

impl Context {
    /// A context whose events name `ryzanstein-operator` as the reporting controller and
    /// `instance` (the pod name) as the reporting instance.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        config: Arc<OperatorConfig>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            config,
            autoscaler: Arc::default(),
            grants: Arc::default(),
        }
    }
}
