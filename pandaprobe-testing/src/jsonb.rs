//! JSON as the real server hands it back after a trip through PostgreSQL `jsonb`: object keys
//! in `jsonb` order (shorter first, then bytewise), floats of 10¹⁶ and more turned into
//! integers (Python writes them as `1e+16`, which `numeric` keeps with no decimals), `-0.0`
//! as `0.0`, and floats printed as pydantic prints them (`1e16`, `0.00001`, `3.0`).

use serde_json::{Number, Value};

/// Floats from here up come back as integers.
const INTEGER_FROM: f64 = 1e16;

/// The value PostgreSQL gives back for `value`.
pub(crate) fn round_trip(value: &Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => n.as_f64().map_or(Value::Null, float_round_trip),
        Value::Array(items) => Value::Array(items.iter().map(round_trip).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), round_trip(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn float_round_trip(f: f64) -> Value {
    if f == 0.0 {
        return float(0.0);
    }
    if f.abs() < INTEGER_FROM {
        return float(f);
    }
    // The shortest digits, as Python's repr writes them, padded with zeros.
    let text = serde_json::to_string(&f).unwrap_or_default();
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exponent: i64 = exponent.trim_start_matches('+').parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches('-');
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let fraction = fraction.trim_end_matches('0');
    let zeros = exponent - i64::try_from(fraction.len()).unwrap_or(0);
    let mut digits = format!("{whole}{fraction}");
    for _ in 0..zeros.max(0) {
        digits.push('0');
    }
    let parsed = if negative {
        format!("-{digits}").parse::<i64>().ok().map(Number::from)
    } else {
        digits.parse::<u64>().ok().map(Number::from)
    };
    // Beyond 64 bits the integer cannot be held here: keep the float.
    parsed.map_or_else(|| float(f), Value::Number)
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A value as a `dict[str, float]` field keeps it: numbers (and numeric strings) as floats.
pub(crate) fn floats(value: &Value) -> Value {
    let Value::Object(map) = value else {
        return value.clone();
    };
    let as_float = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    Value::Object(
        map.iter()
            .map(|(k, v)| {
                let f = as_float(v).map_or(Value::Null, |f| float(if f == 0.0 { 0.0 } else { f }));
                (k.clone(), f)
            })
            .collect(),
    )
}

/// Write `value` compactly, object keys in `jsonb` order.
pub(crate) fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| {
                a.len()
                    .cmp(&b.len())
                    .then_with(|| a.as_bytes().cmp(b.as_bytes()))
            });
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(key, out);
                out.push(':');
                write(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_str(s, out),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

/// pydantic writes `1e16` where serde_json writes `1e+16`; the rest is the same.
pub(crate) fn write_number(n: &Number, out: &mut String) {
    out.push_str(&n.to_string().replacen("e+", "e", 1));
}

pub(crate) fn write_str(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(value: Value) -> String {
        let mut out = String::new();
        write(&round_trip(&value), &mut out);
        out
    }

    #[test]
    fn as_measured_on_the_real_server() {
        // Sent, then read back with GET /traces/{id}.
        assert_eq!(
            stored(json!({"zz": 1, "a": {"b": 2, "aa": 1.0}, "bb": 1e2})),
            r#"{"a":{"b":2,"aa":1.0},"bb":100.0,"zz":1}"#
        );
        assert_eq!(
            stored(json!({"a": 1e-05, "b": 1e16, "c": 0.1, "f": -0.0, "h": 12.50, "i": "\u{e9}\u{1}", "\u{e9}": 1, "z": 2})),
            "{\"a\":0.00001,\"b\":10000000000000000,\"c\":0.1,\"f\":0.0,\"h\":12.5,\"i\":\"\u{e9}\\u0001\",\"z\":2,\"\u{e9}\":1}"
        );
        let mut cost = String::new();
        write(
            &floats(&round_trip(&json!({"total": 0.00001, "x": 1e16, "y": 3}))),
            &mut cost,
        );
        assert_eq!(cost, r#"{"x":1e16,"y":3.0,"total":0.00001}"#);
    }

    #[test]
    fn big_floats_become_integers_from_their_shortest_digits() {
        assert_eq!(
            round_trip(&json!(1.2345678901234567e18)),
            json!(1_234_567_890_123_456_800_u64)
        );
        assert_eq!(
            round_trip(&json!(-2.5e16)),
            json!(-25_000_000_000_000_000_i64)
        );
        assert_eq!(
            round_trip(&json!(9_999_999_999_999_998.0)),
            json!(9_999_999_999_999_998.0)
        );
        assert!(
            round_trip(&json!(1.5e300)).is_f64(),
            "too big to hold: kept"
        );
    }
}
