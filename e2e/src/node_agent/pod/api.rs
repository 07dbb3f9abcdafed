//! The API server as a node sees it for one pod: the ConfigMaps and Secrets of its namespace
//! (the Node authorizer lets a node read those its pods reference) and tokens for the pod's
//! service account, bound to the pod.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use crate::node_agent::env::Objects;
use crate::node_agent::volumes::VolumeApi;

/// The API as the node sees it for one pod: its namespace's ConfigMaps and Secrets (the Node
/// authorizer allows those the pod references) and tokens for its service account.
pub(super) struct PodApi {
    pub client: kube::Client,
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub service_account: String,
}

fn api_error(what: &str, e: kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("getting {what}: {} ({})", status.message, status.code),
        e => format!("getting {what}: {e}"),
    }
}

impl Objects for PodApi {
    async fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, String> {
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("configmap \"{name}\""), e))
    }

    async fn secret(&self, name: &str) -> Result<Option<Secret>, String> {
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("secret \"{name}\""), e))
    }
}

impl VolumeApi for PodApi {
    async fn token(
        &self,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<(String, Timestamp), String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_owned()]).unwrap_or_default(),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod.clone()),
                    uid: Some(self.uid.clone()),
                }),
            },
            ..TokenRequest::default()
        };
        let response = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace)
            .create_token_request(&self.service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                api_error(
                    &format!(
                        "a token for service account {}/{}",
                        self.namespace, self.service_account
                    ),
                    e,
                )
            })?;
        let status = response
            .status
            .ok_or_else(|| "TokenRequest answered without a status".to_owned())?;
        Ok((status.token, status.expiration_timestamp.0))
    }
}
