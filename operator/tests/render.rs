//! The render functions on the repository's example pools and deployments, and on pools and
//! deployments built here: placement for every hardware class, every shard count, pod details,
//! owner references, and the errors a person gets for what cannot be rendered.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ryzanstein_operator::crd::{InferencePool, ModelDeployment};
use ryzanstein_operator::render::placement::{admits, placement};
use ryzanstein_operator::render::{
    render, resolve_tenant, Children, RenderOptions, Scale, TenantRef, Workload,
};
use ryzanstein_operator::Error;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Fixtures

fn example<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A ModelDeployment as the API server returns it (namespace, uid), from a `spec` in JSON.
fn md(name: &str, spec: Value) -> ModelDeployment {
    serde_json::from_value(json!({
        "apiVersion": "ryzanstein.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

fn simple_md(extra: Value) -> ModelDeployment {
    let mut spec = json!({
        "model": {"source": "bundled://smollm2-135m-instruct"},
        "poolRef": "cpu-avx512",
        "resources": {"cpu": "2", "memory": "2Gi"},
    });
    merge(&mut spec, extra);
    md("smollm2", spec)
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn pool(name: &str, spec: Value) -> InferencePool {
    serde_json::from_value(json!({
        "apiVersion": "ryzanstein.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn avx512() -> InferencePool {
    example("inferencepool-cpu-avx512.yaml")
}

fn avx2() -> InferencePool {
    example("inferencepool-cpu-avx2.yaml")
}

fn nvidia() -> InferencePool {
    example("inferencepool-gpu-nvidia.yaml")
}

fn amd(products: &[&str]) -> InferencePool {
    pool(
        "gpu-mi300",
        json!({
            "hardware": {
                "class": "GPU",
                "gpu": {"vendor": "AMD", "products": products, "minMemoryMiB": 100000},
                "cpu": {"requiredFeatures": ["AVX2"]},
                "tolerations": [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
            "tenants": [{"name": "team-a", "namespaces": ["team-a"]}],
        }),
    )
}

fn tenant_of(pool: &InferencePool) -> TenantRef {
    resolve_tenant(pool, "team-a").unwrap()
}

fn render_ok(md: &ModelDeployment, pool: &InferencePool, replicas: i32) -> Children {
    render(
        md,
        pool,
        &tenant_of(pool),
        replicas,
        &RenderOptions::default(),
    )
    .unwrap_or_else(|e| panic!("render failed: {e}"))
}

fn render_err(md: &ModelDeployment, pool: &InferencePool) -> String {
    match render(md, pool, &tenant_of(pool), 1, &RenderOptions::default()) {
        Ok(_) => panic!("render should have failed"),
        Err(e) => {
            assert!(matches!(e, Error::Unrenderable { .. }), "{e:?}");
            e.to_string()
        }
    }
}

fn templates(c: &Children) -> Vec<&PodTemplateSpec> {
    match &c.workload {
        Workload::Deployment(d) => vec![&d.spec.as_ref().unwrap().template],
        Workload::Sharded { stateful_sets, .. } => stateful_sets
            .iter()
            .map(|s| &s.spec.as_ref().unwrap().template)
            .collect(),
    }
}

fn container(t: &PodTemplateSpec) -> &Container {
    &t.spec.as_ref().unwrap().containers[0]
}

fn args(c: &Children) -> Vec<String> {
    container(templates(c)[0]).args.clone().unwrap()
}

/// The value after `flag` in the container's arguments.
fn arg_value(c: &Children, flag: &str) -> Option<String> {
    let a = args(c);
    a.iter().position(|x| x == flag).map(|i| a[i + 1].clone())
}

fn all_meta(c: &Children) -> Vec<&ObjectMeta> {
    let mut out = vec![
        &c.service.metadata,
        &c.pod_disruption_budget.metadata,
        &c.config_map.metadata,
        &c.limits_config_map.metadata,
    ];
    match &c.workload {
        Workload::Deployment(d) => out.push(&d.metadata),
        Workload::Sharded {
            stateful_sets,
            headless_service,
        } => {
            out.extend(stateful_sets.iter().map(|s| &s.metadata));
            out.push(&headless_service.metadata);
        }
    }
    out
}

fn required(t: &PodTemplateSpec) -> Vec<NodeSelectorRequirement> {
    t.spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|s| {
            assert_eq!(
                s.node_selector_terms.len(),
                1,
                "one term: requirements ANDed"
            );
            s.node_selector_terms[0].match_expressions.clone().unwrap()
        })
        .unwrap_or_default()
}

fn preferred(t: &PodTemplateSpec) -> Vec<(i32, NodeSelectorRequirement)> {
    t.spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|terms| {
            terms
                .iter()
                .map(|t| {
                    (
                        t.weight,
                        t.preference.match_expressions.clone().unwrap()[0].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

fn limits(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    container(t)
        .resources
        .as_ref()
        .unwrap()
        .limits
        .clone()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn requests(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    container(t)
        .resources
        .as_ref()
        .unwrap()
        .requests
        .clone()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn node(labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some("n".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(k8s_openapi::api::core::v1::NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            ..Default::default()
        }),
        status: None,
    }
}

fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: value.map(Into::into),
        effect: effect.into(),
        time_added: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Placement

#[test]
fn avx512_pool_requires_features_and_selector_prefers_vnni_and_vendor_copies_tolerations() {
    let c = render_ok(&simple_md(json!({})), &avx512(), 1);
    let t = templates(&c)[0];
    assert_eq!(
        required(t),
        vec![
            req(
                "feature.node.kubernetes.io/cpu-cpuid.AVX512F",
                "In",
                &["true"]
            ),
            req(
                "feature.node.kubernetes.io/cpu-cpuid.AVX512BW",
                "In",
                &["true"]
            ),
            // The pool's nodeSelector, ANDed in the same term.
            req("node.kubernetes.io/instance-type", "In", &["m7a.8xlarge"]),
        ]
    );
    assert_eq!(
        preferred(t),
        vec![
            (
                20,
                req(
                    "feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI",
                    "In",
                    &["true"]
                )
            ),
            (
                10,
                req(
                    "feature.node.kubernetes.io/cpu-model.vendor_id",
                    "In",
                    &["AMD"]
                )
            ),
        ]
    );
    let spec = t.spec.as_ref().unwrap();
    assert_eq!(
        spec.tolerations.as_ref().unwrap(),
        &vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("inference".into()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        }]
    );
    assert!(
        spec.node_selector.is_none(),
        "the nodeSelector lives in the affinity term"
    );
    assert!(!limits(t).keys().any(|k| k.contains("gpu")));
    assert_eq!(c.hardware, "cpu-avx512 (CPU AVX512F+AVX512BW, AMD)");
}

#[test]
fn avx2_pool_requires_avx2_only_and_prefers_nothing() {
    let c = render_ok(&simple_md(json!({"poolRef": "cpu-avx2"})), &avx2(), 1);
    let t = templates(&c)[0];
    assert_eq!(
        required(t),
        vec![req(
            "feature.node.kubernetes.io/cpu-cpuid.AVX2",
            "In",
            &["true"]
        )]
    );
    assert!(preferred(t).is_empty());
    assert!(t.spec.as_ref().unwrap().tolerations.is_none());
}

#[test]
fn nvidia_pool_requires_product_and_memory_and_limits_gpus() {
    let c = render_ok(&simple_md(json!({"poolRef": "gpu-h100"})), &nvidia(), 1);
    let t = templates(&c)[0];
    assert_eq!(
        required(t),
        vec![
            req("nvidia.com/gpu.product", "In", &["NVIDIA-H100-80GB-HBM3"]),
            // At least 40000 MiB: strictly greater than 39999.
            req("nvidia.com/gpu.memory", "Gt", &["39999"]),
        ]
    );
    // A GPU pool's pods get one GPU unless the deployment says otherwise.
    assert_eq!(limits(t)["nvidia.com/gpu"], "1");
    assert_eq!(requests(t)["nvidia.com/gpu"], "1");
    let tol = t.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
    assert_eq!(tol[0].key.as_deref(), Some("nvidia.com/gpu"));
    assert_eq!(c.hardware, "gpu-h100 (GPU NVIDIA NVIDIA-H100-80GB-HBM3)");
}

#[test]
fn amd_pool_requires_product_name_and_limits_amd_gpus() {
    let md = simple_md(json!({"poolRef": "gpu-mi300", "resources": {"gpus": 2}}));
    let c = render_ok(&md, &amd(&["AMD-Instinct-MI300X"]), 1);
    let t = templates(&c)[0];
    assert_eq!(
        required(t),
        vec![
            req("feature.node.kubernetes.io/cpu-cpuid.AVX2", "In", &["true"]),
            // AMD's labeller has no MiB memory label: minMemoryMiB does not restrict AMD nodes.
            req("amd.com/gpu.product-name", "In", &["AMD-Instinct-MI300X"]),
        ]
    );
    assert_eq!(limits(t)["amd.com/gpu"], "2");
    assert!(!limits(t).contains_key("nvidia.com/gpu"));
    // No product listed: any product of the vendor.
    let c = render_ok(&md, &amd(&[]), 1);
    assert_eq!(
        required(templates(&c)[0])[1],
        req("amd.com/gpu.product-name", "Exists", &[])
    );
}

#[test]
fn explicit_zero_gpus_in_a_gpu_pool_requests_none() {
    let md = simple_md(json!({"poolRef": "gpu-h100", "resources": {"gpus": 0}}));
    let c = render_ok(&md, &nvidia(), 1);
    assert!(!limits(templates(&c)[0]).contains_key("nvidia.com/gpu"));
}

#[test]
fn a_pool_without_hardware_constraints_has_no_affinity() {
    let p = pool(
        "anything",
        json!({"hardware": {"class": "CPU"}, "admitUnlistedNamespaces": true}),
    );
    let c = render_ok(&simple_md(json!({"poolRef": "anything"})), &p, 1);
    assert!(templates(&c)[0].spec.as_ref().unwrap().affinity.is_none());
}

#[test]
fn admits_evaluates_the_required_labels_and_the_taints() {
    let hw = avx512().spec.hardware;
    let good = [
        ("feature.node.kubernetes.io/cpu-cpuid.AVX512F", "true"),
        ("feature.node.kubernetes.io/cpu-cpuid.AVX512BW", "true"),
        ("node.kubernetes.io/instance-type", "m7a.8xlarge"),
    ];
    assert!(admits(&hw, &node(&good, vec![])));
    // Preferences do not restrict.
    assert!(admits(
        &hw,
        &node(
            &good,
            vec![taint("dedicated", Some("inference"), "NoSchedule")]
        )
    ));
    // Missing one required feature, or the wrong instance type.
    assert!(!admits(&hw, &node(&good[..2], vec![])));
    let mut other = good;
    other[2].1 = "m7i.8xlarge";
    assert!(!admits(&hw, &node(&other, vec![])));
    // A taint the pool does not tolerate; a PreferNoSchedule taint does not matter.
    assert!(!admits(
        &hw,
        &node(&good, vec![taint("dedicated", Some("batch"), "NoSchedule")])
    ));
    assert!(admits(
        &hw,
        &node(
            &good,
            vec![taint("dedicated", Some("batch"), "PreferNoSchedule")]
        )
    ));
    // Cordoned.
    let mut cordoned = node(&good, vec![]);
    cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
    assert!(!admits(&hw, &cordoned));

    let gpu = nvidia().spec.hardware;
    let h100 = |mem: &str| {
        node(
            &[
                ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),
                ("nvidia.com/gpu.memory", mem),
            ],
            vec![taint("nvidia.com/gpu", None, "NoSchedule")],
        )
    };
    assert!(admits(&gpu, &h100("81559")));
    assert!(admits(&gpu, &h100("40000")), "minMemoryMiB is inclusive");
    assert!(!admits(&gpu, &h100("39999")));
    assert!(!admits(&gpu, &h100("lots")));
}

#[test]
fn placement_of_a_pool_equals_what_render_puts_on_pods() {
    let p = avx512();
    let c = render_ok(&simple_md(json!({})), &p, 1);
    let spec = templates(&c)[0].spec.as_ref().unwrap();
    let pl = placement(&p.spec.hardware);
    assert_eq!(spec.affinity, pl.affinity);
    assert_eq!(spec.tolerations.clone().unwrap_or_default(), pl.tolerations);
}

// ---------------------------------------------------------------------------------------------
// Shards

#[test]
fn one_shard_is_a_deployment_with_a_client_service() {
    let c = render_ok(&simple_md(json!({})), &avx512(), 3);
    let Workload::Deployment(d) = &c.workload else {
        panic!("one shard renders a Deployment")
    };
    assert_eq!(d.metadata.name.as_deref(), Some("smollm2"));
    assert_eq!(d.metadata.namespace.as_deref(), Some("team-a"));
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let sel = spec.selector.match_labels.as_ref().unwrap();
    assert_eq!(sel["ryzanstein.dev/shard"], "0");
    assert_eq!(sel["app.kubernetes.io/instance"], "smollm2");
    // The selector matches the template's labels.
    let tl = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    for (k, v) in sel {
        assert_eq!(tl.get(k), Some(v), "{k}");
    }
    assert_eq!(tl["app.kubernetes.io/name"], "ryzanstein-server");
    assert_eq!(tl["app.kubernetes.io/managed-by"], "ryzanstein-operator");
    // No surge: an update never runs more pods than the quota allowed.
    let ru = spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(ru.max_surge, Some(IntOrString::Int(0)));

    let svc = c.service.spec.as_ref().unwrap();
    assert_eq!(c.service.metadata.name.as_deref(), Some("smollm2"));
    assert_eq!(svc.selector.as_ref(), Some(sel));
    let port = &svc.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
    assert_eq!(c.endpoint, "http://smollm2.team-a.svc:8080/v1");
    assert_eq!(
        c.selector,
        "app.kubernetes.io/instance=smollm2,app.kubernetes.io/name=ryzanstein-server,ryzanstein.dev/shard=0"
    );
    let kinds: Vec<_> = c.refs().iter().map(|r| (r.kind, r.name.clone())).collect();
    assert_eq!(
        kinds,
        vec![
            ("ConfigMap", "smollm2-config".to_owned()),
            ("ConfigMap", "smollm2-limits".to_owned()),
            ("Deployment", "smollm2".to_owned()),
            ("PodDisruptionBudget", "smollm2".to_owned()),
            ("Service", "smollm2".to_owned()),
        ]
    );
}

fn assert_sharded(shards: i32) {
    let md = simple_md(json!({"sharding": {"shards": shards}, "replicas": 2}));
    let c = render_ok(&md, &avx512(), 2);
    let Workload::Sharded {
        stateful_sets,
        headless_service,
    } = &c.workload
    else {
        panic!("{shards} shards render StatefulSets")
    };
    assert_eq!(stateful_sets.len(), shards as usize);
    let hs = headless_service.spec.as_ref().unwrap();
    assert_eq!(
        headless_service.metadata.name.as_deref(),
        Some("smollm2-shards")
    );
    assert_eq!(hs.cluster_ip.as_deref(), Some("None"));
    assert_eq!(hs.publish_not_ready_addresses, Some(true));
    let hsel = hs.selector.as_ref().unwrap();
    assert!(!hsel.contains_key("ryzanstein.dev/shard"), "all shards");
    for (i, s) in stateful_sets.iter().enumerate() {
        assert_eq!(
            s.metadata.name.as_deref(),
            Some(format!("smollm2-shard-{i}").as_str())
        );
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2), "one pod per replica group");
        assert_eq!(spec.service_name.as_deref(), Some("smollm2-shards"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let sel = spec.selector.match_labels.as_ref().unwrap();
        assert_eq!(sel["ryzanstein.dev/shard"], i.to_string());
        let tl = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in sel {
            assert_eq!(tl.get(k), Some(v));
        }
        for (k, v) in hsel {
            assert_eq!(
                tl.get(k),
                Some(v),
                "the headless Service selects every shard"
            );
        }
        let env = container(&spec.template).env.clone().unwrap();
        let get = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
                .unwrap_or_else(|| panic!("env {n}"))
        };
        assert_eq!(get("RYZANSTEIN_SHARD_INDEX"), i.to_string());
        assert_eq!(get("RYZANSTEIN_SHARD_COUNT"), shards.to_string());
        assert_eq!(get("RYZANSTEIN_SHARD_DOMAIN"), "smollm2-shards.team-a.svc");
    }
    // The client Service reaches shard 0 only.
    let sel = c.service.spec.as_ref().unwrap().selector.as_ref().unwrap();
    assert_eq!(sel["ryzanstein.dev/shard"], "0");
    assert_eq!(c.refs().len(), shards as usize + 5);
    let config = &c.config_map.data.as_ref().unwrap()["config.json"];
    let config: Value = serde_json::from_str(config).unwrap();
    assert_eq!(
        config["sharding"],
        json!({"shards": shards, "domain": "smollm2-shards.team-a.svc"})
    );
}

#[test]
fn two_shards_are_two_statefulsets_and_a_headless_service() {
    assert_sharded(2);
}

#[test]
fn four_shards_are_four_statefulsets_and_a_headless_service() {
    assert_sharded(4);
}

#[test]
fn the_sharded_example_renders() {
    let md: ModelDeployment = {
        let mut m: ModelDeployment = example("modeldeployment-sharded.yaml");
        m.metadata.uid = Some("u".into());
        m
    };
    let c = render_ok(&md, &avx512(), md.spec.replicas);
    assert_eq!(templates(&c).len(), 2);
    assert_eq!(arg_value(&c, "--threads").as_deref(), Some("4"));
    assert_eq!(arg_value(&c, "--ctx-size").as_deref(), Some("8192"));
    assert_eq!(
        arg_value(&c, "--served-name").as_deref(),
        Some("llama-3.1-8b-instruct")
    );
}

#[test]
fn a_name_too_long_for_its_statefulsets_is_refused() {
    let long = "m".repeat(44); // "-shard-11" makes 53 characters
    let m = md(
        &long,
        json!({"model": {"source": "bundled://x"}, "poolRef": "cpu-avx512", "sharding": {"shards": 12}}),
    );
    let msg = render_err(&m, &avx512());
    assert!(msg.contains("shorter ModelDeployment name"), "{msg}");
    // Exactly 52 characters still fits.
    let fits = "m".repeat(43);
    let m = md(
        &fits,
        json!({"model": {"source": "bundled://x"}, "poolRef": "cpu-avx512", "sharding": {"shards": 12}}),
    );
    render_ok(&m, &avx512(), 1);
    // One shard: a Deployment, whose long name is fine.
    let m = md(
        &long,
        json!({"model": {"source": "bundled://x"}, "poolRef": "cpu-avx512"}),
    );
    render_ok(&m, &avx512(), 1);
}

// ---------------------------------------------------------------------------------------------
// Every child

#[test]
fn every_child_is_owned_by_the_deployment_and_labelled() {
    for shards in [1, 2, 4] {
        let c = render_ok(
            &simple_md(json!({"sharding": {"shards": shards}})),
            &avx512(),
            1,
        );
        let metas = all_meta(&c);
        assert_eq!(metas.len(), c.refs().len());
        for m in metas {
            let name = m.name.clone().unwrap();
            let owners = m.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1, "{name}");
            let o = &owners[0];
            assert_eq!(o.api_version, "ryzanstein.dev/v1alpha1");
            assert_eq!(o.kind, "ModelDeployment");
            assert_eq!(o.name, "smollm2");
            assert_eq!(o.uid, "uid-smollm2");
            assert_eq!(o.controller, Some(true), "{name}");
            assert_eq!(o.block_owner_deletion, Some(true), "{name}");
            assert_eq!(m.namespace.as_deref(), Some("team-a"), "{name}");
            let l = m.labels.as_ref().unwrap();
            assert_eq!(l["app.kubernetes.io/name"], "ryzanstein-server");
            assert_eq!(l["app.kubernetes.io/instance"], "smollm2");
            assert_eq!(l["app.kubernetes.io/managed-by"], "ryzanstein-operator");
            let a = m.annotations.as_ref().unwrap();
            assert_eq!(a["ryzanstein.dev/pool"], "cpu-avx512");
            assert_eq!(a["ryzanstein.dev/tenant"], "team-a");
        }
    }
}

#[test]
fn a_deployment_not_read_from_the_api_server_is_refused() {
    let mut m = simple_md(json!({}));
    m.metadata.uid = None;
    assert!(render_err(&m, &avx512()).contains("metadata.uid"));
    let mut m = simple_md(json!({}));
    m.metadata.namespace = None;
    assert!(render_err(&m, &avx512()).contains("metadata.namespace"));
}

#[test]
fn pod_disruption_budget_allows_one_pod_at_a_time() {
    let c = render_ok(&simple_md(json!({"sharding": {"shards": 2}})), &avx512(), 3);
    let spec = c.pod_disruption_budget.spec.as_ref().unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert!(spec.min_available.is_none());
    assert_eq!(
        spec.unhealthy_pod_eviction_policy.as_deref(),
        Some("AlwaysAllow")
    );
    let sel = spec
        .selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert!(
        !sel.contains_key("ryzanstein.dev/shard"),
        "every shard's pods"
    );
    assert_eq!(sel["app.kubernetes.io/instance"], "smollm2");
}

// ---------------------------------------------------------------------------------------------
// The pod

#[test]
fn requests_equal_limits_for_cpu_and_memory() {
    for (cpu, memory) in [("2", "2Gi"), ("1500m", "3Gi"), ("500m", "512Mi")] {
        let c = render_ok(
            &simple_md(json!({"resources": {"cpu": cpu, "memory": memory}})),
            &avx512(),
            1,
        );
        let t = templates(&c)[0];
        let expected = BTreeMap::from([
            ("cpu".to_owned(), cpu.to_owned()),
            ("memory".to_owned(), memory.to_owned()),
        ]);
        assert_eq!(requests(t), expected);
        assert_eq!(limits(t), expected);
    }
    // Absent resources take the operator's defaults, still requests == limits.
    let m = md(
        "d",
        json!({"model": {"source": "bundled://x"}, "poolRef": "cpu-avx512"}),
    );
    let c = render_ok(&m, &avx512(), 1);
    let t = templates(&c)[0];
    assert_eq!(requests(t), limits(t));
    assert_eq!(limits(t)["cpu"], "1");
    assert_eq!(limits(t)["memory"], "2Gi");
}

#[test]
fn threads_follow_the_cpu_request_unless_set() {
    let threads =
        |extra: Value| arg_value(&render_ok(&simple_md(extra), &avx512(), 1), "--threads").unwrap();
    assert_eq!(threads(json!({"resources": {"cpu": "4"}})), "4");
    assert_eq!(threads(json!({"resources": {"cpu": "1500m"}})), "2");
    assert_eq!(threads(json!({"resources": {"cpu": "500m"}})), "1");
    assert_eq!(threads(json!({"resources": {"cpu": "1m"}})), "1");
    assert_eq!(threads(json!({"resources": {"cpu": "2001m"}})), "3");
    assert_eq!(
        threads(json!({"resources": {"cpu": "4"}, "engine": {"threads": 0}})),
        "4",
        "0 means match the CPU request"
    );
    assert_eq!(
        threads(json!({"resources": {"cpu": "4"}, "engine": {"threads": 6}})),
        "6"
    );
}

#[test]
fn the_server_command_line() {
    let c = render_ok(
        &simple_md(json!({
            "engine": {"contextLength": 4096, "maxConcurrentSequences": 8, "maxQueuedRequests": 32, "args": ["--request-timeout-secs", "120"]},
        })),
        &avx512(),
        1,
    );
    assert_eq!(
        args(&c),
        [
            "serve",
            "--model",
            "bundled://smollm2-135m-instruct",
            "--served-name",
            "smollm2",
            "--host",
            "$(POD_IP)",
            "--port",
            "8080",
            "--threads",
            "2",
            "--ctx-size",
            "4096",
            "--parallel",
            "8",
            "--queue-size",
            "32",
            "--drain-timeout-secs",
            "60",
            "--tenant-limits",
            "/etc/ryzanstein-limits/limits.json",
            "--tenant",
            "team-a",
            "--request-timeout-secs",
            "120",
        ]
    );
    // No context length: no --ctx-size (the model's own applies).
    let c = render_ok(&simple_md(json!({})), &avx512(), 1);
    assert!(arg_value(&c, "--ctx-size").is_none());
    // servedName wins over the name.
    let c = render_ok(
        &simple_md(json!({"model": {"servedName": "tiny"}})),
        &avx512(),
        1,
    );
    assert_eq!(arg_value(&c, "--served-name").as_deref(), Some("tiny"));
}

#[test]
fn engine_args_replace_the_operators_options_but_not_host_or_port() {
    let c = render_ok(
        &simple_md(json!({"engine": {"args": ["--threads=3", "--drain-timeout-secs", "120"]}})),
        &avx512(),
        1,
    );
    let a = args(&c);
    assert_eq!(
        a.iter().filter(|x| x.starts_with("--threads")).count(),
        1,
        "{a:?}"
    );
    assert_eq!(
        a.iter().filter(|x| *x == "--drain-timeout-secs").count(),
        1,
        "{a:?}"
    );
    assert!(a.ends_with(&[
        "--threads=3".into(),
        "--drain-timeout-secs".into(),
        "120".into()
    ]));
    // The grace period follows the drain timeout actually used: 5 + 120 + 10.
    let spec = templates(&c)[0].spec.as_ref().unwrap();
    assert_eq!(spec.termination_grace_period_seconds, Some(135));

    for flag in ["--port", "--host=::"] {
        let msg = render_err(
            &simple_md(json!({"engine": {"args": [flag, "9000"]}})),
            &avx512(),
        );
        assert!(msg.contains("engine.args sets --"), "{msg}");
    }
}

#[test]
fn probes_and_graceful_shutdown() {
    let c = render_ok(&simple_md(json!({})), &avx512(), 1);
    let t = templates(&c)[0];
    let k = container(t);
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let g = p.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(g.port, IntOrString::String("http".into()));
        g.path.clone().unwrap()
    };
    assert_eq!(path(&k.readiness_probe), "/readyz");
    assert_eq!(path(&k.liveness_probe), "/healthz");
    assert_eq!(path(&k.startup_probe), "/healthz");
    let s = k.startup_probe.as_ref().unwrap();
    assert!(
        s.period_seconds.unwrap() * s.failure_threshold.unwrap() >= 1800,
        "half an hour to start"
    );
    let port = &k.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("http"), 8080)
    );
    let sleep = k
        .lifecycle
        .as_ref()
        .unwrap()
        .pre_stop
        .as_ref()
        .unwrap()
        .sleep
        .as_ref()
        .unwrap();
    assert_eq!(sleep.seconds, 5);
    // preStop 5 s + drain 60 s + margin 10 s.
    assert_eq!(
        t.spec.as_ref().unwrap().termination_grace_period_seconds,
        Some(75)
    );
    assert_eq!(arg_value(&c, "--drain-timeout-secs").as_deref(), Some("60"));
}

#[test]
fn pod_security_volumes_and_environment() {
    let c = render_ok(&simple_md(json!({})), &avx512(), 1);
    let t = templates(&c)[0];
    let spec = t.spec.as_ref().unwrap();
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    let k = container(t);
    let sc = k.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(spec.automount_service_account_token, Some(false));

    let mounts: BTreeMap<_, _> = k
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert_eq!(mounts["cache"], "/var/cache/ryzanstein");
    assert_eq!(mounts["config"], "/etc/ryzanstein");
    assert_eq!(mounts["tmp"], "/tmp");
    let volumes = spec.volumes.as_ref().unwrap();
    let cache = volumes.iter().find(|v| v.name == "cache").unwrap();
    assert!(cache.empty_dir.is_some());
    let config = volumes.iter().find(|v| v.name == "config").unwrap();
    assert_eq!(config.config_map.as_ref().unwrap().name, "smollm2-config");
    let env = k.env.as_ref().unwrap();
    let get = |n: &str| {
        env.iter()
            .find(|e| e.name == n)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        get("RYZANSTEIN_CACHE").as_deref(),
        Some("/var/cache/ryzanstein")
    );
    assert_eq!(
        get("RYZANSTEIN_CONFIG").as_deref(),
        Some("/etc/ryzanstein/config.json")
    );
    assert_eq!(get("RYZANSTEIN_SHARD_INDEX").as_deref(), Some("0"));
    assert!(get("RYZANSTEIN_SHARD_DOMAIN").is_none());
}

#[test]
fn image_defaults_to_the_operators_and_pull_settings_apply() {
    let opts = RenderOptions {
        default_image: "registry.local/ryzanstein/server:1.2.3".into(),
        image_pull_policy: Some("Always".into()),
        image_pull_secrets: vec!["regcred".into()],
        ..RenderOptions::default()
    };
    let p = avx512();
    let t = tenant_of(&p);
    let c = render(&simple_md(json!({})), &p, &t, 1, &opts).unwrap();
    let tpl = templates(&c)[0];
    assert_eq!(
        container(tpl).image.as_deref(),
        Some("registry.local/ryzanstein/server:1.2.3")
    );
    assert_eq!(container(tpl).image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(
        tpl.spec
            .as_ref()
            .unwrap()
            .image_pull_secrets
            .as_ref()
            .unwrap()[0]
            .name,
        "regcred"
    );
    let c = render(&simple_md(json!({"image": "mine:dev"})), &p, &t, 1, &opts).unwrap();
    assert_eq!(
        container(templates(&c)[0]).image.as_deref(),
        Some("mine:dev")
    );
}

#[test]
fn model_sources_become_server_arguments() {
    let c = render_ok(
        &simple_md(json!({"model": {"source": "pvc://models/llama/8b.gguf"}})),
        &avx512(),
        1,
    );
    assert_eq!(
        arg_value(&c, "--model").as_deref(),
        Some("/var/lib/ryzanstein/model/llama/8b.gguf")
    );
    let spec = templates(&c)[0].spec.as_ref().unwrap();
    let v = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "model")
        .unwrap();
    let pvc = v.persistent_volume_claim.as_ref().unwrap();
    assert_eq!(
        (pvc.claim_name.as_str(), pvc.read_only),
        ("models", Some(true))
    );

    let c = render_ok(
        &simple_md(json!({"model": {"source": "hf://org/repo@main/q4.gguf"}})),
        &avx512(),
        1,
    );
    assert_eq!(
        arg_value(&c, "--model").as_deref(),
        Some("hf://org/repo@main#q4.gguf")
    );
}

#[test]
fn gpus_in_a_cpu_pool_are_refused() {
    let msg = render_err(&simple_md(json!({"resources": {"gpus": 1}})), &avx512());
    assert!(msg.contains("CPU pool"), "{msg}");
    assert!(msg.contains("team-a/smollm2"), "{msg}");
}

#[test]
fn bad_quantities_are_errors_naming_them() {
    let p = avx512();
    let e = render(
        &simple_md(json!({"resources": {"cpu": "two"}})),
        &p,
        &tenant_of(&p),
        1,
        &RenderOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("\"two\""), "{e}");
}

// ---------------------------------------------------------------------------------------------
// ConfigMap

#[test]
fn config_map_carries_engine_options_and_the_tenants_limits() {
    let md: ModelDeployment = {
        let mut m: ModelDeployment = example("modeldeployment-autoscaled.yaml");
        m.metadata.uid = Some("u".into());
        m
    };
    let c = render_ok(&md, &avx512(), 2);
    assert_eq!(
        c.config_map.metadata.name.as_deref(),
        Some("smollm2-config")
    );
    let text = &c.config_map.data.as_ref().unwrap()["config.json"];
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        v["tenant"],
        json!({"name": "team-a", "pool": "cpu-avx512", "requestsPerMinute": 600,
               "tokensPerMinute": 200000, "maxConcurrentRequests": 64})
    );
    assert_eq!(v["engine"]["contextLength"], 4096);
    assert_eq!(v["engine"]["kvCacheMemory"], "512Mi");
    assert_eq!(v["engine"]["speculative"]["mode"], "PromptLookup");
    assert_eq!(v["servedName"], "smollm2");
    assert_eq!(v["sharding"], json!({"shards": 1}));

    // A tenant without request limits: the keys are absent (unlimited).
    let p = avx512();
    let team_b = TenantRef {
        name: "team-b".into(),
        quota: p.spec.tenants[1].quota.clone(),
        listed: true,
    };
    let c2 = render(&md, &p, &team_b, 2, &RenderOptions::default()).unwrap();
    let v: Value =
        serde_json::from_str(&c2.config_map.data.as_ref().unwrap()["config.json"]).unwrap();
    assert_eq!(v["tenant"], json!({"name": "team-b", "pool": "cpu-avx512"}));

    // The pods carry the configuration's hash, so a change rolls them.
    let hash = |c: &Children| {
        templates(c)[0]
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["ryzanstein.dev/config-hash"]
            .clone()
    };
    assert_ne!(hash(&c), hash(&c2));
    assert_eq!(
        hash(&c),
        hash(&render_ok(&md, &avx512(), 2)),
        "deterministic"
    );
}

// ---------------------------------------------------------------------------------------------
// Tenants

#[test]
fn tenant_resolution() {
    let p = avx512();
    let t = resolve_tenant(&p, "team-a-staging").unwrap();
    assert_eq!((t.name.as_str(), t.listed), ("team-a", true));
    assert_eq!(t.quota.unwrap().max_replicas, Some(12));
    assert_eq!(resolve_tenant(&p, "team-b").unwrap().name, "team-b");

    let e = resolve_tenant(&p, "team-c").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("namespace team-c"), "{msg}");
    assert!(msg.contains("InferencePool cpu-avx512"), "{msg}");
    assert!(msg.contains("admitUnlistedNamespaces"), "{msg}");

    // AVX2 admits unlisted namespaces under defaultQuota, as one shared tenant.
    let p = avx2();
    let t = resolve_tenant(&p, "anyone").unwrap();
    assert_eq!((t.name.as_str(), t.listed), ("(unlisted)", false));
    assert_eq!(t.quota, p.spec.default_quota);
    assert_eq!(resolve_tenant(&p, "research").unwrap().name, "research");
}

#[test]
fn scaling_changes_no_pod_template_and_no_config() {
    // A different template would make every scale roll every pod (Deployment) or restart them
    // one by one (StatefulSets), and the ConfigMap's hash is in the template.
    for shards in [1, 3] {
        let md = simple_md(json!({"sharding": {"shards": shards}}));
        let one = render_ok(&md, &avx512(), 1);
        let many = render_ok(&md, &avx512(), 4);
        assert_eq!(templates(&one), templates(&many), "{shards} shards");
        assert_eq!(one.config_map, many.config_map, "{shards} shards");
    }
}

// ---------------------------------------------------------------------------------------------
// Tenant limits and API keys on the servers

#[test]
fn each_pod_gets_its_share_of_the_tenants_limits_without_rolling_on_scale() {
    let p = avx512();
    let m = simple_md(json!({}));
    let limits = |scale: Scale| -> (Value, String) {
        let c = render(&m, &p, &tenant_of(&p), scale, &RenderOptions::default()).unwrap();
        let cm = &c.limits_config_map;
        assert_eq!(cm.metadata.name.as_deref(), Some("smollm2-limits"));
        let file = serde_json::from_str(&cm.data.as_ref().unwrap()["limits.json"]).unwrap();
        let hash = templates(&c)[0]
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["ryzanstein.dev/config-hash"]
            .clone();
        (file, hash)
    };
    // team-a may make 600 requests, 200000 tokens a minute and 64 concurrent requests in the
    // pool: over 2 pods here and 1 elsewhere, a third each (rounded up).
    let (file, hash3) = limits(Scale {
        replicas: 2,
        tenant_pods_elsewhere: 1,
    });
    assert_eq!(
        file,
        json!({"tenants": {"team-a": {"requestsPerMinute": 200, "tokensPerMinute": 66667,
                                      "maxConcurrentRequests": 22}}})
    );
    let (file, hash1) = limits(Scale::from(1));
    assert_eq!(file["tenants"]["team-a"]["requestsPerMinute"], 600);
    assert_eq!(
        hash1, hash3,
        "a new share does not roll the pods; the servers reload it"
    );

    // The pods mount it and count every caller as the tenant.
    let c = render(&m, &p, &tenant_of(&p), 1, &RenderOptions::default()).unwrap();
    assert_eq!(
        arg_value(&c, "--tenant-limits").as_deref(),
        Some("/etc/ryzanstein-limits/limits.json")
    );
    assert_eq!(arg_value(&c, "--tenant").as_deref(), Some("team-a"));
    let spec = templates(&c)[0].spec.as_ref().unwrap();
    let volume = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "limits")
        .unwrap();
    assert_eq!(
        volume.config_map.as_ref().unwrap().name,
        "smollm2-limits".to_owned()
    );
    let mount = container(templates(&c)[0])
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "limits")
        .unwrap();
    assert_eq!(mount.mount_path, "/etc/ryzanstein-limits");
    assert!(
        arg_value(&c, "--api-key-file").is_none(),
        "no apiKeys, no key file"
    );
}

#[test]
fn an_api_key_secret_is_mounted_and_required() {
    let p = avx512();
    let m = simple_md(json!({"apiKeys": {"secretName": "smollm2-keys"}}));
    let c = render(&m, &p, &tenant_of(&p), 1, &RenderOptions::default()).unwrap();
    assert_eq!(
        arg_value(&c, "--api-key-file").as_deref(),
        Some("/etc/ryzanstein-keys/keys")
    );
    let spec = templates(&c)[0].spec.as_ref().unwrap();
    let secret = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "api-keys")
        .and_then(|v| v.secret.as_ref())
        .unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("smollm2-keys"));
    assert_eq!(secret.default_mode, Some(0o440));
    let m = simple_md(json!({"apiKeys": {"secretName": "k", "key": "tenants.txt"}}));
    let c = render(&m, &p, &tenant_of(&p), 1, &RenderOptions::default()).unwrap();
    assert_eq!(
        arg_value(&c, "--api-key-file").as_deref(),
        Some("/etc/ryzanstein-keys/tenants.txt")
    );
}
