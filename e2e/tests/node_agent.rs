//! The node agent on a real control plane: three nodes register (an AVX-512 AMD node, an
//! AVX2-only Intel node, a GPU node) as themselves, and the pods the real scheduler binds to them
//! run as processes of the `e2e-echo` test server.
//!
//! Checked: node labels, capacity and leases; the Node authorizer and NodeRestriction confine each
//! node to its own objects; a Deployment's pods land on the AVX-512 node only (nodeSelector),
//! become Ready through their readiness probes, get distinct addresses in the node's pod CIDR
//! (198.18.0.0/15, routed to loopback by the agent), and are listed by the Service's EndpointSlice (from the real controller-manager); each
//! answers on its own address with the downward-API environment and the ConfigMap volume it was
//! given, and talks to the API server as its ServiceAccount (RBAC applies); deleting a pod runs
//! preStop, sends SIGTERM, lets the in-flight request finish, and the ReplicaSet replaces it; a
//! process that ignores SIGTERM is killed once the grace period is over; a GPU pod lands on the
//! GPU node and is restarted when its liveness probe fails; an image the agent cannot map
//! reports ErrImagePull; dropping the agent leaves no process behind.
//!
//! Mocked because no container runtime or container image can run here: containers are local
//! processes of binaries built in this workspace, volume mount paths are rewritten to per-pod
//! directories in their arguments and environment (the `/env` checks below see the rewritten
//! paths), and the service-account mount reaches clients through KUBECONFIG (see
//! `ryzanstein_e2e::node_agent`). Needs CAP_NET_ADMIN (root) for the pod network's route.
//!
//! Needs the binaries from `make k8s`; without them the test skips, unless RYZANSTEIN_E2E=1.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::ResourceExt;
use ryzanstein_e2e::node_agent::nodes::{NFD_CPUID, NFD_VENDOR, NVIDIA_GPU};
use ryzanstein_e2e::wait::eventually;
use ryzanstein_e2e::{control_plane_or_skip, AgentOptions, ImageTable, NodeAgent, NodeProfile};
use serde_json::{json, Value};

const NS: &str = "e2e-node-agent";
const AVX512: &str = "e2e-avx512";
const AVX2: &str = "e2e-avx2";
const GPU: &str = "e2e-gpu";
const ECHO: &str = "ryzanstein/e2e-echo:test";
const GREETING: &str = "hello from a ConfigMap\n";
const TIMEOUT: Duration = Duration::from_secs(30);

fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

/// The echo container: listens on its pod IP (downward API), reads its greeting from the
/// ConfigMap volume, reports its environment, and probes like a real server.
fn echo_container(extra_args: &[&str]) -> Value {
    let mut args = vec![
        "--host",
        "$(POD_IP)",
        "--port",
        "8080",
        "--ready-after-ms",
        "300",
        "--greeting-file",
        "$(CONFIG_DIR)/greeting",
    ];
    args.extend_from_slice(extra_args);
    let field = |path: &str| json!({ "fieldRef": { "fieldPath": path } });
    json!({
        "name": "echo",
        "image": ECHO,
        "args": args,
        "env": [
            { "name": "POD_IP", "valueFrom": field("status.podIP") },
            { "name": "POD_NAME", "valueFrom": field("metadata.name") },
            { "name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace") },
            { "name": "NODE_NAME", "valueFrom": field("spec.nodeName") },
            { "name": "SERVICE_ACCOUNT", "valueFrom": field("spec.serviceAccountName") },
            { "name": "GREETING_FROM_ENV",
              "valueFrom": { "configMapKeyRef": { "name": "echo-config", "key": "greeting" } } },
            { "name": "LISTEN", "value": "$(POD_IP):8080" },
            { "name": "CONFIG_DIR", "value": "/etc/echo" },
        ],
        "ports": [{ "name": "http", "containerPort": 8080 }],
        "startupProbe": { "httpGet": { "path": "/healthz", "port": "http" },
                          "periodSeconds": 1, "failureThreshold": 30 },
        "readinessProbe": { "httpGet": { "path": "/readyz", "port": "http" }, "periodSeconds": 1 },
        "livenessProbe": { "httpGet": { "path": "/healthz", "port": "http" },
                           "periodSeconds": 1, "failureThreshold": 2 },
        "volumeMounts": [
            { "name": "config", "mountPath": "/etc/echo", "readOnly": true },
            { "name": "tmp", "mountPath": "/tmp" },
        ],
    })
}

fn echo_volumes() -> Value {
    json!([
        { "name": "config", "configMap": { "name": "echo-config" } },
        { "name": "tmp", "emptyDir": {} },
    ])
}

fn echo_deployment() -> Deployment {
    let mut container = echo_container(&[]);
    container["lifecycle"] = json!({ "preStop": { "sleep": { "seconds": 1 } } });
    object(json!({
        "metadata": { "name": "echo", "namespace": NS },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "echo" } },
            "template": {
                "metadata": { "labels": { "app": "echo" } },
                "spec": {
                    "nodeSelector": { format!("{NFD_CPUID}AVX512F"): "true" },
                    "terminationGracePeriodSeconds": 10,
                    "containers": [container],
                    "volumes": echo_volumes(),
                }
            }
        }
    }))
}

fn pod(name: &str, spec: Value) -> Pod {
    object(json!({ "metadata": { "name": name, "namespace": NS }, "spec": spec }))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Ipv4Addr {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .expect("pod IP")
        .parse()
        .expect("IPv4 pod IP")
}

fn node_name(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap();
    let net: Ipv4Addr = net.parse().unwrap();
    let mask = u32::MAX << (32 - bits.parse::<u32>().unwrap());
    u32::from(ip) & mask == u32::from(net) & mask
}

async fn wait_ready(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(&format!("pod {name} Ready"), TIMEOUT, || async {
        pods.get_opt(name).await.unwrap().filter(is_ready)
    })
    .await
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let resp = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let resp = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_run_pods_as_processes() {
    let started = Instant::now();
    let Some(cp) = control_plane_or_skip().await else {
        return;
    };
    let images = ImageTable::new().with("ryzanstein/e2e-echo:*", env!("CARGO_BIN_EXE_e2e-echo"));
    let nodes = vec![
        NodeProfile::avx512_amd(AVX512),
        NodeProfile::avx2_intel(AVX2),
        NodeProfile::gpu_nvidia(GPU),
    ];
    let agent = match NodeAgent::start(&cp, AgentOptions::new(nodes, images)).await {
        Ok(agent) => agent,
        // Without CAP_NET_ADMIN there is no routed pod network: skip, unless the e2e tests
        // must run.
        Err(e @ ryzanstein_e2e::Error::Network(_))
            if std::env::var("RYZANSTEIN_E2E").as_deref() != Ok("1") =>
        {
            eprintln!("SKIPPED: {e}. Set RYZANSTEIN_E2E=1 to make this a failure.");
            return;
        }
        Err(e) => panic!("the node agent did not start: {e}"),
    };
    eprintln!(
        "control plane and three nodes up in {:.1}s; agent log: {}",
        started.elapsed().as_secs_f64(),
        agent.log_path().display()
    );
    let client = cp.client().await.expect("admin client");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    // --- Nodes: labels, capacity, conditions, leases.
    let node_api: Api<Node> = Api::all(client.clone());
    let node = |name: &'static str| {
        let node_api = node_api.clone();
        async move { node_api.get(name).await.unwrap() }
    };
    let avx512 = node(AVX512).await;
    let labels = avx512.labels();
    for f in ["AVX2", "AVX512F", "AVX512BW", "AVX512VNNI"] {
        assert_eq!(
            labels.get(&format!("{NFD_CPUID}{f}")).map(String::as_str),
            Some("true"),
            "{f}"
        );
    }
    assert_eq!(labels[NFD_VENDOR], "AMD");
    let avx2 = node(AVX2).await;
    assert!(avx2.labels().keys().all(|k| !k.contains("AVX512")));
    assert_eq!(avx2.labels()[&format!("{NFD_CPUID}AVX2")], "true");
    let gpu = node(GPU).await;
    let gpu_status = gpu.status.clone().unwrap();
    assert_eq!(gpu_status.capacity.as_ref().unwrap()[NVIDIA_GPU].0, "1");
    assert_eq!(gpu_status.allocatable.as_ref().unwrap()[NVIDIA_GPU].0, "1");
    assert_eq!(
        gpu.labels()["nvidia.com/gpu.product"],
        "NVIDIA-H100-80GB-HBM3"
    );
    for n in [&avx512, &avx2, &gpu] {
        let status = n.status.as_ref().unwrap();
        let ready = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True", "{}", n.name_any());
        for r in ["cpu", "memory", "pods"] {
            assert!(status.allocatable.as_ref().unwrap().contains_key(r), "{r}");
        }
        assert_eq!(
            status.node_info.as_ref().unwrap().kubelet_version,
            ryzanstein_e2e::Binaries::kubernetes_version()
        );
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let first_lease = eventually("the AVX-512 node's Lease", TIMEOUT, || async {
        leases.get_opt(AVX512).await.unwrap()
    })
    .await;
    let lease_spec = first_lease.spec.clone().unwrap();
    assert_eq!(lease_spec.holder_identity.as_deref(), Some(AVX512));

    // --- Each node is itself: NodeRestriction refuses changes to another node.
    let avx2_client = agent.node(AVX2).unwrap().client.clone();
    let as_avx2: Api<Node> = Api::all(avx2_client.clone());
    let err = as_avx2
        .patch(
            AVX512,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "stolen": "yes" } } })),
        )
        .await
        .expect_err("a node cannot label another node");
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 403),
        "{err}"
    );

    // --- Workloads, created together so they start together.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": NS } })),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    cms.create(
        &PostParams::default(),
        &object(json!({
            "metadata": { "name": "echo-config", "namespace": NS },
            "data": { "greeting": GREETING }
        })),
    )
    .await
    .unwrap();
    // The ServiceAccount admission plugin needs the namespace's default ServiceAccount.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), NS);
    eventually("the default ServiceAccount", TIMEOUT, || async {
        sas.get_opt("default").await.unwrap()
    })
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    services
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": { "name": "echo", "namespace": NS },
                "spec": { "selector": { "app": "echo" },
                          "ports": [{ "port": 80, "targetPort": "http" }] }
            })),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deployments
        .create(&PostParams::default(), &echo_deployment())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut gpu_container = echo_container(&[]);
    gpu_container["resources"] = json!({ "limits": { NVIDIA_GPU: 1 } });
    let stubborn_container = echo_container(&["--ignore-sigterm"]);
    for p in [
        pod(
            "gpu",
            json!({ "containers": [gpu_container], "volumes": echo_volumes() }),
        ),
        pod(
            "stubborn",
            json!({
                "nodeSelector": { "kubernetes.io/hostname": AVX2 },
                "terminationGracePeriodSeconds": 2,
                "containers": [stubborn_container],
                "volumes": echo_volumes(),
            }),
        ),
        pod(
            "unmapped",
            json!({ "containers": [{ "name": "app", "image": "example/not-built-here:1.0" }] }),
        ),
    ] {
        pods.create(&PostParams::default(), &p).await.unwrap();
    }

    // --- The Deployment's pods: on the AVX-512 node, Ready, distinct addresses.
    let echo_pods = eventually("two Ready echo pods", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=echo"))
            .await
            .unwrap();
        let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
        (ready.len() == 2).then_some(ready)
    })
    .await;
    eprintln!("echo pods Ready at {:.1}s", started.elapsed().as_secs_f64());
    let cidr = agent.node(AVX512).unwrap().pod_cidr.clone();
    let ips: BTreeSet<Ipv4Addr> = echo_pods.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), 2, "pod IPs are not distinct: {ips:?}");
    for p in &echo_pods {
        assert_eq!(
            node_name(p),
            AVX512,
            "{} is not on the AVX-512 node",
            p.name_any()
        );
        let ip = pod_ip(p);
        assert!(
            !ip.is_loopback() && in_cidr(ip, &cidr),
            "{ip} is not a routed address of the node's pod CIDR {cidr}"
        );
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(
            status.host_ip.as_deref(),
            Some(agent.node(AVX512).unwrap().address.to_string().as_str())
        );
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready && cs.started == Some(true) && cs.restart_count == 0);
        assert!(cs.state.as_ref().unwrap().running.is_some());
    }

    // --- The Service's EndpointSlice, from the controller-manager, lists both.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let ready_endpoints = || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=echo"))
            .await
            .unwrap();
        list.items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .flat_map(|e| {
                e.addresses
                    .iter()
                    .filter_map(|a| a.parse::<Ipv4Addr>().ok())
            })
            .collect::<BTreeSet<Ipv4Addr>>()
    };
    eventually("the EndpointSlice to list both pods", TIMEOUT, || async {
        (ready_endpoints().await == ips).then_some(())
    })
    .await;

    // --- Each pod answers on its own address with what it was given.
    for p in &echo_pods {
        let ip = pod_ip(p);
        let base = format!("http://{ip}:8080");
        let env = get_json(&http, &format!("{base}/env")).await;
        let var = |name: &str| env["env"][name].as_str().unwrap_or_default().to_owned();
        assert_eq!(var("POD_IP"), ip.to_string());
        assert_eq!(var("POD_NAME"), p.name_any());
        assert_eq!(var("POD_NAMESPACE"), NS);
        assert_eq!(var("NODE_NAME"), AVX512);
        assert_eq!(var("SERVICE_ACCOUNT"), "default");
        assert_eq!(var("GREETING_FROM_ENV"), GREETING);
        assert_eq!(var("LISTEN"), format!("{ip}:8080"));
        // The mount path, rewritten to the pod's volume directory (the mocked part).
        let config_dir = var("CONFIG_DIR");
        assert!(
            config_dir.starts_with(agent.state_dir().to_str().unwrap())
                && config_dir.ends_with("/config"),
            "{config_dir}"
        );
        assert_eq!(env["args"][2], json!(ip.to_string()));
        assert_eq!(env["args"][8], json!(format!("{config_dir}/greeting")));
        assert_eq!(get_text(&http, &format!("{base}/greeting")).await, GREETING);

        // The service-account token: the pod is its ServiceAccount, bound to the pod, and
        // RBAC applies (the default ServiceAccount may not list pods).
        let kubeconfig = var("KUBECONFIG");
        let sa_client =
            ryzanstein_e2e::control_plane::kubeconfig_client(std::path::Path::new(&kubeconfig))
                .await
                .unwrap();
        let review: SelfSubjectReview = Api::all(sa_client.clone())
            .create(&PostParams::default(), &object(json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview" })))
            .await
            .unwrap();
        let user = review.status.unwrap().user_info.unwrap();
        assert_eq!(
            user.username.as_deref(),
            Some("system:serviceaccount:e2e-node-agent:default")
        );
        let extra = user.extra.unwrap_or_default();
        assert_eq!(
            extra.get("authentication.kubernetes.io/pod-name"),
            Some(&vec![p.name_any()])
        );
        let err = Api::<Pod>::namespaced(sa_client, NS)
            .list(&ListParams::default())
            .await
            .expect_err("the default ServiceAccount cannot list pods");
        assert!(
            matches!(&err, kube::Error::Api(e) if e.code == 403),
            "{err}"
        );
    }

    // --- The Node authorizer: a node reads only objects its own pods reference.
    let err = Api::<ConfigMap>::namespaced(avx2_client, NS)
        .get("echo-config")
        .await;
    // The stubborn pod on the AVX2 node references echo-config too, so it may read it; the
    // GPU node's pod does as well. A Secret nobody references is out of reach for every node.
    assert!(err.is_ok(), "{err:?}");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    secrets
        .create(
            &PostParams::default(),
            &object(json!({ "metadata": { "name": "unreferenced" }, "stringData": { "k": "v" } })),
        )
        .await
        .unwrap();
    let avx512_client = agent.node(AVX512).unwrap().client.clone();
    let err = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(avx512_client, NS)
        .get("unreferenced")
        .await
        .expect_err("a node cannot read a Secret no pod of its references");
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 403),
        "{err}"
    );

    // --- Deleting a pod: preStop, SIGTERM, the in-flight request finishes, then the pod goes
    // and the ReplicaSet replaces it.
    let victim = echo_pods[0].clone();
    let survivor_ip = pod_ip(&echo_pods[1]);
    let victim_ip = pod_ip(&victim);
    let slow = {
        let http = http.clone();
        let url = format!("http://{victim_ip}:8080/slow?ms=2500");
        tokio::spawn(async move {
            let resp = http.get(url).send().await;
            (resp.map(|r| r.status().as_u16()), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted_at = Instant::now();
    pods.delete(&victim.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let gone_at = eventually("the deleted pod to go", TIMEOUT, || async {
        pods.get_opt(&victim.name_any())
            .await
            .unwrap()
            .is_none()
            .then(Instant::now)
    })
    .await;
    let (status, answered_at) = slow.await.unwrap();
    assert_eq!(status.expect("the in-flight request is answered"), 200);
    assert!(
        answered_at <= gone_at,
        "the pod was gone before its in-flight request finished"
    );
    assert!(
        gone_at - deleted_at >= Duration::from_secs(2),
        "gone after {:?}: preStop (1 s) and the 2.5 s request should have held it",
        gone_at - deleted_at
    );
    let log = agent
        .container_log(NS, &victim.name_any(), "echo", false)
        .expect("the deleted pod's log");
    assert!(
        log.contains("received SIGTERM, draining 1 in-flight request(s)"),
        "{log}"
    );
    assert!(log.contains("drained, exiting"), "{log}");
    let replacement = eventually("a Ready replacement pod", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=echo"))
            .await
            .unwrap();
        list.items.into_iter().find(|p| {
            p.name_any() != echo_pods[0].name_any()
                && p.name_any() != echo_pods[1].name_any()
                && is_ready(p)
        })
    })
    .await;
    let replacement_ip = pod_ip(&replacement);
    assert_ne!(replacement_ip, victim_ip);
    assert_eq!(node_name(&replacement), AVX512);
    let expected: BTreeSet<Ipv4Addr> = [survivor_ip, replacement_ip].into();
    eventually(
        "the EndpointSlice to list the survivor and the replacement",
        TIMEOUT,
        || async { (ready_endpoints().await == expected).then_some(()) },
    )
    .await;
    eprintln!(
        "replacement Ready at {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // --- A process that ignores SIGTERM is killed after the grace period (2 s).
    let stubborn = wait_ready(&pods, "stubborn").await;
    assert_eq!(node_name(&stubborn), AVX2);
    let final_status = {
        let config = watcher::Config::default().fields("metadata.name=stubborn");
        let mut events = watcher(pods.clone(), config).boxed();
        // The watch is established once its initial list is done.
        loop {
            if let Some(Ok(watcher::Event::InitDone)) = events.next().await {
                break;
            }
        }
        let deleted_at = Instant::now();
        pods.delete("stubborn", &DeleteParams::default())
            .await
            .unwrap();
        let mut last = None;
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), events.next()).await {
                Ok(Some(Ok(watcher::Event::Apply(p)))) => last = Some(p),
                Ok(Some(Ok(watcher::Event::Delete(p)))) => {
                    last = Some(p);
                    break;
                }
                _ => {}
            }
        }
        let took = deleted_at.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(15),
            "the stubborn pod went after {took:?}, not after its 2 s grace period"
        );
        last.expect("the stubborn pod's last state")
    };
    let status = final_status.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let terminated = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .expect("terminated");
    assert_eq!(terminated.exit_code, 137, "{terminated:?}");
    let log = agent.container_log(NS, "stubborn", "echo", false).unwrap();
    assert!(log.contains("received SIGTERM, ignoring it"), "{log}");

    // --- The GPU pod is on the GPU node; a failing liveness probe restarts it.
    let gpu_pod = wait_ready(&pods, "gpu").await;
    assert_eq!(node_name(&gpu_pod), GPU);
    get_text(&http, &format!("http://{}:8080/sabotage", pod_ip(&gpu_pod))).await;
    let restarted = eventually("the GPU pod restarted and Ready again", TIMEOUT, || async {
        let p = pods.get("gpu").await.unwrap();
        let cs = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        (cs.restart_count == 1 && is_ready(&p)).then_some(cs)
    })
    .await;
    let last = restarted
        .last_state
        .unwrap()
        .terminated
        .expect("last state terminated");
    assert_eq!(
        last.reason.as_deref(),
        Some("Completed"),
        "the server drains and exits 0 on SIGTERM: {last:?}"
    );
    let previous = agent.container_log(NS, "gpu", "echo", true).unwrap();
    assert!(
        previous.contains("sabotaged") && previous.contains("received SIGTERM"),
        "{previous}"
    );

    // --- An image the agent cannot map: ErrImagePull, with the image named.
    let waiting = eventually("ErrImagePull on the unmapped pod", TIMEOUT, || async {
        let p = pods.get("unmapped").await.unwrap();
        let cs = p.status?.container_statuses?.first()?.clone();
        cs.state?.waiting.filter(|w| {
            matches!(
                w.reason.as_deref(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        })
    })
    .await;
    let message = waiting.message.unwrap_or_default();
    assert!(message.contains("example/not-built-here:1.0"), "{message}");

    // --- The lease has been renewed meanwhile (every 10 s).
    eventually("a Lease renewal", Duration::from_secs(15), || async {
        let lease = leases.get(AVX512).await.unwrap();
        (lease.spec?.renew_time? != lease_spec.renew_time.clone()?).then_some(())
    })
    .await;

    // --- Dropping the agent leaves no process behind.
    let pids = agent.pids();
    assert!(pids.len() >= 3, "{pids:?}");
    drop(agent);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still runs"
        );
    }
    let summary: BTreeMap<&str, f64> = [("total_s", started.elapsed().as_secs_f64())].into();
    eprintln!("node agent test done: {summary:?}");
}
