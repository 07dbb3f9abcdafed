//! Objects for the CEL rule tests, shared by the client-side evaluation
//! (`operator/tests/cel_rules.rs`, kube-cel) and the real API server
//! (`e2e/tests/crd_validation.rs`): valid objects, and invalid ones with the (field path,
//! message) pairs a person sees from `kubectl apply`.

#![allow(dead_code)] // each including test uses its own subset

use serde_json::{json, Value};

pub fn pool() -> Value {
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

pub fn gpu_pool() -> Value {
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

pub fn deployment() -> Value {
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

pub fn minimal_deployment() -> Value {
    json!({
        "apiVersion": "ryzanstein.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "team-a"},
        "spec": {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}, "poolRef": "cpu"}
    })
}

/// `base` with the value at JSON pointer `pointer` replaced (or removed for `Value::Null`).
pub fn with(mut base: Value, pointer: &str, value: Value) -> Value {
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

/// Objects every rule accepts.
pub fn valid_cases() -> Vec<Value> {
    let mut out = Vec::new();
    out.push(pool());
    out.push(gpu_pool());
    out.push(deployment());
    out.push(minimal_deployment());
    // No tenants, no capacity: the smallest pool.
    out.push(json!({
        "apiVersion": "ryzanstein.dev/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": "p"}, "spec": {"hardware": {"class": "CPU"}}
    }));
    // maxGPUs 0 is fine on a CPU pool; a GPU pool without CPU features is fine.
    out.push(with(pool(), "/spec/capacity/maxGPUs", json!(0)));
    out.push(with(gpu_pool(), "/spec/hardware/cpu", Value::Null));
    // Only the default minReplicas (1) against maxReplicas 1.
    out.push(with(
        minimal_deployment(),
        "/spec/autoscaling",
        json!({"maxReplicas": 1}),
    ));
    out.push(with(
        deployment(),
        "/spec/autoscaling/minReplicas",
        json!(4),
    ));
    out.push(with(deployment(), "/spec/sharding/shards", json!(64)));
    out.push(with(
        deployment(),
        "/spec/engine/kvCacheMemory",
        json!("2047Mi"),
    ));
    out.push(with(deployment(), "/spec/resources/memory", Value::Null));
    out.push(with(deployment(), "/metadata/name", json!("m".repeat(63))));
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
        out.push(with(deployment(), "/spec/model/source", json!(source)));
    }
    for quantity in ["1", "0", "250m", "1.5", "4Gi", "1e3", "2k", "100Mi"] {
        out.push(with(pool(), "/spec/capacity/maxMemory", json!(quantity)));
    }
    out
}

/// Objects a rule refuses, each with the (field path, message) pairs it is refused with.
pub fn invalid_cases() -> Vec<(Value, Vec<(&'static str, &'static str)>)> {
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
            vec![("spec.model.sha256", "model.sha256 must be 64 hexadecimal characters (a sha256 digest); this one is shorter")],
        ),
        (
            with(md(), "/spec/model/sha256", json!("g".repeat(64))),
            vec![("spec.model.sha256", "model.sha256 may only contain hexadecimal characters (0-9, a-f)")],
        ),
        // autoscaling
        (
            with(with(md(), "/spec/autoscaling/minReplicas", json!(3)), "/spec/autoscaling/maxReplicas", json!(2)),
            vec![("spec.autoscaling", "autoscaling.minReplicas must not exceed autoscaling.maxReplicas; lower minReplicas or raise maxReplicas")],
        ),
        (
            // minReplicas defaults to 1, which exceeds... nothing: maxReplicas is at least 1, so
            // the default can only conflict with an explicit larger minimum.
            with(minimal_deployment(), "/spec/autoscaling", json!({"minReplicas": 5, "maxReplicas": 1})),
            vec![("spec.autoscaling", "autoscaling.minReplicas must not exceed autoscaling.maxReplicas; lower minReplicas or raise maxReplicas")],
        ),
        // sharding
        (
            with(md(), "/spec/sharding/shards", json!(0)),
            vec![("spec.sharding.shards", "sharding.shards must be between 1 and 64 (pipeline stages per replica group); it is below 1")],
        ),
        (
            with(md(), "/spec/sharding/shards", json!(65)),
            vec![("spec.sharding.shards", "sharding.shards must be between 1 and 64 (pipeline stages per replica group); it is above 64")],
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
            // A negative quantity parses, so the rule that compares it with zero sees it too.
            with(md(), "/spec/resources/cpu", json!("-2")),
            vec![
                ("spec.resources", "resources.cpu must be greater than zero"),
                ("spec.resources.cpu", leak(quantity("-2"))),
            ],
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
