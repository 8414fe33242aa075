//! The Avro schemas of `schemas/`, embedded at build time, and their CRC-64-AVRO
//! (Rabin) fingerprints as used in the single-object encoding header.

use std::sync::LazyLock;

use apache_avro::Schema;
use serde_json::Value;

pub const INTERACTION_AVSC: &str = include_str!("../../../schemas/interaction.avsc");
pub const RATING_AVSC: &str = include_str!("../../../schemas/rating.avsc");
pub const ATTRIBUTED_AVSC: &str = include_str!("../../../schemas/attributed.avsc");

/// A parsed schema with its single-object fingerprint.
pub struct Known {
    pub name: &'static str,
    pub schema: Schema,
    /// CRC-64-AVRO of the parsing canonical form, as the 8 little-endian bytes that follow
    /// the `C3 01` marker.
    pub fingerprint: [u8; 8],
}

fn known(name: &'static str, text: &str) -> Known {
    let schema = Schema::parse_str(text)
        .unwrap_or_else(|e| panic!("embedded schema schemas/{name}.avsc does not parse: {e}"));
    let json: Value = serde_json::from_str(text).expect("parsed above");
    let fingerprint = crc64_avro(canonical_form(&json).as_bytes()).to_le_bytes();
    Known {
        name,
        schema,
        fingerprint,
    }
}

pub static INTERACTION: LazyLock<Known> = LazyLock::new(|| known("interaction", INTERACTION_AVSC));
pub static RATING: LazyLock<Known> = LazyLock::new(|| known("rating", RATING_AVSC));
pub static ATTRIBUTED: LazyLock<Known> = LazyLock::new(|| known("attributed", ATTRIBUTED_AVSC));

/// Fingerprint bytes as hex, in wire order (as printed by fastavro's
/// `fingerprint(..., "CRC-64-AVRO")` and as seen in a hex dump of a message).
pub fn fingerprint_hex(fp: &[u8; 8]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Parsing Canonical Form of a schema (Avro specification, "Transforming into Parsing
/// Canonical Form"). Written here because apache-avro 0.21 leaves logical types as
/// `{"type":"long"}` instead of `"long"`, which changes the fingerprint and breaks
/// interoperability with other Avro implementations (fastavro, Java).
pub fn canonical_form(schema: &Value) -> String {
    let mut out = String::new();
    pcf(schema, None, &mut Vec::new(), &mut out);
    out
}

fn full_name(name: &str, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

fn pcf(v: &Value, ns: Option<&str>, seen: &mut Vec<String>, out: &mut String) {
    match v {
        Value::String(s) => {
            let name = if PRIMITIVES.contains(&s.as_str()) {
                s.clone()
            } else {
                full_name(s, ns)
            };
            out.push_str(&Value::String(name).to_string());
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pcf(item, ns, seen, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
            match ty {
                "record" | "error" | "enum" | "fixed" => {
                    let own_ns = o.get("namespace").and_then(Value::as_str).or(ns);
                    let name =
                        full_name(o.get("name").and_then(Value::as_str).unwrap_or(""), own_ns);
                    let child_ns = name.rsplit_once('.').map(|(n, _)| n.to_string());
                    if seen.contains(&name) {
                        out.push_str(&Value::String(name).to_string());
                        return;
                    }
                    seen.push(name.clone());
                    out.push_str(&format!(
                        "{{\"name\":{},\"type\":{}",
                        Value::String(name),
                        Value::String(ty.into())
                    ));
                    if let Some(fields) = o.get("fields").and_then(Value::as_array) {
                        out.push_str(",\"fields\":[");
                        for (i, f) in fields.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            out.push_str(&format!("{{\"name\":{},\"type\":", f["name"]));
                            pcf(&f["type"], child_ns.as_deref(), seen, out);
                            out.push('}');
                        }
                        out.push(']');
                    }
                    if let Some(symbols) = o.get("symbols") {
                        out.push_str(&format!(",\"symbols\":{symbols}"));
                    }
                    if let Some(size) = o.get("size") {
                        out.push_str(&format!(",\"size\":{size}"));
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    pcf(&o["items"], ns, seen, out);
                    out.push('}');
                }
                "map" => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    pcf(&o["values"], ns, seen, out);
                    out.push('}');
                }
                _ => pcf(&Value::String(ty.to_string()), ns, seen, out),
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

/// CRC-64-AVRO (Rabin) fingerprint, as specified in the Avro specification.
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: LazyLock<[u64; 256]> = LazyLock::new(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        t
    });
    let mut fp = EMPTY;
    for &b in bytes {
        fp = (fp >> 8) ^ TABLE[((fp ^ b as u64) & 0xff) as usize];
    }
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_matches_the_specification() {
        let v: Value = serde_json::from_str(INTERACTION_AVSC).unwrap();
        let pcf = canonical_form(&v);
        assert!(pcf.starts_with(r#"{"name":"feedback.v1.Interaction","type":"record","fields":[{"name":"interaction_id","type":"string"},{"name":"occurred_at","type":"long"}"#), "{pcf}");
        assert!(!pcf.contains("doc") && !pcf.contains("default") && !pcf.contains("logicalType"));
        // The rating schema references Channel by name only inside attributed.avsc.
        let a: Value = serde_json::from_str(ATTRIBUTED_AVSC).unwrap();
        assert_eq!(
            canonical_form(&a).matches("\"symbols\":[\"phone\"").count(),
            1
        );
    }

    #[test]
    fn crc64_avro_of_known_inputs() {
        // From the Avro specification's test vectors: fingerprint of the schema "null".
        assert_eq!(crc64_avro(br#""null""#), 0x63dd24e7cc258f8a);
    }
}
