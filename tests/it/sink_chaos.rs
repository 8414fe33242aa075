//! Exactly-once landing under failure: while a known workload flows into the attributed
//! topic, the sink is SIGKILLed at least 20 times at random (seeded) moments, ClickHouse is
//! restarted once and stopped for 30 s once; at the end every id is in its raw table
//! exactly once and every aggregate and view equals its value computed from the raw rows
//! and from the generated events.
//!
//! It stops and starts the local ClickHouse (`deploy/local/stack.sh stop-clickhouse` /
//! `start-clickhouse`, ports from the environment), so `tests/run.sh` runs it on its own,
//! after the other tests.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::harness::{repo_root, Env};
use crate::sink_support::{
    check_end_state, kill, produce, producer, spawn_sink, wait_rows, workload,
};

#[derive(clickhouse::Row, Deserialize)]
struct N {
    n: u64,
}

fn stack(cmd: &str) {
    let out = std::process::Command::new(repo_root().join("deploy/local/stack.sh"))
        .arg(cmd)
        .output()
        .expect("run stack.sh");
    assert!(
        out.status.success(),
        "stack.sh {cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_survives_kills_and_clickhouse_outages_exactly_once() {
    let seed = 4242;
    let env = Env::new("chaos");
    env.prepare();
    let topic = env.topic("attributed");
    let now = chrono::Utc::now().timestamp_millis();
    let events = workload(seed, &env.database, 60_000, now);

    // The workload flows in 120 slices over about two minutes, in the background.
    let p = producer();
    let feed = {
        let events = events.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for chunk in events.chunks(500) {
                produce(&p, &topic, chunk).await;
                tokio::time::sleep(Duration::from_millis(900)).await;
            }
        })
    };
    let ch = env.clickhouse();
    let landed = || async {
        ch.fetch::<N>("SELECT (SELECT count() FROM {db}.interactions) + (SELECT count() FROM {db}.ratings) AS n")
            .await
            .ok()
            .map(|r| r[0].n)
    };
    // Static membership: each new sink takes the killed one's partitions at once (without
    // it, every restart would wait for the dead member's session to expire and the kills
    // would mostly hit idle sinks).
    let opts = [
        "--batch-rows",
        "2000",
        "--max-backoff-ms",
        "1000",
        "--instance-id",
        "chaos-sink",
        "--session-timeout-ms",
        "10000",
    ];
    let mut kills_while_landing = 0;
    let mut before = landed().await.unwrap_or(0);

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let kills = 22;
    for k in 0..kills {
        let mut sink = spawn_sink(&env, &opts);
        // Random moment: while it starts, reads positions, or is mid-batch.
        let life = rng.random_range(300..3_500);
        tokio::time::sleep(Duration::from_millis(life)).await;
        if k == 7 {
            eprintln!("chaos: restarting ClickHouse under a running sink");
            stack("stop-clickhouse");
            stack("start-clickhouse");
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_000))).await;
        }
        if k == 14 {
            eprintln!("chaos: stopping ClickHouse for 30 s under a running sink");
            stack("stop-clickhouse");
            tokio::time::sleep(Duration::from_secs(30)).await;
            stack("start-clickhouse");
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_000))).await;
        }
        if let Ok(Some(status)) = sink.try_wait() {
            panic!("the sink exited on its own ({status}) before kill {k}");
        }
        kill(&mut sink);
        let now = landed().await;
        if let Some(n) = now {
            if n > before {
                kills_while_landing += 1;
            }
            before = n;
        }
        eprintln!(
            "chaos: SIGKILL {} after {life} ms; {now:?} of {} rows landed",
            k + 1,
            events.len()
        );
    }
    // The kills must have hit sinks at work, not sinks still joining the group.
    assert!(
        kills_while_landing >= 15,
        "only {kills_while_landing} of {kills} kills hit a sink that was landing rows"
    );
    feed.await.unwrap();
    // A last sink finishes the work.
    let mut sink = spawn_sink(&env, &opts);
    wait_rows(&ch, events.len() as u64, 300).await;
    kill(&mut sink);
    check_end_state(&ch, &events).await;
}
