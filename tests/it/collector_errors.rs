//! The hostile-input corpus at the collector: every bad input, its EXACT outcome (status,
//! `error` message, and for 422 every `(index, field, reason)`), and nothing produced to
//! Kafka. Plus uploads that are slow (408) or abandoned (nothing wedged).
//!
//! The table is the corpus; ARCHITECTURE.md ("Hostile input") and the closing note of
//! issue 8 list it. Expected messages are written out here, not taken from the code.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::Env;

/// Fixed event time inside the accepted window (relative to the test's clock).
fn ts(offset_ms: i64) -> String {
    feedback_events::json::format_ts(chrono::Utc::now().timestamp_millis() + offset_ms)
}

fn rating() -> Value {
    json!({"rating_id": "r-1", "occurred_at": ts(-1000), "interaction_id": "i-1", "metric": "csat", "score": 4,
           "comment": "fine", "service": "survey", "channel": "email", "customer_ref": "c-1"})
}

fn interaction() -> Value {
    json!({"interaction_id": "i-1", "occurred_at": ts(-2000), "service": "checkout-api", "channel": "web",
           "kind": "order", "customer_ref": "c-1"})
}

fn with(mut v: Value, field: &str, value: Value) -> Value {
    v[field] = value;
    v
}

fn without(mut v: Value, field: &str) -> Value {
    v.as_object_mut().unwrap().remove(field);
    v
}

const RATING_FIELDS: &str = "rating_id, occurred_at, interaction_id, metric, score, comment, service, channel, customer_ref, product, region, attributes";
const INTERACTION_FIELDS: &str = "interaction_id, occurred_at, service, channel, kind, customer_ref, product, region, agent_id, team, attributes";
const ONE_INVALID: &str = "1 of 1 item(s) are invalid; nothing was accepted. Fix the fields listed in `errors` and send the batch again";
const JSON_HINT: &str = "; send one JSON object or an array of objects";

/// Expected item errors for a given server clock (ms): only time-window messages use it.
type Errors = Box<dyn Fn(i64) -> Vec<(u64, String, String)>>;

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// The whole `error` message.
    error: String,
    errors: Errors,
}

fn none() -> Errors {
    Box::new(|_| Vec::new())
}

fn errs(list: &[(u64, &str, &str)]) -> Errors {
    let v: Vec<(u64, String, String)> = list
        .iter()
        .map(|(i, f, r)| (*i, f.to_string(), r.to_string()))
        .collect();
    Box::new(move |_| v.clone())
}

/// A request whose body is `body` verbatim.
fn raw(
    name: &'static str,
    path: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    error: &str,
) -> Case {
    Case {
        name,
        path,
        content_type: Some("application/json"),
        body: body.into(),
        status,
        error: error.to_string(),
        errors: none(),
    }
}

/// A 400 for malformed JSON: where and serde_json's reason.
fn malformed(
    name: &'static str,
    path: &'static str,
    body: impl Into<Vec<u8>>,
    at: (u32, u32),
    reason: &str,
) -> Case {
    raw(
        name,
        path,
        body,
        400,
        &format!(
            "malformed JSON at line {} column {}: {reason}{JSON_HINT}",
            at.0, at.1
        ),
    )
}

/// A single item refused with 422 and exactly these item errors.
fn invalid(name: &'static str, path: &'static str, body: Value, errors: Errors) -> Case {
    Case {
        name,
        path,
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status: 422,
        error: ONE_INVALID.to_string(),
        errors,
    }
}

fn cases() -> Vec<Case> {
    let r = "/v1/ratings";
    let i = "/v1/interactions";
    let rating_json = rating().to_string();
    let day_ahead = chrono::Utc::now().timestamp_millis() + 86_400_000 + 30_000;
    vec![
        // ---- transport
        Case {
            name: "wrong content type",
            path: r,
            content_type: Some("text/plain"),
            body: rating_json.clone().into_bytes(),
            status: 415,
            error: "Content-Type must be application/json, not \"text/plain\"".into(),
            errors: none(),
        },
        Case {
            name: "no content type",
            path: i,
            content_type: None,
            body: interaction().to_string().into_bytes(),
            status: 415,
            error: "Content-Type must be application/json, not \"(none)\"".into(),
            errors: none(),
        },
        raw(
            "oversized body",
            r,
            format!("[{}]", vec![rating_json.as_str(); 400].join(",")),
            413,
            "request body exceeds 65536 bytes; split it into smaller batches",
        ),
        raw(
            "oversized batch",
            r,
            Value::Array(vec![json!({}); 11]).to_string(),
            413,
            "the batch has 11 items; at most 10 are accepted per request; split it into smaller batches",
        ),
        // ---- malformed and truncated JSON
        malformed(
            "truncated JSON",
            r,
            "{\"rating_id\": ",
            (1, 14),
            "EOF while parsing a value",
        ),
        malformed(
            "valid rating cut in half",
            r,
            &rating_json.as_bytes()[..40],
            (1, 40),
            "EOF while parsing a string",
        ),
        malformed("empty body", r, "", (1, 0), "EOF while parsing a value"),
        malformed(
            "trailing garbage after the object",
            r,
            format!("{rating_json} x"),
            (1, rating_json.len() as u32 + 2),
            "trailing characters",
        ),
        malformed(
            "NaN score",
            r,
            "{\"score\": NaN}",
            (1, 11),
            "expected value",
        ),
        malformed(
            "Infinity score",
            r,
            "{\"score\": Infinity}",
            (1, 11),
            "expected value",
        ),
        malformed(
            "number beyond f64",
            r,
            "{\"score\": 1e400}",
            (1, 15),
            "number out of range",
        ),
        malformed(
            "nesting 200 deep",
            r,
            "[".repeat(200),
            (1, 128),
            "recursion limit exceeded",
        ),
        malformed(
            "lone surrogate escape",
            r,
            "{\"comment\": \"\\ud800\"}",
            (1, 20),
            "unexpected end of hex escape",
        ),
        malformed(
            "byte-order mark",
            r,
            [&b"\xEF\xBB\xBF"[..], rating_json.as_bytes()].concat(),
            (1, 1),
            "expected value",
        ),
        malformed(
            "single quotes",
            i,
            "{'interaction_id': 'i-1'}",
            (1, 2),
            "key must be a string",
        ),
        malformed(
            "the same key twice",
            r,
            "{\"score\": 1, \"score\": 5}",
            (1, 20),
            "key \"score\" appears twice in one object",
        ),
        // ---- invalid UTF-8
        raw(
            "invalid UTF-8 in a string",
            r,
            [&b"{\"comment\": \"caf"[..], b"\xE9", b"\"}"].concat(),
            400,
            "request body is not valid UTF-8: invalid byte 0xE9 at byte offset 16; send JSON encoded as UTF-8",
        ),
        raw(
            "body ends inside a UTF-8 character",
            r,
            [&b"{\"comment\": \"\xE2\x82"[..]].concat(),
            400,
            "request body is not valid UTF-8: it ends inside a multi-byte character at byte offset 13; send JSON encoded as UTF-8",
        ),
        // ---- not a batch
        raw(
            "scalar body",
            r,
            "42",
            400,
            "body must be a JSON object or an array of objects, not a number",
        ),
        raw(
            "string body",
            i,
            format!("\"{}\"", "x".repeat(10_000)),
            400,
            "body must be a JSON object or an array of objects, not a string",
        ),
        raw(
            "empty batch",
            r,
            "[]",
            400,
            "the batch is empty; send at least one item",
        ),
        Case {
            name: "item that is not an object",
            path: i,
            content_type: Some("application/json"),
            body: json!([interaction(), 7]).to_string().into_bytes(),
            status: 422,
            error: "1 of 2 item(s) are invalid; nothing was accepted. Fix the fields listed in `errors` and send the batch again".into(),
            errors: errs(&[(1, "", "item must be a JSON object, not a number")]),
        },
        // ---- wrong types
        invalid(
            "score as a string",
            r,
            with(rating(), "score", json!("5")),
            errs(&[(0, "score", "must be a whole number, not a string")]),
        ),
        invalid(
            "fractional score",
            r,
            with(rating(), "score", json!(4.5)),
            errs(&[(
                0,
                "score",
                "must be a whole number like 4 (no fraction or exponent), not 4.5",
            )]),
        ),
        invalid(
            "huge float score",
            r,
            with(rating(), "score", json!(1e300)),
            errs(&[(
                0,
                "score",
                "must be a whole number like 4 (no fraction or exponent), not 1e+300",
            )]),
        ),
        invalid(
            "score above i64",
            r,
            with(rating(), "score", json!(u64::MAX)),
            errs(&[(
                0,
                "score",
                "18446744073709551615 is out of range for csat: expected 1 to 5",
            )]),
        ),
        invalid(
            "score i64::MIN",
            r,
            with(rating(), "score", json!(i64::MIN)),
            errs(&[(
                0,
                "score",
                "-9223372036854775808 is out of range for csat: expected 1 to 5",
            )]),
        ),
        invalid(
            "occurred_at as epoch number",
            r,
            with(rating(), "occurred_at", json!(1_795_000_000_000i64)),
            errs(&[(0, "occurred_at", "must be a string, not a number")]),
        ),
        invalid(
            "id as a boolean",
            r,
            with(rating(), "rating_id", json!(true)),
            errs(&[(0, "rating_id", "must be a string, not a boolean")]),
        ),
        invalid(
            "optional field as an object",
            i,
            with(interaction(), "product", json!({"a": 1})),
            errs(&[(0, "product", "must be a string or null, not an object")]),
        ),
        invalid(
            "attributes as an array",
            i,
            with(interaction(), "attributes", json!(["a"])),
            errs(&[(
                0,
                "attributes",
                "must be an object of strings, not an array",
            )]),
        ),
        invalid(
            "attribute value a number",
            i,
            with(interaction(), "attributes", json!({"k": 1})),
            errs(&[(0, "attributes.k", "must be a string, not a number")]),
        ),
        // ---- missing and unknown fields
        invalid(
            "missing required field",
            r,
            without(rating(), "rating_id"),
            errs(&[(0, "rating_id", "is required")]),
        ),
        invalid(
            "required field null",
            r,
            with(rating(), "customer_ref", Value::Null),
            errs(&[(0, "customer_ref", "is required")]),
        ),
        invalid(
            "empty object",
            i,
            json!({}),
            errs(&[
                (0, "channel", "is required"),
                (0, "customer_ref", "is required"),
                (0, "interaction_id", "is required"),
                (0, "kind", "is required"),
                (0, "occurred_at", "is required"),
                (0, "service", "is required"),
            ]),
        ),
        invalid(
            "unknown field",
            i,
            with(interaction(), "colour", json!("red")),
            Box::new(|_| {
                vec![(
                    0,
                    "colour".into(),
                    format!("is not a known field; known fields are {INTERACTION_FIELDS}"),
                )]
            }),
        ),
        Case {
            name: "150 unknown fields: 100 listed",
            path: r,
            content_type: Some("application/json"),
            body: {
                let mut v = rating();
                for n in 0..150 {
                    v[format!("x{n:03}")] = json!(1);
                }
                v.to_string().into_bytes()
            },
            status: 422,
            error: "1 of 1 item(s) are invalid; nothing was accepted. Fix the fields listed in `errors` (the first 100 of 150 problems are listed) and send the batch again".into(),
            errors: Box::new(|_| {
                (0..100)
                    .map(|n| {
                        (
                            0,
                            format!("x{n:03}"),
                            format!("is not a known field; known fields are {RATING_FIELDS}"),
                        )
                    })
                    .collect()
            }),
        },
        invalid(
            "unknown field with a 1000-byte name",
            r,
            with(rating(), &"k".repeat(1000), json!(1)),
            Box::new(|_| {
                vec![(
                    0,
                    format!("{}…", "k".repeat(64)),
                    format!("is not a known field; known fields are {RATING_FIELDS}"),
                )]
            }),
        ),
        invalid(
            "missing kind and unknown channel",
            i,
            with(without(interaction(), "kind"), "channel", json!("pigeon")),
            errs(&[
                (0, "channel", "unknown channel \"pigeon\"; expected one of phone, chat, email, web, app, store, field, social, other"),
                (0, "kind", "is required"),
            ]),
        ),
        // ---- out of range
        invalid(
            "nps above range",
            r,
            with(with(rating(), "metric", json!("nps")), "score", json!(11)),
            errs(&[(0, "score", "11 is out of range for nps: expected 0 to 10")]),
        ),
        invalid(
            "ces below range",
            r,
            with(with(rating(), "metric", json!("ces")), "score", json!(0)),
            errs(&[(0, "score", "0 is out of range for ces: expected 1 to 7")]),
        ),
        invalid(
            "csat negative",
            r,
            with(rating(), "score", json!(-1)),
            errs(&[(0, "score", "-1 is out of range for csat: expected 1 to 5")]),
        ),
        invalid(
            "unknown metric",
            r,
            with(rating(), "metric", json!("ces2")),
            errs(&[(
                0,
                "metric",
                "unknown metric \"ces2\"; expected one of csat, nps, ces",
            )]),
        ),
        // ---- timestamps
        invalid(
            "timestamp one day in the future",
            r,
            with(
                rating(),
                "occurred_at",
                json!(feedback_events::json::format_ts(day_ahead)),
            ),
            Box::new(move |now| {
                vec![(
                    0,
                    "occurred_at".into(),
                    format!(
                        "lies {}s in the future; at most 300s of clock skew is accepted",
                        (day_ahead - now) / 1000
                    ),
                )]
            }),
        ),
        invalid(
            "timestamp in year 9999",
            r,
            with(rating(), "occurred_at", json!("9999-12-31T23:59:59Z")),
            Box::new(|now| {
                vec![(
                    0,
                    "occurred_at".into(),
                    format!(
                        "lies {}s in the future; at most 300s of clock skew is accepted",
                        (253_402_300_799_000 - now) / 1000
                    ),
                )]
            }),
        ),
        invalid(
            "timestamp 60 days old",
            r,
            with(rating(), "occurred_at", json!(ts(-60 * 86_400_000 - 3_600_000))),
            errs(&[(
                0,
                "occurred_at",
                "is 60 days old; at most 30 days are accepted",
            )]),
        ),
        invalid(
            "timestamp at the Unix epoch",
            r,
            with(rating(), "occurred_at", json!("1970-01-01T00:00:00Z")),
            Box::new(|now| {
                vec![(
                    0,
                    "occurred_at".into(),
                    format!(
                        "is {} days old; at most 30 days are accepted",
                        now / 86_400_000
                    ),
                )]
            }),
        ),
        invalid(
            "timestamp not RFC 3339",
            r,
            with(rating(), "occurred_at", json!("28/11/2026")),
            errs(&[(
                0,
                "occurred_at",
                "is not an RFC 3339 timestamp like 2026-11-28T10:00:00.123Z (premature end of input)",
            )]),
        ),
        invalid(
            "timestamp without a time zone",
            r,
            with(rating(), "occurred_at", json!("2026-11-28T10:00:00")),
            errs(&[(
                0,
                "occurred_at",
                "is not an RFC 3339 timestamp like 2026-11-28T10:00:00.123Z (premature end of input)",
            )]),
        ),
        // ---- strings: control characters, sizes
        invalid(
            "control character in an id",
            i,
            with(interaction(), "customer_ref", json!("c\u{0007}1")),
            errs(&[(0, "customer_ref", "contains control characters")]),
        ),
        invalid(
            "NUL in a string",
            i,
            with(interaction(), "service", json!("checkout\u{0000}api")),
            errs(&[(0, "service", "contains control characters")]),
        ),
        invalid(
            "escape sequence in a comment",
            r,
            with(rating(), "comment", json!("red \u{001b}[31m text")),
            errs(&[(0, "comment", "contains control characters")]),
        ),
        invalid(
            "empty id",
            r,
            with(rating(), "rating_id", json!("")),
            errs(&[(0, "rating_id", "must not be empty")]),
        ),
        invalid(
            "comment too long",
            r,
            with(rating(), "comment", json!("x".repeat(4001))),
            errs(&[(0, "comment", "is 4001 bytes long; at most 4000 allowed")]),
        ),
        invalid(
            "id too long",
            i,
            with(interaction(), "interaction_id", json!("i".repeat(129))),
            errs(&[(
                0,
                "interaction_id",
                "is 129 bytes long; at most 128 allowed",
            )]),
        ),
        invalid(
            "string of multi-byte characters too long",
            i,
            with(interaction(), "kind", json!("ü".repeat(129))),
            errs(&[(0, "kind", "is 258 bytes long; at most 256 allowed")]),
        ),
        invalid(
            "too many attributes",
            i,
            with(
                interaction(),
                "attributes",
                Value::Object((0..33).map(|n| (format!("k{n}"), json!("v"))).collect()),
            ),
            errs(&[(0, "attributes", "has 33 entries; at most 32 allowed")]),
        ),
        invalid(
            "attribute key too long",
            i,
            with(interaction(), "attributes", json!({"k".repeat(65): "v"})),
            Box::new(|_| {
                vec![(
                    0,
                    format!("attributes.{}", "k".repeat(53)) + "…",
                    "is 65 bytes long; at most 64 allowed".into(),
                )]
            }),
        ),
        // ---- batches
        Case {
            name: "one bad item rejects the whole batch",
            path: r,
            content_type: Some("application/json"),
            body: json!([
                rating(),
                with(with(rating(), "rating_id", json!("r-2")), "score", json!(9)),
                with(rating(), "rating_id", json!("r-3"))
            ])
            .to_string()
            .into_bytes(),
            status: 422,
            error: "1 of 3 item(s) are invalid; nothing was accepted. Fix the fields listed in `errors` and send the batch again".into(),
            errors: errs(&[(1, "score", "9 is out of range for csat: expected 1 to 5")]),
        },
        Case {
            name: "duplicate rating ids in one batch",
            path: r,
            content_type: Some("application/json"),
            body: json!([
                rating(),
                with(rating(), "rating_id", json!("r-2")),
                rating(),
                with(rating(), "rating_id", json!("r-2")),
            ])
            .to_string()
            .into_bytes(),
            status: 422,
            error: "2 of 4 item(s) are invalid; nothing was accepted. Fix the fields listed in `errors` and send the batch again".into(),
            errors: errs(&[
                (2, "rating_id", "\"r-1\" is also the rating_id of item 0; every item of a batch needs its own id"),
                (3, "rating_id", "\"r-2\" is also the rating_id of item 1; every item of a batch needs its own id"),
            ]),
        },
        Case {
            name: "duplicate interaction ids in one batch",
            path: i,
            content_type: Some("application/json"),
            body: json!([interaction(), with(interaction(), "kind", json!("refund"))])
                .to_string()
                .into_bytes(),
            status: 422,
            error: "1 of 2 item(s) are invalid; nothing was accepted. Fix the fields listed in `errors` and send the batch again".into(),
            errors: errs(&[(1, "interaction_id", "\"i-1\" is also the interaction_id of item 0; every item of a batch needs its own id")]),
        },
    ]
}

/// With FEEDBACK_CORPUS_TABLE=<file>, appends the corpus (as verified above) to <file> as
/// Markdown rows: case, input, exact outcome. The closing note's table is made this way.
fn corpus_table(all: &[Case]) {
    let Ok(path) = std::env::var("FEEDBACK_CORPUS_TABLE") else {
        return;
    };
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = String::new();
    let now = chrono::Utc::now().timestamp_millis();
    for c in all {
        let body = String::from_utf8_lossy(&c.body);
        let input = if body.chars().count() > 70 {
            format!(
                "{}… ({} bytes)",
                body.chars().take(70).collect::<String>(),
                c.body.len()
            )
        } else {
            body.into_owned()
        };
        let ct = match c.content_type {
            Some("application/json") => String::new(),
            Some(t) => format!("Content-Type {t}: "),
            None => "no Content-Type: ".into(),
        };
        let mut outcome = format!("{} `{}`", c.status, c.error);
        for (i, f, r) in (c.errors)(now).iter().take(3) {
            outcome.push_str(&format!("; [{i}] `{f}`: {r}"));
        }
        let n = (c.errors)(now).len();
        if n > 3 {
            outcome.push_str(&format!("; … ({n} errors)"));
        }
        out.push_str(&format!(
            "| {} | {} `{}` | {} |\n",
            c.name,
            c.path,
            cell(&format!("{ct}{input}")),
            cell(&outcome)
        ));
    }
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(out.as_bytes())
        .unwrap();
}

/// Starts a collector that accepts requests without an API key (see PREAMBLE: the access
/// work makes keys mandatory unless this is set) and waits until it answers.
pub fn start_anonymous_collector(env: &mut Env, extra: &[&str]) {
    let mut args = vec!["collector"];
    args.extend_from_slice(extra);
    env.spawn_with(&args, &[("FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS", "1")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = format!("127.0.0.1:{}", env.collector_port);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = write!(
                s,
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "collector did not answer on {addr} within 30s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_exact_status_and_error_and_nothing_reaches_kafka() {
    let mut env = Env::new("bad");
    env.run(&["topics", "--partitions", "1"]);
    start_anonymous_collector(
        &mut env,
        &["--max-body-bytes", "65536", "--max-batch-items", "10"],
    );
    let client = reqwest::Client::new();
    let all = cases();
    assert!(all.len() >= 61, "the corpus has {} cases", all.len());
    let mut failures = Vec::new();
    for c in &all {
        let mut req = client
            .post(format!("{}{}", env.collector_url(), c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let before = chrono::Utc::now().timestamp_millis();
        let resp = req.send().await.expect("collector reachable");
        let after = chrono::Utc::now().timestamp_millis();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let error = body["error"].as_str().unwrap_or("<no error>");
        let got: Vec<(u64, String, String)> = body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["index"].as_u64().unwrap(),
                            e["field"].as_str().unwrap().to_string(),
                            e["reason"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut sorted = got.clone();
        sorted.sort();
        // The server's clock lies between `before` and `after`: accept what either gives.
        let fits = |now: i64| {
            let mut want = (c.errors)(now);
            want.sort();
            want == sorted
        };
        let keys_ok = body.as_object().is_some_and(|o| {
            o.keys().all(|k| k == "error" || k == "errors")
                && (status == 422) == o.contains_key("errors")
        });
        if status != c.status
            || error != c.error
            || !(fits(before) || fits(after))
            || !ctype.starts_with("application/json")
            || !keys_ok
        {
            let mut want = (c.errors)(before);
            want.sort();
            failures.push(format!(
                "{}: got {status} {error:?} {sorted:?}; want {} {:?} {want:?}",
                c.name, c.status, c.error
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} case(s) failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    corpus_table(&all);
    env.assert_alive();
    // Nothing of any of them reached Kafka...
    assert_eq!(messages(&env.topic("interactions")), 0);
    assert_eq!(messages(&env.topic("ratings")), 0);
    // ...while a valid request does (the check above can see messages).
    let r = client
        .post(format!("{}/v1/ratings", env.collector_url()))
        .json(&json!([rating()]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "ids": ["r-1"]})
    );
    assert_eq!(messages(&env.topic("ratings")), 1);
}

/// Messages in the (single-partition) `topic`, asking again while a freshly created topic
/// has no leader yet (seen under load: NotLeaderForPartition); at most 30 s.
fn messages(topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crate::harness::brokers())
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
            Ok((lo, hi)) => return hi - lo,
            Err(e) => {
                assert!(Instant::now() < deadline, "{topic}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Reads one HTTP/1.1 response (status line, headers, body of Content-Length bytes).
fn read_response(s: &mut std::net::TcpStream) -> (u16, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("response");
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                let status = text[9..12].parse().unwrap();
                let body = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                return (status, body);
            }
        }
    }
}

/// Metric line value from the collector's /metrics, 0 when absent.
async fn metric(env: &Env, line_prefix: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", env.collector_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_abandoned_uploads_get_408_or_nothing_and_wedge_nothing() {
    let mut env = Env::new("slowup");
    env.run(&["topics", "--partitions", "1"]);
    start_anonymous_collector(
        &mut env,
        &["--body-timeout-secs", "2", "--header-timeout-secs", "2"],
    );
    let addr = format!("127.0.0.1:{}", env.collector_port);
    let body = json!([rating()]).to_string();
    let head = |len: usize| {
        format!(
            "POST /v1/ratings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
    };

    // Slow: half the body, then silence. The collector answers 408 once its body timeout
    // passed, naming what it received.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(head(body.len()).as_bytes()).unwrap();
    slow.write_all(&body.as_bytes()[..20]).unwrap();
    // Abandoned: half a body and the connection closed.
    let mut gone = std::net::TcpStream::connect(&addr).unwrap();
    gone.write_all(head(body.len()).as_bytes()).unwrap();
    gone.write_all(&body.as_bytes()[..20]).unwrap();
    drop(gone);
    // Slow headers: half a request line's headers, then silence; and a connection that
    // never says anything. The collector closes both (no answer: there is no request).
    let mut slow_head = std::net::TcpStream::connect(&addr).unwrap();
    slow_head
        .write_all(b"POST /v1/ratings HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let silent = std::net::TcpStream::connect(&addr).unwrap();
    // Meanwhile, a valid upload goes through: none of them holds the collector.
    let client = reqwest::Client::new();
    let ok = client
        .post(format!("{}/v1/ratings", env.collector_url()))
        .header("content-type", "application/json")
        .body(json!([with(rating(), "rating_id", json!("r-ok"))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 202);

    let (status, answer) = tokio::task::spawn_blocking(move || read_response(&mut slow))
        .await
        .unwrap();
    assert_eq!(
        (status, answer),
        (
            408,
            json!({"error": "the request body did not arrive within 2s (20 bytes received); send the whole body without pausing, or smaller batches"})
        )
    );
    for (name, mut c) in [("slow headers", slow_head), ("silent", silent)] {
        let closed = tokio::task::spawn_blocking(move || {
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).map(|_| buf)
        })
        .await
        .unwrap();
        match closed {
            Ok(bytes) => assert!(bytes.is_empty(), "{name}: answered {bytes:?}"),
            // A reset is a close too; a timeout (WouldBlock/TimedOut) is not.
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "{name}: not closed within 30 s: {e}"
            ),
        }
    }
    // The abandoned upload was counted as a bad request (nobody was there to read it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &env,
        "feedback_collector_requests_total{endpoint=\"/v1/ratings\",status=\"400\"}",
    )
    .await
        < 1
    {
        assert!(Instant::now() < deadline, "abandoned upload never counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (status, want) in [("400", 1), ("408", 1), ("202", 1)] {
        assert_eq!(
            metric(
                &env,
                &format!(
                    "feedback_collector_requests_total{{endpoint=\"/v1/ratings\",status=\"{status}\"}}"
                )
            )
            .await,
            want,
            "status {status}"
        );
    }
    env.assert_alive();
    // Only the valid rating reached Kafka.
    let msgs = crate::harness::read_committed(&env.topic("ratings"));
    assert_eq!(msgs.len(), 1);
    use rdkafka::Message;
    match feedback_events::decode(msgs[0].payload().unwrap()).unwrap() {
        feedback_events::codec::Decoded::Rating(r) => assert_eq!(r.rating_id, "r-ok"),
        other => panic!("{other:?}"),
    }
}

/// Peak resident memory of process `pid` (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

/// Request bytes in flight are bounded (issue 19): a request that would pass
/// --max-inflight-bytes gets 503 with Retry-After at once, before its body is read; and
/// with 128 clients uploading 1 MiB bodies as fast as they can, the collector's peak memory
/// stays below 64 MiB (without the bound their bodies alone would be 128 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_over_the_inflight_bound_get_503_at_once_and_memory_stays_bounded() {
    const MIB: usize = 1024 * 1024;
    let mut env = Env::new("inflight");
    env.run(&["topics", "--partitions", "1"]);
    start_anonymous_collector(
        &mut env,
        &[
            "--max-inflight-bytes",
            &(8 * MIB).to_string(),
            "--max-body-bytes",
            &MIB.to_string(),
            "--body-timeout-secs",
            "30",
        ],
    );
    let pid = env.last_pid();
    let addr = format!("127.0.0.1:{}", env.collector_port);
    // Eight uploads that announce 1 MiB and send one byte of it: together they hold the bound.
    let holders: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "POST /v1/ratings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {MIB}\r\n\r\n["
            )
            .unwrap();
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let small = json!([with(rating(), "rating_id", json!("r-inflight"))]).to_string();
    let t = Instant::now();
    let r = client
        .post(format!("{}/v1/ratings", env.collector_url()))
        .header("content-type", "application/json")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    let took = t.elapsed();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "the collector holds its most request bytes in flight (8388608 bytes, --max-inflight-bytes); nothing was accepted; send the batch again in 1s"})
    );
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    assert_eq!(
        metric(
            &env,
            "feedback_collector_refused_total{reason=\"overloaded\"}"
        )
        .await,
        1
    );
    // The holders go away: their bytes are free again and the same request is taken.
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .post(format!("{}/v1/ratings", env.collector_url()))
            .header("content-type", "application/json")
            .body(small.clone())
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 202 {
            break;
        }
        assert_eq!(r.status().as_u16(), 503);
        assert!(
            Instant::now() < deadline,
            "the held bytes were not given back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 128 clients, each uploading 1 MiB bodies (not JSON: read whole, then 400) for 5 s.
    let before = peak_rss(pid);
    let body = std::sync::Arc::new(vec![b'x'; MIB]);
    let url = format!("{}/v1/ratings", env.collector_url());
    let until = Instant::now() + Duration::from_secs(5);
    let tasks: Vec<_> = (0..128)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let mut seen = std::collections::BTreeMap::<u16, u64>::new();
                while Instant::now() < until {
                    let status = match client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body((*body).clone())
                        .send()
                        .await
                    {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    *seen.entry(status).or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let mut seen = std::collections::BTreeMap::<u16, u64>::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *seen.entry(k).or_default() += v;
        }
    }
    let peak = peak_rss(pid);
    eprintln!(
        "inflight: answers {seen:?}; collector peak RSS {:.1} MiB before the load, {:.1} MiB after",
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    assert!(seen.get(&400).copied().unwrap_or(0) > 0, "{seen:?}");
    // Refused uploads see the 503, or a reset when the collector closes the connection
    // without reading the body they are still sending (it never buffers what it refuses).
    assert!(
        metric(
            &env,
            "feedback_collector_refused_total{reason=\"overloaded\"}"
        )
        .await
            > 1,
        "{seen:?}"
    );
    assert!(
        seen.keys().all(|s| *s == 400 || *s == 503 || *s == 0),
        "{seen:?}"
    );
    assert!(
        peak < 64 * MIB as u64,
        "peak RSS {:.1} MiB",
        peak as f64 / MIB as f64
    );
    env.assert_alive();
}

/// SIGTERM under load (issue 19): the collector answers on for a moment with `Connection:
/// close`, stops accepting, finishes what it holds and exits 0 within its drain deadline.
/// Sixteen keep-alive clients post until they find it gone: every request gets an answer
/// (202 or 503) or a refused connection, never a reset or a dropped request, and every
/// event answered 202 is in Kafka exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_request_and_every_202_is_in_kafka_once() {
    let mut env = Env::new("drain");
    env.run(&["topics", "--partitions", "3"]);
    start_anonymous_collector(&mut env, &[]);
    let url = format!("{}/v1/ratings", env.collector_url());
    let stop_at = Instant::now() + Duration::from_secs(20);
    let tasks: Vec<_> = (0..16)
        .map(|c| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut accepted, mut refused, mut other) = (Vec::new(), 0u64, Vec::new());
                for n in 0.. {
                    if Instant::now() > stop_at {
                        other.push("still answering 20 s later".to_string());
                        break;
                    }
                    let ids: Vec<String> = (0..10).map(|i| format!("d{c}-{n}-{i}")).collect();
                    let batch: Vec<Value> = ids
                        .iter()
                        .map(|id| {
                            let r = with(rating(), "rating_id", json!(id));
                            without(r, "interaction_id")
                        })
                        .collect();
                    match client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(Value::Array(batch).to_string())
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 202 => accepted.extend(ids),
                        Ok(r) if r.status().as_u16() == 503 => refused += 1,
                        Ok(r) => other.push(format!("answered {}", r.status())),
                        // The collector is gone: the end of this client's run.
                        Err(e) if e.is_connect() => break,
                        Err(e) => {
                            other.push(format!("{e:?}"));
                            break;
                        }
                    }
                }
                (accepted, refused, other)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = Instant::now();
    let status = tokio::task::block_in_place(|| env.terminate_last(Duration::from_secs(10)));
    let took = t.elapsed();
    let (mut accepted, mut refused, mut other) = (Vec::new(), 0, Vec::new());
    for task in tasks {
        let (a, r, o) = task.await.unwrap();
        accepted.extend(a);
        refused += r;
        other.extend(o);
    }
    eprintln!(
        "drain: exit {status} {took:?} after SIGTERM; {} events answered 202, {refused} requests 503, other {other:?}",
        accepted.len()
    );
    assert!(status.success(), "{status}");
    assert_eq!(other, Vec::<String>::new());
    assert!(accepted.len() > 1000, "{}", accepted.len());
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for m in crate::harness::read_committed(&env.topic("ratings")) {
        use rdkafka::Message;
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        *seen.entry(key).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "in Kafka more than once: {doubled:?}");
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "answered 202, not in Kafka: {missing:?}"
    );
}
