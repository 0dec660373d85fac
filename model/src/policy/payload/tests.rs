use serde_json::{json, Value};

use super::*;

const EXAMPLE: &str = include_str!("../../../../deploy/policies/example-policy.json");

fn example() -> Value {
    serde_json::from_str(EXAMPLE).unwrap()
}

fn problems(v: &Value, strict: bool) -> Vec<String> {
    validate_payload(v.to_string().as_bytes(), strict).unwrap_err().iter().map(Problem::to_string).collect()
}

#[test]
fn every_problem_is_answered_with_its_path() {
    let mut v = example();
    v["providers"]["gmail"]["thresholds"]["reject_warn_rate"] = json!(1.5);
    v["providers"]["gmail"]["thresholds"]["unknown_warn_rate"] = json!(0.5);
    v["providers"]["outlook"]["retry"]["backoff"]["max_ms"] = json!(1000);
    v["providers"]["yahoo"]["routing"] = json!({"standard": 0, "low_hit": 0, "warmup": 0});
    v["providers"]["mail.ru"] = json!({"thresholds": 1, "retry": null, "routing": {}});
    assert_eq!(
        problems(&v, false),
        [
            "providers.gmail.thresholds.reject_warn_rate: must be a number in 0..=1",
            "providers.gmail.thresholds.unknown_warn_rate: must not exceed unknown_critical_rate (0.5 > 0.35)",
            r#"providers["mail.ru"].thresholds: must be an object"#,
            r#"providers["mail.ru"].retry: must be an object"#,
            r#"providers["mail.ru"].routing.standard: is required"#,
            r#"providers["mail.ru"].routing.low_hit: is required"#,
            r#"providers["mail.ru"].routing.warmup: is required"#,
            "providers.outlook.retry.backoff.max_ms: must be at least initial_ms (1000 < 60000)",
            "providers.yahoo.routing: at least one profile needs a weight above 0",
        ]
    );
}

#[test]
fn strict_mode_refuses_unknown_fields_and_lenient_mode_drops_them() {
    let mut v = example();
    v["owner"] = json!("ops");
    v["providers"]["gmail"]["retry"]["jitter"] = json!(true);
    assert_eq!(problems(&v, true), ["owner: unknown field", "providers.gmail.retry.jitter: unknown field"]);
    let lenient = validate_payload(v.to_string().as_bytes(), false).expect("lenient mode accepts");
    let plain = validate_payload(EXAMPLE.as_bytes(), true).unwrap();
    assert_eq!(lenient, plain);
    assert_eq!(checksum(&lenient), checksum(&plain), "dropped fields do not reach the checksum");
}

#[test]
fn the_checksum_covers_the_policy_not_its_formatting() {
    let policy = validate_payload(EXAMPLE.as_bytes(), true).unwrap();
    let compact = validate_payload(example().to_string().as_bytes(), true).unwrap();
    assert_eq!(checksum(&policy), checksum(&compact));
    assert_eq!(checksum(&policy).len(), 64);
    // Golden: a change to the canonical form changes every stored checksum.
    assert_eq!(checksum(&policy), GOLDEN_EXAMPLE_CHECKSUM);
    let mut changed = policy.clone();
    changed.providers.get_mut("gmail").unwrap().retry.max_attempts = 4;
    assert_ne!(checksum(&changed), checksum(&policy));
    let again = validate_payload(&canonical_bytes(&policy), true).unwrap();
    assert_eq!(again, policy, "canonical bytes are themselves a valid payload");
}

/// SHA-256 of the example's canonical bytes, checked by hand with Python's
/// `json.dumps(…, separators=(",", ":"))` of the fields in declaration order.
const GOLDEN_EXAMPLE_CHECKSUM: &str = "ff3e6b8060fdff49bf321ad86d5209a2986eee04ff0b3bc9f568e7b8e06dafc1";

#[test]
fn sizes_and_counts_are_capped() {
    let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    assert!(validate_payload(&big, false).unwrap_err()[0].message.contains("at most"));
    let junk = validate_payload(b"{nope", false).unwrap_err();
    assert_eq!(junk[0].path, "$");
    assert!(junk[0].message.starts_with("not JSON"));

    let mut v = example();
    v["description"] = json!("x".repeat(MAX_DESCRIPTION_LEN + 1));
    assert_eq!(problems(&v, true), ["description: must be a string of at most 1000 characters"]);

    let many: serde_json::Map<String, Value> = (0..MAX_PROVIDERS + 1).map(|i| (format!("p{i}"), json!({}))).collect();
    let found = validate_payload(json!({"format": 1, "providers": many}).to_string().as_bytes(), true).unwrap_err();
    assert_eq!(found.len(), MAX_PROBLEMS + 1);
    assert_eq!(found[0].to_string(), "providers: must name 1..=200 providers, names 201");
    assert!(found[MAX_PROBLEMS].message.starts_with("and "), "{}", found[MAX_PROBLEMS]);
}

#[test]
fn a_payload_needs_its_format_and_providers() {
    assert_eq!(problems(&json!({}), true), ["format: is required", "providers: is required"]);
    assert_eq!(problems(&json!([]), true), ["$: must be an object"]);
    assert_eq!(problems(&json!({"format": 1, "providers": []}), true), ["providers: must be an object"]);
}

#[test]
fn versions_are_named_v1_v2_and_so_on() {
    assert_eq!(version_name(1), "v1");
    assert_eq!(version_name(12), "v12");
    assert_eq!(parse_version("v12"), Some(12));
    for n in [1, 9, 10, 4_000_000_000] {
        assert_eq!(parse_version(&version_name(n)), Some(n));
    }
    for bad in ["", "v", "v0", "v01", "V1", "1", "v1a", "v-1", "v99999999999999999999999"] {
        assert_eq!(parse_version(bad), None, "{bad:?}");
    }
}
