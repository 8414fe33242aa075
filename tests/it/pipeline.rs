//! The whole path: collector → Kafka → attributor → Kafka → sink → ClickHouse, with at
//! least 100,000 generated events, checked against values computed here from the
//! workload's ground truth by `feedback_workload::oracle` (not from the attribution engine
//! or the SQL views).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use feedback_events::json::{interaction_to_json, rating_to_json};
use feedback_events::Metric;
use feedback_workload::oracle::{self, Outcome, Sums};
use feedback_workload::{Generated, Item, Mix, Workload};
use futures::StreamExt;
use serde::Deserialize;

use crate::harness::Env;

async fn post(client: &reqwest::Client, base: &str, batch: Vec<Generated>) -> usize {
    let (path, body): (&str, Vec<serde_json::Value>) = match &batch[0].item {
        Item::Interaction(_) => (
            "/v1/interactions",
            batch
                .iter()
                .map(|g| match &g.item {
                    Item::Interaction(i) => interaction_to_json(i),
                    Item::Rating(_) => unreachable!(),
                })
                .collect(),
        ),
        Item::Rating(_) => (
            "/v1/ratings",
            batch
                .iter()
                .map(|g| match &g.item {
                    Item::Rating(r) => rating_to_json(r),
                    Item::Interaction(_) => unreachable!(),
                })
                .collect(),
        ),
    };
    let r = client
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("collector reachable");
    let status = r.status();
    let v: serde_json::Value = r.json().await.expect("json answer");
    assert_eq!(status.as_u16(), 202, "{v}");
    assert_eq!(v["accepted"].as_u64(), Some(body.len() as u64));
    body.len()
}

/// Requests of one kind from windows of `window` items: each window's ratings, then its
/// interactions (so some ratings overtake their interaction on top of the workload's own
/// early ones). Returns the requests in send order.
fn batches(items: Vec<Generated>, window: usize) -> Vec<Vec<Generated>> {
    let mut out = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<Generated> = it.by_ref().take(window).collect();
        let (ratings, interactions): (Vec<Generated>, Vec<Generated>) = chunk
            .into_iter()
            .partition(|g| matches!(g.item, Item::Rating(_)));
        // No id twice in one request (the collector refuses that): a generated duplicate
        // goes in the next request.
        for kind in [ratings, interactions] {
            out.extend(feedback_workload::split_requests(kind, usize::MAX));
        }
    }
    out
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Id {
    id: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TeamCount {
    team: String,
    n: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Count {
    n: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_events_land_exactly_once_and_metrics_match_ground_truth() {
    let mut env = Env::new("e2e");
    env.prepare();
    env.start_collector(&[]);
    env.spawn(&["attributor"]);
    env.spawn(&["sink", "--flush-ms", "300"]);

    let now = chrono::Utc::now().timestamp_millis();
    let items = Workload::new(42, &env.database, Mix::default()).generate(100_000, now);
    assert!(items.len() >= 100_000);
    let requests = batches(items, 1000);

    // Ground truth, computed from the workload alone: every request is accepted.
    let truth =
        oracle::Expected::from_requests(requests.iter().map(|r| (r.as_slice(), Outcome::Accepted)));
    let (interactions, ratings) = (&truth.interactions, &truth.ratings);
    let mut seen: HashSet<&str> = HashSet::new();
    let (mut early, mut duplicates) = (0usize, 0usize);
    for g in requests.iter().flatten() {
        match &g.item {
            Item::Interaction(i) => {
                seen.insert(&i.interaction_id);
            }
            Item::Rating(r) => {
                if g.duplicate {
                    duplicates += 1;
                } else if r
                    .interaction_id
                    .as_deref()
                    .is_some_and(|id| !seen.contains(id))
                {
                    early += 1;
                }
            }
        }
    }
    assert!(
        early > 1000 && duplicates > 500,
        "workload has early ({early}) and duplicate ({duplicates}) ratings"
    );
    let per_team: &BTreeMap<(String, String), Sums> = &truth.aggregates.team_metrics;
    let interactions_per_team = truth.aggregates.interactions_per_team();

    let client = reqwest::Client::new();
    let base = env.collector_url();
    let started = Instant::now();
    let sent: usize = futures::stream::iter(requests)
        .map(|b| post(&client, &base, b))
        .buffered(4)
        .fold(0, |acc, n| async move { acc + n })
        .await;
    let send_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "sent {sent} events through the collector in {send_secs:.1}s ({:.0} events/s)",
        sent as f64 / send_secs
    );

    let ch = env.clickhouse();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let i: Vec<Count> = ch
            .fetch("SELECT count() AS n FROM {db}.interactions")
            .await
            .unwrap();
        let r: Vec<Count> = ch
            .fetch("SELECT count() AS n FROM {db}.ratings")
            .await
            .unwrap();
        if i[0].n >= interactions.len() as u64 && r[0].n >= ratings.len() as u64 {
            break;
        }
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "ClickHouse holds {} of {} interactions and {} of {} ratings after 300s",
            i[0].n,
            interactions.len(),
            r[0].n,
            ratings.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "all events landed {:.1}s after the first request",
        started.elapsed().as_secs_f64()
    );
    // Anything extra (a duplicate) would arrive with the same batches; give stragglers a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Every accepted event exactly once.
    let mut got: Vec<Id> = ch
        .fetch("SELECT interaction_id AS id FROM {db}.interactions")
        .await
        .unwrap();
    assert_eq!(got.len(), interactions.len(), "interaction rows");
    got.sort_by(|a, b| a.id.cmp(&b.id));
    got.dedup_by(|a, b| a.id == b.id);
    assert_eq!(got.len(), interactions.len(), "distinct interaction ids");
    assert!(got.iter().all(|g| interactions.contains(&g.id)));
    let mut got: Vec<Id> = ch
        .fetch("SELECT rating_id AS id FROM {db}.ratings")
        .await
        .unwrap();
    assert_eq!(
        got.len(),
        ratings.len(),
        "rating rows (duplicates counted once)"
    );
    got.sort_by(|a, b| a.id.cmp(&b.id));
    got.dedup_by(|a, b| a.id == b.id);
    assert_eq!(got.len(), ratings.len(), "distinct rating ids");
    assert!(got.iter().all(|g| ratings.contains(&g.id)));

    // Interactions per team.
    let rows: Vec<TeamCount> = ch
        .fetch("SELECT team, count() AS n FROM {db}.interactions GROUP BY team ORDER BY team")
        .await
        .unwrap();
    let got: BTreeMap<String, u64> = rows.into_iter().map(|r| (r.team, r.n)).collect();
    assert_eq!(got, interactions_per_team);

    // Every rating that names an interaction was joined to it (early ones included).
    let unjoined: Vec<Count> = ch
        .fetch("SELECT count() AS n FROM {db}.ratings WHERE interaction_id IS NOT NULL AND attribution != 'interaction'")
        .await
        .unwrap();
    assert_eq!(unjoined[0].n, 0);

    // Per-team CSAT, NPS and CES from the metric view equal the independent computation.
    let metrics = ch.metrics("total").await.unwrap();
    let got: BTreeMap<(String, String), (Sums, f64)> = metrics
        .into_iter()
        .map(|m| {
            (
                (m.team, m.metric.to_string()),
                ((m.responses, m.score_sum, m.positive, m.negative), m.value),
            )
        })
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        per_team.keys().collect::<Vec<_>>()
    );
    for (k, e) in per_team {
        let (g, v) = &got[k];
        assert_eq!(g, e, "{k:?}");
        let metric: Metric = k.1.parse().expect("a metric name");
        let want = oracle::value(metric, e);
        assert!(
            (v - want).abs() < 1e-4,
            "{k:?}: view says {v}, expected {want}"
        );
    }
    eprintln!("{} teams × metrics checked; {} interactions, {} ratings ({early} early, {duplicates} duplicates sent)", per_team.len(), interactions.len(), ratings.len());
}
