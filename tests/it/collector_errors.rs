//! Every bad input at the collector: exact status, an error body that names the problem,
//! and nothing produced to Kafka.

use serde_json::{json, Value};

use crate::harness::Env;

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

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// Substring of `error`.
    error: &'static str,
    /// Expected (index, field) of the item errors, for 422s.
    fields: Vec<(u64, &'static str)>,
}

fn json_case(
    name: &'static str,
    path: &'static str,
    body: Value,
    status: u16,
    error: &'static str,
    fields: Vec<(u64, &'static str)>,
) -> Case {
    Case {
        name,
        path,
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status,
        error,
        fields,
    }
}

fn cases() -> Vec<Case> {
    let r = "/v1/ratings";
    let i = "/v1/interactions";
    let invalid = "invalid; nothing was accepted";
    vec![
        Case {
            name: "malformed JSON",
            path: r,
            content_type: Some("application/json"),
            body: b"{\"rating_id\": ".to_vec(),
            status: 400,
            error: "malformed JSON at line 1",
            fields: vec![],
        },
        Case {
            name: "wrong content type",
            path: r,
            content_type: Some("text/plain"),
            body: rating().to_string().into_bytes(),
            status: 415,
            error: "Content-Type must be application/json, not \"text/plain\"",
            fields: vec![],
        },
        Case {
            name: "no content type",
            path: i,
            content_type: None,
            body: interaction().to_string().into_bytes(),
            status: 415,
            error: "Content-Type must be application/json",
            fields: vec![],
        },
        Case {
            name: "oversized body",
            path: r,
            content_type: Some("application/json"),
            body: format!("[{}]", vec![rating().to_string(); 400].join(",")).into_bytes(),
            status: 413,
            error: "request body exceeds 65536 bytes",
            fields: vec![],
        },
        json_case(
            "too many items",
            r,
            Value::Array(vec![json!({}); 1001]),
            413,
            "at most 1000 are accepted",
            vec![],
        ),
        json_case(
            "empty batch",
            r,
            json!([]),
            400,
            "the batch is empty",
            vec![],
        ),
        json_case(
            "scalar body",
            r,
            json!(42),
            400,
            "body must be a JSON object or an array",
            vec![],
        ),
        json_case(
            "one bad item rejects the batch",
            r,
            json!([
                rating(),
                with(with(rating(), "rating_id", json!("r-2")), "score", json!(9)),
                with(rating(), "rating_id", json!("r-3"))
            ]),
            422,
            "1 of 3 item(s) are invalid",
            vec![(1, "score")],
        ),
        json_case(
            "missing required field",
            r,
            without(rating(), "rating_id"),
            422,
            invalid,
            vec![(0, "rating_id")],
        ),
        json_case(
            "nps out of range",
            r,
            with(with(rating(), "metric", json!("nps")), "score", json!(11)),
            422,
            invalid,
            vec![(0, "score")],
        ),
        json_case(
            "ces below range",
            r,
            with(with(rating(), "metric", json!("ces")), "score", json!(0)),
            422,
            invalid,
            vec![(0, "score")],
        ),
        json_case(
            "unknown metric",
            r,
            with(rating(), "metric", json!("ces2")),
            422,
            invalid,
            vec![(0, "metric")],
        ),
        json_case(
            "unknown channel",
            r,
            with(rating(), "channel", json!("fax")),
            422,
            invalid,
            vec![(0, "channel")],
        ),
        json_case(
            "timestamp in the future",
            r,
            with(rating(), "occurred_at", json!(ts(86_400_000))),
            422,
            invalid,
            vec![(0, "occurred_at")],
        ),
        json_case(
            "timestamp too old",
            r,
            with(rating(), "occurred_at", json!(ts(-60 * 86_400_000))),
            422,
            invalid,
            vec![(0, "occurred_at")],
        ),
        json_case(
            "timestamp not RFC 3339",
            r,
            with(rating(), "occurred_at", json!("28/11/2026")),
            422,
            invalid,
            vec![(0, "occurred_at")],
        ),
        json_case(
            "comment too long",
            r,
            with(rating(), "comment", json!("x".repeat(4001))),
            422,
            invalid,
            vec![(0, "comment")],
        ),
        json_case(
            "id too long",
            i,
            with(interaction(), "interaction_id", json!("i".repeat(129))),
            422,
            invalid,
            vec![(0, "interaction_id")],
        ),
        json_case(
            "unknown field",
            i,
            with(interaction(), "colour", json!("red")),
            422,
            invalid,
            vec![(0, "colour")],
        ),
        json_case(
            "score of wrong type",
            r,
            with(rating(), "score", json!("5")),
            422,
            invalid,
            vec![(0, "score")],
        ),
        json_case(
            "fractional score",
            r,
            with(rating(), "score", json!(4.5)),
            422,
            invalid,
            vec![(0, "score")],
        ),
        json_case(
            "interaction missing kind and bad channel",
            i,
            with(without(interaction(), "kind"), "channel", json!("pigeon")),
            422,
            invalid,
            vec![(0, "channel"), (0, "kind")],
        ),
        json_case(
            "item that is not an object",
            i,
            json!([interaction(), 7]),
            422,
            "1 of 2 item(s) are invalid",
            vec![(1, "")],
        ),
        json_case(
            "control characters in an id",
            i,
            with(interaction(), "customer_ref", json!("c\u{0007}1")),
            422,
            invalid,
            vec![(0, "customer_ref")],
        ),
        json_case(
            "too many attributes",
            i,
            with(
                interaction(),
                "attributes",
                Value::Object((0..33).map(|n| (format!("k{n}"), json!("v"))).collect()),
            ),
            422,
            invalid,
            vec![(0, "attributes")],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_status_and_error_and_nothing_reaches_kafka() {
    let mut env = Env::new("bad");
    env.run(&["topics", "--partitions", "1"]);
    env.start_collector(&["--max-body-bytes", "65536"]);
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    for c in cases() {
        let mut req = client
            .post(format!("{}{}", env.collector_url(), c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("collector reachable");
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let error = body["error"].as_str().unwrap_or("");
        let fields: Vec<(u64, String)> = body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["index"].as_u64().unwrap(),
                            e["field"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut sorted = fields.clone();
        sorted.sort();
        let want: Vec<(u64, String)> = c.fields.iter().map(|(i, f)| (*i, f.to_string())).collect();
        let reasons_ok = body["errors"].as_array().is_none_or(|a| {
            a.iter()
                .all(|e| !e["reason"].as_str().unwrap_or("").is_empty())
        });
        if status != c.status
            || !error.contains(c.error)
            || sorted != want
            || !ctype.starts_with("application/json")
            || !reasons_ok
        {
            failures.push(format!(
                "{}: got {status} {body} ({ctype}); want {} containing {:?} with fields {want:?}",
                c.name, c.status, c.error
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing of any of them reached Kafka...
    assert_eq!(env.topic_messages(&env.topic("interactions")), 0);
    assert_eq!(env.topic_messages(&env.topic("ratings")), 0);
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
    assert_eq!(env.topic_messages(&env.topic("ratings")), 1);
}
