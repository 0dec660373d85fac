//! The example policy and the JSON Schema in `deploy/policies/` against the
//! validator. No JSON Schema crate is in the tree, so the schema is read by a
//! small evaluator of just the keywords it uses (`$ref` within the file,
//! `type`, `const`, `properties`, `required`, `additionalProperties`,
//! `min/maxProperties`, `propertyNames.pattern`, `minimum`, `maximum`,
//! `maxLength`); it names problems by the validator's paths, so the two are
//! compared problem for problem.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::payload::join;
use super::*;

const EXAMPLE: &str = include_str!("../../../deploy/policies/example-policy.json");
const SCHEMA: &str = include_str!("../../../deploy/policies/policy.schema.json");

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("the schema file is JSON")
}

fn resolve<'s>(root: &'s Value, s: &'s Value) -> &'s Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/$defs/").expect("only local $defs refs");
            resolve(root, &root["$defs"][name])
        }
        None => s,
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "string" => v.is_string(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        // JSON Schema counts 3.0 as an integer; the validator does not, and
        // the schema's description says so. The cases below avoid it.
        "integer" => v.is_u64() || v.is_i64(),
        other => panic!("type {other} not used by the schema"),
    }
}

/// Paths the schema finds a problem at (the innermost failing member).
fn schema_problems(root: &Value, s: &Value, v: &Value, path: &str, out: &mut BTreeSet<String>) {
    let s = resolve(root, s);
    if let Some(c) = s.get("const") {
        if v.as_u64() != c.as_u64() || !v.is_u64() {
            out.insert(path.to_string());
        }
        return;
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| type_ok(t, v)) {
        out.insert(path.to_string());
        return;
    }
    let mut bad = false;
    if let Some(x) = v.as_f64() {
        bad |= s.get("minimum").and_then(Value::as_f64).is_some_and(|m| x < m);
        bad |= s.get("maximum").and_then(Value::as_f64).is_some_and(|m| x > m);
    }
    if let (Some(t), Some(m)) = (v.as_str(), s.get("maxLength").and_then(Value::as_u64)) {
        bad |= t.chars().count() as u64 > m;
    }
    if let Some(map) = v.as_object() {
        let n = map.len() as u64;
        bad |= s.get("minProperties").and_then(Value::as_u64).is_some_and(|m| n < m);
        bad |= s.get("maxProperties").and_then(Value::as_u64).is_some_and(|m| n > m);
        for key in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            let key = key.as_str().expect("required names are strings");
            if !map.contains_key(key) {
                out.insert(join(path, key));
            }
        }
        let pattern = s.pointer("/propertyNames/pattern").and_then(Value::as_str);
        let pattern = pattern.map(|p| regex::Regex::new(p).expect("the schema's pattern compiles"));
        for (key, member) in map {
            let at = join(path, key);
            if pattern.as_ref().is_some_and(|p| !p.is_match(key)) {
                out.insert(at.clone());
            }
            match (s.get("properties").and_then(|p| p.get(key)), s.get("additionalProperties")) {
                (Some(sub), _) => schema_problems(root, sub, member, &at, out),
                (None, Some(Value::Bool(false))) => {
                    out.insert(at);
                }
                (None, Some(sub)) if sub.is_object() => schema_problems(root, sub, member, &at, out),
                _ => {}
            }
        }
    }
    if bad {
        out.insert(path.to_string());
    }
}

fn validator_problems(v: &Value) -> BTreeSet<String> {
    match validate_payload(v.to_string().as_bytes(), true) {
        Ok(_) => BTreeSet::new(),
        Err(problems) => problems.into_iter().map(|p| p.path).collect(),
    }
}

fn example() -> Value {
    serde_json::from_str(EXAMPLE).expect("the example is JSON")
}

#[test]
fn the_example_policy_validates_in_both() {
    let policy = validate_payload(EXAMPLE.as_bytes(), true).expect("the example is a valid policy");
    assert_eq!(policy.providers.len(), 4);
    assert_eq!(policy.providers["yahoo"].retry.max_attempts, 2);
    let mut found = BTreeSet::new();
    schema_problems(&schema(), &schema(), &example(), "$", &mut found);
    assert!(found.is_empty(), "the schema refuses the example at {found:?}");
}

#[test]
fn schema_and_validator_agree_on_bad_payloads() {
    let root = schema();
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("/providers/gmail/thresholds/reject_warn_rate", json!(1.5), &["providers.gmail.thresholds.reject_warn_rate"]),
        ("/colour", json!("blue"), &["colour"]),
        ("/format", json!(2), &["format"]),
        ("/description", json!(5), &["description"]),
        ("/providers/gmail/retry/max_attempts", json!(0), &["providers.gmail.retry.max_attempts"]),
        ("/providers/gmail/retry/backoff/multiplier", json!(0.5), &["providers.gmail.retry.backoff.multiplier"]),
        ("/providers/outlook/routing/standard", json!("high"), &["providers.outlook.routing.standard"]),
        ("/providers/yahoo/thresholds/min_volume", json!(-1), &["providers.yahoo.thresholds.min_volume"]),
        ("/providers/yahoo/routing/extra", json!(1), &["providers.yahoo.routing.extra"]),
        ("/providers", json!({}), &["providers"]),
        (
            "/providers/gmail",
            json!({"thresholds": {}, "routing": []}),
            &[
                "providers.gmail.retry",
                "providers.gmail.routing",
                "providers.gmail.thresholds.min_volume",
                "providers.gmail.thresholds.reject_critical_rate",
                "providers.gmail.thresholds.reject_warn_rate",
                "providers.gmail.thresholds.tempfail_critical_rate",
                "providers.gmail.thresholds.tempfail_warn_rate",
                "providers.gmail.thresholds.unknown_critical_rate",
                "providers.gmail.thresholds.unknown_warn_rate",
            ],
        ),
    ];
    for (pointer, value, expected) in cases {
        let mut payload = example();
        match payload.pointer_mut(pointer) {
            Some(slot) => *slot = value,
            None => {
                let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
                let parent = if parent.is_empty() { &mut payload } else { payload.pointer_mut(parent).unwrap() };
                parent.as_object_mut().unwrap().insert(key.to_string(), value);
            }
        }
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        let mut by_schema = BTreeSet::new();
        schema_problems(&root, &root, &payload, "$", &mut by_schema);
        assert_eq!(validator_problems(&payload), expected, "validator at {pointer}");
        assert_eq!(by_schema, expected, "schema at {pointer}");
    }
}

#[test]
fn a_bad_provider_name_is_named_by_both() {
    let root = schema();
    let mut payload = example();
    let gmail = payload["providers"]["gmail"].clone();
    payload["providers"].as_object_mut().unwrap().insert("bad name!".into(), gmail);
    let mut by_schema = BTreeSet::new();
    schema_problems(&root, &root, &payload, "$", &mut by_schema);
    let expected = BTreeSet::from([r#"providers["bad name!"]"#.to_string()]);
    assert_eq!(by_schema, expected);
    assert_eq!(validator_problems(&payload), expected);
}
