//! JSON Schema, the subset we can enforce token by token, compiled into a graph of [`Node`]s
//! that the [`matcher`](super::matcher) walks.
//!
//! Supported: `type` (one name or a list), `properties`, `required`, `additionalProperties`
//! (`false`, `true` or a schema), `items`, `minItems`, `maxItems`, `enum`, `const`, `anyOf`,
//! nested to any depth, plus the annotations `title`, `description`, `default`, `examples`,
//! `$schema`, `$id` and `$comment` (ignored). Any other keyword is refused with an error
//! naming it, rather than silently not enforced.
//!
//! Choices where the schema leaves room: an object with `properties` and no
//! `additionalProperties` gets no other keys (what OpenAI's strict mode demands anyway); an
//! object without `properties` takes any keys. Generated JSON is compact: whitespace between
//! tokens is bounded (see the matcher), numbers have bounded digit counts.

use std::collections::HashMap;

use serde_json::Value;

use crate::{Error, Result};

/// Index of a node in [`Grammar::nodes`].
pub type NodeId = u32;

/// Most properties one object schema may declare (a key set is a 64-bit mask).
pub const MAX_PROPERTIES: usize = 64;
/// Deepest nesting of schemas inside a schema.
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// Largest `minItems` accepted (the value must fit a completion).
pub const MAX_MIN_ITEMS: u64 = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A JSON number; `integer`: no fraction or exponent.
    Number {
        integer: bool,
    },
    /// Any JSON string.
    String,
    /// Exactly one of these serializations (`enum`, `const`, `true`/`false`/`null`), sorted
    /// and deduplicated so that the options sharing a prefix are contiguous.
    Literal(Vec<Vec<u8>>),
    Object(ObjectNode),
    Array {
        items: NodeId,
        min: u32,
        max: Option<u32>,
    },
    /// Any of these (a value that starts ambiguously is followed along every alternative).
    AnyOf(Vec<NodeId>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectNode {
    /// Declared properties, sorted by their serialized key.
    pub props: Vec<Property>,
    /// Bit `i` set: `props[i]` is required.
    pub required: u64,
    /// The schema of keys not declared; `None`: no other keys.
    pub additional: Option<NodeId>,
}

impl ObjectNode {
    /// Bit mask of every declared property.
    pub fn all(&self) -> u64 {
        mask_of(self.props.len())
    }
}

/// The low `n` bits set.
pub fn mask_of(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// The key as it appears between the quotes in JSON (escaped the way serde_json writes it).
    pub key: Vec<u8>,
    pub value: NodeId,
}

/// A compiled schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Grammar {
    nodes: Vec<Node>,
    /// The fewest bytes a value of each node serializes to.
    min_bytes: Vec<usize>,
    root: NodeId,
}

impl Grammar {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    pub fn any_object() -> Grammar {
        let mut b = Builder::default();
        let any = b.any();
        let root = b.push(Node::Object(ObjectNode {
            props: Vec::new(),
            required: 0,
            additional: Some(any),
        }));
        b.finish(root)
    }

    /// Compiles a JSON schema. Errors name the offending keyword and where it is (a JSON
    /// pointer into the schema).
    pub fn from_schema(schema: &Value) -> Result<Grammar> {
        let mut b = Builder::default();
        let root = b.compile(schema, "", 0)?;
        Ok(b.finish(root))
    }

    pub fn root(&self) -> NodeId {
        self.root
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn min_bytes(&self, id: NodeId) -> usize {
        self.min_bytes[id as usize]
    }

    /// The object node `id` (the matcher only asks for objects where it pushed one).
    pub fn object(&self, id: NodeId) -> &ObjectNode {
        match self.node(id) {
            Node::Object(o) => o,
            other => unreachable!("node {id} is not an object: {other:?}"),
        }
    }

    /// Bytes of `"key":value` at its shortest, for property `p` of `obj`.
    pub fn member_bytes(&self, obj: &ObjectNode, p: usize) -> usize {
        obj.props[p].key.len() + 3 + self.min_bytes(obj.props[p].value)
    }
}

fn schema_error(pointer: &str, what: impl Into<String>) -> Error {
    Error::Schema {
        pointer: if pointer.is_empty() {
            "/".to_owned()
        } else {
            pointer.to_owned()
        },
        what: what.into(),
    }
}

/// Keywords that carry no constraint.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
];

const SUPPORTED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
];

#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    any: Option<NodeId>,
}

impl Builder {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        (self.nodes.len() - 1) as NodeId
    }

    fn literal(&mut self, values: impl IntoIterator<Item = Vec<u8>>) -> NodeId {
        let mut v: Vec<Vec<u8>> = values.into_iter().collect();
        v.sort();
        v.dedup();
        self.push(Node::Literal(v))
    }

    /// Any JSON value (one shared node; objects and arrays of it refer back to it).
    fn any(&mut self) -> NodeId {
        if let Some(id) = self.any {
            return id;
        }
        let id = self.push(Node::AnyOf(Vec::new()));
        self.any = Some(id);
        let lits = self.literal([b"null".to_vec(), b"true".to_vec(), b"false".to_vec()]);
        let num = self.push(Node::Number { integer: false });
        let string = self.push(Node::String);
        let obj = self.push(Node::Object(ObjectNode {
            props: Vec::new(),
            required: 0,
            additional: Some(id),
        }));
        let arr = self.push(Node::Array {
            items: id,
            min: 0,
            max: None,
        });
        self.nodes[id as usize] = Node::AnyOf(vec![lits, num, string, obj, arr]);
        id
    }

    fn compile(&mut self, schema: &Value, ptr: &str, depth: usize) -> Result<NodeId> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(schema_error(
                ptr,
                format!("the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"),
            ));
        }
        let map = match schema {
            Value::Bool(true) => return Ok(self.any()),
            Value::Bool(false) => {
                return Err(schema_error(
                    ptr,
                    "the schema `false` matches nothing, so no output could satisfy it",
                ))
            }
            Value::Object(m) => m,
            other => {
                return Err(schema_error(
                    ptr,
                    format!("a schema must be an object or a boolean, not {other}"),
                ))
            }
        };
        if let Some(k) = map
            .keys()
            .find(|k| !SUPPORTED.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        {
            return Err(schema_error(
                ptr,
                format!(
                    "the keyword `{k}` is not supported for constrained decoding; supported: \
                     {} (and the annotations {})",
                    SUPPORTED.join(", "),
                    ANNOTATIONS.join(", ")
                ),
            ));
        }
        let types = match map.get("type") {
            None => None,
            Some(Value::String(t)) => Some(vec![t.as_str()]),
            Some(Value::Array(list)) => {
                let mut v = Vec::new();
                for t in list {
                    match t.as_str() {
                        Some(s) => v.push(s),
                        None => return Err(schema_error(ptr, "`type` lists a non-string")),
                    }
                }
                if v.is_empty() {
                    return Err(schema_error(ptr, "`type` is an empty list"));
                }
                Some(v)
            }
            Some(other) => {
                return Err(schema_error(
                    ptr,
                    format!("`type` must be a string or a list of strings, not {other}"),
                ))
            }
        };
        if let Some(ts) = &types {
            for t in ts {
                if !matches!(
                    *t,
                    "object" | "array" | "string" | "number" | "integer" | "boolean" | "null"
                ) {
                    return Err(schema_error(
                        ptr,
                        format!(
                            "unknown type {t:?}; types are object, array, string, number, \
                             integer, boolean, null"
                        ),
                    ));
                }
            }
        }

        if map.contains_key("enum") || map.contains_key("const") {
            return self.compile_literal(map, types.as_deref(), ptr);
        }
        if let Some(alts) = map.get("anyOf") {
            if types.is_some() {
                return Err(schema_error(
                    ptr,
                    "`anyOf` beside `type` is not supported; put the type inside each \
                     alternative",
                ));
            }
            let Value::Array(alts) = alts else {
                return Err(schema_error(ptr, "`anyOf` must be a list of schemas"));
            };
            if alts.is_empty() {
                return Err(schema_error(ptr, "`anyOf` is empty, so nothing matches"));
            }
            let mut ids = Vec::with_capacity(alts.len());
            for (i, alt) in alts.iter().enumerate() {
                ids.push(self.compile(alt, &format!("{ptr}/anyOf/{i}"), depth + 1)?);
            }
            return Ok(self.push(Node::AnyOf(ids)));
        }

        let types = match types {
            Some(t) => t,
            None if ["properties", "required", "additionalProperties"]
                .iter()
                .any(|k| map.contains_key(*k)) =>
            {
                vec!["object"]
            }
            None if ["items", "minItems", "maxItems"]
                .iter()
                .any(|k| map.contains_key(*k)) =>
            {
                vec!["array"]
            }
            None => return Ok(self.any()),
        };
        let mut ids = Vec::with_capacity(types.len());
        for t in &types {
            let id = match *t {
                "object" => self.compile_object(map, ptr, depth)?,
                "array" => self.compile_array(map, ptr, depth)?,
                "string" => self.push(Node::String),
                "number" => self.push(Node::Number { integer: false }),
                "integer" => self.push(Node::Number { integer: true }),
                "boolean" => self.literal([b"true".to_vec(), b"false".to_vec()]),
                _ => self.literal([b"null".to_vec()]),
            };
            ids.push(id);
        }
        Ok(if ids.len() == 1 {
            ids[0]
        } else {
            self.push(Node::AnyOf(ids))
        })
    }

    fn compile_literal(
        &mut self,
        map: &serde_json::Map<String, Value>,
        types: Option<&[&str]>,
        ptr: &str,
    ) -> Result<NodeId> {
        let values: Vec<&Value> = match (map.get("const"), map.get("enum")) {
            (Some(_), Some(_)) => {
                return Err(schema_error(ptr, "use `enum` or `const`, not both"));
            }
            (Some(c), None) => vec![c],
            (None, Some(Value::Array(list))) => list.iter().collect(),
            (None, Some(_)) => return Err(schema_error(ptr, "`enum` must be a list of values")),
            (None, None) => unreachable!("compile_literal without enum or const"),
        };
        let fits = |v: &Value| {
            types.is_none_or(|ts| {
                ts.iter().any(|t| match (*t, v) {
                    ("null", Value::Null) | ("boolean", Value::Bool(_)) => true,
                    ("string", Value::String(_)) | ("object", Value::Object(_)) => true,
                    ("array", Value::Array(_)) | ("number", Value::Number(_)) => true,
                    ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
                    _ => false,
                })
            })
        };
        let kept: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| fits(v))
            .map(|v| serde_json::to_vec(v).expect("a JSON value serializes"))
            .collect();
        if kept.is_empty() {
            return Err(schema_error(
                ptr,
                "no value of `enum`/`const` has the schema's `type`, so nothing matches",
            ));
        }
        Ok(self.literal(kept))
    }

    fn compile_object(
        &mut self,
        map: &serde_json::Map<String, Value>,
        ptr: &str,
        depth: usize,
    ) -> Result<NodeId> {
        let declared = match map.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return Err(schema_error(ptr, "`properties` must map names to schemas")),
        };
        let mut props = Vec::new();
        if let Some(declared) = declared {
            if declared.len() > MAX_PROPERTIES {
                return Err(schema_error(
                    &format!("{ptr}/properties"),
                    format!(
                        "{} properties; at most {MAX_PROPERTIES} per object are supported",
                        declared.len()
                    ),
                ));
            }
            for (name, sub) in declared {
                let value = self.compile(sub, &format!("{ptr}/properties/{name}"), depth + 1)?;
                let quoted = serde_json::to_vec(name).expect("a string serializes");
                props.push((
                    name.clone(),
                    Property {
                        key: quoted[1..quoted.len() - 1].to_vec(),
                        value,
                    },
                ));
            }
        }
        props.sort_by(|a, b| a.1.key.cmp(&b.1.key));
        let index: HashMap<&str, usize> = props
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect();
        let mut required = 0u64;
        match map.get("required") {
            None => {}
            Some(Value::Array(names)) => {
                for n in names {
                    let Some(n) = n.as_str() else {
                        return Err(schema_error(
                            &format!("{ptr}/required"),
                            "`required` must list property names (strings)",
                        ));
                    };
                    let Some(&i) = index.get(n) else {
                        return Err(schema_error(
                            &format!("{ptr}/required"),
                            format!(
                                "the required property {n:?} is not in `properties`; declare \
                                 its schema there"
                            ),
                        ));
                    };
                    required |= 1 << i;
                }
            }
            Some(_) => {
                return Err(schema_error(
                    &format!("{ptr}/required"),
                    "`required` must be a list of property names",
                ))
            }
        }
        let additional = match map.get("additionalProperties") {
            Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(self.any()),
            None if declared.is_some() => None,
            None => Some(self.any()),
            Some(s) => Some(self.compile(s, &format!("{ptr}/additionalProperties"), depth + 1)?),
        };
        let props = props.into_iter().map(|(_, p)| p).collect();
        Ok(self.push(Node::Object(ObjectNode {
            props,
            required,
            additional,
        })))
    }

    fn compile_array(
        &mut self,
        map: &serde_json::Map<String, Value>,
        ptr: &str,
        depth: usize,
    ) -> Result<NodeId> {
        let items = match map.get("items") {
            None => self.any(),
            Some(s) => self.compile(s, &format!("{ptr}/items"), depth + 1)?,
        };
        let count = |key: &str| -> Result<Option<u64>> {
            match map.get(key) {
                None => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                    schema_error(
                        &format!("{ptr}/{key}"),
                        format!("`{key}` must be a non-negative integer, not {v}"),
                    )
                }),
            }
        };
        let min = count("minItems")?.unwrap_or(0);
        let max = count("maxItems")?;
        if min > MAX_MIN_ITEMS {
            return Err(schema_error(
                &format!("{ptr}/minItems"),
                format!("minItems is {min}; at most {MAX_MIN_ITEMS} is supported"),
            ));
        }
        if let Some(max) = max {
            if max < min {
                return Err(schema_error(
                    &format!("{ptr}/maxItems"),
                    format!("maxItems ({max}) is below minItems ({min}), so nothing matches"),
                ));
            }
        }
        Ok(self.push(Node::Array {
            items,
            min: min as u32,
            max: max.map(|m| m.min(u32::MAX as u64) as u32),
        }))
    }

    fn finish(self, root: NodeId) -> Grammar {
        let mut min = vec![None; self.nodes.len()];
        for id in 0..self.nodes.len() {
            min_of(&self.nodes, id as NodeId, &mut min, 0);
        }
        Grammar {
            min_bytes: min
                .into_iter()
                .map(|m| m.unwrap_or(usize::MAX / 4))
                .collect(),
            nodes: self.nodes,
            root,
        }
    }
}

/// The fewest bytes a value of `id` serializes to (memoized). The graph's only cycles go
/// through optional parts (additional properties, arrays that may be empty), which the minimum
/// never follows; `depth` guards against anything else.
fn min_of(nodes: &[Node], id: NodeId, memo: &mut [Option<usize>], depth: usize) -> usize {
    if let Some(m) = memo[id as usize] {
        return m;
    }
    if depth > 4 * MAX_SCHEMA_DEPTH {
        return usize::MAX / 4;
    }
    let m = match &nodes[id as usize] {
        Node::Number { .. } => 1,
        Node::String => 2,
        Node::Literal(opts) => opts.iter().map(Vec::len).min().unwrap_or(usize::MAX / 4),
        Node::Object(o) => {
            let mut total = 2;
            let mut n = 0usize;
            for (i, p) in o.props.iter().enumerate() {
                if o.required & (1 << i) != 0 {
                    total += p.key.len() + 3 + min_of(nodes, p.value, memo, depth + 1);
                    n += 1;
                }
            }
            total + n.saturating_sub(1)
        }
        Node::Array { items, min, .. } => {
            let min = *min as usize;
            if min == 0 {
                2
            } else {
                2 + min * min_of(nodes, *items, memo, depth + 1) + (min - 1)
            }
        }
        Node::AnyOf(alts) => alts
            .iter()
            .map(|&a| min_of(nodes, a, memo, depth + 1))
            .min()
            .unwrap_or(usize::MAX / 4),
    };
    memo[id as usize] = Some(m);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(schema: Value) -> String {
        Grammar::from_schema(&schema).unwrap_err().to_string()
    }

    #[test]
    fn unsupported_keywords_are_named() {
        let e = err(json!({"type": "string", "pattern": "^a+$"}));
        assert!(e.contains("`pattern`"), "{e}");
        let e = err(json!({"type": "object", "properties": {"a": {"$ref": "#/x"}}}));
        assert!(e.contains("`$ref`") && e.contains("/properties/a"), "{e}");
        let e = err(json!({"type": "object", "properties": {"a": {}}, "required": ["b"]}));
        assert!(e.contains("\"b\""), "{e}");
        let e = err(json!({"type": "array", "minItems": 3, "maxItems": 2}));
        assert!(e.contains("maxItems"), "{e}");
        assert!(err(json!({"type": "strin"})).contains("unknown type"));
        assert!(err(json!(false)).contains("matches nothing"));
    }

    #[test]
    fn minimum_sizes() {
        let g = Grammar::from_schema(&json!({"type": "object",
            "properties": {"a": {"type": "integer"}, "bb": {"type": "string"},
                           "c": {"type": "array", "items": {"enum": [10, 2]}, "minItems": 2}},
            "required": ["a", "bb", "c"]}))
        .unwrap();
        // {"a":0,"bb":"","c":[2,2]}
        assert_eq!(g.min_bytes(g.root()), r#"{"a":0,"bb":"","c":[2,2]}"#.len());
        let any = Grammar::any_object();
        assert_eq!(any.min_bytes(any.root()), 2);
    }

    #[test]
    fn literals_are_sorted_and_typed() {
        let g = Grammar::from_schema(&json!({"type": "integer", "enum": [3, "x", 1, 3]})).unwrap();
        assert_eq!(
            g.node(g.root()),
            &Node::Literal(vec![b"1".to_vec(), b"3".to_vec()])
        );
    }
}
