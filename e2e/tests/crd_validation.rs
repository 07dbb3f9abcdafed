//! The CRDs on a real API server: both install (their CEL rules fit the API server's cost
//! budget), every valid test object and every example manifest is accepted, and every invalid
//! test object is refused at apply time with the CEL messages — the same objects and messages
//! the operator's client-side CEL tests use (`operator/tests/cases/mod.rs`).
//!
//! Objects are created with server-side dry run, so validation runs in full (schema, CEL,
//! admission) and nothing is stored. Needs the binaries from `make k8s`; without them the test
//! skips, unless RYZANSTEIN_E2E=1, when a missing build is a failure.

#[path = "../../operator/tests/cases/mod.rs"]
mod cases;

use std::path::Path;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use ryzanstein_e2e::control_plane_or_skip;
use ryzanstein_e2e::workspace::{install_crds, repo_root};
use serde_json::{json, Value};

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn api_for(client: &kube::Client, object: &Value) -> Api<DynamicObject> {
    let kind = object["kind"].as_str().unwrap();
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("ryzanstein.dev", "v1alpha1", kind));
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Creates `object` with server-side dry run.
async fn dry_run_create(client: &kube::Client, object: &Value) -> Result<(), kube::Error> {
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    let params = PostParams {
        dry_run: true,
        field_manager: Some("ryzanstein-e2e".into()),
    };
    api_for(client, object)
        .create(&params, &dynamic)
        .await
        .map(|_| ())
}

/// The (field, message) pairs of a 422 (`<nil>`, the root, as "").
fn causes(status: &kube::core::Status) -> Vec<(String, String)> {
    status
        .details
        .as_ref()
        .map(|d| d.causes.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let field = if c.field == "<nil>" {
                String::new()
            } else {
                c.field
            };
            (field, c.message)
        })
        .collect()
}

/// Whether the API server's `message` says `want`: it prefixes rule messages with
/// `Invalid value: ` and, for scalars and objects, the value (`Invalid value: 65: ...`,
/// `Invalid value: "object": ...`).
fn says(message: &str, want: &str) -> bool {
    message == want
        || message
            .strip_prefix("Invalid value: ")
            .is_some_and(|rest| rest == want || rest.ends_with(&format!(": {want}")))
}

#[tokio::test]
async fn crds_install_and_the_api_server_refuses_invalid_objects_with_the_cel_messages() {
    let Some(cp) = control_plane_or_skip().await else {
        return;
    };
    let client = cp.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let namespaces = Api::<Namespace>::all(client.clone());
    for ns in ["team-a", "team-b"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }

    let mut accepted = 0;
    for object in cases::valid_cases() {
        if let Err(e) = dry_run_create(&client, &object).await {
            panic!("the API server refused a valid object: {e}\n{object:#}");
        }
        accepted += 1;
    }
    let examples = repo_root().join("examples");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let object = read_yaml(&path);
        if object["apiVersion"] != "ryzanstein.dev/v1alpha1" {
            continue;
        }
        if let Some(ns) = object["metadata"]["namespace"].as_str() {
            // Namespaces the examples use, created on first sight.
            let _ = namespaces
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
                )
                .await;
        }
        if let Err(e) = dry_run_create(&client, &object).await {
            panic!("the API server refused {}: {e}", path.display());
        }
        accepted += 1;
    }

    let mut refused = 0;
    let mut mismatches = Vec::new();
    for (object, expected) in cases::invalid_cases() {
        // The status subresource drops `status` on create: those rules are checked on status
        // writes, which the operator makes; the client-side tests cover them.
        if expected.iter().all(|(path, _)| path.starts_with("status")) {
            continue;
        }
        match dry_run_create(&client, &object).await {
            Ok(()) => mismatches.push(format!("accepted, expected {expected:?}:\n{object:#}")),
            Err(kube::Error::Api(status)) => {
                // A repeated key of a list-map (tenant names) is also refused by the schema
                // itself, before CEL; the client-side tests only see the CEL message.
                let got: Vec<(String, String)> = causes(&status)
                    .into_iter()
                    .filter(|(_, m)| !m.starts_with("Duplicate value: "))
                    .collect();
                let matches = got.len() == expected.len()
                    && got
                        .iter()
                        .zip(&expected)
                        .all(|((field, message), (path, want))| {
                            field == path && says(message, want)
                        });
                if status.code != 422 || !matches {
                    mismatches.push(format!(
                        "HTTP {} {}\n  got:  {got:?}\n  want: {expected:?}",
                        status.code, status.message
                    ));
                }
                refused += 1;
            }
            Err(e) => panic!("dry-run create failed without an API answer: {e}"),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of the invalid objects were not refused as expected:\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
    eprintln!("accepted {accepted} valid objects, refused {refused} invalid ones");
    assert!(refused > 30, "only {refused} invalid cases ran");
    drop(cp);
}
