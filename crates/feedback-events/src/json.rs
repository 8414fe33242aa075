//! Validation of the collector's JSON into typed events. Every problem is reported as
//! a [`FieldError`] naming the item, the field and the reason; the first problem of a
//! field wins, but all fields of all items are checked.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::types::*;

/// Limits applied to every item. Defaults are documented on each field.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest id (`interaction_id`, `rating_id`, `customer_ref`, `agent_id`), in bytes. Default 128.
    pub max_id_bytes: usize,
    /// Longest other string (service, kind, product, region, team), in bytes. Default 256.
    pub max_string_bytes: usize,
    /// Longest comment, in bytes. Default 4000.
    pub max_comment_bytes: usize,
    /// Most attributes on one event. Default 32.
    pub max_attributes: usize,
    /// How far in the future `occurred_at` may lie (clock skew), in ms. Default 5 minutes.
    pub max_future_ms: i64,
    /// How far in the past `occurred_at` may lie, in ms. Default 30 days.
    pub max_past_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_id_bytes: 128,
            max_string_bytes: 256,
            max_comment_bytes: 4000,
            max_attributes: 32,
            max_future_ms: 5 * 60 * 1000,
            max_past_ms: 30 * 24 * 3600 * 1000,
        }
    }
}

/// One problem with one field of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Position of the item in the request (0 for a single object).
    pub index: usize,
    /// The field, e.g. `score` or `attributes.colour`.
    pub field: String,
    pub reason: String,
}

struct Item<'a> {
    obj: &'a Map<String, Value>,
    index: usize,
    limits: &'a Limits,
    now_ms: i64,
    errors: Vec<FieldError>,
}

impl<'a> Item<'a> {
    fn err(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(FieldError {
            index: self.index,
            field: field.to_string(),
            reason: reason.into(),
        });
    }

    fn check_str(&mut self, field: &str, s: &str, max: usize) -> bool {
        if s.is_empty() {
            self.err(field, "must not be empty");
            false
        } else if s.len() > max {
            self.err(
                field,
                format!("is {} bytes long; at most {max} allowed", s.len()),
            );
            false
        } else if s
            .chars()
            .any(|c| c.is_control() && (field != "comment" || !matches!(c, '\n' | '\t' | '\r')))
        {
            self.err(field, "contains control characters");
            false
        } else {
            true
        }
    }

    fn opt_str(&mut self, field: &str, max: usize) -> Option<String> {
        self.string(field, max, "a string or null")
    }

    fn string(&mut self, field: &str, max: usize, expected: &str) -> Option<String> {
        match self.obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => self.check_str(field, s, max).then(|| s.clone()),
            Some(other) => {
                self.err(
                    field,
                    format!("must be {expected}, not {}", type_name(other)),
                );
                None
            }
        }
    }

    fn req_str(&mut self, field: &str, max: usize) -> Option<String> {
        if matches!(self.obj.get(field), None | Some(Value::Null)) {
            self.err(field, "is required");
            return None;
        }
        self.string(field, max, "a string")
    }

    fn channel(&mut self) -> Option<Channel> {
        let s = self.req_str("channel", self.limits.max_string_bytes)?;
        s.parse()
            .map_err(|e: crate::UnknownSymbol| self.err("channel", e.to_string()))
            .ok()
    }

    fn timestamp(&mut self) -> Option<i64> {
        let s = self.req_str("occurred_at", 64)?;
        let t = match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => t.timestamp_millis(),
            Err(e) => {
                self.err(
                    "occurred_at",
                    format!("is not an RFC 3339 timestamp like 2026-11-28T10:00:00.123Z ({e})"),
                );
                return None;
            }
        };
        if t > self.now_ms + self.limits.max_future_ms {
            self.err(
                "occurred_at",
                format!(
                    "lies {}s in the future; at most {}s of clock skew is accepted",
                    (t - self.now_ms) / 1000,
                    self.limits.max_future_ms / 1000
                ),
            );
            return None;
        }
        if t < self.now_ms - self.limits.max_past_ms {
            self.err(
                "occurred_at",
                format!(
                    "is {} days old; at most {} days are accepted",
                    (self.now_ms - t) / 86_400_000,
                    self.limits.max_past_ms / 86_400_000
                ),
            );
            return None;
        }
        Some(t)
    }

    fn attributes(&mut self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self.obj.get("attributes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                if m.len() > self.limits.max_attributes {
                    self.err(
                        "attributes",
                        format!(
                            "has {} entries; at most {} allowed",
                            m.len(),
                            self.limits.max_attributes
                        ),
                    );
                    return out;
                }
                for (k, v) in m {
                    let field = format!("attributes.{k}");
                    match v {
                        Value::String(s) => {
                            if self.check_str(&field, k, 64)
                                && (s.is_empty()
                                    || self.check_str(&field, s, self.limits.max_string_bytes))
                            {
                                out.insert(k.clone(), s.clone());
                            }
                        }
                        other => self.err(
                            &field,
                            format!("must be a string, not {}", type_name(other)),
                        ),
                    }
                }
            }
            Some(other) => self.err(
                "attributes",
                format!("must be an object of strings, not {}", type_name(other)),
            ),
        }
        out
    }

    fn unknown_fields(&mut self, known: &[&str]) {
        let unknown: Vec<String> = self
            .obj
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            self.err(
                &k,
                format!(
                    "is not a known field; known fields are {}",
                    known.join(", ")
                ),
            );
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const INTERACTION_FIELDS: &[&str] = &[
    "interaction_id",
    "occurred_at",
    "service",
    "channel",
    "kind",
    "customer_ref",
    "product",
    "region",
    "agent_id",
    "team",
    "attributes",
];
const RATING_FIELDS: &[&str] = &[
    "rating_id",
    "occurred_at",
    "interaction_id",
    "metric",
    "score",
    "comment",
    "service",
    "channel",
    "customer_ref",
    "product",
    "region",
    "attributes",
];

fn object<'a>(
    v: &'a Value,
    index: usize,
    errors: &mut Vec<FieldError>,
) -> Option<&'a Map<String, Value>> {
    match v {
        Value::Object(o) => Some(o),
        other => {
            errors.push(FieldError {
                index,
                field: String::new(),
                reason: format!("item must be a JSON object, not {}", type_name(other)),
            });
            None
        }
    }
}

/// Validates one interaction object.
pub fn interaction(
    v: &Value,
    index: usize,
    limits: &Limits,
    now_ms: i64,
) -> Result<Interaction, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(obj) = object(v, index, &mut errors) else {
        return Err(errors);
    };
    let mut it = Item {
        obj,
        index,
        limits,
        now_ms,
        errors,
    };
    let l = limits;
    let interaction_id = it.req_str("interaction_id", l.max_id_bytes);
    let occurred_at = it.timestamp();
    let service = it.req_str("service", l.max_string_bytes);
    let channel = it.channel();
    let kind = it.req_str("kind", l.max_string_bytes);
    let customer_ref = it.req_str("customer_ref", l.max_id_bytes);
    let product = it.opt_str("product", l.max_string_bytes);
    let region = it.opt_str("region", l.max_string_bytes);
    let agent_id = it.opt_str("agent_id", l.max_id_bytes);
    let team = it.opt_str("team", l.max_string_bytes);
    let attributes = it.attributes();
    it.unknown_fields(INTERACTION_FIELDS);
    if !it.errors.is_empty() {
        return Err(it.errors);
    }
    Ok(Interaction {
        interaction_id: interaction_id.expect("checked"),
        occurred_at: occurred_at.expect("checked"),
        service: service.expect("checked"),
        channel: channel.expect("checked"),
        kind: kind.expect("checked"),
        customer_ref: customer_ref.expect("checked"),
        product,
        region,
        agent_id,
        team,
        attributes,
    })
}

/// Validates one rating object.
pub fn rating(
    v: &Value,
    index: usize,
    limits: &Limits,
    now_ms: i64,
) -> Result<Rating, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(obj) = object(v, index, &mut errors) else {
        return Err(errors);
    };
    let mut it = Item {
        obj,
        index,
        limits,
        now_ms,
        errors,
    };
    let l = limits;
    let rating_id = it.req_str("rating_id", l.max_id_bytes);
    let occurred_at = it.timestamp();
    let interaction_id = it.opt_str("interaction_id", l.max_id_bytes);
    let metric: Option<Metric> = it.req_str("metric", l.max_string_bytes).and_then(|s| {
        s.parse()
            .map_err(|e: crate::UnknownSymbol| it.err("metric", e.to_string()))
            .ok()
    });
    let score = match obj.get("score") {
        None | Some(Value::Null) => {
            it.err("score", "is required");
            None
        }
        Some(Value::Number(n)) => match n.as_i64() {
            Some(s) => Some(s),
            None if n.is_u64() => {
                // Above i64::MAX: a whole number, far out of every metric's range.
                let range = metric
                    .map(|m| {
                        let (lo, hi) = m.score_range();
                        format!(" for {m}: expected {lo} to {hi}")
                    })
                    .unwrap_or_default();
                it.err("score", format!("{n} is out of range{range}"));
                None
            }
            None => {
                it.err(
                    "score",
                    format!("must be a whole number like 4 (no fraction or exponent), not {n}"),
                );
                None
            }
        },
        Some(other) => {
            it.err(
                "score",
                format!("must be a whole number, not {}", type_name(other)),
            );
            None
        }
    };
    if let (Some(m), Some(s)) = (metric, score) {
        let (lo, hi) = m.score_range();
        if s < lo as i64 || s > hi as i64 {
            it.err(
                "score",
                format!("{s} is out of range for {m}: expected {lo} to {hi}"),
            );
        }
    }
    let comment = match obj.get("comment") {
        Some(Value::String(s)) if s.is_empty() => None,
        _ => it.opt_str("comment", l.max_comment_bytes),
    };
    let service = it.req_str("service", l.max_string_bytes);
    let channel = it.channel();
    let customer_ref = it.req_str("customer_ref", l.max_id_bytes);
    let product = it.opt_str("product", l.max_string_bytes);
    let region = it.opt_str("region", l.max_string_bytes);
    let attributes = it.attributes();
    it.unknown_fields(RATING_FIELDS);
    if !it.errors.is_empty() {
        return Err(it.errors);
    }
    Ok(Rating {
        rating_id: rating_id.expect("checked"),
        occurred_at: occurred_at.expect("checked"),
        interaction_id,
        metric: metric.expect("checked"),
        score: score.expect("checked") as i32,
        comment,
        service: service.expect("checked"),
        channel: channel.expect("checked"),
        customer_ref: customer_ref.expect("checked"),
        product,
        region,
        attributes,
    })
}

// ---------------------------------------------------------------- request bodies

/// Which endpoint a request body was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Interactions,
    Ratings,
}

/// The valid events of one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    Interactions(Vec<Interaction>),
    Ratings(Vec<Rating>),
}

impl Batch {
    /// The ids of the events, in request order.
    pub fn ids(&self) -> Vec<String> {
        match self {
            Batch::Interactions(v) => v.iter().map(|i| i.interaction_id.clone()).collect(),
            Batch::Ratings(v) => v.iter().map(|r| r.rating_id.clone()).collect(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Batch::Interactions(v) => v.len(),
            Batch::Ratings(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a request body was refused. `status` is the HTTP status the collector answers;
/// the JSON body is `{"error": error}`, plus `"errors"` (every problem of every item, at
/// most [`MAX_REPORTED_ERRORS`]) for 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub error: String,
    pub errors: Vec<FieldError>,
    /// Items in the request, when it parsed as a batch (0 otherwise).
    pub items: usize,
}

impl Rejection {
    fn new(status: u16, error: impl Into<String>) -> Self {
        Rejection {
            status,
            error: error.into(),
            errors: Vec::new(),
            items: 0,
        }
    }

    /// The response body.
    pub fn body(&self) -> Value {
        if self.errors.is_empty() {
            serde_json::json!({ "error": self.error })
        } else {
            serde_json::json!({ "error": self.error, "errors": self.errors })
        }
    }
}

/// At most this many item errors are listed in one answer (a body of thousands of unknown
/// fields must not produce an answer many times its size).
pub const MAX_REPORTED_ERRORS: usize = 100;
/// Field names are echoed in errors up to this many bytes.
const MAX_ECHOED_FIELD_BYTES: usize = 64;

/// `s` cut to at most `max` bytes at a character boundary, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// serde_json's message without its trailing " at line L column C" (we say where first).
fn json_error_text(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_string()
}

/// A JSON value read like `serde_json::Value`, except that an object naming one key twice
/// is an error: serde_json would keep the last silently, so `{"score": 1, "score": 5}`
/// would be read as 5 while a log or a proxy may show 1.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d).map(|Strict(v)| v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = a.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = a.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom(format_args!(
                    "key {:?} appears twice in one object",
                    clip(&k, MAX_ECHOED_FIELD_BYTES)
                )));
            }
            let Strict(v) = a.next_value()?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses and validates a collector request body: UTF-8, JSON (no key twice in one object),
/// one object or an array of 1..=`max_items` objects, every field of every item, and no id
/// twice in the batch.
/// Nothing is accepted unless everything is valid. Never panics on any input.
///
/// `service` is the producing service the request's API key belongs to (None: anonymous):
/// an item without `service` gets it filled in, and a batch with any item naming another
/// service is refused whole with 403, so one service cannot emit as another.
pub fn parse_batch(
    bytes: &[u8],
    kind: BatchKind,
    limits: &Limits,
    max_items: usize,
    now_ms: i64,
    service: Option<&str>,
) -> Result<Batch, Rejection> {
    if let Err(e) = std::str::from_utf8(bytes) {
        let at = e.valid_up_to();
        return Err(Rejection::new(
            400,
            match e.error_len() {
                Some(_) => format!(
                    "request body is not valid UTF-8: invalid byte 0x{:02X} at byte offset {at}; send JSON encoded as UTF-8",
                    bytes[at]
                ),
                None => format!(
                    "request body is not valid UTF-8: it ends inside a multi-byte character at byte offset {at}; send JSON encoded as UTF-8"
                ),
            },
        ));
    }
    let Strict(value) = serde_json::from_slice(bytes).map_err(|e| {
        Rejection::new(
            400,
            format!(
                "malformed JSON at line {} column {}: {}; send one JSON object or an array of objects",
                e.line(),
                e.column(),
                json_error_text(&e)
            ),
        )
    })?;
    let mut items: Vec<Value> = match value {
        Value::Array(a) => a,
        obj @ Value::Object(_) => vec![obj],
        other => {
            return Err(Rejection::new(
                400,
                format!(
                    "body must be a JSON object or an array of objects, not {}",
                    type_name(&other)
                ),
            ))
        }
    };
    if items.is_empty() {
        return Err(Rejection::new(
            400,
            "the batch is empty; send at least one item",
        ));
    }
    if items.len() > max_items {
        return Err(Rejection::new(
            413,
            format!(
                "the batch has {} items; at most {max_items} are accepted per request; split it into smaller batches",
                items.len()
            ),
        ));
    }
    let n = items.len();
    if let Some(service) = service {
        bind_service(&mut items, service)?;
    }
    let (batch, mut errors) = match kind {
        BatchKind::Interactions => {
            let (ok, errors) = validate_items(&items, "interaction_id", |v, i| {
                interaction(v, i, limits, now_ms).map(|x| (x.interaction_id.clone(), x))
            });
            (Batch::Interactions(ok), errors)
        }
        BatchKind::Ratings => {
            let (ok, errors) = validate_items(&items, "rating_id", |v, i| {
                rating(v, i, limits, now_ms).map(|x| (x.rating_id.clone(), x))
            });
            (Batch::Ratings(ok), errors)
        }
    };
    if errors.is_empty() {
        return Ok(batch);
    }
    let bad: std::collections::BTreeSet<usize> = errors.iter().map(|e| e.index).collect();
    let total = errors.len();
    errors.truncate(MAX_REPORTED_ERRORS);
    for e in &mut errors {
        e.field = clip(&e.field, MAX_ECHOED_FIELD_BYTES);
    }
    let shown = if total > MAX_REPORTED_ERRORS {
        format!(" (the first {MAX_REPORTED_ERRORS} of {total} problems are listed)")
    } else {
        String::new()
    };
    Err(Rejection {
        status: 422,
        error: format!(
            "{} of {n} item(s) are invalid; nothing was accepted. Fix the fields listed in `errors`{shown} and send the batch again",
            bad.len()
        ),
        errors,
        items: n,
    })
}

/// Fills in an absent `service` with the key's, refuses (403) an item naming another.
fn bind_service(items: &mut [Value], service: &str) -> Result<(), Rejection> {
    for (i, item) in items.iter_mut().enumerate() {
        let Value::Object(obj) = item else { continue };
        match obj.get("service") {
            None | Some(Value::Null) => {
                obj.insert("service".into(), Value::String(service.to_string()));
            }
            Some(Value::String(named)) if named == service => {}
            Some(Value::String(named)) => {
                return Err(Rejection::new(
                    403,
                    format!(
                        "item {i} names service {:?}, but this API key belongs to service {service:?}; nothing was accepted. Send each service's events with its own key, or leave `service` out to have it filled in",
                        clip(named, MAX_ECHOED_FIELD_BYTES)
                    ),
                ))
            }
            // Not a string: validation reports it.
            Some(_) => {}
        }
    }
    Ok(())
}

/// Validates every item; the valid ones (with ids) and every error of every item,
/// including each repeat of an id already used by an earlier item.
fn validate_items<T>(
    items: &[Value],
    id_field: &str,
    f: impl Fn(&Value, usize) -> Result<(String, T), Vec<FieldError>>,
) -> (Vec<T>, Vec<FieldError>) {
    let mut ok = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, v) in items.iter().enumerate() {
        match f(v, i) {
            Ok((id, x)) => {
                if let Some(first) = seen.get(&id) {
                    errors.push(FieldError {
                        index: i,
                        field: id_field.to_string(),
                        reason: format!(
                            "{id:?} is also the {id_field} of item {first}; every item of a batch needs its own id"
                        ),
                    });
                } else {
                    seen.insert(id, i);
                }
                ok.push(x);
            }
            Err(e) => errors.extend(e),
        }
    }
    (ok, errors)
}

// ---------------------------------------------------------------- events from elsewhere

/// Earliest and latest `occurred_at` (ms) an RFC 3339 timestamp can state: years 0000 to 9999.
const RFC3339_MS: std::ops::RangeInclusive<i64> = -62_167_219_200_000..=253_402_300_799_999;

/// The collector's field rules (everything but the time window, which depends on when an
/// event is seen) applied to an event that reached Kafka another way, e.g. through the
/// producer library. `Err` lists every broken rule.
pub fn check_interaction(i: &Interaction, limits: &Limits) -> Result<(), Vec<FieldError>> {
    check(
        i.occurred_at,
        |l| interaction(&interaction_to_json(i), 0, l, i.occurred_at).map(|_| ()),
        limits,
    )
}

/// [`check_interaction`] for ratings (scores in their metric's range, sizes, characters).
pub fn check_rating(r: &Rating, limits: &Limits) -> Result<(), Vec<FieldError>> {
    check(
        r.occurred_at,
        |l| rating(&rating_to_json(r), 0, l, r.occurred_at).map(|_| ()),
        limits,
    )
}

fn check(
    occurred_at: i64,
    f: impl Fn(&Limits) -> Result<(), Vec<FieldError>>,
    limits: &Limits,
) -> Result<(), Vec<FieldError>> {
    if !RFC3339_MS.contains(&occurred_at) {
        return Err(vec![FieldError {
            index: 0,
            field: "occurred_at".into(),
            reason: format!("{occurred_at} ms since 1970 lies outside the years 0000 to 9999"),
        }]);
    }
    let window = Limits {
        max_future_ms: 0,
        max_past_ms: 0,
        ..limits.clone()
    };
    f(&window)
}

/// RFC 3339 with milliseconds and `Z`, the collector's timestamp format.
pub fn format_ts(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

fn opt(v: &Option<String>) -> Value {
    v.as_ref()
        .map(|s| Value::String(s.clone()))
        .unwrap_or(Value::Null)
}

/// The collector JSON of an interaction (inverse of [`interaction`]).
pub fn interaction_to_json(i: &Interaction) -> Value {
    serde_json::json!({
        "interaction_id": i.interaction_id, "occurred_at": format_ts(i.occurred_at), "service": i.service,
        "channel": i.channel.as_str(), "kind": i.kind, "customer_ref": i.customer_ref, "product": opt(&i.product),
        "region": opt(&i.region), "agent_id": opt(&i.agent_id), "team": opt(&i.team), "attributes": i.attributes,
    })
}

/// The collector JSON of a rating (inverse of [`rating`]).
pub fn rating_to_json(r: &Rating) -> Value {
    serde_json::json!({
        "rating_id": r.rating_id, "occurred_at": format_ts(r.occurred_at), "interaction_id": opt(&r.interaction_id),
        "metric": r.metric.as_str(), "score": r.score, "comment": opt(&r.comment), "service": r.service,
        "channel": r.channel.as_str(), "customer_ref": r.customer_ref, "product": opt(&r.product),
        "region": opt(&r.region), "attributes": r.attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_795_000_000_000;

    fn good_rating() -> Value {
        json!({"rating_id": "r1", "occurred_at": format_ts(NOW - 1000), "interaction_id": "i1", "metric": "csat",
               "score": 4, "comment": "ok", "service": "survey", "channel": "email", "customer_ref": "c1"})
    }

    #[test]
    fn round_trip_through_json() {
        let r = rating(&good_rating(), 0, &Limits::default(), NOW).unwrap();
        assert_eq!(r.occurred_at, NOW - 1000);
        assert_eq!(
            rating(&rating_to_json(&r), 0, &Limits::default(), NOW).unwrap(),
            r
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut v = good_rating();
        v["score"] = json!(6);
        v["channel"] = json!("fax");
        v["colour"] = json!("red");
        v["occurred_at"] = json!("yesterday");
        let errs = rating(&v, 3, &Limits::default(), NOW).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert_eq!(
            fields,
            vec![
                (3, "occurred_at"),
                (3, "score"),
                (3, "channel"),
                (3, "colour")
            ]
        );
        assert_eq!(
            errs[1].reason,
            "6 is out of range for csat: expected 1 to 5"
        );
    }

    #[test]
    fn score_ranges_per_metric() {
        for (metric, lo, hi) in [("csat", 1, 5), ("nps", 0, 10), ("ces", 1, 7)] {
            for s in lo - 1..=hi + 1 {
                let mut v = good_rating();
                v["metric"] = json!(metric);
                v["score"] = json!(s);
                assert_eq!(
                    rating(&v, 0, &Limits::default(), NOW).is_ok(),
                    (lo..=hi).contains(&s),
                    "{metric} {s}"
                );
            }
        }
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let l = Limits::default();
        for (offset, ok) in [
            (l.max_future_ms + 1000, false),
            (l.max_future_ms - 1000, true),
            (-l.max_past_ms - 1000, false),
        ] {
            let mut v = good_rating();
            v["occurred_at"] = json!(format_ts(NOW + offset));
            assert_eq!(rating(&v, 0, &l, NOW).is_ok(), ok, "{offset}");
        }
    }

    #[test]
    fn events_from_kafka_obey_the_same_field_rules_without_the_time_window() {
        let l = Limits::default();
        let mut r = rating(&good_rating(), 0, &l, NOW).unwrap();
        assert_eq!(check_rating(&r, &l), Ok(()));
        r.occurred_at = 0; // 1970: outside the collector's window, but a valid time
        assert_eq!(check_rating(&r, &l), Ok(()));
        r.score = 6;
        r.customer_ref = String::new();
        let fields: Vec<_> = check_rating(&r, &l)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.reason))
            .collect();
        assert_eq!(
            fields,
            vec![
                (
                    "score".to_string(),
                    "6 is out of range for csat: expected 1 to 5".to_string()
                ),
                ("customer_ref".to_string(), "must not be empty".to_string()),
            ]
        );
        r.score = 4;
        r.customer_ref = "c".into();
        for (t, ok) in [
            (253_402_300_799_999, true), // 9999-12-31T23:59:59.999Z
            (253_402_300_800_000, false),
            (-62_167_219_200_000, true), // 0000-01-01T00:00:00Z
            (-62_167_219_200_001, false),
        ] {
            r.occurred_at = t;
            assert_eq!(check_rating(&r, &l).is_ok(), ok, "{t}");
        }
    }
}
