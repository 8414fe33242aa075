//! Bad messages on Kafka never stall a partition: they are dead-lettered with their reason
//! (topic and ClickHouse), and the valid messages around them flow through.

use std::time::{Duration, Instant};

use feedback_events::Encoded;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::harness::{brokers, Env};

#[derive(Debug, clickhouse::Row, Deserialize, PartialEq)]
struct Dead {
    component: String,
    reason: String,
    source_topic: String,
    source_offset: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Id {
    id: String,
}

fn interaction(id: &str) -> feedback_events::Interaction {
    feedback_events::Interaction {
        interaction_id: id.into(),
        occurred_at: chrono::Utc::now().timestamp_millis(),
        service: "shop-web".into(),
        channel: feedback_events::Channel::Web,
        kind: "web_session".into(),
        customer_ref: "c".into(),
        product: None,
        region: None,
        agent_id: None,
        team: None,
        attributes: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_partition_moves_on() {
    let mut env = Env::new("poison");
    env.run(&["topics", "--partitions", "1"]);
    env.run(&["migrate"]);
    env.spawn(&["attributor"]);
    env.spawn(&["sink", "--flush-ms", "200"]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let topic = env.topic("interactions");
    let mut truncated = interaction("cut").encode();
    truncated.truncate(truncated.len() - 3);
    let rating_on_wrong_topic = feedback_events::Rating {
        rating_id: "r".into(),
        occurred_at: 0,
        interaction_id: None,
        metric: feedback_events::Metric::Csat,
        score: 3,
        comment: None,
        service: "s".into(),
        channel: feedback_events::Channel::Web,
        customer_ref: "c".into(),
        product: None,
        region: None,
        attributes: Default::default(),
    }
    .encode();
    let mut unknown_fp = interaction("fp").encode();
    unknown_fp[3] ^= 0x5a;
    // offset: payload
    let payloads: Vec<Vec<u8>> = vec![
        interaction("ok-1").encode(), // 0
        b"hello, not avro".to_vec(),  // 1 bad_marker
        truncated,                    // 2 truncated
        Vec::new(),                   // 3 too_short
        unknown_fp,                   // 4 unknown_fingerprint
        rating_on_wrong_topic,        // 5 wrong_schema
        interaction("ok-2").encode(), // 6
    ];
    for p in &payloads {
        producer
            .send(
                FutureRecord::to(&topic).key("k").payload(p),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let ch = env.clickhouse();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok: Vec<Id> = ch
            .fetch("SELECT interaction_id AS id FROM {db}.interactions ORDER BY id")
            .await
            .unwrap();
        let dead: Vec<Dead> = ch
            .fetch("SELECT component, reason, source_topic, source_offset FROM {db}.dead_letters ORDER BY source_offset")
            .await
            .unwrap();
        if ok.len() == 2 && dead.len() == 5 {
            assert_eq!(
                ok.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
                vec!["ok-1", "ok-2"]
            );
            let want: Vec<Dead> = [
                (1, "bad_marker"),
                (2, "truncated"),
                (3, "too_short"),
                (4, "unknown_fingerprint"),
                (5, "wrong_schema"),
            ]
            .into_iter()
            .map(|(o, r)| Dead {
                component: "attributor".into(),
                reason: r.into(),
                source_topic: topic.clone(),
                source_offset: o,
            })
            .collect();
            assert_eq!(dead, want);
            break;
        }
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "after 60s: {} good rows, {} dead letters",
            ok.len(),
            dead.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The attributor writes transactionally: count what readers see, not offsets (commit
    // markers take offsets too).
    assert_eq!(
        crate::harness::read_committed(&env.topic("deadletter")).len(),
        5
    );
}
