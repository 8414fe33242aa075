//! The expected end state of the pipeline, computed from generated items and what the
//! collector answered for each request: which ids must be stored, and the per-team,
//! per-metric aggregates and metric values ClickHouse must then hold.
//!
//! Shared by `feedback drill` (reconciliation) and the integration tests. It stays
//! independent of the code under test: it uses the ground-truth team of each item (not the
//! attribution engine) and the thresholds of [`Metric`] (not ClickHouse's views or SQL).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use feedback_events::Metric;

use crate::{Generated, Item};

/// `(responses, score_sum, positive, negative)` of a set of answers to one metric.
pub type Sums = (u64, i64, u64, u64);

/// Adds one answer to `s`, classified by [`Metric::is_positive`] / [`Metric::is_negative`].
pub fn add(s: &mut Sums, metric: Metric, score: i32) {
    s.0 += 1;
    s.1 += i64::from(score);
    s.2 += u64::from(metric.is_positive(score));
    s.3 += u64::from(metric.is_negative(score));
}

/// The metric's value of `s` ([`Metric::value`]), unrounded; NaN without answers.
pub fn value(metric: Metric, s: &Sums) -> f64 {
    metric.value(s.0, s.1, s.2, s.3).unwrap_or(f64::NAN)
}

/// `v` rounded to 4 decimal places, as the metric views round.
pub fn rounded(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// The start of the minute of `ms` (epoch milliseconds), in epoch seconds.
pub fn minute(ms: i64) -> u32 {
    (ms.div_euclid(1000) / 60 * 60) as u32
}

/// What one rating contributes to the aggregates.
#[derive(Debug, Clone, Copy)]
pub struct RatingFacts<'a> {
    /// The ground-truth team.
    pub team: &'a str,
    pub metric: Metric,
    /// Start of its minute, epoch seconds ([`minute`]).
    pub minute: u32,
    pub score: i32,
    pub channel: &'a str,
    /// `""` when the rating names no product.
    pub product: &'a str,
    /// The kind of the interaction it rates; `""` when none is known.
    pub kind: &'a str,
    /// It carries a (non-empty) comment.
    pub commented: bool,
}

/// The aggregate tables' expected content (summed per key), and the per-team totals the
/// metric views must show.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Aggregates {
    /// (team, metric, minute) → sums, as `team_minute`.
    pub team_minute: BTreeMap<(String, String, u32), Sums>,
    /// (team, minute, channel, kind) → interactions, as `team_interactions_minute`.
    pub team_interactions_minute: BTreeMap<(String, u32, String, String), u64>,
    /// (team, metric, dimension, value, minute) → sums, as `team_dim_minute`, dimensions
    /// `channel`, `product` and `kind`.
    pub team_dim_minute: BTreeMap<(String, String, String, String, u32), Sums>,
    /// (team, metric) → sums over all time, as `team_metrics` (grain `total`).
    pub team_metrics: BTreeMap<(String, String), Sums>,
    /// (team, metric, hour) → sums of the ratings with a comment, as the rollups' comment
    /// hours (grain `comment_hour`); the hour's start in epoch seconds.
    pub team_comment_hour: BTreeMap<(String, String, u32), Sums>,
}

impl Aggregates {
    pub fn interaction(&mut self, team: &str, minute: u32, channel: &str, kind: &str) {
        *self
            .team_interactions_minute
            .entry((
                team.to_string(),
                minute,
                channel.to_string(),
                kind.to_string(),
            ))
            .or_default() += 1;
    }

    pub fn rating(&mut self, r: RatingFacts<'_>) {
        let team = r.team.to_string();
        let metric = r.metric.as_str().to_string();
        add(
            self.team_minute
                .entry((team.clone(), metric.clone(), r.minute))
                .or_default(),
            r.metric,
            r.score,
        );
        add(
            self.team_metrics
                .entry((team.clone(), metric.clone()))
                .or_default(),
            r.metric,
            r.score,
        );
        if r.commented {
            add(
                self.team_comment_hour
                    .entry((team.clone(), metric.clone(), r.minute / 3600 * 3600))
                    .or_default(),
                r.metric,
                r.score,
            );
        }
        for (d, v) in [
            ("channel", r.channel),
            ("product", r.product),
            ("kind", r.kind),
        ] {
            add(
                self.team_dim_minute
                    .entry((
                        team.clone(),
                        metric.clone(),
                        d.to_string(),
                        v.to_string(),
                        r.minute,
                    ))
                    .or_default(),
                r.metric,
                r.score,
            );
        }
    }

    /// Interactions per team, over all minutes.
    pub fn interactions_per_team(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for ((team, ..), n) in &self.team_interactions_minute {
            *out.entry(team.clone()).or_default() += n;
        }
        out
    }
}

/// What the collector answered for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 202: every item must be stored exactly once.
    Accepted,
    /// 4xx: no item may be stored.
    Rejected,
    /// No final answer: whether its items are stored is unknown.
    Unresolved,
}

/// Everything that must be found after sending generated requests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Expected {
    /// Ids of accepted interactions and ratings (an id sent again counts once).
    pub interactions: BTreeSet<String>,
    pub ratings: BTreeSet<String>,
    /// Ids of rejected requests' items.
    pub rejected: BTreeSet<String>,
    /// Ids of requests that never got a final answer.
    pub unresolved: BTreeSet<String>,
    /// Aggregates of the accepted items.
    pub aggregates: Aggregates,
}

impl Expected {
    /// From each request's items (in send order) and the collector's answer.
    pub fn from_requests<'a>(
        requests: impl IntoIterator<Item = (&'a [Generated], Outcome)>,
    ) -> Self {
        let requests: Vec<(&[Generated], Outcome)> = requests.into_iter().collect();
        let mut e = Expected::default();
        // Interactions first: a rating's `kind` dimension is its interaction's kind.
        let mut kinds: HashMap<&str, &str> = HashMap::new();
        for (items, o) in &requests {
            for g in *items {
                let id = g.item.id().to_string();
                match o {
                    Outcome::Rejected => {
                        e.rejected.insert(id);
                    }
                    Outcome::Unresolved => {
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
        for (items, o) in &requests {
            if *o != Outcome::Accepted {
                continue;
            }
            for g in *items {
                match &g.item {
                    Item::Interaction(i) => {
                        if !e.interactions.insert(i.interaction_id.clone()) {
                            continue; // the same event sent again: counted once
                        }
                        e.aggregates.interaction(
                            g.team,
                            minute(i.occurred_at),
                            i.channel.as_str(),
                            &i.kind,
                        );
                    }
                    Item::Rating(x) => {
                        if !e.ratings.insert(x.rating_id.clone()) {
                            continue;
                        }
                        let kind = x
                            .interaction_id
                            .as_deref()
                            .and_then(|i| kinds.get(i))
                            .unwrap_or(&"");
                        e.aggregates.rating(RatingFacts {
                            team: g.team,
                            metric: x.metric,
                            minute: minute(x.occurred_at),
                            score: x.score,
                            channel: x.channel.as_str(),
                            product: x.product.as_deref().unwrap_or(""),
                            kind,
                            commented: x.comment.as_deref().is_some_and(|c| !c.is_empty()),
                        });
                    }
                }
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mix, Workload};

    #[test]
    fn metric_definitions() {
        let mut s = Sums::default();
        for score in [10, 9, 8, 7, 6, 0] {
            add(&mut s, Metric::Nps, score);
        }
        assert_eq!(s, (6, 40, 2, 2));
        assert_eq!(value(Metric::Nps, &s), 0.0);
        let mut c = Sums::default();
        for score in [5, 4, 3, 2] {
            add(&mut c, Metric::Csat, score);
        }
        assert_eq!(c, (4, 14, 2, 1));
        assert_eq!(value(Metric::Csat, &c), 50.0);
        let mut e = Sums::default();
        for score in [1, 2, 4] {
            add(&mut e, Metric::Ces, score);
        }
        assert_eq!(rounded(value(Metric::Ces, &e)), 2.3333);
        assert_eq!(minute(61_999), 60);
    }

    #[test]
    fn outcomes_decide_what_counts() {
        let items = Workload::new(7, "o", Mix::default()).generate(400, 1_700_000_000_000);
        let (a, b) = items.split_at(200);
        let all = Expected::from_requests([(items.as_slice(), Outcome::Accepted)]);
        let half = Expected::from_requests([(a, Outcome::Accepted), (b, Outcome::Rejected)]);
        let unknown = Expected::from_requests([(a, Outcome::Unresolved), (b, Outcome::Accepted)]);
        let distinct: BTreeSet<&str> = items.iter().map(|g| g.item.id()).collect();
        assert_eq!(all.interactions.len() + all.ratings.len(), distinct.len());
        assert!(half
            .rejected
            .iter()
            .all(|id| b.iter().any(|g| g.item.id() == id)));
        assert!(half.interactions.len() + half.ratings.len() < distinct.len());
        assert_eq!(
            unknown.unresolved.len(),
            a.iter().map(|g| g.item.id()).collect::<BTreeSet<_>>().len()
        );
        let responses: u64 = all.aggregates.team_metrics.values().map(|s| s.0).sum();
        assert_eq!(responses, all.ratings.len() as u64);
        let interactions: u64 = all.aggregates.interactions_per_team().values().sum();
        assert_eq!(interactions, all.interactions.len() as u64);
        // Every rating is counted once per dimension.
        let dims: u64 = all.aggregates.team_dim_minute.values().map(|s| s.0).sum();
        assert_eq!(dims, 3 * responses);
    }
}
