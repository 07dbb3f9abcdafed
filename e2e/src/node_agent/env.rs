//! A container's environment, built in a kubelet's order: the `KUBERNETES_SERVICE_*` variables,
//! then `envFrom` (ConfigMaps and Secrets, with their prefix), then `env` in order, each literal
//! value `$(VAR)`-expanded against everything defined before it. `valueFrom` supports
//! `fieldRef` (the downward API's pod fields), `configMapKeyRef` and `secretKeyRef` (with
//! `optional`); a missing object or key makes the container wait with
//! `CreateContainerConfigError`, as with a kubelet. `resourceFieldRef` is not supported.

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

use super::expand::expand;

/// Where ConfigMaps and Secrets of the pod's namespace come from.
pub trait Objects {
    /// `Ok(None)`: not found.
    fn config_map(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>, String>> + Send;
    fn secret(&self, name: &str) -> impl Future<Output = Result<Option<Secret>, String>> + Send;
}

/// The pod facts the downward API exposes beyond the pod object itself.
#[derive(Clone, Debug)]
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: String,
    pub host_ip: String,
}

/// An ordered environment where a later definition replaces an earlier one in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    pub fn set(&mut self, name: &str, value: String) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.vars.push((name.to_owned(), value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// `$(VAR)` references in `text`, expanded against this environment.
    pub fn expand(&self, text: &str) -> String {
        expand(text, |name| self.get(name))
    }

    pub fn map_values(&mut self, f: impl Fn(&str) -> String) {
        for (_, v) in &mut self.vars {
            *v = f(v);
        }
    }
}

/// The environment of `container`, starting from `base` (the service variables).
pub async fn resolve(
    container: &Container,
    facts: &PodFacts<'_>,
    base: Env,
    objects: &impl Objects,
) -> Result<Env, String> {
    let mut env = base;
    let namespace = facts.pod.metadata.namespace.as_deref().unwrap_or("default");
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        if let Some(r) = &source.config_map_ref {
            let optional = r.optional == Some(true);
            match objects.config_map(&r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        if !k.contains('=') {
                            env.set(&format!("{prefix}{k}"), v.clone());
                        }
                    }
                }
                None if optional => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &source.secret_ref {
            let optional = r.optional == Some(true);
            match objects.secret(&r.name).await? {
                Some(secret) => {
                    for (k, v) in secret.data.iter().flatten() {
                        if !k.contains('=') {
                            env.set(
                                &format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v.0).into_owned(),
                            );
                        }
                    }
                }
                None if optional => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => env.expand(var.value.as_deref().unwrap_or("")),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(facts, &f.field_path)?
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    match objects.config_map(&r.name).await? {
                        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in ConfigMap {namespace}/{}",
                                    r.key, r.name
                                ))
                            }
                        },
                        None if optional => continue,
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional == Some(true);
                    match objects.secret(&r.name).await? {
                        Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                            None if optional => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in Secret {namespace}/{}",
                                    r.key, r.name
                                ))
                            }
                        },
                        None if optional => continue,
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                    }
                } else if from.resource_field_ref.is_some() {
                    return Err(format!(
                        "env {}: resourceFieldRef is not supported by the e2e node agent",
                        var.name
                    ));
                } else {
                    return Err(format!("env {}: valueFrom has no source", var.name));
                }
            }
        };
        env.set(&var.name, value);
    }
    Ok(env)
}

/// A downward-API field of the pod, as `fieldRef.fieldPath` names it.
pub fn field_value(facts: &PodFacts<'_>, path: &str) -> Result<String, String> {
    let pod = facts.pod;
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let quoted_key = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?;
        let key = rest.strip_prefix("['")?.strip_suffix("']")?;
        Some(key.to_owned())
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_lines(meta.labels.as_ref()),
        "metadata.annotations" => map_lines(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => {
            if let Some(key) = quoted_key("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&key).cloned())
                    .unwrap_or_default()
            } else if let Some(key) = quoted_key("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&key).cloned())
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef fieldPath {path:?}"));
            }
        }
    };
    Ok(value)
}

/// Labels or annotations as a downward-API file shows them: `key="value"` lines, sorted.
fn map_lines(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}\n", serde_json::to_string(v).unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    struct Fixed {
        config_maps: BTreeMap<String, ConfigMap>,
        secrets: BTreeMap<String, Secret>,
    }

    impl Objects for Fixed {
        async fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, String> {
            Ok(self.config_maps.get(name).cloned())
        }
        async fn secret(&self, name: &str) -> Result<Option<Secret>, String> {
            Ok(self.secrets.get(name).cloned())
        }
    }

    fn objects() -> Fixed {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "cfg" }, "data": { "greeting": "hello", "MODE": "fast" }
        }))
        .unwrap();
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "token".to_owned(),
                ByteString(b"s3cret".to_vec()),
            )])),
            ..Secret::default()
        };
        Fixed {
            config_maps: BTreeMap::from([("cfg".to_owned(), cm)]),
            secrets: BTreeMap::from([("creds".to_owned(), secret)]),
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1", "namespace": "team", "uid": "u-1",
                          "labels": { "app": "web" } },
            "spec": { "nodeName": "node-a", "serviceAccountName": "runner",
                      "containers": [{ "name": "c" }] }
        }))
        .unwrap()
    }

    fn container(env: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({ "name": "c", "env": env })).unwrap()
    }

    async fn run(env: serde_json::Value) -> Result<Env, String> {
        let pod = pod();
        let facts = PodFacts {
            pod: &pod,
            pod_ip: "127.20.1.2".into(),
            host_ip: "127.20.1.1".into(),
        };
        let mut base = Env::default();
        base.set("KUBERNETES_SERVICE_HOST", "127.0.0.1".into());
        resolve(&container(env), &facts, base, &objects()).await
    }

    #[tokio::test]
    async fn downward_api_fields_and_expansion() {
        let env = run(serde_json::json!([
            { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
            { "name": "NS", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
            { "name": "NODE", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
            { "name": "SA", "valueFrom": { "fieldRef": { "fieldPath": "spec.serviceAccountName" } } },
            { "name": "APP", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['app']" } } },
            { "name": "ADDR", "value": "$(POD_IP):8080" },
            { "name": "LATER", "value": "$(DEFINED_LATER)" },
            { "name": "DEFINED_LATER", "value": "x" },
            { "name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST)" },
        ]))
        .await
        .unwrap();
        let get = |n: &str| env.get(n).unwrap().to_owned();
        assert_eq!(get("POD_IP"), "127.20.1.2");
        assert_eq!(get("POD_NAME"), "web-1");
        assert_eq!(get("NS"), "team");
        assert_eq!(get("NODE"), "node-a");
        assert_eq!(get("SA"), "runner");
        assert_eq!(get("APP"), "web");
        assert_eq!(get("ADDR"), "127.20.1.2:8080");
        assert_eq!(get("LATER"), "$(DEFINED_LATER)");
        assert_eq!(get("API"), "https://127.0.0.1");
    }

    #[tokio::test]
    async fn config_map_and_secret_keys() {
        let env = run(serde_json::json!([
            { "name": "G", "valueFrom": { "configMapKeyRef": { "name": "cfg", "key": "greeting" } } },
            { "name": "T", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "token" } } },
            { "name": "O", "valueFrom": { "configMapKeyRef": { "name": "nope", "key": "k", "optional": true } } },
        ]))
        .await
        .unwrap();
        assert_eq!(env.get("G"), Some("hello"));
        assert_eq!(env.get("T"), Some("s3cret"));
        assert_eq!(env.get("O"), None);

        let err = run(serde_json::json!([
            { "name": "G", "valueFrom": { "configMapKeyRef": { "name": "nope", "key": "k" } } }
        ]))
        .await
        .unwrap_err();
        assert_eq!(err, "configmap \"nope\" not found");
        let err = run(serde_json::json!([
            { "name": "G", "valueFrom": { "configMapKeyRef": { "name": "cfg", "key": "k" } } }
        ]))
        .await
        .unwrap_err();
        assert_eq!(err, "couldn't find key k in ConfigMap team/cfg");
    }

    #[tokio::test]
    async fn env_from_with_prefix_then_env_overrides() {
        let pod = pod();
        let facts = PodFacts {
            pod: &pod,
            pod_ip: String::new(),
            host_ip: String::new(),
        };
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "envFrom": [{ "configMapRef": { "name": "cfg" }, "prefix": "CFG_" }],
            "env": [{ "name": "CFG_MODE", "value": "slow" }]
        }))
        .unwrap();
        let env = resolve(&c, &facts, Env::default(), &objects())
            .await
            .unwrap();
        assert_eq!(env.get("CFG_greeting"), Some("hello"));
        assert_eq!(env.get("CFG_MODE"), Some("slow"));
    }
}
