//! The nodes an agent registers: hardware profiles with the labels and capacity a real node of
//! that kind has, and the `Node` object a kubelet would create for one.
//!
//! CPU labels are Node Feature Discovery's (`feature.node.kubernetes.io/cpu-cpuid.<FEATURE>=true`,
//! `cpu-model.vendor_id`, `cpu-model.family`, `cpu-model.id`), the ones the operator's placement
//! requires and prefers. GPU labels are NVIDIA GPU feature discovery's (`nvidia.com/gpu.product`,
//! `nvidia.com/gpu.memory` in MiB, ...), and the GPUs are an `nvidia.com/gpu` extended resource
//! in capacity and allocatable, as the device plugin reports them through the kubelet.
//!
//! Allocatable is what a kubelet with no reservations reports: capacity less the default hard
//! eviction thresholds (`memory.available<100Mi`, `nodefs.available<10%`). Requests and limits
//! are not enforced on the processes (no cgroups here), but the scheduler places pods by
//! allocatable, so capacity decides where pods may go.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::network::NodeNetwork;
use crate::control_plane::Binaries;

/// NFD's CPUID label prefix.
pub const NFD_CPUID: &str = "feature.node.kubernetes.io/cpu-cpuid.";
/// NFD's CPU vendor label.
pub const NFD_VENDOR: &str = "feature.node.kubernetes.io/cpu-model.vendor_id";
/// The GPU extended resource of NVIDIA's device plugin.
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";

const MIB: u64 = 1024 * 1024;

/// One node: its name, labels, taints and capacity.
#[derive(Clone, Debug)]
pub struct NodeProfile {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Whole CPUs.
    pub cpus: u32,
    pub memory_mib: u64,
    /// The `pods` capacity (a kubelet's default `maxPods` is 110).
    pub max_pods: u32,
    pub ephemeral_storage_gib: u64,
    /// Extended resources, e.g. `nvidia.com/gpu` → 1.
    pub extended: BTreeMap<String, u64>,
}

impl NodeProfile {
    /// A node with the standard kubelet labels and nothing else.
    pub fn new(name: &str) -> NodeProfile {
        let labels = BTreeMap::from(
            [
                ("kubernetes.io/hostname", name),
                ("kubernetes.io/os", "linux"),
                ("kubernetes.io/arch", "amd64"),
                ("topology.kubernetes.io/region", "e2e"),
                ("topology.kubernetes.io/zone", "e2e-a"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        NodeProfile {
            name: name.to_owned(),
            labels,
            taints: Vec::new(),
            cpus: 8,
            memory_mib: 32 * 1024,
            max_pods: 110,
            ephemeral_storage_gib: 100,
            extended: BTreeMap::new(),
        }
    }

    /// An AMD EPYC Genoa (Zen 4) node: AVX2, FMA, F16C and AVX-512 (F, BW, CD, DQ, VL, VNNI,
    /// BF16, IFMA, VBMI, VBMI2, BITALG, VPOPCNTDQ); 16 CPUs, 64 GiB.
    pub fn avx512_amd(name: &str) -> NodeProfile {
        NodeProfile::new(name)
            .cpu_model("AMD", 25, 17)
            .cpu_features(&[
                "ADX",
                "AESNI",
                "AVX",
                "AVX2",
                "BMI1",
                "BMI2",
                "F16C",
                "FMA3",
                "SHA",
                "VAES",
                "VPCLMULQDQ",
                "AVX512F",
                "AVX512BW",
                "AVX512CD",
                "AVX512DQ",
                "AVX512VL",
                "AVX512VNNI",
                "AVX512BF16",
                "AVX512IFMA",
                "AVX512VBMI",
                "AVX512VBMI2",
                "AVX512BITALG",
                "AVX512VPOPCNTDQ",
            ])
            .label("node.kubernetes.io/instance-type", "m7a.4xlarge")
            .cpus(16)
            .memory_mib(64 * 1024)
    }

    /// An Intel Xeon Broadwell node: AVX2, FMA and F16C, no AVX-512; 8 CPUs, 32 GiB.
    pub fn avx2_intel(name: &str) -> NodeProfile {
        NodeProfile::new(name)
            .cpu_model("Intel", 6, 79)
            .cpu_features(&[
                "ADX", "AESNI", "AVX", "AVX2", "BMI1", "BMI2", "F16C", "FMA3", "HLE", "RTM",
            ])
            .label("node.kubernetes.io/instance-type", "m4.2xlarge")
            .cpus(8)
            .memory_mib(32 * 1024)
    }

    /// A GPU node: one NVIDIA H100 80GB (`nvidia.com/gpu: 1`, GPU feature discovery labels,
    /// NFD's PCI label) on an AMD EPYC Milan (Zen 3, AVX2 without AVX-512); 16 CPUs, 128 GiB.
    pub fn gpu_nvidia(name: &str) -> NodeProfile {
        NodeProfile::new(name)
            .cpu_model("AMD", 25, 1)
            .cpu_features(&[
                "ADX",
                "AESNI",
                "AVX",
                "AVX2",
                "BMI1",
                "BMI2",
                "F16C",
                "FMA3",
                "SHA",
                "VAES",
                "VPCLMULQDQ",
            ])
            .label("node.kubernetes.io/instance-type", "a3-highgpu-1g")
            .label("feature.node.kubernetes.io/pci-10de.present", "true")
            .label("nvidia.com/gpu.present", "true")
            .label("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3")
            .label("nvidia.com/gpu.memory", "81559")
            .label("nvidia.com/gpu.count", "1")
            .label("nvidia.com/gpu.family", "hopper")
            .label("nvidia.com/gpu.compute.major", "9")
            .label("nvidia.com/gpu.compute.minor", "0")
            .label("nvidia.com/cuda.driver.major", "550")
            .cpus(16)
            .memory_mib(128 * 1024)
            .extended(NVIDIA_GPU, 1)
    }

    pub fn label(mut self, key: &str, value: &str) -> NodeProfile {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// NFD's `cpu-cpuid.<F>=true` for each feature.
    pub fn cpu_features(mut self, features: &[&str]) -> NodeProfile {
        for feature in features {
            self.labels
                .insert(format!("{NFD_CPUID}{feature}"), "true".to_owned());
        }
        self
    }

    /// NFD's `cpu-model.vendor_id`, `cpu-model.family` and `cpu-model.id`.
    pub fn cpu_model(self, vendor: &str, family: u32, model: u32) -> NodeProfile {
        self.label(NFD_VENDOR, vendor)
            .label(
                "feature.node.kubernetes.io/cpu-model.family",
                &family.to_string(),
            )
            .label(
                "feature.node.kubernetes.io/cpu-model.id",
                &model.to_string(),
            )
    }

    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> NodeProfile {
        self.taints.push(Taint {
            key: key.to_owned(),
            value: Some(value.to_owned()),
            effect: effect.to_owned(),
            time_added: None,
        });
        self
    }

    pub fn cpus(mut self, cpus: u32) -> NodeProfile {
        self.cpus = cpus;
        self
    }

    pub fn memory_mib(mut self, mib: u64) -> NodeProfile {
        self.memory_mib = mib;
        self
    }

    pub fn max_pods(mut self, pods: u32) -> NodeProfile {
        self.max_pods = pods;
        self
    }

    pub fn extended(mut self, resource: &str, count: u64) -> NodeProfile {
        self.extended.insert(resource.to_owned(), count);
        self
    }

    /// Capacity, as a kubelet reports it (memory in Ki).
    pub fn capacity(&self) -> BTreeMap<String, Quantity> {
        self.resources(0, 0)
    }

    /// Allocatable: capacity less the default hard eviction thresholds.
    pub fn allocatable(&self) -> BTreeMap<String, Quantity> {
        self.resources(100 * MIB, self.ephemeral_storage_gib * 1024 * MIB / 10)
    }

    fn resources(&self, memory_held: u64, storage_held: u64) -> BTreeMap<String, Quantity> {
        let kib = |bytes: u64| Quantity(format!("{}Ki", bytes / 1024));
        let mut r = BTreeMap::from([
            ("cpu".to_owned(), Quantity(self.cpus.to_string())),
            (
                "memory".to_owned(),
                kib(self.memory_mib * MIB - memory_held),
            ),
            ("pods".to_owned(), Quantity(self.max_pods.to_string())),
            (
                "ephemeral-storage".to_owned(),
                kib(self.ephemeral_storage_gib * 1024 * MIB - storage_held),
            ),
            ("hugepages-1Gi".to_owned(), Quantity("0".to_owned())),
            ("hugepages-2Mi".to_owned(), Quantity("0".to_owned())),
        ]);
        for (name, count) in &self.extended {
            r.insert(name.clone(), Quantity(count.to_string()));
        }
        r
    }
}

/// The Node object a kubelet registers for `profile`: labels, taints, the pod CIDR, capacity,
/// allocatable, addresses, node info and conditions (Ready=True).
pub fn node_object(profile: &NodeProfile, network: &NodeNetwork) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(profile.name.clone()),
            labels: Some(profile.labels.clone()),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".to_owned(),
                "0".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!profile.taints.is_empty()).then(|| profile.taints.clone()),
            ..NodeSpec::default()
        }),
        status: Some(node_status(
            profile,
            network,
            Timestamp::now(),
            Timestamp::now(),
        )),
    }
}

/// The node's status: heartbeats at `now`, conditions unchanged (as they are here) since
/// `since`.
pub fn node_status(
    profile: &NodeProfile,
    network: &NodeNetwork,
    now: Timestamp,
    since: Timestamp,
) -> NodeStatus {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(since)),
    };
    NodeStatus {
        capacity: Some(profile.capacity()),
        allocatable: Some(profile.allocatable()),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: network.node_ip().to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: profile.name.clone(),
            },
        ]),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            ),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".to_owned(),
            boot_id: boot_id(),
            container_runtime_version: format!("ryzanstein-e2e://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: kernel_release(),
            kube_proxy_version: String::new(),
            kubelet_version: Binaries::kubernetes_version().to_owned(),
            machine_id: profile.name.clone(),
            operating_system: "linux".to_owned(),
            os_image: "Ryzanstein e2e node agent (processes on the host)".to_owned(),
            system_uuid: profile.name.clone(),
            swap: None,
        }),
        ..NodeStatus::default()
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx512_node_has_the_labels_placement_requires() {
        let p = NodeProfile::avx512_amd("n");
        for f in ["AVX2", "AVX512F", "AVX512BW", "AVX512VNNI"] {
            assert_eq!(p.labels[&format!("{NFD_CPUID}{f}")], "true", "{f}");
        }
        assert_eq!(p.labels[NFD_VENDOR], "AMD");
        assert_eq!(p.labels["kubernetes.io/hostname"], "n");
    }

    #[test]
    fn avx2_node_has_no_avx512_label() {
        let p = NodeProfile::avx2_intel("n");
        assert_eq!(p.labels[&format!("{NFD_CPUID}AVX2")], "true");
        assert!(p.labels.keys().all(|k| !k.contains("AVX512")));
        assert_eq!(p.labels[NFD_VENDOR], "Intel");
    }

    #[test]
    fn gpu_node_advertises_the_gpu_resource_and_labels() {
        let p = NodeProfile::gpu_nvidia("g");
        assert_eq!(p.capacity()[NVIDIA_GPU].0, "1");
        assert_eq!(p.allocatable()[NVIDIA_GPU].0, "1");
        assert_eq!(p.labels["nvidia.com/gpu.product"], "NVIDIA-H100-80GB-HBM3");
        assert!(p.labels["nvidia.com/gpu.memory"].parse::<u64>().unwrap() > 80_000);
    }

    #[test]
    fn allocatable_keeps_the_eviction_thresholds_back() {
        let p = NodeProfile::new("n").cpus(4).memory_mib(1024);
        assert_eq!(p.capacity()["memory"].0, "1048576Ki");
        assert_eq!(
            p.allocatable()["memory"].0,
            format!("{}Ki", 1048576 - 102400)
        );
        assert_eq!(p.allocatable()["cpu"].0, "4");
        assert_eq!(p.allocatable()["pods"].0, "110");
    }

    #[test]
    fn the_node_object_is_ready_with_addresses() {
        let net = NodeNetwork::new(std::net::Ipv4Addr::new(198, 18, 30, 0));
        let node = node_object(
            &NodeProfile::avx2_intel("n").taint("k", "v", "NoSchedule"),
            &net,
        );
        let status = node.status.unwrap();
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(status.addresses.unwrap()[0].address, "198.18.30.1");
        assert_eq!(node.spec.unwrap().taints.unwrap()[0].key, "k");
    }
}
