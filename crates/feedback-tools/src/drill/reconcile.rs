//! The end of a drill: what ClickHouse holds against what the drill generated and what
//! the collector answered. Expected values are computed here from the generated items and
//! the metric definitions written out again (not read from the SQL views under test).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{Debug, Write};

use feedback_clickhouse::Ch;
use feedback_events::Metric;
use feedback_workload::Item;
use serde::Deserialize;

use super::traffic::{Outcome, Request};

type Sums = (u64, i64, u64, u64); // responses, score_sum, positive, negative

/// The metric definitions of the design: (positive, negative) for a score.
fn classify(metric: Metric, score: i32) -> (u64, u64) {
    let (pos, neg) = match metric {
        Metric::Csat => (score >= 4, score <= 2),
        Metric::Nps => (score >= 9, score <= 6),
        Metric::Ces => (score >= 5, score <= 3),
    };
    (pos as u64, neg as u64)
}

fn value(metric: &str, s: &Sums) -> f64 {
    let r = s.0 as f64;
    match metric {
        "csat" => 100.0 * s.2 as f64 / r,
        "nps" => 100.0 * (s.2 as f64 - s.3 as f64) / r,
        _ => s.1 as f64 / r,
    }
}

fn add(s: &mut Sums, metric: Metric, score: i32) {
    let (p, n) = classify(metric, score);
    s.0 += 1;
    s.1 += score as i64;
    s.2 += p;
    s.3 += n;
}

/// Everything the drill expects to find.
#[derive(Default)]
pub struct Expected {
    pub interactions: BTreeSet<String>,
    pub ratings: BTreeSet<String>,
    pub rejected: BTreeSet<String>,
    /// Ids of requests that never got a final answer (stored or not: unknown).
    pub unresolved: BTreeSet<String>,
    pub dead: BTreeMap<(String, String), u64>,
    team_minute: BTreeMap<(String, String, u32), Sums>,
    team_interactions_minute: BTreeMap<(String, u32, String, String), u64>,
    team_dim_minute: BTreeMap<(String, String, String, String, u32), Sums>,
    team_metrics: BTreeMap<(String, String), Sums>,
}

fn minute(ms: i64) -> u32 {
    (ms.div_euclid(1000) / 60 * 60) as u32
}

impl Expected {
    /// From the requests and their outcomes, and the garbage reasons written to Kafka.
    pub fn new(requests: &[Request], outcomes: &[Outcome], garbage: &[&'static str]) -> Self {
        let mut e = Expected::default();
        // Interactions first: a rating's `kind` dimension is its interaction's kind.
        let mut kinds: HashMap<&str, &str> = HashMap::new();
        for (r, o) in requests.iter().zip(outcomes) {
            for g in &r.items {
                let id = g.item.id().to_string();
                match o {
                    Outcome::Rejected(_) => {
                        e.rejected.insert(id);
                    }
                    Outcome::Unresolved(_) => {
                        e.unresolved.insert(id);
                    }
                    Outcome::Accepted => {
                        if let Item::Interaction(i) = &g.item {
                            kinds.insert(&i.interaction_id, &i.kind);
                        }
                    }
                }
            }
        }
        for (r, o) in requests.iter().zip(outcomes) {
            if !matches!(o, Outcome::Accepted) {
                continue;
            }
            for g in &r.items {
                let team = g.team.to_string();
                match &g.item {
                    Item::Interaction(i) => {
                        if !e.interactions.insert(i.interaction_id.clone()) {
                            continue; // the same event sent again: counted once
                        }
                        *e.team_interactions_minute
                            .entry((
                                team,
                                minute(i.occurred_at),
                                i.channel.as_str().to_string(),
                                i.kind.clone(),
                            ))
                            .or_default() += 1;
                    }
                    Item::Rating(x) => {
                        if !e.ratings.insert(x.rating_id.clone()) {
                            continue;
                        }
                        let m = minute(x.occurred_at);
                        let metric = x.metric.as_str().to_string();
                        add(
                            e.team_minute
                                .entry((team.clone(), metric.clone(), m))
                                .or_default(),
                            x.metric,
                            x.score,
                        );
                        add(
                            e.team_metrics
                                .entry((team.clone(), metric.clone()))
                                .or_default(),
                            x.metric,
                            x.score,
                        );
                        let kind = x
                            .interaction_id
                            .as_deref()
                            .and_then(|i| kinds.get(i))
                            .unwrap_or(&"");
                        for (d, v) in [
                            ("channel", x.channel.as_str()),
                            ("product", x.product.as_deref().unwrap_or("")),
                            ("kind", kind),
                        ] {
                            add(
                                e.team_dim_minute
                                    .entry((
                                        team.clone(),
                                        metric.clone(),
                                        d.to_string(),
                                        v.to_string(),
                                        m,
                                    ))
                                    .or_default(),
                                x.metric,
                                x.score,
                            );
                        }
                    }
                }
            }
        }
        for reason in garbage {
            *e.dead
                .entry(("attributor".to_string(), reason.to_string()))
                .or_default() += 1;
        }
        e
    }
}

/// A metric value; equal within the views' rounding (4 decimal places).
#[derive(Clone, Copy, Debug)]
struct Approx(f64);

impl PartialEq for Approx {
    fn eq(&self, o: &Self) -> bool {
        (self.0 - o.0).abs() < 1e-3
    }
}

#[derive(clickhouse::Row, Deserialize)]
struct IdCount {
    id: String,
    n: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct Dead {
    component: String,
    reason: String,
    n: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct Tm {
    team: String,
    metric: String,
    minute: u32,
    responses: u64,
    score_sum: i64,
    positive: u64,
    negative: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct Tim {
    team: String,
    minute: u32,
    channel: String,
    kind: String,
    interactions: u64,
}

#[derive(clickhouse::Row, Deserialize)]
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

#[derive(clickhouse::Row, Deserialize)]
struct Mv {
    team: String,
    metric: String,
    responses: u64,
    positive: u64,
    negative: u64,
    score_sum: i64,
    value: f64,
}

#[derive(clickhouse::Row, Deserialize)]
struct N {
    n: u64,
}

/// Rows landed so far: (interactions, ratings, dead letters).
pub async fn landed(ch: &Ch) -> anyhow::Result<(u64, u64, u64)> {
    let n = |sql: &'static str| async move {
        ch.fetch::<N>(sql)
            .await
            .map(|r| r.first().map(|x| x.n).unwrap_or(0))
    };
    Ok((
        n("SELECT count() AS n FROM {db}.interactions").await?,
        n("SELECT count() AS n FROM {db}.ratings").await?,
        n("SELECT count() AS n FROM {db}.dead_letters").await?,
    ))
}

/// One line of the reconciliation table.
struct Line {
    what: String,
    expected: String,
    found: String,
    ok: bool,
    note: String,
}

/// The reconciliation: a printable table and whether everything matched.
pub struct Report {
    lines: Vec<Line>,
    pub ok: bool,
}

impl Report {
    pub fn push(&mut self, what: impl Into<String>, expected: u64, found: u64, note: String) {
        let ok = expected == found;
        self.ok &= ok;
        self.lines.push(Line {
            what: what.into(),
            expected: expected.to_string(),
            found: found.to_string(),
            ok,
            note,
        });
    }

    pub fn render(&self) -> String {
        let w = self
            .lines
            .iter()
            .map(|l| l.what.len())
            .max()
            .unwrap_or(10)
            .max(10);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<w$}  {:>10}  {:>10}  result",
            "reconciliation", "expected", "found"
        );
        let _ = writeln!(s, "{}", "-".repeat(w + 36));
        for l in &self.lines {
            let _ = writeln!(
                s,
                "{:<w$}  {:>10}  {:>10}  {}{}",
                l.what,
                l.expected,
                l.found,
                if l.ok { "ok" } else { "DIFFERENT" },
                if l.note.is_empty() {
                    String::new()
                } else {
                    format!("  {}", l.note)
                }
            );
        }
        s
    }
}

fn first<T: Debug>(label: &str, items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .take(3)
        .map(|x| format!("{x:?}"))
        .collect();
    if v.is_empty() {
        String::new()
    } else {
        format!("{label}: {}", v.join(", "))
    }
}

/// Keys whose values differ between `want` and `have` (missing on either side included).
fn differing<K: Ord + Clone, V: PartialEq>(want: &BTreeMap<K, V>, have: &BTreeMap<K, V>) -> Vec<K> {
    let keys: BTreeSet<&K> = want.keys().chain(have.keys()).collect();
    keys.into_iter()
        .filter(|k| want.get(*k) != have.get(*k))
        .cloned()
        .collect()
}

fn ids_line(
    report: &mut Report,
    table: &str,
    want: &BTreeSet<String>,
    rejected: &BTreeSet<String>,
    unresolved: &BTreeSet<String>,
    found: &HashMap<String, u64>,
) {
    let once: u64 = want.iter().filter(|i| found.get(*i) == Some(&1)).count() as u64;
    let missing: Vec<&String> = want.iter().filter(|i| !found.contains_key(*i)).collect();
    let mut dups: Vec<(&String, &u64)> = found.iter().filter(|(_, n)| **n > 1).collect();
    dups.sort();
    let mut present_rejected: Vec<&String> =
        found.keys().filter(|i| rejected.contains(*i)).collect();
    present_rejected.sort();
    let mut unknown: Vec<&String> = found
        .keys()
        .filter(|i| !want.contains(*i) && !rejected.contains(*i) && !unresolved.contains(*i))
        .collect();
    unknown.sort();
    report.push(
        format!("{table}: accepted (202), distinct ids"),
        want.len() as u64,
        found.keys().filter(|i| want.contains(*i)).count() as u64,
        String::new(),
    );
    report.push(
        format!("{table}: landed exactly once"),
        want.len() as u64,
        once,
        String::new(),
    );
    report.push(
        format!("{table}: missing"),
        0,
        missing.len() as u64,
        first("first", missing.iter().map(|s| s.as_str())),
    );
    report.push(
        format!("{table}: duplicated"),
        0,
        dups.len() as u64,
        first(
            "first (id, rows)",
            dups.iter().map(|(i, n)| (i.as_str(), **n)),
        ),
    );
    report.push(
        format!("{table}: rejected (4xx) but present"),
        0,
        present_rejected.len() as u64,
        first("first", present_rejected.iter().map(|s| s.as_str())),
    );
    report.push(
        format!("{table}: rows nobody sent"),
        0,
        unknown.len() as u64,
        first("first", unknown.iter().map(|s| s.as_str())),
    );
}

fn map_line<K: Ord + Clone + Debug, V: PartialEq>(
    report: &mut Report,
    what: &str,
    want: &BTreeMap<K, V>,
    have: &BTreeMap<K, V>,
) {
    let diff = differing(want, have);
    report.push(
        format!("{what}: rows equal to recomputation"),
        want.len() as u64,
        (want.len() - diff.iter().filter(|k| want.contains_key(*k)).count()) as u64,
        first("first differing key", diff.iter()),
    );
    if have.len() != want.len() {
        report.push(
            format!("{what}: rows"),
            want.len() as u64,
            have.len() as u64,
            String::new(),
        );
    }
}

/// Reads ClickHouse and compares it with `e`.
pub async fn reconcile(ch: &Ch, e: &Expected) -> anyhow::Result<Report> {
    let mut report = Report {
        lines: Vec::new(),
        ok: true,
    };
    let ids = |sql: &'static str| async move {
        anyhow::Ok(
            ch.fetch::<IdCount>(sql)
                .await?
                .into_iter()
                .map(|r| (r.id, r.n))
                .collect::<HashMap<String, u64>>(),
        )
    };
    let fi =
        ids("SELECT interaction_id AS id, count() AS n FROM {db}.interactions GROUP BY id").await?;
    let fr = ids("SELECT rating_id AS id, count() AS n FROM {db}.ratings GROUP BY id").await?;
    ids_line(
        &mut report,
        "interactions",
        &e.interactions,
        &e.rejected,
        &e.unresolved,
        &fi,
    );
    ids_line(
        &mut report,
        "ratings",
        &e.ratings,
        &e.rejected,
        &e.unresolved,
        &fr,
    );
    report.push(
        "requests without a final answer (ids)",
        0,
        e.unresolved.len() as u64,
        first("first", e.unresolved.iter()),
    );
    report.push(
        "rejected (4xx) ids, present anywhere",
        0,
        e.rejected
            .iter()
            .filter(|i| fi.contains_key(*i) || fr.contains_key(*i))
            .count() as u64,
        format!("{} ids rejected", e.rejected.len()),
    );

    let dead: BTreeMap<(String, String), u64> = ch
        .fetch::<Dead>("SELECT component, reason, count() AS n FROM {db}.dead_letters GROUP BY component, reason")
        .await?
        .into_iter()
        .map(|d| ((d.component, d.reason), d.n))
        .collect();
    let keys: BTreeSet<&(String, String)> = e.dead.keys().chain(dead.keys()).collect();
    for k in keys {
        report.push(
            format!("dead letters {}/{}", k.0, k.1),
            e.dead.get(k).copied().unwrap_or(0),
            dead.get(k).copied().unwrap_or(0),
            String::new(),
        );
    }

    let tm: BTreeMap<(String, String, u32), Sums> = ch
        .fetch::<Tm>("SELECT team, metric, toUInt32(minute) AS minute, sum(responses) AS responses, sum(score_sum) AS score_sum, sum(positive) AS positive, sum(negative) AS negative FROM {db}.team_minute GROUP BY team, metric, minute")
        .await?
        .into_iter()
        .map(|r| ((r.team, r.metric, r.minute), (r.responses, r.score_sum, r.positive, r.negative)))
        .collect();
    map_line(&mut report, "team_minute", &e.team_minute, &tm);

    let tim: BTreeMap<(String, u32, String, String), u64> = ch
        .fetch::<Tim>("SELECT team, toUInt32(minute) AS minute, channel, kind, sum(interactions) AS interactions FROM {db}.team_interactions_minute GROUP BY team, minute, channel, kind")
        .await?
        .into_iter()
        .map(|r| ((r.team, r.minute, r.channel, r.kind), r.interactions))
        .collect();
    map_line(
        &mut report,
        "team_interactions_minute",
        &e.team_interactions_minute,
        &tim,
    );

    let tdm: BTreeMap<(String, String, String, String, u32), Sums> = ch
        .fetch::<Tdm>("SELECT team, metric, dimension, dim_value, toUInt32(minute) AS minute, sum(responses) AS responses, sum(score_sum) AS score_sum, sum(positive) AS positive, sum(negative) AS negative FROM {db}.team_dim_minute GROUP BY team, metric, dimension, dim_value, minute")
        .await?
        .into_iter()
        .map(|r| ((r.team, r.metric, r.dimension, r.dim_value, r.minute), (r.responses, r.score_sum, r.positive, r.negative)))
        .collect();
    map_line(&mut report, "team_dim_minute", &e.team_dim_minute, &tdm);

    // The metric views: sums exact, the value within rounding (the views round to 4 places).
    let want: BTreeMap<(String, String), (Sums, Approx)> = e
        .team_metrics
        .iter()
        .map(|(k, s)| (k.clone(), (*s, Approx(value(&k.1, s)))))
        .collect();
    for (what, sql) in [
        ("team_metrics (total)", "SELECT team, metric, responses, positive, negative, score_sum, value FROM {db}.team_metrics WHERE grain = 'total'"),
        ("team_metrics_window (last_24h)", "SELECT team, metric, responses, positive, negative, score_sum, value FROM {db}.team_metrics_window WHERE window = 'last_24h'"),
    ] {
        let have: BTreeMap<(String, String), (Sums, Approx)> = ch
            .fetch::<Mv>(sql)
            .await?
            .into_iter()
            .map(|r| {
                (
                    (r.team, r.metric),
                    (
                        (r.responses, r.score_sum, r.positive, r.negative),
                        Approx(r.value),
                    ),
                )
            })
            .collect();
        map_line(&mut report, what, &want, &have);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_definitions() {
        let mut s = Sums::default();
        for score in [10, 9, 8, 7, 6, 0] {
            add(&mut s, Metric::Nps, score);
        }
        assert_eq!(s, (6, 40, 2, 2));
        assert_eq!(value("nps", &s), 0.0);
        let mut c = Sums::default();
        for score in [5, 4, 3, 2] {
            add(&mut c, Metric::Csat, score);
        }
        assert_eq!(value("csat", &c), 50.0);
        assert_eq!(minute(61_999), 60);
    }

    #[test]
    fn differing_keys_include_both_sides() {
        let a: BTreeMap<u32, u32> = [(1, 1), (2, 2)].into_iter().collect();
        let b: BTreeMap<u32, u32> = [(2, 3), (3, 3)].into_iter().collect();
        assert_eq!(differing(&a, &b), vec![1, 2, 3]);
        assert!(differing(&a, &a).is_empty());
    }
}
