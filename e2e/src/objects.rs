//! Ryzanstein's custom resources as a test writes and reads them: server-side apply of
//! InferencePools and ModelDeployments as JSON, and their status conditions.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};

use crate::wait::eventually;

/// How long [`wait_condition`] waits.
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(60);

/// `ryzanstein.dev/v1alpha1` `kind`.
pub fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("ryzanstein.dev", "v1alpha1", kind))
}

fn api_for(client: &kube::Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = resource(kind);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Server-side applies `object` (a Ryzanstein resource as JSON) as field manager `e2e-tenant`;
/// panics when the API server refuses it.
pub async fn apply(client: &kube::Client, object: Value) {
    let kind = object["kind"].as_str().unwrap().to_owned();
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    let api = api_for(client, &kind, object["metadata"]["namespace"].as_str());
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.patch(
        &name,
        &PatchParams::apply("e2e-tenant"),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}

/// A ModelDeployment `namespace/name` with `spec`.
pub fn model_deployment(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// The status of ModelDeployment `namespace/name`, if it exists and has one.
pub async fn status(client: &kube::Client, namespace: &str, name: &str) -> Option<Value> {
    let obj = api_for(client, "ModelDeployment", Some(namespace))
        .get_opt(name)
        .await
        .ok()??;
    obj.data.get("status").cloned()
}

/// The condition of `type_` in a status.
pub fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Waits until ModelDeployment `namespace/name`'s condition `type_` has `want` (status,
/// reason); returns the status.
pub async fn wait_condition(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    type_: &str,
    want: (&str, &str),
) -> Value {
    eventually(
        &format!("{namespace}/{name} {type_}={} {}", want.0, want.1),
        CONDITION_TIMEOUT,
        || async {
            let s = status(client, namespace, name).await?;
            let c = condition(&s, type_)?;
            (c["status"] == want.0 && c["reason"] == want.1).then_some(s)
        },
    )
    .await
}
