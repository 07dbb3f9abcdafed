//! The CEL rules in the generated CRDs, evaluated client-side with kube-cel (the Kubernetes CEL
//! libraries, `quantity()`/`isQuantity()` included): valid objects pass, each invalid object is
//! refused with the message a person would see from `kubectl apply`, and every rule in the
//! schemas is exercised by at least one refusal.

mod cases;
mod support;

use std::collections::BTreeSet;

use cases::{deployment, gpu_pool, invalid_cases, minimal_deployment, pool, valid_cases};
use serde_json::Value;
use support::{failures, rules, schema, Failure};

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

#[test]
fn valid_objects_pass_every_rule() {
    for object in valid_cases() {
        accepted(&object);
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
