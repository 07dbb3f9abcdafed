//! The CEL rules in the generated CRDs, evaluated client-side with kube-cel (the Kubernetes CEL
//! libraries, `quantity()`/`isQuantity()` included): valid objects pass, each invalid object is
//! refused with the message a person would see from `kubectl apply`, and every rule in the
//! schemas is exercised by at least one refusal.

mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::{failures, rules, schema, Failure};

fn pool() -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "cpu-avx512"},
        "spec": {
            "hardware": {
                "class": "CPU",
                "cpu": {
                    "requiredFeatures": ["AVX512F"],
                    "preferredFeatures": ["AVX512VNNI"],
                    "vendor": "AMD"
                },
                "nodeSelector": {"node.kubernetes.io/instance-type": "m7a.8xlarge"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}]
            },
            "capacity": {"maxReplicas": 32, "maxCPU": "64", "maxMemory": "256Gi"},
            "tenants": [
                {
                    "name": "team-a",
                    "namespaces": ["team-a", "team-a-staging"],
                    "quota": {
                        "maxReplicas": 8, "maxCPU": "16", "maxMemory": "64Gi", "maxGPUs": 0,
                        "requestsPerMinute": 600, "tokensPerMinute": 200000, "maxConcurrentRequests": 64
                    },
                    "weight": 1
                },
                {"name": "team-b", "namespaces": ["team-b"], "quota": {"maxCPU": "500m"}}
            ],
            "admitUnlistedNamespaces": true,
            "defaultQuota": {"maxReplicas": 2, "maxMemory": "8Gi"}
        },
        "status": {
            "observedGeneration": 3,
            "matchingNodes": 4,
            "allocated": {"replicas": 5, "cpu": "10", "memory": "20Gi", "gpus": 0},
            "tenants": [{"name": "team-a", "replicas": 3, "cpu": "6", "memory": "12Gi", "gpus": 0, "deployments": 2, "throttled": false}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "NodesAvailable", "message": "4 nodes match", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3}]
        }
    })
}

fn gpu_pool() -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "gpu-h100"},
        "spec": {
            "hardware": {
                "class": "GPU",
                "cpu": {"requiredFeatures": ["AVX2"]},
                "gpu": {"vendor": "NVIDIA", "products": ["NVIDIA-H100-80GB-HBM3"], "minMemoryMiB": 40000}
            },
            "capacity": {"maxGPUs": 8}
        }
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "smollm2", "namespace": "team-a"},
        "spec": {
            "model": {
                "source": "bundled://smollm2-135m-instruct",
                "servedName": "smollm2",
                "format": "GGUF",
                "quantization": "Q8_0",
                "sha256": "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef"
            },
            "poolRef": "cpu-avx512",
            "replicas": 1,
            "autoscaling": {
                "enabled": true, "minReplicas": 0, "maxReplicas": 4, "targetInFlightPerReplica": 8,
                "scaleUpStabilizationSeconds": 0, "scaleDownDelaySeconds": 300
            },
            "sharding": {"shards": 2},
            "resources": {"cpu": "2", "memory": "2Gi", "gpus": 0},
            "engine": {
                "contextLength": 4096, "kvCacheMemory": "512Mi", "maxConcurrentSequences": 64,
                "maxQueuedRequests": 256, "speculative": {"mode": "PromptLookup", "maxDraftTokens": 4},
                "threads": 0, "args": ["--verbose"]
            },
            "image": "ryzanstein/server:0.1.0"
        },
        "status": {
            "observedGeneration": 2, "tenant": "team-a", "hardware": "cpu-avx512 (CPU AVX512F)",
            "replicas": 2, "readyReplicas": 2, "desiredReplicas": 2,
            "selector": "app.kubernetes.io/instance=smollm2,ryzanstein.dev/shard=0",
            "endpoint": "http://smollm2.team-a.svc:8080/v1",
            "load": {"inFlightPerReplica": 3.5, "observedAt": "2026-01-01T00:00:00Z"},
            "lastScaleTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "2/2", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }
    })
}

fn minimal_deployment() -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "team-a"},
        "spec": {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}, "poolRef": "cpu"}
    })
}

/// `base` with the value at JSON pointer `pointer` replaced (or removed for `Value::Null`).
fn with(mut base: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let parent = base
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"));
    match (parent, value) {
        (Value::Object(map), Value::Null) => {
            map.remove(key);
        }
        (Value::Object(map), v) => {
            map.insert(key.to_owned(), v);
        }
        (Value::Array(list), v) => list[key.parse::<usize>().unwrap()] = v,
        (other, _) => panic!("cannot set {key} on {other}"),
    }
    base
}

fn kind_of(object: &Value) -> &str {
    object["kind"].as_str().unwrap()
}

/// Asserts that `object` is refused with exactly `expected` (path, message) pairs.
fn refused(object: &Value, expected: &[(&str, &str)]) -> Vec<Failure> {
    let got = failures(kind_of(object), object);
    let pairs: Vec<(&str, &str)> = got
        .iter()
        .map(|f| (f.path.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(pairs, expected, "object: {object:#}");
    got
}

fn accepted(object: &Value) {
    let got = failures(kind_of(object), object);
    assert!(got.is_empty(), "refused: {got:#?}\nobject: {object:#}");
}

fn invalid_cases() -> Vec<(Value, Vec<(&'static str, &'static str)>)> {
    let quantity = |v: &str| {
        format!("\"{v}\" is not a non-negative Kubernetes quantity (examples: \"2\", \"500m\", \"4Gi\")")
    };
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let md = deployment;
    let source = |s: &str| with(md(), "/spec/model/source", json!(s));
    let local = |s: &str| {
        leak(format!(
            "model.source \"{s}\" is a local path, which does not exist inside the cluster; put the model on a volume and use pvc://claim/path, or use bundled://, hf:// or https://"
        ))
    };
    let scheme = |s: &str| {
        leak(format!(
            "model.source \"{s}\" has an unsupported scheme; use bundled://name, hf://org/repo[@revision][/file.gguf], pvc://claim/path or https://host/path"
        ))
    };
    const HF: &str =
        "hf:// sources look like hf://org/repo, hf://org/repo@revision or hf://org/repo/file.gguf";
    const PVC: &str = "pvc:// sources look like pvc://claim-name or pvc://claim-name/path/in/volume (the claim in this namespace)";
    const HTTPS: &str =
        "https:// sources look like https://host/path/to/model (a file or directory, no spaces)";
    const BUNDLED: &str =
        "bundled:// sources name one bundled model, e.g. bundled://smollm2-135m-instruct";
    vec![
        // InferencePool
        (
            with(pool(), "/spec/hardware/gpu", json!({"vendor": "NVIDIA"})),
            vec![("spec.hardware", "hardware.gpu is only allowed when hardware.class is GPU")],
        ),
        (
            with(gpu_pool(), "/spec/hardware/gpu", Value::Null),
            vec![("spec.hardware", "hardware.class GPU needs hardware.gpu with at least its vendor (it names the GPU resource)")],
        ),
        (
            with(gpu_pool(), "/spec/hardware/gpu", json!({"vendor": "AMD", "minMemoryMiB": 16000})),
            vec![("spec.hardware.gpu", "gpu.minMemoryMiB applies to NVIDIA GPUs only (it is matched against the nvidia.com/gpu.memory node label; AMD nodes publish no such label); remove it or list the accepted AMD products in gpu.products")],
        ),
        (
            with(pool(), "/spec/hardware/cpu/preferredFeatures", json!(["AVX512VNNI", "AVX512F"])),
            vec![("spec.hardware.cpu", "cpu feature AVX512F is both required and preferred; list it in one of requiredFeatures or preferredFeatures")],
        ),
        (
            with(pool(), "/spec/capacity/maxCPU", json!("lots")),
            vec![("spec.capacity.maxCPU", leak(quantity("lots")))],
        ),
        (
            with(pool(), "/spec/tenants/0/quota/maxMemory", json!("-1Gi")),
            vec![("spec.tenants[0].quota.maxMemory", leak(quantity("-1Gi")))],
        ),
        (
            with(pool(), "/status/allocated/memory", json!("20 GB")),
            vec![("status.allocated.memory", leak(quantity("20 GB")))],
        ),
        (
            with(pool(), "/spec/capacity/maxGPUs", json!(2)),
            vec![("spec", "capacity.maxGPUs is set on a CPU pool; GPUs are only scheduled in pools with hardware.class GPU")],
        ),
        (
            with(pool(), "/spec/admitUnlistedNamespaces", json!(false)),
            vec![("spec", "defaultQuota applies only to namespaces that no tenant lists; set admitUnlistedNamespaces: true or remove defaultQuota")],
        ),
        (
            with(pool(), "/spec/tenants/1/name", json!("team-a")),
            vec![("spec.tenants", "tenant names must be unique; \"team-a\" is listed more than once")],
        ),
        (
            with(pool(), "/spec/tenants/1/namespaces", json!(["team-b", "team-a-staging"])),
            vec![("spec.tenants", "namespace \"team-a-staging\" is listed by more than one tenant; a namespace belongs to at most one tenant of a pool")],
        ),
        // ModelDeployment: model source
        (source("/models/smollm2.gguf"), vec![("spec.model.source", local("/models/smollm2.gguf"))]),
        (source("./smollm2.gguf"), vec![("spec.model.source", local("./smollm2.gguf"))]),
        (source("models/smollm2"), vec![("spec.model.source", local("models/smollm2"))]),
        (source("file:///models/x.gguf"), vec![("spec.model.source", local("file:///models/x.gguf"))]),
        (source("s3://bucket/model.gguf"), vec![("spec.model.source", scheme("s3://bucket/model.gguf"))]),
        (source("http://host/model.gguf"), vec![("spec.model.source", scheme("http://host/model.gguf"))]),
        (source("bundled://"), vec![("spec.model.source", BUNDLED)]),
        (source("bundled://Small Model"), vec![("spec.model.source", BUNDLED)]),
        (source("hf://just-a-repo"), vec![("spec.model.source", HF)]),
        (source("hf://org/repo@"), vec![("spec.model.source", HF)]),
        (source("pvc://"), vec![("spec.model.source", PVC)]),
        (source("pvc://Models/x.gguf"), vec![("spec.model.source", PVC)]),
        (source("https://"), vec![("spec.model.source", HTTPS)]),
        (source("https://example.com"), vec![("spec.model.source", HTTPS)]),
        // sha256
        (
            with(md(), "/spec/model/sha256", json!("abc123")),
            vec![("spec.model.sha256", "model.sha256 has 6 characters; a sha256 digest is 64 hexadecimal characters")],
        ),
        (
            with(md(), "/spec/model/sha256", json!("g".repeat(64))),
            vec![("spec.model.sha256", "model.sha256 may only contain hexadecimal characters (0-9, a-f)")],
        ),
        // autoscaling
        (
            with(with(md(), "/spec/autoscaling/minReplicas", json!(3)), "/spec/autoscaling/maxReplicas", json!(2)),
            vec![("spec.autoscaling", "autoscaling.minReplicas (3) must not exceed autoscaling.maxReplicas (2)")],
        ),
        (
            // minReplicas defaults to 1, which exceeds... nothing: maxReplicas is at least 1, so
            // the default can only conflict with an explicit larger minimum.
            with(minimal_deployment(), "/spec/autoscaling", json!({"minReplicas": 5, "maxReplicas": 1})),
            vec![("spec.autoscaling", "autoscaling.minReplicas (5) must not exceed autoscaling.maxReplicas (1)")],
        ),
        // sharding
        (
            with(md(), "/spec/sharding/shards", json!(0)),
            vec![("spec.sharding.shards", "sharding.shards is 0; it must be between 1 and 64 (pipeline stages per replica group)")],
        ),
        (
            with(md(), "/spec/sharding/shards", json!(65)),
            vec![("spec.sharding.shards", "sharding.shards is 65; it must be between 1 and 64 (pipeline stages per replica group)")],
        ),
        // resources
        (
            with(md(), "/spec/resources/cpu", json!("0")),
            vec![("spec.resources", "resources.cpu must be greater than zero")],
        ),
        (
            // Zero memory also leaves no room for the KV cache: both rules say so.
            with(md(), "/spec/resources/memory", json!("0Gi")),
            vec![
                ("spec", "engine.kvCacheMemory (512Mi) must be less than resources.memory (0Gi): the KV cache lives inside the server pod and the weights need room too"),
                ("spec.resources", "resources.memory must be greater than zero"),
            ],
        ),
        (
            // An unparsable quantity is reported once, by the quantity rule; the rules that
            // compare quantities skip it rather than fail to evaluate.
            with(md(), "/spec/resources/cpu", json!("two")),
            vec![("spec.resources.cpu", leak(quantity("two")))],
        ),
        (
            with(md(), "/spec/engine/kvCacheMemory", json!("4Gi")),
            vec![("spec", "engine.kvCacheMemory (4Gi) must be less than resources.memory (2Gi): the KV cache lives inside the server pod and the weights need room too")],
        ),
        (
            with(md(), "/spec/engine/kvCacheMemory", json!("2048Mi")),
            vec![("spec", "engine.kvCacheMemory (2048Mi) must be less than resources.memory (2Gi): the KV cache lives inside the server pod and the weights need room too")],
        ),
        // the name becomes a Service name
        (
            with(md(), "/metadata/name", json!("1-smollm2")),
            vec![("", "ModelDeployment name \"1-smollm2\" cannot name its Service: use at most 63 lowercase letters, digits and \"-\", starting with a letter and ending with a letter or digit")],
        ),
        (
            with(md(), "/metadata/name", json!("m".repeat(64))),
            vec![("", leak(format!("ModelDeployment name \"{}\" cannot name its Service: use at most 63 lowercase letters, digits and \"-\", starting with a letter and ending with a letter or digit", "m".repeat(64))))],
        ),
    ]
}

#[test]
fn valid_objects_pass_every_rule() {
    accepted(&pool());
    accepted(&gpu_pool());
    accepted(&deployment());
    accepted(&minimal_deployment());
    // No tenants, no capacity: the smallest pool.
    accepted(&json!({
        "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": "p"}, "spec": {"hardware": {"class": "CPU"}}
    }));
    // maxGPUs 0 is fine on a CPU pool; a GPU pool without CPU features is fine.
    accepted(&with(pool(), "/spec/capacity/maxGPUs", json!(0)));
    accepted(&with(gpu_pool(), "/spec/hardware/cpu", Value::Null));
    // Only the default minReplicas (1) against maxReplicas 1.
    accepted(&with(
        minimal_deployment(),
        "/spec/autoscaling",
        json!({"maxReplicas": 1}),
    ));
    accepted(&with(
        deployment(),
        "/spec/autoscaling/minReplicas",
        json!(4),
    ));
    accepted(&with(deployment(), "/spec/sharding/shards", json!(64)));
    accepted(&with(
        deployment(),
        "/spec/engine/kvCacheMemory",
        json!("2047Mi"),
    ));
    accepted(&with(deployment(), "/spec/resources/memory", Value::Null));
    accepted(&with(deployment(), "/metadata/name", json!("m".repeat(63))));
    for source in [
        "bundled://smollm2-135m-instruct",
        "hf://HuggingFaceTB/SmolLM2-135M-Instruct",
        "hf://bartowski/Llama-3.2-1B-Instruct-GGUF@main/Llama-3.2-1B-Instruct-Q4_0.gguf",
        "hf://org/repo@v1.0",
        "hf://org/repo/sub/dir/model.gguf",
        "pvc://models",
        "pvc://models/llama/8b",
        "pvc://models.team-a/x.gguf",
        "https://example.com/models/smollm2.gguf",
        "https://example.com:8443/m?sig=abc",
    ] {
        accepted(&with(deployment(), "/spec/model/source", json!(source)));
    }
    for quantity in ["1", "0", "250m", "1.5", "4Gi", "1e3", "2k", "100Mi"] {
        accepted(&with(pool(), "/spec/capacity/maxMemory", json!(quantity)));
    }
}

#[test]
fn invalid_objects_are_refused_with_a_message_a_person_understands() {
    for (object, expected) in invalid_cases() {
        refused(&object, &expected);
    }
}

/// Every rule in both schemas is the one refusing at least one of the invalid cases, so a rule
/// added without a test (or a rule that can never fire) fails here.
#[test]
fn every_rule_is_exercised() {
    let fired: BTreeSet<String> = invalid_cases()
        .iter()
        .flat_map(|(object, _)| failures(kind_of(object), object))
        .map(|f| f.rule)
        .collect();
    let mut unexercised = Vec::new();
    for kind in ["InferencePool", "ModelDeployment"] {
        for r in rules(&schema(kind)) {
            if !fired.contains(&r.rule) {
                unexercised.push(format!("{kind} {}: {}", r.path, r.rule));
            }
        }
    }
    assert!(
        unexercised.is_empty(),
        "rules no test refuses an object with:\n{}",
        unexercised.join("\n")
    );
}

/// The objects that pass the rules also read into the Rust types (and the invalid ones are
/// still well-typed, so the rules, not serde, are what refuses them).
#[test]
fn test_objects_read_into_the_rust_types() {
    use ryzanstein_operator::crd::{InferencePool, ModelDeployment};
    let all = [pool(), gpu_pool(), deployment(), minimal_deployment()]
        .into_iter()
        .chain(invalid_cases().into_iter().map(|(o, _)| o));
    for object in all {
        match kind_of(&object) {
            "InferencePool" => {
                serde_json::from_value::<InferencePool>(object.clone())
                    .unwrap_or_else(|e| panic!("{e}: {object:#}"));
            }
            _ => {
                serde_json::from_value::<ModelDeployment>(object.clone())
                    .unwrap_or_else(|e| panic!("{e}: {object:#}"));
            }
        }
    }
}

/// The example manifests in `examples/` pass the rules and read into the Rust types.
#[test]
fn examples_pass_the_rules() {
    use ryzanstein_operator::crd::{InferencePool, ModelDeployment};
    let dir = ryzanstein_operator::crd::generate::repo_root().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let object: Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kind = kind_of(&object).to_owned();
        match kind.as_str() {
            "InferencePool" => {
                serde_json::from_value::<InferencePool>(object.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            "ModelDeployment" => {
                serde_json::from_value::<ModelDeployment>(object.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            _ => continue,
        }
        let got = failures(&kind, &object);
        assert!(got.is_empty(), "{} is refused: {got:#?}", path.display());
        seen += 1;
    }
    assert!(
        seen > 0,
        "no InferencePool or ModelDeployment examples in {}",
        dir.display()
    );
}
