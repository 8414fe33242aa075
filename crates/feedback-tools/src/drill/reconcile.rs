//! The end of a drill: what ClickHouse holds against what the drill generated and what
//! the collector answered. Expected values come from [`feedback_workload::oracle`] (the
//! generated items and the thresholds of `Metric`, not the SQL views under test).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{Debug, Write};

use feedback_clickhouse::queries::reconcile as q;
use feedback_clickhouse::Ch;
use feedback_events::Metric;
use feedback_workload::oracle::{self, Sums};

use super::traffic::{Outcome, Request};

/// Everything the drill expects to find.
pub struct Expected {
    /// Ids and aggregates of the requests, by their outcome.
    pub truth: oracle::Expected,
    /// Dead letters per (component, reason).
    pub dead: BTreeMap<(String, String), u64>,
}

impl Expected {
    /// From the requests and their outcomes, and the garbage reasons written to Kafka.
    pub fn new(requests: &[Request], outcomes: &[Outcome], garbage: &[&'static str]) -> Self {
        let truth = oracle::Expected::from_requests(requests.iter().zip(outcomes).map(|(r, o)| {
            let o = match o {
                Outcome::Accepted => oracle::Outcome::Accepted,
                Outcome::Rejected(_) => oracle::Outcome::Rejected,
                Outcome::Unresolved(_) => oracle::Outcome::Unresolved,
            };
            (r.items.as_slice(), o)
        }));
        let mut dead = BTreeMap::new();
        for reason in garbage {
            *dead
                .entry(("attributor".to_string(), reason.to_string()))
                .or_default() += 1;
        }
        Expected { truth, dead }
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

/// Rows landed so far: (interactions, ratings, dead letters).
pub async fn landed(ch: &Ch) -> anyhow::Result<(u64, u64, u64)> {
    Ok(q::raw_counts(ch).await?)
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
    let e_dead = &e.dead;
    let e = &e.truth;
    let ids = |rows: Vec<q::IdCount>| -> HashMap<String, u64> {
        rows.into_iter().map(|r| (r.id, r.n)).collect()
    };
    let fi = ids(q::interaction_ids(ch).await?);
    let fr = ids(q::rating_ids(ch).await?);
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

    let dead: BTreeMap<(String, String), u64> = q::dead_letters(ch)
        .await?
        .into_iter()
        .map(|d| ((d.component, d.reason), d.n))
        .collect();
    let keys: BTreeSet<&(String, String)> = e_dead.keys().chain(dead.keys()).collect();
    for k in keys {
        report.push(
            format!("dead letters {}/{}", k.0, k.1),
            e_dead.get(k).copied().unwrap_or(0),
            dead.get(k).copied().unwrap_or(0),
            String::new(),
        );
    }

    let a = &e.aggregates;
    let tm = by_team_metric_time(q::team_minute(ch).await?);
    map_line(&mut report, "team_minute", &a.team_minute, &tm);

    let tim: BTreeMap<(String, u32, String, String), u64> = q::team_interactions_minute(ch)
        .await?
        .into_iter()
        .map(|r| ((r.team, r.minute, r.channel, r.kind), r.interactions))
        .collect();
    map_line(
        &mut report,
        "team_interactions_minute",
        &a.team_interactions_minute,
        &tim,
    );

    let tdm: BTreeMap<(String, String, String, String, u32), Sums> = q::team_dim_minute(ch)
        .await?
        .into_iter()
        .map(|r| {
            (
                (r.team, r.metric, r.dimension, r.dim_value, r.minute),
                (r.responses, r.score_sum, r.positive, r.negative),
            )
        })
        .collect();
    map_line(&mut report, "team_dim_minute", &a.team_dim_minute, &tdm);

    let tch = by_team_metric_time(q::comment_hours(ch).await?);
    map_line(
        &mut report,
        "rollups: comment hours",
        &a.team_comment_hour,
        &tch,
    );

    // Every rollup (hour and day grains too) equals its recomputation from the raw rows,
    // which the lines above hold equal to the generated events.
    let (keys, diffs) = feedback_clickhouse::rollups::compare_with_raw(ch).await?;
    report.push(
        "rollups: keys equal to the raw rows' recomputation",
        keys as u64,
        (keys - diffs.iter().filter(|d| d.recomputed.is_some()).count()) as u64,
        diffs
            .first()
            .map(|d| {
                format!(
                    "first difference: stored {:?}, recomputed {:?}",
                    d.stored, d.recomputed
                )
            })
            .unwrap_or_default(),
    );
    report.push(
        "rollups: keys not in the recomputation",
        0,
        diffs.iter().filter(|d| d.recomputed.is_none()).count() as u64,
        String::new(),
    );

    // The metric views: sums exact, the value within rounding (the views round to 4 places).
    let want: BTreeMap<(String, String), (Sums, Approx)> = a
        .team_metrics
        .iter()
        .map(|(k, s)| {
            let v =
                k.1.parse::<Metric>()
                    .map_or(f64::NAN, |m| oracle::value(m, s));
            (k.clone(), (*s, Approx(v)))
        })
        .collect();
    for (what, rows) in [
        ("team_metrics (total)", ch.metrics("total").await?),
        (
            "team_metrics_window (last_24h)",
            q::metrics_window(ch, "last_24h").await?,
        ),
    ] {
        let have: BTreeMap<(String, String), (Sums, Approx)> = rows
            .into_iter()
            .map(|r| {
                (
                    (r.team, r.metric.to_string()),
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

/// Rows keyed by (team, metric, minute or hour), as the oracle keys them.
fn by_team_metric_time(rows: Vec<q::TeamMinute>) -> BTreeMap<(String, String, u32), Sums> {
    rows.into_iter()
        .map(|r| {
            (
                (r.team, r.metric, r.minute),
                (r.responses, r.score_sum, r.positive, r.negative),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_keys_include_both_sides() {
        let a: BTreeMap<u32, u32> = [(1, 1), (2, 2)].into_iter().collect();
        let b: BTreeMap<u32, u32> = [(2, 3), (3, 3)].into_iter().collect();
        assert_eq!(differing(&a, &b), vec![1, 2, 3]);
        assert!(differing(&a, &a).is_empty());
    }
}
