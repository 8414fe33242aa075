//! apache-avro's generic `Value` path for our records: what the hand-written codec is
//! measured against (`benches/codec.rs`, `feedback bench`). Not used by the pipeline.
//!
//! Encode builds the `Value` tree from the struct and writes it with `to_avro_datum` and the
//! parsed schema; decode reads the datum into a `Value` tree with `from_avro_datum` (it stops
//! at the tree: turning it back into our struct would only add to apache-avro's time).

use apache_avro::types::Value;

use crate::codec::{HEADER_LEN, MARKER};
use crate::{schema, Interaction, Rating};

fn s(v: &str) -> Value {
    Value::String(v.into())
}

fn opt(v: Option<&str>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(s(v))),
    }
}

fn map(m: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Map(m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
}

/// The interaction as an apache-avro `Value` record of `schemas/interaction.avsc`.
pub fn interaction_value(i: &Interaction) -> Value {
    Value::Record(vec![
        ("interaction_id".into(), s(&i.interaction_id)),
        ("occurred_at".into(), Value::TimestampMillis(i.occurred_at)),
        ("service".into(), s(&i.service)),
        (
            "channel".into(),
            Value::Enum(i.channel.index(), i.channel.as_str().into()),
        ),
        ("kind".into(), s(&i.kind)),
        ("customer_ref".into(), s(&i.customer_ref)),
        ("product".into(), opt(i.product.as_deref())),
        ("region".into(), opt(i.region.as_deref())),
        ("agent_id".into(), opt(i.agent_id.as_deref())),
        ("team".into(), opt(i.team.as_deref())),
        ("attributes".into(), map(&i.attributes)),
    ])
}

/// The rating as an apache-avro `Value` record of `schemas/rating.avsc`.
pub fn rating_value(r: &Rating) -> Value {
    Value::Record(vec![
        ("rating_id".into(), s(&r.rating_id)),
        ("occurred_at".into(), Value::TimestampMillis(r.occurred_at)),
        ("interaction_id".into(), opt(r.interaction_id.as_deref())),
        (
            "metric".into(),
            Value::Enum(r.metric.index(), r.metric.as_str().into()),
        ),
        ("score".into(), Value::Int(r.score)),
        ("comment".into(), opt(r.comment.as_deref())),
        ("service".into(), s(&r.service)),
        (
            "channel".into(),
            Value::Enum(r.channel.index(), r.channel.as_str().into()),
        ),
        ("customer_ref".into(), s(&r.customer_ref)),
        ("product".into(), opt(r.product.as_deref())),
        ("region".into(), opt(r.region.as_deref())),
        ("attributes".into(), map(&r.attributes)),
    ])
}

/// What the reference (apache-avro) path could not encode or decode.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("not an Avro single-object message")]
    NotSingleObject,
    #[error("unknown schema fingerprint")]
    UnknownFingerprint,
    #[error(transparent)]
    Avro(Box<apache_avro::Error>),
}

fn single_object(known: &schema::Known, v: Value) -> Result<Vec<u8>, ReferenceError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&known.fingerprint);
    out.extend(
        apache_avro::to_avro_datum(&known.schema, v)
            .map_err(|e| ReferenceError::Avro(Box::new(e)))?,
    );
    Ok(out)
}

/// Single-object encoding of an interaction through apache-avro's `Value` path.
pub fn encode_interaction(i: &Interaction) -> Result<Vec<u8>, ReferenceError> {
    single_object(&schema::INTERACTION, interaction_value(i))
}

/// Single-object encoding of a rating through apache-avro's `Value` path.
pub fn encode_rating(r: &Rating) -> Result<Vec<u8>, ReferenceError> {
    single_object(&schema::RATING, rating_value(r))
}

/// Decodes a single-object message into apache-avro's `Value` tree, choosing the schema by
/// the fingerprint in the header.
pub fn decode_value(bytes: &[u8]) -> Result<Value, ReferenceError> {
    if bytes.len() < HEADER_LEN || bytes[..2] != MARKER {
        return Err(ReferenceError::NotSingleObject);
    }
    let fp = &bytes[2..HEADER_LEN];
    let known = [
        &*schema::INTERACTION,
        &*schema::RATING,
        &*schema::ATTRIBUTED,
    ]
    .into_iter()
    .find(|k| k.fingerprint[..] == *fp)
    .ok_or(ReferenceError::UnknownFingerprint)?;
    apache_avro::from_avro_datum(&known.schema, &mut &bytes[HEADER_LEN..], None)
        .map_err(|e| ReferenceError::Avro(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, Channel, Encoded, Metric};

    #[test]
    fn value_path_writes_the_same_bytes_as_our_codec() {
        let i = Interaction {
            interaction_id: "i-1".into(),
            occurred_at: 1_795_000_000_123,
            service: "checkout-api".into(),
            channel: Channel::App,
            kind: "order".into(),
            customer_ref: "c".into(),
            product: Some("p".into()),
            region: None,
            agent_id: None,
            team: None,
            attributes: [("k".to_string(), "v".to_string())].into(),
        };
        let r = Rating {
            rating_id: "r-1".into(),
            occurred_at: 1_795_000_000_200,
            interaction_id: Some("i-1".into()),
            metric: Metric::Ces,
            score: 6,
            comment: Some("ok".into()),
            service: "survey".into(),
            channel: Channel::Email,
            customer_ref: "c".into(),
            product: None,
            region: Some("eu".into()),
            attributes: Default::default(),
        };
        assert_eq!(encode_interaction(&i).unwrap(), i.encode());
        assert_eq!(encode_rating(&r).unwrap(), r.encode());
        assert!(matches!(
            decode_value(&r.encode()).unwrap(),
            Value::Record(f) if f.len() == 12
        ));
        assert!(decode(&encode_rating(&r).unwrap()).is_ok());
    }
}
