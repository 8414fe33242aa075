//! Rows ClickHouse rejects and undecodable messages: each lands in `dead_letters` with its
//! reason, error and coordinates (and on the dead-letter topic), the rows after them land
//! normally, and nothing is landed twice when the sink reads its own dead letters back.
//! Plus the startup check: a schema that does not match refuses to start, naming each column.

use std::time::{Duration, Instant};

use feedback_events::{AttributedEvent, Encoded, Event};
use rdkafka::producer::FutureRecord;
use serde::Deserialize;

use crate::harness::Env;
use crate::sink_support::{kill, produce, producer, spawn_sink, workload};

#[derive(Debug, clickhouse::Row, Deserialize, PartialEq)]
struct Dead {
    component: String,
    reason: String,
    error: String,
    source_topic: String,
    source_offset: i64,
    kafka_offset: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Id {
    id: String,
}

async fn raw(p: &rdkafka::producer::FutureProducer, topic: &str, payload: &[u8]) {
    p.send(
        FutureRecord::to(topic).key("k").payload(payload),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rows_and_undecodable_messages_become_dead_letters() {
    let env = Env::new("sinkdead");
    env.run(&["topics", "--partitions", "1"]);
    env.run(&["migrate"]);
    let ch = env.clickhouse();
    // 18.16 has no CHECK constraints: a column whose DEFAULT throws (Code 395) makes the
    // server reject exactly the marked rows, as a constraint would.
    ch.execute("ALTER TABLE {db}.ratings ADD COLUMN reject_check UInt8 DEFAULT throwIf(ifNull(comment, '') = 'REJECT ME')")
        .await
        .unwrap();
    let topic = env.topic("attributed");
    let now = chrono::Utc::now().timestamp_millis();
    let mut events = workload(7, &env.database, 40, now);
    for e in &mut events {
        if let Event::Rating(r) = &mut e.event {
            r.comment = None;
        }
    }
    let mut bad: AttributedEvent = events
        .iter()
        .find(|e| matches!(e.event, Event::Rating(_)))
        .unwrap()
        .clone();
    if let Event::Rating(r) = &mut bad.event {
        r.rating_id = "rejected-1".into();
        r.comment = Some("REJECT ME".into());
    }
    bad.source.offset = 777;
    let p = producer();
    // offsets 0..19 valid, 20 rejected by ClickHouse, 21 not Avro, 22 an interaction
    // (not an attributed event), 23..42 valid.
    produce(&p, &topic, &events[..20]).await;
    produce(&p, &topic, std::slice::from_ref(&bad)).await;
    raw(&p, &topic, b"definitely not avro").await;
    let plain = match &events[0].event {
        Event::Interaction(i) => i.encode(),
        Event::Rating(r) => r.encode(),
    };
    raw(&p, &topic, &plain).await;
    produce(&p, &topic, &events[20..]).await;

    let metrics_port = crate::harness::free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let mut sink = spawn_sink(&env, &["--metrics-listen", &listen]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let valid: Vec<String> = {
        let mut v: Vec<String> = events.iter().map(|e| e.event.id().to_string()).collect();
        v.sort();
        v
    };
    loop {
        let ids: Vec<Id> = ch
            .fetch("SELECT id FROM (SELECT interaction_id AS id FROM {db}.interactions UNION ALL SELECT rating_id AS id FROM {db}.ratings) ORDER BY id")
            .await
            .unwrap();
        let dead: Vec<Dead> = ch
            .fetch("SELECT component, reason, error, source_topic, source_offset, kafka_offset FROM {db}.dead_letters ORDER BY kafka_offset")
            .await
            .unwrap();
        if ids.len() >= valid.len() && dead.len() >= 3 {
            // Reading its own dead letters back from the topic must not land them again.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let dead: Vec<Dead> = ch
                .fetch("SELECT component, reason, error, source_topic, source_offset, kafka_offset FROM {db}.dead_letters ORDER BY kafka_offset")
                .await
                .unwrap();
            assert_eq!(
                ids.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
                valid,
                "every valid row, before and after the bad ones, exactly once"
            );
            assert_eq!(dead.len(), 3, "{dead:#?}");
            let d = &dead[0];
            assert_eq!(
                (d.component.as_str(), d.reason.as_str(), d.kafka_offset),
                ("sink", "clickhouse_rejected", 20)
            );
            assert!(
                d.error.contains("INSERT into ratings") && d.error.contains("Code: 395"),
                "{}",
                d.error
            );
            assert_eq!((d.source_topic.as_str(), d.source_offset), ("src", 777));
            assert_eq!(
                (
                    dead[1].reason.as_str(),
                    dead[1].kafka_offset,
                    dead[1].source_offset
                ),
                ("bad_marker", 21, 21)
            );
            assert_eq!(dead[1].source_topic, topic);
            assert_eq!(
                (dead[2].reason.as_str(), dead[2].kafka_offset),
                ("wrong_schema", 22)
            );
            // The counters say the same (lag is published every 5 s).
            tokio::time::sleep(Duration::from_secs(5)).await;
            let text = reqwest::get(format!("http://{listen}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let interactions = events
                .iter()
                .filter(|e| matches!(e.event, Event::Interaction(_)))
                .count();
            let ratings = events.len() - interactions;
            for line in [
                format!(
                    "feedback_sink_rows_inserted_total{{table=\"interactions\"}} {interactions}"
                ),
                format!("feedback_sink_rows_inserted_total{{table=\"ratings\"}} {ratings}"),
                "feedback_sink_rows_inserted_total{table=\"dead_letters\"} 3".to_string(),
                "feedback_sink_dead_letters_total{reason=\"clickhouse_rejected\"} 1".to_string(),
                "feedback_sink_dead_letters_total{reason=\"bad_marker\"} 1".to_string(),
                "feedback_sink_dead_letters_total{reason=\"wrong_schema\"} 1".to_string(),
                format!("feedback_sink_consumer_lag{{partition=\"0\",topic=\"{topic}\"}} 0"),
            ] {
                assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
            }
            for name in [
                "feedback_sink_bytes_inserted_total{table=\"ratings\"}",
                "feedback_sink_batch_rows_count",
                "feedback_sink_insert_seconds_count",
                "feedback_sink_insert_errors_total{kind=\"rejected\"}",
                "feedback_sink_freshness_seconds",
            ] {
                assert!(text.contains(name), "no {name} in:\n{text}");
            }
            break;
        }
        if let Ok(Some(s)) = sink.try_wait() {
            panic!("sink exited: {s}");
        }
        assert!(
            Instant::now() < deadline,
            "after 60s: {} of {} rows, {} dead letters",
            ids.len(),
            valid.len(),
            dead.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    kill(&mut sink);
    // The same three on the Kafka dead-letter topic.
    assert_eq!(env.topic_messages(&env.topic("deadletter")), 3);
}

#[test]
fn sink_refuses_a_schema_that_does_not_match() {
    let env = Env::new("sinkschema");
    env.run(&["topics", "--partitions", "1"]);
    env.run(&["migrate"]);
    let url = crate::harness::clickhouse_url();
    let q = |sql: String| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-XPOST", &url, "--data-binary", &sql])
            .output()
            .unwrap();
        assert!(
            out.stdout.is_empty(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    q(format!(
        "ALTER TABLE {}.ratings DROP COLUMN kafka_offset",
        env.database
    ));
    q(format!(
        "ALTER TABLE {}.interactions MODIFY COLUMN source_partition Int64",
        env.database
    ));
    let out = env.cmd(&["sink"]).output().expect("run feedback sink");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let db = &env.database;
    assert!(
        err.contains(&format!(
            "column {db}.ratings.kafka_offset (Int64) is missing"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "column {db}.interactions.source_partition has type Int64, the sink writes Int32"
        )),
        "{err}"
    );
    assert!(err.contains("run `feedback migrate`"), "{err}");
}

/// A column changed under a running sink makes every row "rejected": the sink retries
/// instead of dead-lettering them all, and lands them once the schema is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_changed_under_the_sink_is_retried_not_dead_lettered() {
    let env = Env::new("sinkdrift");
    env.run(&["topics", "--partitions", "1"]);
    env.run(&["migrate"]);
    let ch = env.clickhouse();
    let topic = env.topic("attributed");
    let now = chrono::Utc::now().timestamp_millis();
    let events: Vec<AttributedEvent> = workload(11, &env.database, 60, now)
        .into_iter()
        .filter(|e| matches!(e.event, Event::Rating(_)))
        .collect();
    let mut sink = spawn_sink(&env, &["--max-backoff-ms", "500"]);
    let p = producer();
    produce(&p, &topic, &events[..10]).await;
    let count = |sql: &'static str| {
        let ch = ch.clone();
        async move {
            #[derive(clickhouse::Row, Deserialize)]
            struct N {
                n: u64,
            }
            ch.fetch::<N>(sql).await.unwrap()[0].n
        }
    };
    let wait_for = |want: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while count("SELECT count() AS n FROM {db}.ratings").await < want {
            assert!(Instant::now() < deadline, "ratings did not reach {want}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    wait_for(10).await;
    ch.execute("ALTER TABLE {db}.ratings MODIFY COLUMN score Int16")
        .await
        .unwrap();
    produce(&p, &topic, &events[10..]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(count("SELECT count() AS n FROM {db}.ratings").await, 10);
    assert_eq!(count("SELECT count() AS n FROM {db}.dead_letters").await, 0);
    ch.execute("ALTER TABLE {db}.ratings MODIFY COLUMN score Int8")
        .await
        .unwrap();
    wait_for(events.len() as u64).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count("SELECT count() AS n FROM {db}.ratings").await,
        events.len() as u64
    );
    assert_eq!(count("SELECT count() AS n FROM {db}.dead_letters").await, 0);
    if let Ok(Some(s)) = sink.try_wait() {
        panic!("sink exited: {s}");
    }
}
