//! The server pod template.
//!
//! One container running the image's entrypoint (`ryzanstein`, as `docker/server.Dockerfile`
//! builds it) with `serve --model SRC --served-name NAME --host $(POD_IP) --port 8080 --threads N
//! [--ctx-size N] [--parallel N] [--queue-size N] --drain-timeout-secs N --tenant-limits FILE
//! --tenant NAME [--api-key-file FILE]`, then `engine.args`. An option in
//! `engine.args` replaces the operator's own (the server refuses an option given twice), except
//! `--host` and `--port`, which the probes and Services depend on. The server listens on the
//! pod's IP (`POD_IP` from the downward API's `status.podIP`), where the kubelet's probes and the
//! Services' endpoints reach it.
//!
//! - Requests equal limits for CPU and memory (Guaranteed QoS); GPUs as an extended resource.
//! - Probes: startup and liveness `GET /healthz`, readiness `GET /readyz`. The server answers
//!   `/healthz` as soon as it listens, while the model still downloads and loads in the
//!   background, and `/readyz` once it serves; the startup probe still allows
//!   [`STARTUP_SECONDS`] for images that load before listening.
//! - Shutdown: a preStop sleep lets endpoints drop the pod before SIGTERM; the server then stops
//!   admitting, finishes in-flight requests for up to `--drain-timeout-secs`, and exits. The
//!   grace period covers both plus [`GRACE_MARGIN_SECONDS`].
//! - Volumes: the model cache (emptyDir) at `RYZANSTEIN_CACHE`, `/tmp` (emptyDir; the root
//!   filesystem is read-only), the ConfigMap at `/etc/ryzanstein`, the limits ConfigMap at
//!   `/etc/ryzanstein-limits` (`--tenant-limits`, with `--tenant` the deployment's tenant), the
//!   `apiKeys` Secret at `/etc/ryzanstein-keys` (`--api-key-file`), and a `pvc://` claim
//!   read-only.
//! - Non-root (uid/gid 65532, the image's user), no privilege escalation, no capabilities,
//!   RuntimeDefault seccomp, no service-account token (the server does not call the API).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler, LocalObjectReference,
    ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, SleepAction,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{served_name, CONFIG_KEY, CONFIG_MOUNT_PATH};
use super::limits::{LIMITS_KEY, LIMITS_MOUNT_PATH};
use super::meta::{
    common_labels, label_selector, shard_selector_labels, Names, ANNOTATION_CONFIG_HASH,
    LABEL_SHARD,
};
use super::placement::Placement;
use super::resources::{threads, PodResources};
use super::source::{server_source, MODEL_MOUNT_PATH};
use super::{shards, unrenderable, RenderOptions, PORT_NAME, SERVER_PORT};
use crate::crd::ModelDeployment;
use crate::error::Result;

/// Name of the server container.
pub const CONTAINER_NAME: &str = "server";
/// The model cache directory (the image's `RYZANSTEIN_CACHE`).
pub const CACHE_PATH: &str = "/var/cache/ryzanstein";
/// User and group the server runs as (the image's `ryzanstein` user).
pub const RUN_AS: i64 = 65532;
/// Seconds the startup probe allows before liveness takes over.
pub const STARTUP_SECONDS: i32 = 1800;
/// Seconds of grace beyond the preStop sleep and the drain timeout.
pub const GRACE_MARGIN_SECONDS: i64 = 10;

/// Directory the API key Secret is mounted at.
pub const KEYS_MOUNT_PATH: &str = "/etc/ryzanstein-keys";

/// Server options the operator sets and `engine.args` may not.
const RESERVED_FLAGS: [&str; 2] = ["--host", "--port"];

/// Everything a pod template is made from (shared by every shard).
#[derive(Clone, Debug)]
pub struct PodInputs<'a> {
    /// The ModelDeployment.
    pub md: &'a ModelDeployment,
    /// Its tenant in the pool.
    pub tenant: &'a str,
    /// Its names.
    pub names: &'a Names,
    /// One pod's resources.
    pub resources: &'a PodResources,
    /// Node affinity and tolerations from the pool.
    pub placement: &'a Placement,
    /// Operator settings.
    pub opts: &'a RenderOptions,
    /// Pool and tenant annotations.
    pub annotations: &'a BTreeMap<String, String>,
    /// Hash of the ConfigMap's data.
    pub config_hash: &'a str,
}

/// The flags `engine.args` sets (`--flag` or `--flag=value`).
fn flags_in(args: &[String]) -> Vec<&str> {
    args.iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split_once('=').map_or(a.as_str(), |(flag, _)| flag))
        .collect()
}

/// The container's arguments: `serve ...` with the operator's options, then `engine.args`.
pub fn server_args(
    md: &ModelDeployment,
    tenant: &str,
    names: &Names,
    resources: &PodResources,
    opts: &RenderOptions,
) -> Result<Vec<String>> {
    let engine = md.spec.engine.clone().unwrap_or_default();
    let user_flags = flags_in(&engine.args);
    if let Some(flag) = RESERVED_FLAGS.iter().find(|f| user_flags.contains(f)) {
        return Err(unrenderable(
            md,
            format!(
                "engine.args sets {flag}, which the operator owns (the probes and Services use --host $(POD_IP) --port {SERVER_PORT}); remove it"
            ),
        ));
    }
    let mut args = vec!["serve".to_owned()];
    let mut push = |flag: &str, value: String| {
        if !user_flags.contains(&flag) {
            args.push(flag.to_owned());
            args.push(value);
        }
    };
    push("--model", server_source(&md.spec.model.source).model_arg);
    if let Some(sha256) = &md.spec.model.sha256 {
        push("--model-sha256", sha256.clone());
    }
    push("--served-name", served_name(md, names));
    push("--host", "$(POD_IP)".to_owned());
    push("--port", SERVER_PORT.to_string());
    push("--threads", threads(md, resources).to_string());
    if let Some(n) = engine.context_length {
        push("--ctx-size", n.to_string());
    }
    if let Some(n) = engine.max_concurrent_sequences {
        push("--parallel", n.to_string());
    }
    if let Some(n) = engine.max_queued_requests {
        push("--queue-size", n.to_string());
    }
    push("--drain-timeout-secs", opts.drain_seconds.to_string());
    push(
        "--tenant-limits",
        format!("{LIMITS_MOUNT_PATH}/{LIMITS_KEY}"),
    );
    push("--tenant", tenant.to_owned());
    if let Some(keys) = &md.spec.api_keys {
        push("--api-key-file", format!("{KEYS_MOUNT_PATH}/{}", keys.key));
    }
    args.extend(engine.args.iter().cloned());
    Ok(args)
}

/// The drain timeout the server will use: `--drain-timeout-secs` from `engine.args` when given,
/// else the operator's.
pub fn drain_seconds(md: &ModelDeployment, opts: &RenderOptions) -> i64 {
    let args = md
        .spec
        .engine
        .as_ref()
        .map(|e| e.args.as_slice())
        .unwrap_or_default();
    let mut it = args.iter();
    let mut found = None;
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--drain-timeout-secs=") {
            found = v.parse().ok();
        } else if a == "--drain-timeout-secs" {
            found = it.next().and_then(|v| v.parse().ok());
        }
    }
    found.unwrap_or(opts.drain_seconds).max(0)
}

/// `terminationGracePeriodSeconds`: preStop sleep + drain + margin.
pub fn termination_grace_seconds(md: &ModelDeployment, opts: &RenderOptions) -> i64 {
    opts.pre_stop_sleep_seconds.max(0) + drain_seconds(md, opts) + GRACE_MARGIN_SECONDS
}

fn http_probe(path: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: field_path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The pod template of shard `shard` (0 for unsharded models).
pub fn pod_template(inputs: &PodInputs<'_>, shard: i32) -> Result<PodTemplateSpec> {
    let PodInputs {
        md,
        tenant,
        names,
        resources,
        placement,
        opts,
        annotations,
        config_hash,
    } = inputs;
    let source = server_source(&md.spec.model.source);
    let total_shards = shards(md);

    let mut labels = common_labels(names);
    labels.insert(LABEL_SHARD.to_owned(), shard.to_string());
    let mut pod_annotations = (*annotations).clone();
    pod_annotations.insert(ANNOTATION_CONFIG_HASH.to_owned(), (*config_hash).to_owned());

    let mut env_vars = vec![
        env("RYZANSTEIN_CACHE", CACHE_PATH),
        env(
            "RYZANSTEIN_CONFIG",
            format!("{CONFIG_MOUNT_PATH}/{CONFIG_KEY}"),
        ),
        env("RYZANSTEIN_SHARD_INDEX", shard.to_string()),
        env("RYZANSTEIN_SHARD_COUNT", total_shards.to_string()),
        env_field("POD_IP", "status.podIP"),
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
    ];
    if total_shards > 1 {
        env_vars.push(env("RYZANSTEIN_SHARD_DOMAIN", names.shard_domain()));
    }

    let mut mounts = vec![
        VolumeMount {
            name: "cache".into(),
            mount_path: CACHE_PATH.into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_MOUNT_PATH.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "limits".into(),
            mount_path: LIMITS_MOUNT_PATH.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "cache".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "limits".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.limits_config_map(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    if let Some(keys) = &md.spec.api_keys {
        mounts.push(VolumeMount {
            name: "api-keys".into(),
            mount_path: KEYS_MOUNT_PATH.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "api-keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(keys.secret_name.clone()),
                // Readable by the server's group (fsGroup) only.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(claim) = &source.claim {
        mounts.push(VolumeMount {
            name: "model".into(),
            mount_path: MODEL_MOUNT_PATH.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "model".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        });
    }

    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(
            md.spec
                .image
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| opts.default_image.clone()),
        ),
        image_pull_policy: opts.image_pull_policy.clone(),
        args: Some(server_args(md, tenant, names, resources, opts)?),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: SERVER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources.requirements()),
        startup_probe: Some(http_probe("/healthz", 10, 5, STARTUP_SECONDS / 10)),
        liveness_probe: Some(http_probe("/healthz", 10, 5, 6)),
        readiness_probe: Some(http_probe("/readyz", 5, 3, 2)),
        lifecycle: (opts.pre_stop_sleep_seconds > 0).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: opts.pre_stop_sleep_seconds,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };

    let spec = PodSpec {
        containers: vec![container],
        affinity: placement.affinity.clone(),
        tolerations: (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone()),
        // Spread the replicas of one shard over nodes where possible.
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(label_selector(shard_selector_labels(names, shard))),
            ..TopologySpreadConstraint::default()
        }]),
        termination_grace_period_seconds: Some(termination_grace_seconds(md, opts)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        image_pull_secrets: (!opts.image_pull_secrets.is_empty()).then(|| {
            opts.image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(spec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::InferencePool;
    use crate::render::resources::PodResources;
    use serde_json::json;

    fn args_of(model: serde_json::Value, engine_args: &[&str]) -> Vec<String> {
        let md: ModelDeployment = serde_json::from_value(json!({
            "apiVersion": "ryzanstein.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "team-a", "uid": "u"},
            "spec": {"model": model, "poolRef": "cpu", "engine": {"args": engine_args}},
        }))
        .unwrap();
        let pool: InferencePool = serde_json::from_value(json!({
            "apiVersion": "ryzanstein.dev/v1alpha1",
            "kind": "InferencePool",
            "metadata": {"name": "cpu"},
            "spec": {"hardware": {"class": "CPU"}},
        }))
        .unwrap();
        let opts = RenderOptions::default();
        let names = Names::of(&md).unwrap();
        let resources = PodResources::of(&md, &pool, &opts).unwrap();
        server_args(&md, "team-a", &names, &resources, &opts).unwrap()
    }

    fn value(args: &[String], flag: &str) -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).cloned()
    }

    #[test]
    fn the_sha256_pin_reaches_the_server() {
        let sha = "0123456789abcdef".repeat(4);
        let a = args_of(
            json!({"source": "https://models.example/m.gguf", "sha256": sha}),
            &[],
        );
        assert_eq!(
            value(&a, "--model").as_deref(),
            Some("https://models.example/m.gguf")
        );
        assert_eq!(value(&a, "--model-sha256"), Some(sha.clone()));

        // No pin, no flag; engine.args may give its own instead of the operator's.
        let a = args_of(json!({"source": "bundled://smollm2-135m-instruct"}), &[]);
        assert!(!a.iter().any(|x| x == "--model-sha256"), "{a:?}");
        let other = "f".repeat(64);
        let a = args_of(
            json!({"source": "https://models.example/m.gguf", "sha256": sha}),
            &["--model-sha256", &other],
        );
        assert_eq!(
            a.iter().filter(|x| *x == "--model-sha256").count(),
            1,
            "{a:?}"
        );
        assert_eq!(value(&a, "--model-sha256"), Some(other));
    }
}
