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

    // An installation upgraded from a version without comment hours: every other rollup
    // is there, the comment hours are not (cancelled here by their negation). `status` says
    // so, and a rebuild counts them, exactly.
    ch.execute(&format!(
        "INSERT INTO {{db}}.rollups ({}) SELECT grain, bucket, team, metric, dimension, dim_value, channel, kind, \
         -sum(responses), -sum(score_sum), -sum(score_sq_sum), -sum(positive), -sum(negative), -sum(orphans), \
         toInt64(0), toInt64(0) FROM {{db}}.rollups WHERE grain = 'comment_hour' \
         GROUP BY grain, bucket, team, metric, dimension, dim_value, channel, kind",
        feedback_clickhouse::rollups::COLUMN_LIST
    ))
    .await
    .unwrap();
    let commented = events
        .iter()
        .filter(|e| matches!(&e.event, feedback_events::Event::Rating(r) if r.comment.as_deref().is_some_and(|c| !c.is_empty())))
        .count();
    assert!(commented > 0);
    let status = env.run(&["rollups", "status"]);
    assert!(
        status.contains(&format!("0 of {commented} comments")),
        "{status}"
    );
    let fourth = env.run(&["rollups", "rebuild"]);
    assert!(!fourth.contains(": 0 correction row(s)"), "{fourth}");
    check_end_state(&ch, &events).await;
    let status = env.run(&["rollups", "status"]);
    assert!(
        status.contains("the rollups count every raw row"),
        "{status}"
    );
}

/// Raw rows expire (whole months on 18.16), rollups keep every day: the totals stay, and a
/// rebuild keeps the expired days instead of zeroing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_raw_months_and_the_rollups_keep_them() {
    let env = Env::new("retention");
    env.run(&["migrate"]);
    let ch = env.clickhouse();
    // 2025-01-15 12:00 UTC: three CSAT answers (5, 4, 1) and one interaction; now: two (5, 2)
    // and one interaction.
    let old = 1_736_942_400i64;
    let now = chrono::Utc::now().timestamp() - 120;
    let rating = |id: &str, at: i64, score: i32, comment: &str| {
        format!(
            "('{id}', toDateTime({at}), {ms}, 'csat', {score}, {comment}, 's', 'web', 'c', '{{}}', 'payments', 'claim', 'v', 0, 't', 0, 0, 0)",
            ms = at * 1000
        )
    };
    let values = [
        rating("o1", old, 5, "NULL"),
        rating("o2", old + 60, 4, "NULL"),
        rating("o3", old + 3600, 1, "'slow'"),
        rating("n1", now, 5, "NULL"),
        rating("n2", now, 2, "'late'"),
    ];
    ch.execute(&format!(
        "INSERT INTO {{db}}.ratings (rating_id, occurred_at, occurred_at_ms, metric, score, comment, service, channel, customer_ref, \
         attributes, team, attribution, ownership_version, orphan, source_topic, source_partition, source_offset, attributed_at_ms) VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    ch.execute(&format!(
        "INSERT INTO {{db}}.interactions (interaction_id, occurred_at, occurred_at_ms, service, channel, kind, customer_ref, \
         attributes, team, attribution, ownership_version, source_topic, source_partition, source_offset, attributed_at_ms) VALUES \
         ('io', toDateTime({old}), 0, 's', 'web', 'order', 'c', '{{}}', 'payments', 'claim', 'v', 't', 0, 0, 0), \
         ('in', toDateTime({now}), 0, 's', 'web', 'order', 'c', '{{}}', 'payments', 'claim', 'v', 't', 0, 0, 0)"
    ))
    .await
    .unwrap();
    // A comment the view missed (a server crash between the INSERT's two parts): the
    // rebuild restores it into rating_comments, once.
    ch.execute("ALTER TABLE {db}.rating_comments DELETE WHERE rating_id = 'n2'")
        .await
        .unwrap();
    #[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
    struct Rid {
        rating_id: String,
    }
    let comment_ids = || async {
        let rows: Vec<Rid> = ch
            .fetch("SELECT rating_id FROM {db}.rating_comments ORDER BY rating_id")
            .await
            .unwrap();
        rows.into_iter().map(|r| r.rating_id).collect::<Vec<_>>()
    };
    for _ in 0..100 {
        if comment_ids().await == ["o3"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(comment_ids().await, ["o3"]);
    let rebuilt = env.run(&["rollups", "rebuild"]);
    assert!(
        rebuilt.contains(", 1 comment(s) restored into rating_comments"),
        "{rebuilt}"
    );
    assert_eq!(comment_ids().await, ["n2", "o3"]);
    let again = env.run(&["rollups", "rebuild"]);
    assert!(!again.contains("restored"), "{again}");
    let totals = || async {
        let rows = ch.metrics("total").await.unwrap();
        rows.iter()
            .map(|r| (r.team.clone(), r.responses, r.positive, r.negative))
            .collect::<Vec<_>>()
    };
    let want = vec![("payments".to_string(), 5, 3, 2)];
    assert_eq!(totals().await, want);

    let short = env
        .cmd(&["retention", "--raw-days", "10"])
        .output()
        .unwrap();
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("keep at least 15 days"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    let dry = env.run(&["retention", "--raw-days", "30", "--dry-run"]);
    assert!(
        dry.contains("would drop") && dry.contains("ratings month 202501 (3 rows)"),
        "{dry}"
    );
    assert!(dry.contains("interactions month 202501 (1 rows)"), "{dry}");
    // The interactions' context (migration 8, filled by its materialized view) expires with them.
    assert!(
        dry.contains("interaction_context month 202501 (1 rows)"),
        "{dry}"
    );
    // So do the comments' copies (migration 9: text and customer_ref).
    assert!(
        dry.contains("rating_comments month 202501 (1 rows)"),
        "{dry}"
    );
    assert_eq!(
        feedback_clickhouse::queries::watch::counts(&ch)
            .await
            .unwrap(),
        feedback_clickhouse::queries::watch::Counts {
            interactions: 2,
            ratings: 5
        }
    );

    let done = env.run(&["retention", "--raw-days", "30"]);
    assert!(
        done.contains("removed 4 raw row(s) older than 30 days"),
        "{done}"
    );
    assert_eq!(
        feedback_clickhouse::queries::watch::counts(&ch)
            .await
            .unwrap(),
        feedback_clickhouse::queries::watch::Counts {
            interactions: 1,
            ratings: 2
        }
    );
    #[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
    struct Id {
        interaction_id: String,
    }
    let context: Vec<Id> = ch
        .fetch("SELECT interaction_id FROM {db}.interaction_context ORDER BY interaction_id")
        .await
        .unwrap();
    assert_eq!(
        context,
        vec![Id {
            interaction_id: "in".into()
        }]
    );
    assert_eq!(comment_ids().await, ["n2"]);
    // The rollups still count the expired month; a rebuild keeps it.
    assert_eq!(totals().await, want);
    let rebuilt = env.run(&["rollups", "rebuild", "--from", "2025-01-01"]);
    assert!(
        rebuilt.contains("kept without raw rows (expired or erased): 2025-01-15"),
        "{rebuilt}"
    );
    assert_eq!(totals().await, want);
}

/// A sink that landed raw rows but was killed before their rollups landed: the next sink
/// finds the rows landed (and skips them) but counts them in the rollups. Simulated
/// deterministically: everything landed, then the rollups and the progress mark removed and
/// the topic read again from the start by a new group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_landed_raw_but_not_rolled_up_are_counted_by_the_next_sink() {
    let env = Env::new("unrolled");
    env.prepare();
    let ch = env.clickhouse();
    let topic = env.topic("attributed");
    let events = workload(
        91,
        &env.database,
        3_000,
        chrono::Utc::now().timestamp_millis(),
    );
    produce(&producer(), &topic, &events).await;
    let mut sink = spawn_sink(&env, &[]);
    wait_rows(&ch, events.len() as u64, 120).await;
    kill(&mut sink);
    ch.execute("TRUNCATE TABLE {db}.rollups").await.unwrap();
    ch.execute("TRUNCATE TABLE {db}.sink_progress")
        .await
        .unwrap();
    let status = env.run(&["rollups", "status"]);
    assert!(
        status.contains("rollups: 0 ratings, 0 interactions"),
        "{status}"
    );

    let group = format!("{}.again", env.database);
    let mut sink = spawn_sink(&env, &["--group", &group]);
    wait_rows(&ch, events.len() as u64, 120).await;
    kill(&mut sink);
    check_end_state(&ch, &events).await;
}

/// `{db}.rollups` in the layout of before migration 11 (ordered by grain, bucket, ...,
/// granules of 8,192 rows), with the rows it holds, and migration 11 not recorded: an
/// installation at version 10. Run with no writer.
async fn back_to_the_layout_of_version_10(ch: &feedback_clickhouse::Ch) {
    let old_layout = feedback_clickhouse::migrations::ROLLUPS_TABLE
        .replace("{db}.rollups (", "{db}.rollups_v10 (")
        .replace(
            "ORDER BY (grain, dimension, bucket, team, metric, dim_value, channel, kind)",
            "ORDER BY (grain, bucket, team, metric, dimension, dim_value, channel, kind)",
        )
        .replace("SETTINGS index_granularity = 1024", "");
    for sql in [
        old_layout.as_str(),
        "INSERT INTO {db}.rollups_v10 SELECT * FROM {db}.rollups",
        "DROP TABLE {db}.rollups",
        "RENAME TABLE {db}.rollups_v10 TO {db}.rollups",
        "CREATE TABLE {db}.schema_migrations_v10 AS {db}.schema_migrations",
        "INSERT INTO {db}.schema_migrations_v10 SELECT * FROM {db}.schema_migrations WHERE version != 11",
        "DROP TABLE {db}.schema_migrations",
        "RENAME TABLE {db}.schema_migrations_v10 TO {db}.schema_migrations",
    ] {
        ch.execute(sql).await.unwrap();
    }
    assert!(engine(ch).await.contains("ORDER BY (grain, bucket, team"));
}

async fn engine(ch: &feedback_clickhouse::Ch) -> String {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct E {
        e: String,
    }
    let e: Vec<E> = ch
        .fetch("SELECT engine_full AS e FROM system.tables WHERE database = '{db}' AND name = 'rollups'")
        .await
        .unwrap();
    e.into_iter().next().map(|e| e.e).unwrap_or_default()
}

/// Raw rows landed (interactions and ratings).
async fn raw_rows(ch: &feedback_clickhouse::Ch) -> u64 {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct N {
        n: u64,
    }
    let n: Vec<N> = ch
        .fetch("SELECT (SELECT count() FROM {db}.interactions) + (SELECT count() FROM {db}.ratings) AS n")
        .await
        .unwrap();
    n[0].n
}

/// Waits (bounded) until the raw tables hold at least `want` rows.
async fn wait_raw(ch: &feedback_clickhouse::Ch, want: u64) {
    for _ in 0..240 {
        if raw_rows(ch).await >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "the sink landed {} raw rows in 60 s, want {want}",
        raw_rows(ch).await
    );
}

/// `feedback migrate`, its stdout and stderr (the progress of a new layout) together.
fn migrate(env: &Env) -> String {
    let out = env.cmd(&["migrate"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// Migration 11 gives the rollups a new layout by copying them into a new table and
/// swapping it in, while a sink lands events: once straight through, once resumed after it
/// stopped with the table renamed away (the sink failing its INSERTs meanwhile). Every
/// event counts exactly once in every rollup at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rollups_layout_while_the_sink_lands() {
    let env = Env::new("relayout");
    env.prepare();
    let ch = env.clickhouse();
    assert!(
        engine(&ch)
            .await
            .contains("ORDER BY (grain, dimension, bucket, team"),
        "a fresh database gets the layout from migration 7: {}",
        engine(&ch).await
    );
    assert!(migrate(&env).contains("up to date"));
    back_to_the_layout_of_version_10(&ch).await;
    let topic = env.topic("attributed");
    let now = chrono::Utc::now().timestamp_millis();
    let events = workload(91, &env.database, 9_000, now);
    let p = producer();
    let feed = |part: &[feedback_events::AttributedEvent]| {
        let (part, topic, p) = (part.to_vec(), topic.clone(), p.clone());
        tokio::spawn(async move {
            for chunk in part.chunks(100) {
                produce(&p, &topic, chunk).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Straight through, while the sink lands the first third.
    let mut sink = spawn_sink(&env, &[]);
    let first = feed(&events[..3_000]);
    wait_raw(&ch, 500).await;
    let out = migrate(&env);
    assert!(
        out.contains("applied migrations [11]") && out.contains("swapped in"),
        "{out}"
    );
    assert!(engine(&ch)
        .await
        .contains("ORDER BY (grain, dimension, bucket, team"));
    first.await.unwrap();
    wait_rows(&ch, 3_000, 120).await;
    kill(&mut sink);
    check_end_state(&ch, &events[..3_000]).await;

    // Interrupted after the rename: the sink's INSERTs fail for a few seconds, then the
    // next `migrate` copies and swaps, and the sink goes on.
    back_to_the_layout_of_version_10(&ch).await;
    let mut sink = spawn_sink(&env, &[]);
    feed(&events[3_000..4_500]).await.unwrap();
    wait_rows(&ch, 4_500, 120).await;
    ch.execute("RENAME TABLE {db}.rollups TO {db}.rollups_before_relayout")
        .await
        .unwrap();
    // The sink lands a batch's raw rows while the rollups are away: the batch's rollups
    // INSERT fails and is retried (and holds the next batches) until the table is back.
    let second = feed(&events[4_500..]);
    wait_raw(&ch, 4_501).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = raw_rows(&ch).await;
    assert!(
        held < 9_000,
        "the sink landed everything without its rollups: {held}"
    );
    let out = migrate(&env);
    assert!(
        out.contains("an earlier run stopped during the copy")
            && out.contains("applied migrations [11]"),
        "{out}"
    );
    second.await.unwrap();
    wait_rows(&ch, events.len() as u64, 180).await;
    kill(&mut sink);
    check_end_state(&ch, &events).await;
    assert!(migrate(&env).contains("up to date"));
}
