//! Pod volumes, materialised as directories under the pod's state directory
//! (`<state>/pods/<uid>/volumes/<name>`): `emptyDir` (an empty directory, whatever its medium),
//! `configMap` and `secret` (keys, or the listed `items`, as files with `defaultMode`),
//! `downwardAPI`, `projected` (service-account tokens, ConfigMaps, Secrets, downward API) and
//! `hostPath` (the host's path itself). Other kinds (persistent volume claims, CSI, ...) cannot
//! be mounted: the pod waits in `ContainerCreating` and the volume error is reported.
//!
//! Service-account tokens are requested with the TokenRequest API by the node, for the pod's
//! service account, bound to the pod (so they stop working when the pod is deleted), for the
//! source's audience (the API server's when unset) and lifetime, and refreshed when 80% of their
//! lifetime has passed, as a kubelet does. ConfigMap and Secret volumes are written once; later
//! changes to the objects are not propagated.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume, VolumeProjection,
};
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::env::{field_value, Objects, PodFacts};

/// What a pod's volumes need from the API server.
pub trait VolumeApi: Objects {
    /// A token for the pod's service account, bound to the pod: (token, expiry).
    fn token(
        &self,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> impl Future<Output = Result<(String, Timestamp), String>> + Send;
}

/// A projected service-account token file and when to refresh it.
#[derive(Clone, Debug)]
pub struct TokenFile {
    pub path: PathBuf,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
    pub mode: u32,
    pub refresh_at: Instant,
}

/// The materialised volumes of one pod.
#[derive(Clone, Debug, Default)]
pub struct Volumes {
    /// Volume name → host directory.
    pub dirs: BTreeMap<String, PathBuf>,
    pub tokens: Vec<TokenFile>,
}

impl Volumes {
    /// When the next token needs refreshing.
    pub fn next_refresh(&self) -> Option<Instant> {
        self.tokens.iter().map(|t| t.refresh_at).min()
    }

    /// Request fresh tokens for those due.
    pub async fn refresh_due(&mut self, api: &impl VolumeApi) -> Result<(), String> {
        let now = Instant::now();
        for token in self.tokens.iter_mut().filter(|t| t.refresh_at <= now) {
            let (value, expiry) = api
                .token(token.audience.as_deref(), token.expiration_seconds)
                .await?;
            write_file_atomically(&token.path, value.as_bytes(), token.mode)?;
            token.refresh_at = refresh_at(expiry);
        }
        Ok(())
    }
}

/// Create every volume of `pod` under `dir`.
pub async fn materialise(
    pod: &Pod,
    facts: &PodFacts<'_>,
    dir: &Path,
    api: &impl VolumeApi,
) -> Result<Volumes, String> {
    let mut volumes = Volumes::default();
    let spec_volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for volume in &spec_volumes {
        let path = materialise_one(
            volume,
            facts,
            &dir.join(&volume.name),
            api,
            &mut volumes.tokens,
        )
        .await
        .map_err(|e| {
            format!(
                "MountVolume.SetUp failed for volume \"{}\": {e}",
                volume.name
            )
        })?;
        volumes.dirs.insert(volume.name.clone(), path);
    }
    Ok(volumes)
}

async fn materialise_one(
    volume: &Volume,
    facts: &PodFacts<'_>,
    dir: &Path,
    api: &impl VolumeApi,
    tokens: &mut Vec<TokenFile>,
) -> Result<PathBuf, String> {
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?,
            "Directory" if !path.is_dir() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a directory",
                    host.path
                ))
            }
            "File" if !path.is_file() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a file",
                    host.path
                ))
            }
            _ => {}
        }
        return Ok(path);
    }
    create_dir(dir)?;
    if volume.empty_dir.is_some() {
        return Ok(dir.to_path_buf());
    }
    if let Some(source) = &volume.config_map {
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        let cm = api.config_map(&source.name).await?;
        write_config_map(
            dir,
            &source.name,
            cm.as_ref(),
            source.items.as_deref(),
            source.optional,
            mode,
        )?;
        return Ok(dir.to_path_buf());
    }
    if let Some(source) = &volume.secret {
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        let name = source.secret_name.clone().unwrap_or_default();
        let secret = api.secret(&name).await?;
        write_secret(
            dir,
            &name,
            secret.as_ref(),
            source.items.as_deref(),
            source.optional,
            mode,
        )?;
        return Ok(dir.to_path_buf());
    }
    if let Some(source) = &volume.downward_api {
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        write_downward(
            dir,
            facts,
            source.items.as_deref().unwrap_or_default(),
            mode,
        )?;
        return Ok(dir.to_path_buf());
    }
    if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(0o644) as u32;
        for source in projected.sources.iter().flatten() {
            project(dir, source, facts, api, mode, tokens).await?;
        }
        return Ok(dir.to_path_buf());
    }
    Err(format!(
        "{} volumes are not supported by the e2e node agent (emptyDir, configMap, secret, \
         downwardAPI, projected and hostPath are)",
        volume_kind(volume)
    ))
}

async fn project(
    dir: &Path,
    source: &VolumeProjection,
    facts: &PodFacts<'_>,
    api: &impl VolumeApi,
    mode: u32,
    tokens: &mut Vec<TokenFile>,
) -> Result<(), String> {
    if let Some(sat) = &source.service_account_token {
        let expiration = sat.expiration_seconds.unwrap_or(3600);
        let audience = sat.audience.clone().filter(|a| !a.is_empty());
        let (token, expiry) = api.token(audience.as_deref(), expiration).await?;
        let path = safe_join(dir, &sat.path)?;
        write_file_atomically(&path, token.as_bytes(), mode)?;
        tokens.push(TokenFile {
            path,
            audience,
            expiration_seconds: expiration,
            mode,
            refresh_at: refresh_at(expiry),
        });
    } else if let Some(cm) = &source.config_map {
        let obj = api.config_map(&cm.name).await?;
        write_config_map(
            dir,
            &cm.name,
            obj.as_ref(),
            cm.items.as_deref(),
            cm.optional,
            mode,
        )?;
    } else if let Some(s) = &source.secret {
        let obj = api.secret(&s.name).await?;
        write_secret(
            dir,
            &s.name,
            obj.as_ref(),
            s.items.as_deref(),
            s.optional,
            mode,
        )?;
    } else if let Some(d) = &source.downward_api {
        write_downward(dir, facts, d.items.as_deref().unwrap_or_default(), mode)?;
    } else {
        return Err("projected volume source not supported by the e2e node agent (serviceAccountToken, configMap, secret and downwardAPI are)".into());
    }
    Ok(())
}

/// A kubelet refreshes a token once 80% of its lifetime has passed.
fn refresh_at(expiry: Timestamp) -> Instant {
    let left = expiry
        .duration_since(Timestamp::now())
        .as_secs_f64()
        .max(0.0);
    Instant::now() + Duration::from_secs_f64(left * 0.8)
}

fn write_config_map(
    dir: &Path,
    name: &str,
    cm: Option<&ConfigMap>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<(), String> {
    let Some(cm) = cm else {
        return if optional == Some(true) {
            Ok(())
        } else {
            Err(format!("configmap \"{name}\" not found"))
        };
    };
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    write_keys(dir, "configmap", name, &data, items, optional, mode)
}

fn write_secret(
    dir: &Path,
    name: &str,
    secret: Option<&Secret>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<(), String> {
    let Some(secret) = secret else {
        return if optional == Some(true) {
            Ok(())
        } else {
            Err(format!("secret \"{name}\" not found"))
        };
    };
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    write_keys(dir, "secret", name, &data, items, optional, mode)
}

fn write_keys(
    dir: &Path,
    kind: &str,
    name: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<(), String> {
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => {
                        let path = safe_join(dir, &item.path)?;
                        write_file_atomically(&path, bytes, item.mode.map_or(mode, |m| m as u32))?;
                    }
                    None if optional == Some(true) => {}
                    None => {
                        return Err(format!(
                            "{kind} {name}: references non-existent key: {}",
                            item.key
                        ))
                    }
                }
            }
        }
        _ => {
            for (key, bytes) in data {
                write_file_atomically(&safe_join(dir, key)?, bytes, mode)?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    facts: &PodFacts<'_>,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
) -> Result<(), String> {
    for item in items {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => field_value(facts, &f.field_path)?,
            (None, Some(_)) => {
                return Err(
                    "downwardAPI resourceFieldRef is not supported by the e2e node agent".into(),
                )
            }
            (None, None) => return Err(format!("downwardAPI item {} has no source", item.path)),
        };
        write_file_atomically(
            &safe_join(dir, &item.path)?,
            value.as_bytes(),
            item.mode.map_or(mode, |m| m as u32),
        )?;
    }
    Ok(())
}

/// `dir/relative`, refusing absolute paths and `..`.
fn safe_join(dir: &Path, relative: &str) -> Result<PathBuf, String> {
    let rel = Path::new(relative);
    if relative.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("invalid path {relative:?} in volume"));
    }
    Ok(dir.join(rel))
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))
}

/// Write through a temporary file and rename, so a reader never sees half a file.
pub fn write_file_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let tmp = path.with_extension("agent-tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o777))
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

fn volume_kind(v: &Volume) -> &'static str {
    if v.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if v.csi.is_some() {
        "csi"
    } else if v.ephemeral.is_some() {
        "ephemeral"
    } else if v.nfs.is_some() {
        "nfs"
    } else if v.image.is_some() {
        "image"
    } else {
        "this kind of"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    struct Fake;

    impl Objects for Fake {
        async fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, String> {
            Ok((name == "cfg").then(|| {
                serde_json::from_value(serde_json::json!({
                    "metadata": { "name": "cfg" },
                    "data": { "operator.yaml": "a: 1\n", "other": "x" },
                    "binaryData": { "blob": "AAEC" }
                }))
                .unwrap()
            }))
        }
        async fn secret(&self, name: &str) -> Result<Option<Secret>, String> {
            Ok((name == "s").then(|| Secret {
                data: Some(BTreeMap::from([("key".into(), ByteString(b"v".to_vec()))])),
                ..Secret::default()
            }))
        }
    }

    impl VolumeApi for Fake {
        async fn token(
            &self,
            audience: Option<&str>,
            secs: i64,
        ) -> Result<(String, Timestamp), String> {
            Ok((
                format!("token-for-{}-{secs}", audience.unwrap_or("api")),
                Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(secs),
            ))
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "ns", "labels": { "b": "2", "a": "1" } },
            "spec": {
                "containers": [{ "name": "c" }],
                "volumes": [
                    { "name": "tmp", "emptyDir": {} },
                    { "name": "config", "configMap": { "name": "cfg" } },
                    { "name": "picked", "configMap": { "name": "cfg", "defaultMode": 0o600,
                        "items": [{ "key": "other", "path": "sub/renamed" }] } },
                    { "name": "creds", "secret": { "secretName": "s" } },
                    { "name": "maybe", "configMap": { "name": "missing", "optional": true } },
                    { "name": "kube-api-access-x", "projected": { "defaultMode": 420, "sources": [
                        { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } },
                        { "configMap": { "name": "cfg", "items": [{ "key": "other", "path": "ca.crt" }] } },
                        { "downwardAPI": { "items": [{ "path": "namespace",
                            "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } }
                    ] } },
                    { "name": "info", "downwardAPI": { "items": [{ "path": "labels",
                        "fieldRef": { "fieldPath": "metadata.labels" } }] } }
                ]
            }
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn every_supported_kind_is_materialised() {
        let dir = tempfile::tempdir().unwrap();
        let pod = pod();
        let facts = PodFacts {
            pod: &pod,
            pod_ip: String::new(),
            host_ip: String::new(),
        };
        let v = materialise(&pod, &facts, dir.path(), &Fake).await.unwrap();
        let read = |vol: &str, file: &str| std::fs::read(v.dirs[vol].join(file)).unwrap();
        assert!(v.dirs["tmp"].is_dir());
        assert_eq!(read("config", "operator.yaml"), b"a: 1\n");
        assert_eq!(read("config", "blob"), [0, 1, 2]);
        assert_eq!(read("picked", "sub/renamed"), b"x");
        assert!(!v.dirs["picked"].join("operator.yaml").exists());
        let mode = std::fs::metadata(v.dirs["picked"].join("sub/renamed"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read("creds", "key"), b"v");
        assert!(v.dirs["maybe"].is_dir());
        assert_eq!(read("kube-api-access-x", "token"), b"token-for-api-3607");
        assert_eq!(read("kube-api-access-x", "ca.crt"), b"x");
        assert_eq!(read("kube-api-access-x", "namespace"), b"ns");
        assert_eq!(read("info", "labels"), b"a=\"1\"\nb=\"2\"\n");
        assert_eq!(v.tokens.len(), 1);
        let left = v.next_refresh().unwrap() - Instant::now();
        assert!(
            left > Duration::from_secs(2800) && left < Duration::from_secs(2900),
            "{left:?}"
        );
    }

    #[tokio::test]
    async fn missing_objects_and_unsupported_kinds_fail_with_the_volume_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut pod = pod();
        let spec = pod.spec.as_mut().unwrap();
        spec.volumes = Some(vec![serde_json::from_value(serde_json::json!(
            { "name": "cfg", "configMap": { "name": "missing" } }
        ))
        .unwrap()]);
        let facts = PodFacts {
            pod: &pod,
            pod_ip: String::new(),
            host_ip: String::new(),
        };
        let err = materialise(&pod, &facts, dir.path(), &Fake)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "MountVolume.SetUp failed for volume \"cfg\": configmap \"missing\" not found"
        );

        let mut pod = pod.clone();
        pod.spec.as_mut().unwrap().volumes = Some(vec![serde_json::from_value(serde_json::json!(
            { "name": "model", "persistentVolumeClaim": { "claimName": "weights" } }
        ))
        .unwrap()]);
        let facts = PodFacts {
            pod: &pod,
            pod_ip: String::new(),
            host_ip: String::new(),
        };
        let err = materialise(&pod, &facts, dir.path(), &Fake)
            .await
            .unwrap_err();
        assert!(
            err.contains("persistentVolumeClaim volumes are not supported"),
            "{err}"
        );
    }

    #[test]
    fn paths_cannot_escape_the_volume() {
        let dir = Path::new("/v");
        assert!(safe_join(dir, "../etc/passwd").is_err());
        assert!(safe_join(dir, "/etc/passwd").is_err());
        assert!(safe_join(dir, "").is_err());
        assert_eq!(safe_join(dir, "a/b").unwrap(), PathBuf::from("/v/a/b"));
    }
}
