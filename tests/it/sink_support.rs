//! Shared by the sink tests: a seeded workload of attributed events produced straight to
//! the attributed topic, `feedback sink` processes, and the end-state check: every id
//! exactly once in the raw tables, and every aggregate and view equal to its value computed
//! here from the raw rows and from the generated events with `feedback_workload::oracle`
//! (independently of the SQL under test).

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use feedback_events::{
    AttributedEvent, Attribution, Channel, ClaimRef, Encoded, Event, Interaction, Metric, Rating,
    SourceRef,
};
use feedback_workload::oracle::{self, Sums};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::harness::{brokers, Env};

const TEAMS: &[&str] = &["payments", "delivery", "support", "unowned"];
const KINDS: &[&str] = &["order", "support_ticket", "call", "delivery"];
const PRODUCTS: &[&str] = &["payments-card", "payments-wallet", "fleet", "app"];

/// `n` attributed events (about 40 % interactions), event times spread over the 90 minutes
/// before `now_ms`, ids unique under `tag`.
pub fn workload(seed: u64, tag: &str, n: usize, now_ms: i64) -> Vec<AttributedEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let occurred_at = now_ms - 60_000 - rng.random_range(0..89 * 60_000i64);
            let team = TEAMS[rng.random_range(0..TEAMS.len())].to_string();
            let channel = Channel::ALL[rng.random_range(0..Channel::ALL.len())];
            let product = rng
                .random_bool(0.7)
                .then(|| PRODUCTS[rng.random_range(0..PRODUCTS.len())].to_string());
            let event = if rng.random_bool(0.4) {
                Event::Interaction(Interaction {
                    interaction_id: format!("{tag}-i{i}"),
                    occurred_at,
                    service: "svc".into(),
                    channel,
                    kind: KINDS[rng.random_range(0..KINDS.len())].into(),
                    customer_ref: format!("c{}", rng.random_range(0..1000)),
                    product,
                    region: None,
                    agent_id: None,
                    team: None,
                    attributes: Default::default(),
                })
            } else {
                let metric = Metric::ALL[rng.random_range(0..3)];
                let (lo, hi) = metric.score_range();
                Event::Rating(Rating {
                    rating_id: format!("{tag}-r{i}"),
                    occurred_at,
                    interaction_id: Some(format!("{tag}-x{i}")),
                    metric,
                    score: rng.random_range(lo..=hi),
                    comment: rng.random_bool(0.2).then(|| format!("comment {i}")),
                    service: "survey".into(),
                    channel,
                    customer_ref: format!("c{}", rng.random_range(0..1000)),
                    product,
                    region: None,
                    attributes: Default::default(),
                })
            };
            let kind = rng
                .random_bool(0.8)
                .then(|| KINDS[rng.random_range(0..KINDS.len())].to_string());
            AttributedEvent {
                event,
                team,
                attribution: Attribution::Claim,
                claim: Some(ClaimRef {
                    file: "x.toml".into(),
                    index: 0,
                }),
                ownership_version: "v1".into(),
                orphan: false,
                interaction_kind: kind,
                source: SourceRef {
                    topic: "src".into(),
                    partition: 0,
                    offset: i as i64,
                },
                attributed_at: now_ms,
            }
        })
        .collect()
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Produces `events` to `topic` (key: the event id) and waits for every acknowledgement.
pub async fn produce(p: &FutureProducer, topic: &str, events: &[AttributedEvent]) {
    let futs: Vec<_> = events
        .iter()
        .map(|e| {
            let payload = e.encode();
            let key = e.event.id().to_string();
            let p = p.clone();
            let topic = topic.to_string();
            async move {
                p.send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
            }
        })
        .collect();
    for r in futures::future::join_all(futs).await {
        r.expect("Kafka acknowledged");
    }
}

/// A `feedback sink` child process; SIGKILLed when dropped (also when a test fails).
pub struct Sink(Child);

impl Sink {
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `feedback sink` child process of `env`.
pub fn spawn_sink(env: &Env, extra: &[&str]) -> Sink {
    let mut args = vec!["sink", "--flush-ms", "200"];
    args.extend_from_slice(extra);
    Sink(
        env.cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn feedback sink"),
    )
}

/// SIGKILL (Child::kill on Unix) and reap.
pub fn kill(c: &mut Sink) {
    let _ = c.0.kill();
    let _ = c.0.wait();
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Count {
    n: u64,
}

/// Waits until the raw tables hold `want` rows in total (bounded).
pub async fn wait_rows(ch: &feedback_clickhouse::Ch, want: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let have = match ch
            .fetch::<Count>(
                "SELECT (SELECT count() FROM {db}.interactions) + (SELECT count() FROM {db}.ratings) AS n",
            )
            .await
        {
            Ok(r) => r[0].n,
            Err(_) => 0,
        };
        // Landed means the batches' rollups too (they follow their raw rows).
        let rolled = ch.rollup_coverage().await.is_ok_and(|c| {
            c.rolled_ratings == c.raw_ratings as i64
                && c.rolled_interactions == c.raw_interactions as i64
        });
        if have >= want && rolled {
            // Let a would-be duplicate arrive before the check.
            tokio::time::sleep(Duration::from_secs(2)).await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {secs}s the raw tables hold {have} rows, want {want} (and rollups counting them all: {rolled})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

type RatingKey = (String, String, u32); // team, metric, minute

fn metric_of(name: &str) -> Metric {
    name.parse()
        .unwrap_or_else(|e| panic!("rating with metric {name:?}: {e}"))
}

/// The views' value (rounded to 4 places) of `s`, from the oracle.
fn value(metric: &str, s: &Sums) -> f64 {
    oracle::rounded(oracle::value(metric_of(metric), s))
}

/// The aggregates, computed in Rust from (team, metric, occurred_at secs, score, channel,
/// product, interaction_kind) of each rating and (team, minute, channel, kind) of each
/// interaction.
#[derive(Debug, Default, PartialEq)]
pub struct Expected {
    pub rating_ids: Vec<String>,
    pub interaction_ids: Vec<String>,
    pub team_minute: BTreeMap<RatingKey, Sums>,
    pub team_interactions_minute: BTreeMap<(String, u32, String, String), u64>,
    pub team_dim_minute: BTreeMap<(String, String, String, String, u32), Sums>,
    /// (team, metric, hour) of the ratings with a comment.
    pub team_comment_hour: BTreeMap<RatingKey, Sums>,
}

#[derive(Debug, Clone)]
pub struct RawRating {
    pub id: String,
    pub team: String,
    pub metric: String,
    pub at: u32,
    pub score: i64,
    pub channel: String,
    pub product: Option<String>,
    pub kind: Option<String>,
    pub commented: bool,
}

#[derive(Debug, Clone)]
pub struct RawInteraction {
    pub id: String,
    pub team: String,
    pub at: u32,
    pub channel: String,
    pub kind: String,
}

impl Expected {
    pub fn from_raw(ratings: &[RawRating], interactions: &[RawInteraction]) -> Self {
        let mut e = Expected::default();
        let mut a = oracle::Aggregates::default();
        for r in ratings {
            e.rating_ids.push(r.id.clone());
            a.rating(oracle::RatingFacts {
                team: &r.team,
                metric: metric_of(&r.metric),
                minute: r.at / 60 * 60,
                score: r.score as i32,
                channel: &r.channel,
                product: r.product.as_deref().unwrap_or(""),
                kind: r.kind.as_deref().unwrap_or(""),
                commented: r.commented,
            });
        }
        for i in interactions {
            e.interaction_ids.push(i.id.clone());
            a.interaction(&i.team, i.at / 60 * 60, &i.channel, &i.kind);
        }
        e.team_minute = a.team_minute;
        e.team_interactions_minute = a.team_interactions_minute;
        e.team_dim_minute = a.team_dim_minute;
        e.team_comment_hour = a.team_comment_hour;
        e.rating_ids.sort();
        e.interaction_ids.sort();
        e
    }

    pub fn from_events(events: &[AttributedEvent]) -> Self {
        let mut ratings = Vec::new();
        let mut interactions = Vec::new();
        for a in events {
            match &a.event {
                Event::Rating(r) => ratings.push(RawRating {
                    id: r.rating_id.clone(),
                    team: a.team.clone(),
                    metric: r.metric.as_str().into(),
                    at: (r.occurred_at / 1000) as u32,
                    score: r.score as i64,
                    channel: r.channel.as_str().into(),
                    product: r.product.clone(),
                    kind: a.interaction_kind.clone(),
                    commented: r.comment.as_deref().is_some_and(|c| !c.is_empty()),
                }),
                Event::Interaction(i) => interactions.push(RawInteraction {
                    id: i.interaction_id.clone(),
                    team: a.team.clone(),
                    at: (i.occurred_at / 1000) as u32,
                    channel: i.channel.as_str().into(),
                    kind: i.kind.clone(),
                }),
            }
        }
        Expected::from_raw(&ratings, &interactions)
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Rr {
    rating_id: String,
    team: String,
    metric: String,
    occurred_at: u32,
    score: i8,
    channel: String,
    product: Option<String>,
    interaction_kind: Option<String>,
    has_comment: u8,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Ri {
    interaction_id: String,
    team: String,
    occurred_at: u32,
    channel: String,
    kind: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Tm {
    team: String,
    metric: String,
    minute: u32,
    responses: u64,
    score_sum: i64,
    positive: u64,
    negative: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Tim {
    team: String,
    minute: u32,
    channel: String,
    kind: String,
    interactions: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Tdm {
    team: String,
    metric: String,
    dimension: String,
    dim_value: String,
    minute: u32,
    responses: u64,
    score_sum: i64,
    positive: u64,
    negative: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Mv {
    team: String,
    metric: String,
    responses: u64,
    positive: u64,
    negative: u64,
    score_sum: i64,
    value: f64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Bv {
    team: String,
    metric: String,
    dimension: String,
    dim_value: String,
    responses: u64,
    positive: u64,
    negative: u64,
    score_sum: i64,
    value: f64,
}

type MetricMap = BTreeMap<(String, String), (Sums, f64)>;

fn metric_map(team_minute: &BTreeMap<RatingKey, Sums>) -> MetricMap {
    let mut m: BTreeMap<(String, String), Sums> = BTreeMap::new();
    for ((t, metric, _), s) in team_minute {
        let e = m.entry((t.clone(), metric.clone())).or_default();
        e.0 += s.0;
        e.1 += s.1;
        e.2 += s.2;
        e.3 += s.3;
    }
    m.into_iter()
        .map(|(k, s)| {
            let v = value(&k.1, &s);
            (k, (s, v))
        })
        .collect()
}

fn assert_metrics_eq(what: &str, have: &MetricMap, want: &MetricMap) {
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: teams/metrics"
    );
    for (k, (s, v)) in want {
        let (hs, hv) = &have[k];
        assert_eq!(
            hs, s,
            "{what} {k:?}: responses, score_sum, positive, negative"
        );
        assert!((hv - v).abs() < 1e-9, "{what} {k:?}: value {hv} != {v}");
    }
}

/// Asserts the end state of `env`'s database against `events` (see the module doc).
pub async fn check_end_state(ch: &feedback_clickhouse::Ch, events: &[AttributedEvent]) {
    let want = Expected::from_events(events);

    let rr: Vec<Rr> = ch
        .fetch("SELECT rating_id, team, metric, occurred_at, score, channel, product, interaction_kind, toUInt8(ifNull(comment, '') != '') AS has_comment FROM {db}.ratings")
        .await
        .unwrap();
    let ri: Vec<Ri> = ch
        .fetch("SELECT interaction_id, team, occurred_at, channel, kind FROM {db}.interactions")
        .await
        .unwrap();
    let raw = Expected::from_raw(
        &rr.into_iter()
            .map(|r| RawRating {
                id: r.rating_id,
                team: r.team,
                metric: r.metric,
                at: r.occurred_at,
                score: r.score as i64,
                channel: r.channel,
                product: r.product,
                kind: r.interaction_kind,
                commented: r.has_comment == 1,
            })
            .collect::<Vec<_>>(),
        &ri.into_iter()
            .map(|i| RawInteraction {
                id: i.interaction_id,
                team: i.team,
                at: i.occurred_at,
                channel: i.channel,
                kind: i.kind,
            })
            .collect::<Vec<_>>(),
    );
    // Each id exactly once in each raw table (duplicates would show as repeated ids).
    let dup = |ids: &[String]| {
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for i in ids {
            *seen.entry(i).or_default() += 1;
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(i, n)| format!("{i}×{n}"))
            .take(10)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        dup(&raw.rating_ids),
        Vec::<String>::new(),
        "duplicate ratings"
    );
    assert_eq!(
        dup(&raw.interaction_ids),
        Vec::<String>::new(),
        "duplicate interactions"
    );
    assert_eq!(raw.rating_ids.len(), want.rating_ids.len(), "rating count");
    assert_eq!(raw.rating_ids, want.rating_ids, "rating ids");
    assert_eq!(raw.interaction_ids, want.interaction_ids, "interaction ids");
    assert_eq!(raw, want, "raw rows vs generated events");

    let tm: BTreeMap<RatingKey, Sums> = ch
        .fetch::<Tm>("SELECT team, metric, minute, sum(responses) AS responses, sum(score_sum) AS score_sum, sum(positive) AS positive, sum(negative) AS negative FROM {db}.team_minute GROUP BY team, metric, minute")
        .await
        .unwrap()
        .into_iter()
        .map(|r| ((r.team, r.metric, r.minute), (r.responses, r.score_sum, r.positive, r.negative)))
        .collect();
    assert_eq!(tm, want.team_minute, "team_minute vs generated");
    assert_eq!(tm, raw.team_minute, "team_minute vs raw");

    let tim: BTreeMap<(String, u32, String, String), u64> = ch
        .fetch::<Tim>("SELECT team, minute, channel, kind, sum(interactions) AS interactions FROM {db}.team_interactions_minute GROUP BY team, minute, channel, kind")
        .await
        .unwrap()
        .into_iter()
        .map(|r| ((r.team, r.minute, r.channel, r.kind), r.interactions))
        .collect();
    assert_eq!(
        tim, want.team_interactions_minute,
        "team_interactions_minute vs generated"
    );
    assert_eq!(
        tim, raw.team_interactions_minute,
        "team_interactions_minute vs raw"
    );

    let tdm: BTreeMap<(String, String, String, String, u32), Sums> = ch
        .fetch::<Tdm>("SELECT team, metric, dimension, dim_value, minute, sum(responses) AS responses, sum(score_sum) AS score_sum, sum(positive) AS positive, sum(negative) AS negative FROM {db}.team_dim_minute GROUP BY team, metric, dimension, dim_value, minute")
        .await
        .unwrap()
        .into_iter()
        .map(|r| ((r.team, r.metric, r.dimension, r.dim_value, r.minute), (r.responses, r.score_sum, r.positive, r.negative)))
        .collect();
    assert_eq!(tdm, want.team_dim_minute, "team_dim_minute vs generated");
    assert_eq!(tdm, raw.team_dim_minute, "team_dim_minute vs raw");

    // The comment hours (what the latest-comments reads start from).
    let tch: BTreeMap<RatingKey, Sums> = feedback_clickhouse::queries::reconcile::comment_hours(ch)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                (r.team, r.metric, r.minute),
                (r.responses, r.score_sum, r.positive, r.negative),
            )
        })
        .collect();
    assert!(
        !want.team_comment_hour.is_empty(),
        "no commented rating generated"
    );
    assert_eq!(tch, want.team_comment_hour, "comment hours vs generated");
    assert_eq!(tch, raw.team_comment_hour, "comment hours vs raw");

    // Every rollup row (hour and day grains, squares, orphans too) equals its recomputation
    // from the raw rows, themselves equal to the generated events above.
    let (keys, diffs) = feedback_clickhouse::rollups::compare_with_raw(ch)
        .await
        .unwrap();
    assert!(keys > 0, "the rollups are empty");
    assert_eq!(
        diffs.iter().take(5).collect::<Vec<_>>(),
        Vec::<&feedback_clickhouse::rollups::Difference>::new(),
        "{} of {keys} rollup keys differ from the raw rows' recomputation",
        diffs.len()
    );

    // Views: totals, the last-24h window (every event is within it) and the breakdown.
    let want_metrics = metric_map(&want.team_minute);
    let to_map = |rows: Vec<Mv>| -> MetricMap {
        rows.into_iter()
            .map(|r| {
                (
                    (r.team, r.metric),
                    ((r.responses, r.score_sum, r.positive, r.negative), r.value),
                )
            })
            .collect()
    };
    let total = to_map(
        ch.fetch("SELECT team, metric, responses, positive, negative, score_sum, value FROM {db}.team_metrics WHERE grain = 'total'")
            .await
            .unwrap(),
    );
    assert_metrics_eq("team_metrics total", &total, &want_metrics);
    let last_1h_hours: MetricMap = to_map(
        ch.fetch("SELECT team, metric, responses, positive, negative, score_sum, value FROM {db}.team_metrics_window WHERE window = 'last_24h'")
            .await
            .unwrap(),
    );
    assert_metrics_eq(
        "team_metrics_window last_24h",
        &last_1h_hours,
        &want_metrics,
    );

    let mut want_dims: BTreeMap<(String, String, String, String), Sums> = BTreeMap::new();
    for ((t, m, d, v, _), s) in &want.team_dim_minute {
        let e = want_dims
            .entry((t.clone(), m.clone(), d.clone(), v.clone()))
            .or_default();
        e.0 += s.0;
        e.1 += s.1;
        e.2 += s.2;
        e.3 += s.3;
    }
    let have_dims: Vec<Bv> = ch
        .fetch("SELECT team, metric, dimension, dim_value, responses, positive, negative, score_sum, value FROM {db}.team_breakdown WHERE window = 'last_24h'")
        .await
        .unwrap();
    assert_eq!(have_dims.len(), want_dims.len(), "team_breakdown rows");
    for r in have_dims {
        let k = (r.team, r.metric, r.dimension, r.dim_value);
        let s = want_dims[&k];
        assert_eq!(
            (r.responses, r.score_sum, r.positive, r.negative),
            s,
            "team_breakdown {k:?}"
        );
        assert!(
            (r.value - value(&k.1, &s)).abs() < 1e-9,
            "team_breakdown {k:?} value"
        );
    }
}
