//! `feedback rollups rebuild`: raw rows landed without rollups (an installation upgraded
//! from before migration 7) are counted exactly, also when the rebuild runs twice and while
//! the sink lands new events into the same days.

use std::time::Duration;

use feedback_clickhouse::{InteractionRow, RatingRow, Row};

use crate::harness::Env;
use crate::sink_support::{
    check_end_state, kill, produce, producer, spawn_sink, wait_rows, workload,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_counts_raw_rows_exactly_while_the_sink_lands() {
    let env = Env::new("rollups");
    env.prepare();
    let ch = env.clickhouse();
    let topic = env.topic("attributed");
    let now = chrono::Utc::now().timestamp_millis();
    let events = workload(77, &env.database, 12_000, now);
    let (history, live) = events.split_at(6_000);

    // The history: raw rows as an older sink wrote them, without Kafka coordinates and
    // without rollups.
    let (mut ratings, mut interactions): (Vec<RatingRow>, Vec<InteractionRow>) = (vec![], vec![]);
    for e in history {
        match Row::from(e.clone()) {
            Row::Rating(mut r) => {
                (r.kafka_topic, r.kafka_partition, r.kafka_offset) = (String::new(), -1, -1);
                ratings.push(r);
            }
            Row::Interaction(mut i) => {
                (i.kafka_topic, i.kafka_partition, i.kafka_offset) = (String::new(), -1, -1);
                interactions.push(i);
            }
        }
    }
    ch.insert("ratings", &ratings).await.unwrap();
    ch.insert("interactions", &interactions).await.unwrap();
    let status = env.run(&["rollups", "status"]);
    assert!(
        status.contains("rollups: 0 ratings, 0 interactions")
            && status.contains("run `feedback rollups rebuild`"),
        "{status}"
    );

    // The live part flows through a running sink while the rollups are rebuilt twice.
    let mut sink = spawn_sink(&env, &[]);
    let p = producer();
    let feed = {
        let live = live.to_vec();
        let topic = topic.clone();
        tokio::spawn(async move {
            for chunk in live.chunks(300) {
                produce(&p, &topic, chunk).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = env.run(&["rollups", "rebuild"]);
    assert!(first.contains("rebuilt"), "{first}");
    assert!(
        !first.contains(": 0 correction row(s)"),
        "the first rebuild counted the history: {first}"
    );
    // A second run while the sink still lands: the sink's deltas above the marks are not
    // the rebuild's business, and everything below them is exact already.
    let second = env.run(&["rollups", "rebuild"]);
    assert!(
        second.contains(": 0 correction row(s) inserted"),
        "{second}"
    );
    feed.await.unwrap();
    wait_rows(&ch, events.len() as u64, 180).await;
    let third = env.run(&["rollups", "rebuild"]);
    assert!(third.contains(": 0 correction row(s) inserted"), "{third}");
    kill(&mut sink);

    // Exact against the generated events: every raw row once, every minute rollup equal
    // to the events' sums, every rollup equal to its recomputation from the raw rows.
    check_end_state(&ch, &events).await;
    let status = env.run(&["rollups", "status"]);
    assert!(
        status.contains("the rollups count every raw row"),
        "{status}"
    );
}
