//! Our SQL on both ClickHouse versions: every migration is applied on the Debian 18.16
//! server (by `feedback migrate`, twice: the second run changes nothing) and on current
//! ClickHouse through chDB (`tests/clickhouse_versions.py`, pip `chdb-core`); the same seeded
//! rows go into both; every view, every aggregate and the ten examples of
//! `docs/data-model.md` give the same result on both, and the metric views equal values
//! computed here from the seeded rows.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use feedback_clickhouse::migrations;
use feedback_events::Metric;
use feedback_workload::oracle::{self, Sums};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::harness::{clickhouse_url, repo_root, Env};

/// (name, lower and upper bound in minutes before now) of the bands seeded rows fall in;
/// every bound is at least 5 minutes from a window edge, so the two servers agree even if
/// a minute passes between their runs.
const BANDS: &[(&str, i64, i64)] = &[
    ("a", 5, 50),               // last_1h, last_24h, last_7d
    ("b", 70, 110),             // prev_1h, last_24h, last_7d
    ("c", 180, 600),            // last_24h, last_7d
    ("d", 1_500, 2_800),        // prev_24h, last_7d
    ("e", 3 * 1440, 6 * 1440),  // last_7d
    ("f", 8 * 1440, 13 * 1440), // prev_7d
];

fn windows_of(band: &str) -> &'static [&'static str] {
    match band {
        "a" => &["last_1h", "last_24h", "last_7d"],
        "b" => &["prev_1h", "last_24h", "last_7d"],
        "c" => &["last_24h", "last_7d"],
        "d" => &["prev_24h", "last_7d"],
        "e" => &["last_7d"],
        _ => &["prev_7d"],
    }
}

type WindowKey = (String, String, String);

struct Seeded {
    statements: Vec<String>,
    /// (team, metric, window) -> (responses, score_sum, positive, negative)
    windows: BTreeMap<WindowKey, Sums>,
    totals: BTreeMap<(String, String), Sums>,
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn seed(db: &str, now: i64) -> Seeded {
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let teams = ["payments", "support", "unowned"];
    let channels = ["web", "phone", "email", "app"];
    let kinds = ["order", "support_ticket", "call"];
    let mut ratings = Vec::new();
    let mut windows: BTreeMap<WindowKey, Sums> = BTreeMap::new();
    let mut totals: BTreeMap<(String, String), Sums> = BTreeMap::new();
    for i in 0..600 {
        let (band, lo, hi) = BANDS[rng.random_range(0..BANDS.len())];
        let at = now - 60 * rng.random_range(lo..hi) - rng.random_range(0..60);
        let team = teams[rng.random_range(0..teams.len())];
        let m = Metric::ALL[rng.random_range(0..3)];
        let metric = m.as_str();
        let (smin, smax) = m.score_range();
        let score: i64 = rng.random_range(i64::from(smin)..=i64::from(smax));
        let add = |e: &mut Sums| oracle::add(e, m, score as i32);
        for w in windows_of(band) {
            add(windows
                .entry((team.into(), metric.into(), w.to_string()))
                .or_default());
        }
        add(totals.entry((team.into(), metric.into())).or_default());
        let comment = if rng.random_bool(0.5) {
            q(&format!("it's comment {i}"))
        } else {
            "NULL".into()
        };
        let product = if rng.random_bool(0.7) {
            q(["payments-card", "fleet"][rng.random_range(0..2)])
        } else {
            "NULL".into()
        };
        let kind = if rng.random_bool(0.8) {
            q(kinds[rng.random_range(0..kinds.len())])
        } else {
            "NULL".into()
        };
        ratings.push(format!(
            "('r{i}', toDateTime({at}), {ms}, 'i{i}', '{metric}', {score}, {comment}, 'survey', '{ch}', 'c{i}', {product}, NULL, '{{}}', '{team}', 'interaction', NULL, NULL, 'v1', {orphan}, {kind}, 'src', 0, {i}, {ms}, '', -1, -1)",
            ms = at * 1000,
            ch = channels[rng.random_range(0..channels.len())],
            orphan = rng.random_bool(0.1) as u8,
        ));
    }
    let mut interactions = Vec::new();
    for i in 0..300 {
        let (_, lo, hi) = BANDS[rng.random_range(0..BANDS.len())];
        let at = now - 60 * rng.random_range(lo..hi);
        interactions.push(format!(
            "('i{i}', toDateTime({at}), {ms}, '{svc}', '{ch}', '{kind}', 'c{i}', NULL, NULL, NULL, NULL, '{{}}', '{team}', 'claim', 'x.toml', 0, 'v1', 'src', 0, {i}, {ms}, '', -1, -1)",
            ms = at * 1000,
            svc = ["checkout-api", "shop-web", "legacy-crm"][rng.random_range(0..3)],
            ch = channels[rng.random_range(0..channels.len())],
            kind = kinds[rng.random_range(0..kinds.len())],
            team = teams[rng.random_range(0..teams.len())],
        ));
    }
    let mut dead = Vec::new();
    for (i, (component, reason)) in [
        ("attributor", "bad_marker"),
        ("attributor", "truncated"),
        ("sink", "clickhouse_rejected"),
        ("attributor", "bad_marker"),
    ]
    .iter()
    .enumerate()
    {
        dead.push(format!(
            "(toDateTime({}), '{component}', '{reason}', 'error text', 'src', 0, {i}, 'payload', 'att', 2, {i})",
            now - 600 - 60 * i as i64
        ));
    }
    let statements = vec![
        format!(
            "INSERT INTO {db}.ratings (rating_id, occurred_at, occurred_at_ms, interaction_id, metric, score, comment, service, channel, customer_ref, product, region, attributes, team, attribution, claim_file, claim_index, ownership_version, orphan, interaction_kind, source_topic, source_partition, source_offset, attributed_at_ms, kafka_topic, kafka_partition, kafka_offset) VALUES {}",
            ratings.join(", ")
        ),
        format!(
            "INSERT INTO {db}.interactions (interaction_id, occurred_at, occurred_at_ms, service, channel, kind, customer_ref, product, region, agent_id, handling_team, attributes, team, attribution, claim_file, claim_index, ownership_version, source_topic, source_partition, source_offset, attributed_at_ms, kafka_topic, kafka_partition, kafka_offset) VALUES {}",
            interactions.join(", ")
        ),
        format!(
            "INSERT INTO {db}.dead_letters (received_at, component, reason, error, source_topic, source_partition, source_offset, payload, kafka_topic, kafka_partition, kafka_offset) VALUES {}",
            dead.join(", ")
        ),
    ];
    Seeded {
        statements,
        windows,
        totals,
    }
}

/// The SQL examples of docs/data-model.md ("## Example questions"), for database `db`.
pub fn doc_examples(db: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(repo_root().join("docs/data-model.md")).unwrap();
    let examples = doc
        .split("## Example questions")
        .nth(1)
        .expect("docs/data-model.md has an `## Example questions` section");
    examples
        .split("```sql")
        .skip(1)
        .map(|b| {
            b.split("```")
                .next()
                .unwrap()
                .trim()
                .replace("feedback.", &format!("{db}."))
        })
        .collect()
}

fn queries(db: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vec![
        ("versions".into(), format!("SELECT version FROM {db}.schema_migrations ORDER BY version")),
        ("erasures".into(), format!("SELECT name, type FROM system.columns WHERE database = '{db}' AND table = 'erasures' ORDER BY name")),
        ("team_metrics".into(), format!("SELECT team, metric, grain, toUInt32(if(grain IN ('last_1h', 'total'), toDateTime(0), bucket)) AS b, responses, positive, negative, score_sum, value FROM {db}.team_metrics ORDER BY team, metric, grain, b")),
        ("team_metrics_window".into(), format!("SELECT team, metric, window, responses, positive, negative, score_sum, value FROM {db}.team_metrics_window ORDER BY team, metric, window")),
        ("team_breakdown".into(), format!("SELECT team, metric, dimension, dim_value, window, responses, positive, negative, score_sum, value FROM {db}.team_breakdown ORDER BY team, metric, dimension, dim_value, window")),
        ("team_minute".into(), format!("SELECT team, metric, minute, sum(responses), sum(score_sum), sum(positive), sum(negative) FROM {db}.team_minute GROUP BY team, metric, minute ORDER BY team, metric, minute")),
        ("team_interactions_minute".into(), format!("SELECT team, minute, channel, kind, sum(interactions) FROM {db}.team_interactions_minute GROUP BY team, minute, channel, kind ORDER BY team, minute, channel, kind")),
        ("team_dim_minute".into(), format!("SELECT team, metric, dimension, dim_value, minute, sum(responses), sum(score_sum), sum(positive), sum(negative) FROM {db}.team_dim_minute GROUP BY team, metric, dimension, dim_value, minute ORDER BY team, metric, dimension, dim_value, minute")),
    ];
    for (i, sql) in doc_examples(db).into_iter().enumerate() {
        v.push((format!("example {}", i + 1), sql));
    }
    v
}

async fn on_server(sql: &str) -> String {
    let r = reqwest::Client::new()
        .post(clickhouse_url())
        .body(sql.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "18.16 failed on {sql}: {text}");
    text
}

fn chdb(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("python3")
        .arg(repo_root().join("tests/clickhouse_versions.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chDB: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The views' value (rounded to 4 places) of `s`, from the oracle.
fn value(metric: &str, s: &Sums) -> f64 {
    let m: Metric = metric.parse().expect("a metric name");
    oracle::rounded(oracle::value(m, s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_views_and_examples_agree_on_18_16_and_current_clickhouse() {
    let env = Env::new("versions");
    let db = env.database.clone();
    let first = env.run(&["migrate"]);
    assert!(
        first.contains("applied migrations [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]"),
        "{first}"
    );
    let second = env.run(&["migrate"]);
    assert!(second.contains("up to date"), "{second}");
    let now = chrono::Utc::now().timestamp();
    let seeded = seed(&db, now);
    for s in &seeded.statements {
        on_server(s).await;
    }
    // The views read the rollups: rebuilt from the seeded raw rows (rows landed without
    // Kafka coordinates, as before migration 3); chDB gets the same recomputation as one
    // INSERT ... SELECT.
    let rebuilt = env.run(&["rollups", "rebuild"]);
    assert!(rebuilt.contains("rebuilt"), "{rebuilt}");
    let status = env.run(&["rollups", "status"]);
    assert!(
        status.contains("the rollups count every raw row"),
        "{status}"
    );
    let qs = queries(&db);
    assert_eq!(qs.len(), 8 + 10, "ten examples in docs/data-model.md");
    let mut server = BTreeMap::new();
    for (name, sql) in &qs {
        server.insert(name.clone(), on_server(sql).await);
    }

    let version = chdb(&["version"], "");
    let plan = migrations::fresh_plan(&db, migrations::parse_version(version.trim()));
    let mut statements = plan;
    statements.extend(seeded.statements.iter().cloned());
    statements.push(feedback_clickhouse::rollups::backfill_sql(
        &db,
        0,
        4_102_444_800,
    ));
    let job = serde_json::json!({ "statements": statements, "queries": qs });
    let out: serde_json::Value = serde_json::from_str(&chdb(&["run"], &job.to_string())).unwrap();
    for (name, sql) in &qs {
        let current = out["results"][name].as_str().unwrap();
        assert_eq!(
            server[name], current,
            "{name} differs between 18.16 and chDB {version}: {sql}"
        );
        if name.starts_with("example") {
            assert!(
                !current.is_empty(),
                "{name} returns no rows on the seeded data: {sql}"
            );
        }
    }
    assert_eq!(server["versions"], "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n");

    // Exact values, computed from the seeded rows.
    let mut want_windows = String::new();
    for ((team, metric, window), s) in &seeded.windows {
        want_windows.push_str(&format!(
            "{team}\t{metric}\t{window}\t{}\t{}\t{}\t{}\t{}\n",
            s.0,
            s.2,
            s.3,
            s.1,
            value(metric, s)
        ));
    }
    assert_eq!(server["team_metrics_window"], want_windows);
    let totals: String = server["team_metrics"]
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("total"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut want_totals = String::new();
    for ((team, metric), s) in &seeded.totals {
        want_totals.push_str(&format!(
            "{team}\t{metric}\ttotal\t0\t{}\t{}\t{}\t{}\t{}\n",
            s.0,
            s.2,
            s.3,
            s.1,
            value(metric, s)
        ));
    }
    assert_eq!(totals, want_totals);
}

/// Production runs migrations 1 and 2 today: `feedback migrate` upgrades such a database
/// in place (rows landed before keep `kafka_topic = ''`, `kafka_offset = -1`), and the sink
/// starts on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_upgrades_a_database_at_version_2() {
    let env = Env::new("upgrade");
    let db = env.database.clone();
    on_server(&format!("CREATE DATABASE {db}")).await;
    on_server(&format!("CREATE TABLE {db}.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree() ORDER BY version")).await;
    for m in &migrations::MIGRATIONS[..2] {
        assert!(
            m.steps.is_empty(),
            "migrations 1 and 2 are plain statements"
        );
        for s in m.statements {
            on_server(&migrations::render(s, &db)).await;
        }
        on_server(&format!(
            "INSERT INTO {db}.schema_migrations VALUES ({}, 'deployed', now())",
            m.version
        ))
        .await;
    }
    on_server(&format!("INSERT INTO {db}.ratings (rating_id, occurred_at, occurred_at_ms, metric, score, service, channel, customer_ref, attributes, team, attribution, ownership_version, orphan, source_topic, source_partition, source_offset, attributed_at_ms) VALUES ('old', now(), 0, 'csat', 5, 's', 'web', 'c', '{{}}', 'payments', 'claim', 'v', 0, 'src', 0, 1, 0)")).await;
    let out = env.run(&["migrate"]);
    assert!(
        out.contains("applied migrations [3, 4, 5, 6, 7, 8, 9, 10, 11]"),
        "{out}"
    );
    // Raw rows but no rollups yet: `migrate` says what to run.
    assert!(
        out.contains("the rollups count 0 of 1 ratings")
            && out.contains("feedback rollups rebuild"),
        "{out}"
    );
    let rebuilt = env.run(&["rollups", "rebuild"]);
    assert!(
        rebuilt.contains("rebuilt 1 day(s) from 1 events"),
        "{rebuilt}"
    );
    assert_eq!(
        on_server(&format!(
            "SELECT rating_id, kafka_topic, kafka_partition, kafka_offset FROM {db}.ratings"
        ))
        .await,
        "old\t\t-1\t-1\n"
    );
    // The views read the rollups, rebuilt from the rows landed before the upgrade.
    assert_eq!(
        on_server(&format!(
            "SELECT team, metric, responses, score_sum, positive, negative FROM {db}.team_minute"
        ))
        .await,
        "payments\tcsat\t1\t5\t1\t0\n"
    );
    assert!(env.run(&["migrate"]).contains("up to date"));
    // The sink accepts the upgraded schema (it would refuse to start otherwise).
    env.run(&["topics", "--partitions", "1"]);
    let mut sink = env
        .cmd(&["sink"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let early = sink.try_wait().unwrap();
    let _ = sink.kill();
    let out = sink.wait_with_output().unwrap();
    assert!(
        early.is_none(),
        "the sink refused the upgraded schema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
