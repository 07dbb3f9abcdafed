//! Helpers shared by the CRD tests: the generated schemas as JSON, the CEL rules in them, and
//! client-side evaluation of those rules (kube-cel, which implements the Kubernetes CEL
//! libraries, `quantity()` and `isQuantity()` included).

#![allow(dead_code)] // each test file uses its own subset

use kube_cel::{ErrorKind, Validator};
use ryzanstein_operator::crd::generate::crds;
use serde_json::Value;

/// The `openAPIV3Schema` of `kind` as JSON.
pub fn schema(kind: &str) -> Value {
    let (_, crd) = crds()
        .into_iter()
        .find(|(k, _)| *k == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("derived CRDs carry an openAPIV3Schema");
    serde_json::to_value(schema).unwrap()
}

/// One `x-kubernetes-validations` entry and where it sits.
#[derive(Clone, Debug)]
pub struct RuleAt {
    /// Path of the schema node, e.g. `spec.tenants` or `spec.model.source`; `[]` marks list
    /// items and `{}` map values.
    pub path: String,
    /// The CEL expression.
    pub rule: String,
    /// Its `message`, if any.
    pub message: Option<String>,
    /// Its `messageExpression`, if any.
    pub message_expression: Option<String>,
    /// The schema node the rule sits on.
    pub node: Value,
}

/// Every rule in `schema`, depth first.
pub fn rules(schema: &Value) -> Vec<RuleAt> {
    let mut out = Vec::new();
    walk(schema, "", &mut |path, node| {
        for r in node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(RuleAt {
                path: path.to_owned(),
                rule: r["rule"]
                    .as_str()
                    .expect("every rule has a rule")
                    .to_owned(),
                message: r.get("message").and_then(Value::as_str).map(str::to_owned),
                message_expression: r
                    .get("messageExpression")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                node: node.clone(),
            });
        }
    });
    out
}

/// Calls `visit(path, node)` on every schema node below and including `schema`.
pub fn walk(schema: &Value, path: &str, visit: &mut dyn FnMut(&str, &Value)) {
    visit(path, schema);
    let join = |child: &str| {
        if path.is_empty() {
            child.to_owned()
        } else {
            format!("{path}.{child}")
        }
    };
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(child, &join(name), visit);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{path}[]"), visit);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        walk(values, &format!("{path}{{}}"), visit);
    }
}

/// A rule that rejected an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Where, e.g. `spec.autoscaling`.
    pub path: String,
    /// The message a user would see.
    pub message: String,
    /// The rule.
    pub rule: String,
}

/// Evaluates every CEL rule of `kind`'s schema against `object` (after applying schema
/// defaults, as the API server does). Panics when a rule cannot be evaluated at all (compile
/// errors, runtime errors, unsupported functions): those would be bugs in our rules, not a
/// verdict on the object.
pub fn failures(kind: &str, object: &Value) -> Vec<Failure> {
    let schema = schema(kind);
    match Validator::new().validate(&schema, object, None) {
        Ok(()) => vec![],
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| {
                assert_eq!(
                    e.kind,
                    ErrorKind::ValidationFailure,
                    "rule {:?} at {} could not be evaluated: {}",
                    e.rule,
                    e.field_path,
                    e.message
                );
                Failure {
                    path: e.field_path,
                    message: e.message,
                    rule: e.rule,
                }
            })
            .collect(),
    }
}
