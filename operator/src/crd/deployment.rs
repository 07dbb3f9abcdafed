//! `ModelDeployment` (namespaced, owned by a tenant team): which model, in which pool, how it
//! scales, how it is sharded, and how the engine runs.

// `#[kube(printcolumn(...))]` repeats `name`/`type_` keys by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, Quantity, DNS_SUBDOMAIN, MAX_CONDITIONS};

/// Most pipeline stages a model may be split into.
pub const MAX_SHARDS: i32 = 64;
/// Longest model source accepted.
pub const MAX_SOURCE_LENGTH: usize = 2048;

/// Condition types on a `ModelDeployment`.
pub mod condition {
    /// Every desired replica group is ready and serving.
    pub const READY: &str = "Ready";
    /// The operator is rolling out or scaling toward the desired state.
    pub const PROGRESSING: &str = "Progressing";
    /// Something keeps the deployment below what it should run (pod creation refused, a shard
    /// failing).
    pub const DEGRADED: &str = "Degraded";
    /// The tenant's quota or the pool's capacity caps the replicas.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// The referenced pool exists, admits this namespace and has matching nodes.
    pub const POOL_READY: &str = "PoolReady";
}

/// A model served by Ryzanstein server pods placed in an `InferencePool`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ryzanstein.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    shortname = "md",
    category = "ryzanstein",
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    doc = "ModelDeployment: a model served in an InferencePool, with replicas or autoscaling, sharding and engine options.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.source"),
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.poolRef"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredReplicas"),
    printcolumn(name = "Hardware", type_ = "string", json_path = ".status.hardware"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ).message(Message::Expression(
        "'ModelDeployment name \"' + self.metadata.name + '\" cannot name its Service: use at most 63 lowercase letters, digits and \"-\", starting with a letter and ending with a letter or digit'".into()
    ))
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.engine) || !has(self.engine.kvCacheMemory) || !has(self.resources) || !has(self.resources.memory) || !isQuantity(self.engine.kvCacheMemory) || !isQuantity(self.resources.memory) || quantity(self.engine.kvCacheMemory).isLessThan(quantity(self.resources.memory))"
).message(Message::Expression(
    "'engine.kvCacheMemory (' + self.engine.kvCacheMemory + ') must be less than resources.memory (' + self.resources.memory + '): the KV cache lives inside the server pod and the weights need room too'".into()
)))]
pub struct ModelDeploymentSpec {
    /// Which model and how to load it.
    pub model: ModelSpec,

    /// Name of the `InferencePool` to run in.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub pool_ref: String,

    /// Desired replica groups while autoscaling is off (the scale subresource's spec path, so
    /// HPA or KEDA can drive it). Ignored while autoscaling is enabled.
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Load-based autoscaling by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// Splitting the model into pipeline stages across pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding: Option<Sharding>,

    /// Per server pod (requests equal limits); absent fields take the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Engine options; absent fields take the server's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,

    /// Server image; absent means the operator's configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// API keys the servers require of every caller; absent means the API is open inside the
    /// cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeySecret>,
}

/// A Secret holding the servers' API key file: one key per line, `NAME KEY` or a bare `KEY`
/// (`#` starts a comment line). The servers read it again when the Secret changes.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySecret {
    /// Name of the Secret, in the ModelDeployment's namespace.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub secret_name: String,
    /// The Secret's key holding the key file.
    #[serde(default = "default_key_file_key")]
    #[schemars(length(min = 1, max = 253), pattern(SECRET_KEY))]
    pub key: String,
}

/// What a Secret's data keys may be.
const SECRET_KEY: &str = "^[-._a-zA-Z0-9]+$";

fn default_key_file_key() -> String {
    "keys".to_owned()
}

fn one() -> i32 {
    1
}

/// Where the model comes from and how it is loaded.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// `bundled://name`, `hf://org/repo[@revision][/file.gguf]`, `pvc://claim/path` or
    /// `https://host/path`.
    #[schemars(length(min = 1, max = MAX_SOURCE_LENGTH))]
    #[x_kube(
        validation = Rule::new(
            "self.startsWith('bundled://') || self.startsWith('hf://') || self.startsWith('pvc://') || self.startsWith('https://')"
        ).message(Message::Expression(
            "(self.startsWith('/') || self.startsWith('.') || self.startsWith('~') || self.startsWith('file:') || !self.contains('://')) ? 'model.source \"' + self + '\" is a local path, which does not exist inside the cluster; put the model on a volume and use pvc://claim/path, or use bundled://, hf:// or https://' : 'model.source \"' + self + '\" has an unsupported scheme; use bundled://name, hf://org/repo[@revision][/file.gguf], pvc://claim/path or https://host/path'".into()
        )),
        validation = Rule::new(
            "!self.startsWith('bundled://') || self.matches('^bundled://[a-z0-9][a-z0-9._-]*$')"
        ).message("bundled:// sources name one bundled model, e.g. bundled://smollm2-135m-instruct"),
        validation = Rule::new(
            "!self.startsWith('hf://') || self.matches('^hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[^/@]+)?(/[^@]+)?$')"
        ).message("hf:// sources look like hf://org/repo, hf://org/repo@revision or hf://org/repo/file.gguf"),
        validation = Rule::new(
            "!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/.*)?$')"
        ).message("pvc:// sources look like pvc://claim-name or pvc://claim-name/path/in/volume (the claim in this namespace)"),
        validation = Rule::new(
            "!self.startsWith('https://') || self.matches('^https://[^/?#@ ]+/[^ ]+$')"
        ).message("https:// sources look like https://host/path/to/model (a file or directory, no spaces)")
    )]
    pub source: String,

    /// The model name clients send; absent means the ModelDeployment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern("^[A-Za-z0-9][A-Za-z0-9._:/-]*$"))]
    pub served_name: Option<String>,

    /// File format; `Auto` decides from the files.
    #[serde(default)]
    pub format: ModelFormat,

    /// Re-quantise the weights at load; `Native` keeps them as stored.
    #[serde(default)]
    pub quantization: Quantization,

    /// Expected sha256 of the model file (integrity pin), 64 hex characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{64}$')").message(Message::Expression(
        "self.size() != 64 ? 'model.sha256 must be 64 hexadecimal characters (a sha256 digest); this one is ' + (self.size() < 64 ? 'shorter' : 'longer') : 'model.sha256 may only contain hexadecimal characters (0-9, a-f)'".into()
    )))]
    pub sha256: Option<String>,
}

/// Model file format.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ModelFormat {
    /// Decide from the files.
    #[default]
    Auto,
    /// A GGUF file.
    #[serde(rename = "GGUF")]
    Gguf,
    /// A Hugging Face directory (config.json, *.safetensors, tokenizer.json).
    Safetensors,
}

/// Weight format after loading.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum Quantization {
    /// Keep the stored format.
    #[default]
    Native,
    /// 8-bit blocks.
    #[serde(rename = "Q8_0")]
    Q8,
    /// 4-bit blocks.
    #[serde(rename = "Q4_0")]
    Q4,
    /// BitNet b1.58 ternary weights.
    Ternary,
}

/// Load-based autoscaling between `minReplicas` and `maxReplicas`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
// Messages cannot show the numbers: `string(int)` has no size bound, and the API server's cost
// estimate refuses a messageExpression that uses it.
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message(
    "autoscaling.minReplicas must not exceed autoscaling.maxReplicas; lower minReplicas or raise maxReplicas"
))]
pub struct Autoscaling {
    /// `false` keeps the settings but scales by `spec.replicas` instead.
    #[serde(default = "enabled")]
    pub enabled: bool,

    /// Fewest replica groups; 0 scales to zero when idle.
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,

    /// Most replica groups.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// Running plus waiting requests per replica group that the autoscaler aims for.
    #[serde(default = "default_target_in_flight")]
    #[schemars(range(min = 1))]
    pub target_in_flight_per_replica: i32,

    /// How long higher load must last before scaling up.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_up_stabilization_seconds: i32,

    /// How long lower load must last before scaling down.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: i32,
}

fn enabled() -> bool {
    true
}

fn default_target_in_flight() -> i32 {
    8
}

fn default_scale_down_delay() -> i32 {
    300
}

/// Pipeline parallelism: each replica group is `shards` pods, one per stage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sharding {
    /// Pipeline stages per replica group (must not exceed the model's layer count, which is
    /// checked when the model loads).
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 64").message(Message::Expression(
        "'sharding.shards must be between 1 and 64 (pipeline stages per replica group); it is ' + (self < 1 ? 'below 1' : 'above 64')".into()
    )))]
    pub shards: i32,
}

/// Resources of one server pod (requests equal limits, so the pod gets Guaranteed QoS).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.cpu) || !isQuantity(self.cpu) || quantity(self.cpu).isGreaterThan(quantity('0'))")
        .message("resources.cpu must be greater than zero"),
    validation = Rule::new("!has(self.memory) || !isQuantity(self.memory) || quantity(self.memory).isGreaterThan(quantity('0'))")
        .message("resources.memory must be greater than zero")
)]
pub struct Resources {
    /// CPU per pod ("2", "1500m"); the engine's thread count follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory per pod ("2Gi").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// GPUs per pod (only in a GPU pool; the operator reports a condition otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: Option<i32>,
}

/// Engine options, passed to the server through its ConfigMap.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Engine {
    /// Context window in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub context_length: Option<i32>,
    /// Memory for the KV cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_memory: Option<Quantity>,
    /// Sequences decoded together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_concurrent_sequences: Option<i32>,
    /// Requests that may wait; beyond this the server answers 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65536))]
    pub max_queued_requests: Option<i32>,
    /// Speculative decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculative: Option<Speculative>,
    /// Compute threads; 0 or absent matches the CPU request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1024))]
    pub threads: Option<i32>,
    /// Extra server arguments, appended to the command (escape hatch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 1024)))]
    pub args: Vec<String>,
}

/// Speculative decoding settings.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Speculative {
    /// `None` or `PromptLookup` (draft tokens copied from earlier text).
    #[serde(default)]
    pub mode: SpeculativeMode,
    /// Most draft tokens proposed per step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_draft_tokens: Option<i32>,
}

/// Speculative decoding mode.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum SpeculativeMode {
    /// No speculation.
    #[default]
    #[serde(rename = "None")]
    Off,
    /// Propose tokens by matching the latest n-gram in the prompt and output so far.
    PromptLookup,
}

/// Observed state of a deployment, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The pool tenant this namespace belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Where the pods run, for people: the pool and its hardware (e.g. "cpu-avx512 (CPU AVX512F)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// Replica groups that exist (the scale subresource's status path).
    #[serde(default)]
    pub replicas: i32,
    /// Replica groups whose every shard is ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Replica groups wanted: the autoscaler's decision (clamped to min/max), or `spec.replicas`;
    /// before the quota cap, which `QuotaExceeded` reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Label selector of the pods serving the API (shard 0), for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// OpenAI-compatible base URL inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Last load sample the autoscaler used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
    /// When the autoscaler last changed the desired replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// `Ready`, `Progressing`, `Degraded`, `QuotaExceeded`, `PoolReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONDITIONS))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A load sample.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    /// Running plus waiting requests per ready replica group.
    pub in_flight_per_replica: f64,
    /// When it was scraped.
    pub observed_at: Time,
}

impl ModelDeployment {
    /// (namespace, name): which deployment this is across its versions and re-creations.
    pub fn key(&self) -> (String, String) {
        (
            self.metadata.namespace.clone().unwrap_or_default(),
            self.metadata.name.clone().unwrap_or_default(),
        )
    }

    /// `metadata.uid` ("" before the API server assigned one): which object of that name.
    pub fn uid(&self) -> String {
        self.metadata.uid.clone().unwrap_or_default()
    }
}
