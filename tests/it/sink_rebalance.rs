//! Two sink instances in one group while a known workload flows: a second instance joins
//! mid-stream (partitions move from a live owner), then the first is SIGKILLed (its
//! partitions move after the session timeout). Same end state as with one sink: each id
//! exactly once, every aggregate equal to its recomputation.

use std::time::Duration;

use crate::harness::Env;
use crate::sink_support::{
    check_end_state, kill, produce, producer, spawn_sink, wait_rows, workload,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_and_rebalances_land_each_row_once() {
    let env = Env::new("rebal");
    env.run(&["topics", "--partitions", "4"]);
    env.run(&["migrate"]);
    let topic = env.topic("attributed");
    let now = chrono::Utc::now().timestamp_millis();
    let events = workload(99, &env.database, 30_000, now);
    let p = producer();
    let feed = {
        let events = events.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for chunk in events.chunks(500) {
                produce(&p, &topic, chunk).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let small = ["--batch-rows", "1000"];
    let mut a = spawn_sink(&env, &small);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut b = spawn_sink(&env, &small);
    tokio::time::sleep(Duration::from_secs(8)).await;
    kill(&mut a);
    feed.await.unwrap();
    let ch = env.clickhouse();
    wait_rows(&ch, events.len() as u64, 240).await;
    if let Ok(Some(s)) = b.try_wait() {
        panic!("the second sink exited: {s}");
    }
    kill(&mut b);
    check_end_state(&ch, &events).await;
}
