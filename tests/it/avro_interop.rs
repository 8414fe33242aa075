//! Messages taken from the topics decode with another language's standard Avro library
//! (Python fastavro), using nothing but `schemas/`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::harness::{brokers, repo_root, unique, Env};

fn take(topic: &str, partitions: i32, want: usize) -> Vec<Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("interop"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} messages on {topic} after 60s",
            out.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            out.push(m.unwrap().payload().unwrap().to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastavro_decodes_every_topic_with_only_the_schemas() {
    let mut env = Env::new("interop");
    env.run(&["topics", "--partitions", "1"]);
    env.start_collector(&[]);
    env.spawn(&["attributor"]);
    let t0 = chrono::Utc::now().timestamp_millis() - 60_000;
    let client = reqwest::Client::new();
    let base = env.collector_url();
    // The rating comes first: the attributor must park it until its interaction arrives.
    let ratings = json!([
        {"rating_id": "r-ü", "occurred_at": feedback_events::json::format_ts(t0 + 5), "interaction_id": "i-1", "metric": "nps",
         "score": 9, "comment": "schnell und freundlich \u{1F600}", "service": "survey", "channel": "email", "customer_ref": "c-1",
         "region": "eu-west", "attributes": {"wave": "3"}},
        {"rating_id": "r-2", "occurred_at": feedback_events::json::format_ts(t0 + 6), "metric": "ces", "score": 2,
         "service": "nps-relationship", "channel": "app", "customer_ref": "c-2"}
    ]);
    let r = client
        .post(format!("{base}/v1/ratings"))
        .json(&ratings)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let interactions = json!([
        {"interaction_id": "i-1", "occurred_at": feedback_events::json::format_ts(t0), "service": "checkout-api", "channel": "web",
         "kind": "order", "customer_ref": "c-1", "product": "payments-card", "agent_id": null, "attributes": {"plan": "plus", "ключ": "значение"}},
        {"interaction_id": "i-2", "occurred_at": feedback_events::json::format_ts(t0 + 1), "service": "helpdesk", "channel": "phone",
         "kind": "call", "customer_ref": "c-3", "team": "billing"}
    ]);
    let r = client
        .post(format!("{base}/v1/interactions"))
        .json(&interactions)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    let dir = std::env::temp_dir().join(unique("avro"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (topic, n) in [("interactions", 2), ("ratings", 2), ("attributed", 4)] {
        for (k, payload) in take(&env.topic(topic), 1, n).into_iter().enumerate() {
            let f = dir.join(format!("{topic}-{k}.bin"));
            std::fs::write(&f, payload).unwrap();
            files.push(f);
        }
    }
    let out = std::process::Command::new("python3")
        .arg(repo_root().join("tests/avro_decode.py"))
        .arg(repo_root().join("schemas"))
        .args(&files)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "fastavro failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: BTreeMap<String, Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["file"].as_str().unwrap().to_string(), v)
        })
        .collect();
    assert_eq!(decoded.len(), 8);
    let by_id = |schema: &str, id_field: &str, id: &str| -> Value {
        decoded
            .values()
            .find(|v| v["schema"] == schema && v["record"][id_field] == id)
            .unwrap_or_else(|| panic!("no {schema} record with {id_field} {id}"))["record"]
            .clone()
    };
    let i1 = by_id("interaction", "interaction_id", "i-1");
    assert_eq!(i1["occurred_at"], json!(t0));
    assert_eq!(i1["channel"], "web");
    assert_eq!(i1["product"], "payments-card");
    assert_eq!(i1["agent_id"], Value::Null);
    assert_eq!(
        i1["attributes"],
        json!({"plan": "plus", "ключ": "значение"})
    );
    let r1 = by_id("rating", "rating_id", "r-ü");
    assert_eq!(r1["score"], 9);
    assert_eq!(r1["metric"], "nps");
    assert_eq!(r1["comment"], "schnell und freundlich \u{1F600}");
    assert_eq!(r1["occurred_at"], json!(t0 + 5));
    // Attributed events: the union member is the original event.
    let attributed: Vec<&Value> = decoded
        .values()
        .filter(|v| v["schema"] == "attributed")
        .map(|v| &v["record"])
        .collect();
    let find = |id: &str| {
        attributed
            .iter()
            .find(|a| {
                a["event"]["rating_id"] == id
                    || a["event"]["interaction_id"] == id && a["event"].get("rating_id").is_none()
            })
            .unwrap_or_else(|| panic!("no attributed event for {id}"))
    };
    let a = find("r-ü");
    assert_eq!(
        (
            a["team"].as_str(),
            a["attribution"].as_str(),
            a["interaction_kind"].as_str()
        ),
        (Some("payments"), Some("interaction"), Some("order"))
    );
    assert_eq!(a["claim"], json!({"file": "payments.toml", "index": 0}));
    assert_eq!(a["source"]["topic"], env.topic("ratings"));
    let a = find("i-2");
    assert_eq!(
        (a["team"].as_str(), a["attribution"].as_str()),
        (Some("billing"), Some("explicit"))
    );
    let a = find("r-2");
    assert_eq!(
        (a["team"].as_str(), a["attribution"].as_str()),
        (Some("unowned"), Some("unowned")),
        "a CES rating is not claimed by loyalty's NPS claim"
    );
    assert!(a["ownership_version"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let _ = std::fs::remove_dir_all(&dir);
}
