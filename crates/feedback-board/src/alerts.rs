//! Team alerts: when a team's CSAT, NPS or CES drops significantly from the previous period,
//! its `contact` gets one Slack-compatible webhook message per episode.
//!
//! The rule (stated once, here, and in ARCHITECTURE.md):
//! - Compare the current window with the previous one of the same length (`last_1h` vs
//!   `prev_1h` by default) as `team_metrics_window` reports them.
//! - No decision unless **both** windows hold at least `min_responses` answers.
//! - CSAT: one-sided two-proportion z-test (pooled) on the share of 4–5 answers.
//! - NPS: one-sided z-test on the mean of the per-answer score +1 (promoter) / 0 / −1
//!   (detractor), unpooled variances (the usual NPS standard error).
//! - CES: one-sided Welch t-test on the mean score (variances from the raw ratings, the views
//!   hold no sum of squares), Welch–Satterthwaite degrees of freedom.
//! - A drop alerts when its one-sided p-value is below `alpha` **and** it is at least
//!   `min_drop` (points for CSAT and NPS, score units for CES): significance alone would page
//!   on tiny drops of very large samples.
//! - Episodes: the first alert for (team, metric) opens an episode and records the baseline
//!   (the previous window's value). No further alert for that pair until the episode ends,
//!   which happens when the current value is back to at least `baseline − min_drop / 2`.

use std::collections::BTreeMap;

use feedback_events::Metric;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// One window's sufficient statistics for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub responses: u64,
    pub positive: u64,
    pub negative: u64,
    pub score_sum: i64,
    /// Sum of squared scores (only needed for CES).
    pub score_sq_sum: i64,
    /// The view's value (CSAT %, NPS, CES mean).
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub min_responses: u64,
    pub alpha: f64,
    pub min_drop_csat: f64,
    pub min_drop_nps: f64,
    pub min_drop_ces: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            min_responses: 30,
            alpha: 0.01,
            min_drop_csat: 5.0,
            min_drop_nps: 10.0,
            min_drop_ces: 0.5,
        }
    }
}

impl Rule {
    pub fn min_drop(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Csat => self.min_drop_csat,
            Metric::Nps => self.min_drop_nps,
            Metric::Ces => self.min_drop_ces,
        }
    }
}

/// The outcome of testing one (team, metric) pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Test {
    /// The test statistic (z or t), positive when the score fell.
    pub statistic: f64,
    /// One-sided p-value of "the score fell".
    pub p_value: f64,
    pub test: &'static str,
}

fn normal_upper_tail(z: f64) -> f64 {
    let n = Normal::new(0.0, 1.0).expect("standard normal");
    1.0 - n.cdf(z)
}

/// One-sided test of "`now` is lower than `before`" for `metric`. `None` when either window
/// has fewer than `min_responses` answers.
pub fn drop_test(
    metric: Metric,
    before: &Sample,
    now: &Sample,
    min_responses: u64,
) -> Option<Test> {
    if before.responses < min_responses.max(2) || now.responses < min_responses.max(2) {
        return None;
    }
    let (nb, na) = (before.responses as f64, now.responses as f64);
    match metric {
        Metric::Csat => {
            let (pb, pa) = (before.positive as f64 / nb, now.positive as f64 / na);
            let p = (before.positive + now.positive) as f64 / (nb + na);
            let se = (p * (1.0 - p) * (1.0 / nb + 1.0 / na)).sqrt();
            let z = if se > 0.0 { (pb - pa) / se } else { 0.0 };
            Some(Test {
                statistic: z,
                p_value: normal_upper_tail(z),
                test: "one-sided two-proportion z-test",
            })
        }
        Metric::Nps => {
            let moments = |s: &Sample, n: f64| {
                let m = (s.positive as f64 - s.negative as f64) / n;
                let var = (s.positive + s.negative) as f64 / n - m * m;
                (m, var.max(0.0))
            };
            let (mb, vb) = moments(before, nb);
            let (ma, va) = moments(now, na);
            let se = (vb / nb + va / na).sqrt();
            let z = if se > 0.0 {
                (mb - ma) / se
            } else if mb > ma {
                f64::INFINITY
            } else {
                0.0
            };
            Some(Test {
                statistic: z,
                p_value: normal_upper_tail(z),
                test: "one-sided z-test on the promoter(+1)/detractor(-1) mean",
            })
        }
        Metric::Ces => {
            let moments = |s: &Sample, n: f64| {
                let m = s.score_sum as f64 / n;
                let var = (s.score_sq_sum as f64 - n * m * m) / (n - 1.0);
                (m, var.max(0.0))
            };
            let (mb, vb) = moments(before, nb);
            let (ma, va) = moments(now, na);
            let (qb, qa) = (vb / nb, va / na);
            let se = (qb + qa).sqrt();
            if se == 0.0 {
                let t = if mb > ma { f64::INFINITY } else { 0.0 };
                return Some(Test {
                    statistic: t,
                    p_value: if mb > ma { 0.0 } else { 0.5 },
                    test: "one-sided Welch t-test",
                });
            }
            let t = (mb - ma) / se;
            let df = (qb + qa).powi(2) / (qb * qb / (nb - 1.0) + qa * qa / (na - 1.0));
            let dist = StudentsT::new(0.0, 1.0, df.max(1.0)).expect("t distribution");
            Some(Test {
                statistic: t,
                p_value: 1.0 - dist.cdf(t),
                test: "one-sided Welch t-test",
            })
        }
    }
}

/// What the episode tracker decided for one evaluation of (team, metric).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to do.
    Quiet,
    /// A new episode: send an alert.
    Alert(Test),
    /// Still in an open episode: no alert.
    Ongoing,
    /// The open episode ended (the score recovered).
    Recovered,
}

/// Open episodes per (team, metric): the baseline value that dropped.
#[derive(Debug, Default)]
pub struct Episodes {
    open: BTreeMap<(String, Metric), f64>,
}

impl Episodes {
    /// Decides for one (team, metric). `before`/`now` are the two windows. A new episode is
    /// only recorded by [`Episodes::opened`] (after the alert was delivered), so a failed
    /// delivery is retried on the next evaluation.
    pub fn evaluate(
        &mut self,
        rule: &Rule,
        team: &str,
        metric: Metric,
        before: Option<&Sample>,
        now: Option<&Sample>,
    ) -> Decision {
        let key = (team.to_string(), metric);
        let min_drop = rule.min_drop(metric);
        if let Some(&baseline) = self.open.get(&key) {
            return match now {
                Some(n) if n.value >= baseline - min_drop / 2.0 => {
                    self.open.remove(&key);
                    Decision::Recovered
                }
                _ => Decision::Ongoing,
            };
        }
        let (Some(b), Some(n)) = (before, now) else {
            return Decision::Quiet;
        };
        match drop_test(metric, b, n, rule.min_responses) {
            Some(t) if t.p_value < rule.alpha && b.value - n.value >= min_drop => {
                Decision::Alert(t)
            }
            _ => Decision::Quiet,
        }
    }

    /// Records that an alert for (team, metric) went out with `baseline` as the level that
    /// dropped.
    pub fn opened(&mut self, team: &str, metric: Metric, baseline: f64) {
        self.open.insert((team.to_string(), metric), baseline);
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedEpisode {
    team: String,
    metric: Metric,
    baseline: f64,
}

impl Episodes {
    /// Reads the open episodes saved by [`Episodes::save`]; a missing file is no episode.
    pub fn load(path: &std::path::Path) -> Result<Episodes, AlertStateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Episodes::default()),
            Err(error) => {
                return Err(AlertStateError::Read {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        let saved: Vec<SavedEpisode> =
            serde_json::from_str(&text).map_err(|error| AlertStateError::Foreign {
                path: path.to_path_buf(),
                error,
            })?;
        Ok(Episodes {
            open: saved
                .into_iter()
                .map(|s| ((s.team, s.metric), s.baseline))
                .collect(),
        })
    }

    /// Writes the open episodes (whole file, via a temporary file and rename).
    pub fn save(&self, path: &std::path::Path) -> Result<(), AlertStateError> {
        let saved: Vec<SavedEpisode> = self
            .open
            .iter()
            .map(|((team, metric), b)| SavedEpisode {
                team: team.clone(),
                metric: *metric,
                baseline: *b,
            })
            .collect();
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_string_pretty(&saved).unwrap_or_default(),
        )
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|error| AlertStateError::Write {
            path: path.to_path_buf(),
            error,
        })
    }
}

/// The alert state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AlertStateError {
    #[error("cannot read the alert state file {}: {error}; fix its permissions or choose another with --alert-state-file", path.display())]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("alert state file {} is not what the board wrote ({error}); delete it to start without open episodes (teams may then be alerted again)", path.display())]
    Foreign {
        path: std::path::PathBuf,
        error: serde_json::Error,
    },
    #[error("cannot write the alert state file {}: {error}", path.display())]
    Write {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

/// Why a team gets no alert; completes the sentence "it ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoTarget {
    #[error("has no `contact` in its ownership file; add contact = \"#channel\" or a webhook URL")]
    NoContact,
    #[error("has contact {contact:?}, a channel, but no default webhook is configured; set --alert-webhook-url (FEEDBACK_BOARD_ALERT_WEBHOOK_URL)")]
    NoWebhook { contact: String },
}

/// Where a team's alerts go, from its ownership `contact`.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `contact` is an http(s) URL: post there.
    Url(String),
    /// `contact` is a channel (`#name` or `@person`): post to the default webhook with
    /// `channel` set.
    Channel { webhook: String, channel: String },
}

/// `None` with a reason when no target can be derived.
pub fn target(contact: Option<&str>, default_webhook: Option<&str>) -> Result<Target, NoTarget> {
    let Some(c) = contact.map(str::trim).filter(|c| !c.is_empty()) else {
        return Err(NoTarget::NoContact);
    };
    if c.starts_with("http://") || c.starts_with("https://") {
        return Ok(Target::Url(c.to_string()));
    }
    match default_webhook {
        Some(w) if !w.is_empty() => Ok(Target::Channel {
            webhook: w.to_string(),
            channel: c.to_string(),
        }),
        _ => Err(NoTarget::NoWebhook {
            contact: c.to_string(),
        }),
    }
}

pub fn format_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Csat => format!("{v:.1}%"),
        Metric::Nps => format!("{v:.1}"),
        Metric::Ces => format!("{v:.2}"),
    }
}

fn format_p(p: f64) -> String {
    if p < 1e-15 {
        "p < 1e-15".into()
    } else {
        format!("p = {p:.2e}")
    }
}

fn format_drop(metric: Metric, d: f64) -> String {
    match metric {
        Metric::Csat | Metric::Nps => format!("{d:.1} points"),
        Metric::Ces => format!("{d:.2}"),
    }
}

/// Everything an alert message says.
pub struct AlertText<'a> {
    pub team: &'a str,
    pub team_name: &'a str,
    pub metric: Metric,
    pub window_label: &'a str,
    pub before: &'a Sample,
    pub now: &'a Sample,
    pub test: &'a Test,
    pub alpha: f64,
    pub page_url: &'a str,
}

/// The Slack-compatible JSON body: `text` (read by every Slack-compatible receiver) plus one
/// mrkdwn `blocks` section; `channel` when the target is a channel.
pub fn payload(a: &AlertText<'_>, channel: Option<&str>) -> serde_json::Value {
    let label = a.metric.label();
    let text = format!(
        "{label} of {} dropped from {} to {} (−{}) in the {} vs the one before, on {} responses ({} before); {} {} < {}. Team page: {}",
        a.team_name,
        format_value(a.metric, a.before.value),
        format_value(a.metric, a.now.value),
        format_drop(a.metric, a.before.value - a.now.value),
        a.window_label,
        a.now.responses,
        a.before.responses,
        a.test.test,
        format_p(a.test.p_value),
        a.alpha,
        a.page_url
    );
    let mrkdwn = format!(
        "*{label} of {} dropped* from {} to *{}* (−{}) in the {} vs the one before\n{} responses now, {} before · {} {}\n<{}|Open {}'s page>",
        a.team_name,
        format_value(a.metric, a.before.value),
        format_value(a.metric, a.now.value),
        format_drop(a.metric, a.before.value - a.now.value),
        a.window_label,
        a.now.responses,
        a.before.responses,
        a.test.test,
        format_p(a.test.p_value),
        a.page_url,
        a.team_name
    );
    let mut v = serde_json::json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}],
        "team": a.team,
        "metric": a.metric,
    });
    if let Some(c) = channel {
        v["channel"] = serde_json::Value::String(c.to_string());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(responses: u64, positive: u64, negative: u64, value: f64) -> Sample {
        Sample {
            responses,
            positive,
            negative,
            value,
            ..Default::default()
        }
    }

    // Reference values computed by hand with the textbook formulas (Python, math.erfc and
    // scipy-free), not with this module.
    #[test]
    fn csat_two_proportion_z() {
        // 90/100 before, 50/100 now: pooled p = 0.7, se = sqrt(0.7*0.3*0.02) = 0.0648074,
        // z = 0.4 / 0.0648074 = 6.17213.
        let t = drop_test(
            Metric::Csat,
            &s(100, 90, 5, 90.0),
            &s(100, 50, 30, 50.0),
            30,
        )
        .unwrap();
        assert!((t.statistic - 6.17213).abs() < 1e-4, "{t:?}");
        assert!(t.p_value < 1e-9);
        // 40/50 vs 35/50: pooled 0.75, se = sqrt(0.75*0.25*0.04) = 0.0866025, z = 1.154701,
        // one-sided p = 0.124106.
        let t = drop_test(Metric::Csat, &s(50, 40, 0, 80.0), &s(50, 35, 0, 70.0), 30).unwrap();
        assert!((t.statistic - 1.154701).abs() < 1e-5, "{t:?}");
        assert!((t.p_value - 0.124106).abs() < 1e-5, "{t:?}");
    }

    #[test]
    fn too_few_responses_decide_nothing() {
        assert_eq!(
            drop_test(Metric::Csat, &s(10, 9, 0, 90.0), &s(10, 2, 5, 20.0), 30),
            None
        );
        assert_eq!(
            drop_test(Metric::Csat, &s(100, 90, 0, 90.0), &s(29, 2, 5, 6.9), 30),
            None
        );
    }

    #[test]
    fn nps_mean_z() {
        // before: 60 promoters, 20 detractors of 100: m = 0.4, var = 0.8 - 0.16 = 0.64
        // now: 30 promoters, 40 detractors of 100: m = -0.1, var = 0.7 - 0.01 = 0.69
        // se = sqrt(0.0064 + 0.0069) = 0.1153256, z = 0.5 / 0.1153256 = 4.335549
        let t = drop_test(
            Metric::Nps,
            &s(100, 60, 20, 40.0),
            &s(100, 30, 40, -10.0),
            30,
        )
        .unwrap();
        assert!((t.statistic - 4.335549).abs() < 1e-5, "{t:?}");
    }

    #[test]
    fn ces_welch_t() {
        // before: 40 answers, 20 × 6 and 20 × 4: mean 5, s² = 40/39 = 1.025641
        // now:    40 answers, 20 × 5 and 20 × 3: mean 4, s² = 1.025641
        // se = sqrt(2 * 1.025641 / 40) = 0.226455, t = 4.415880, df = 78
        let b = Sample {
            responses: 40,
            score_sum: 200,
            score_sq_sum: 20 * 36 + 20 * 16,
            value: 5.0,
            ..Default::default()
        };
        let n = Sample {
            responses: 40,
            score_sum: 160,
            score_sq_sum: 20 * 25 + 20 * 9,
            value: 4.0,
            ..Default::default()
        };
        let t = drop_test(Metric::Ces, &b, &n, 30).unwrap();
        assert!((t.statistic - 4.415880).abs() < 1e-5, "{t:?}");
        // P(T_78 > 4.41588) ≈ 1.6e-5
        assert!(t.p_value > 1e-6 && t.p_value < 1e-4, "{t:?}");
    }

    #[test]
    fn one_alert_per_episode_until_recovery() {
        let rule = Rule::default();
        let mut e = Episodes::default();
        let before = s(100, 90, 5, 90.0);
        let bad = s(100, 50, 30, 50.0);
        let d = e.evaluate(&rule, "a", Metric::Csat, Some(&before), Some(&bad));
        assert!(matches!(d, Decision::Alert(_)), "{d:?}");
        // Not yet delivered: decided again.
        assert!(matches!(
            e.evaluate(&rule, "a", Metric::Csat, Some(&before), Some(&bad)),
            Decision::Alert(_)
        ));
        e.opened("a", Metric::Csat, before.value);
        for _ in 0..3 {
            assert_eq!(
                e.evaluate(&rule, "a", Metric::Csat, Some(&before), Some(&bad)),
                Decision::Ongoing
            );
        }
        // 87.6 < 90 - 5/2: still the same episode.
        let almost = s(100, 87, 5, 87.4);
        assert_eq!(
            e.evaluate(&rule, "a", Metric::Csat, Some(&before), Some(&almost)),
            Decision::Ongoing
        );
        let fine = s(100, 88, 5, 88.0);
        assert_eq!(
            e.evaluate(&rule, "a", Metric::Csat, Some(&before), Some(&fine)),
            Decision::Recovered
        );
        assert!(matches!(
            e.evaluate(&rule, "a", Metric::Csat, Some(&before), Some(&bad)),
            Decision::Alert(_)
        ));
    }

    #[test]
    fn significant_but_small_drop_is_quiet() {
        // 20000 answers each, 90% → 88%: z ≈ 6.4 but only 2 points (< 5).
        let rule = Rule::default();
        let mut e = Episodes::default();
        let d = e.evaluate(
            &rule,
            "a",
            Metric::Csat,
            Some(&s(20000, 18000, 0, 90.0)),
            Some(&s(20000, 17600, 0, 88.0)),
        );
        assert_eq!(d, Decision::Quiet);
    }

    #[test]
    fn episodes_survive_a_restart_through_the_state_file() {
        let dir = std::env::temp_dir().join(format!("board-episodes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert!(Episodes::load(&path).unwrap().open.is_empty());
        let mut e = Episodes::default();
        e.opened("a", Metric::Csat, 90.0);
        e.save(&path).unwrap();
        let mut again = Episodes::load(&path).unwrap();
        let rule = Rule::default();
        assert_eq!(
            again.evaluate(
                &rule,
                "a",
                Metric::Csat,
                Some(&s(100, 90, 5, 90.0)),
                Some(&s(100, 50, 30, 50.0))
            ),
            Decision::Ongoing
        );
        std::fs::write(&path, "not json").unwrap();
        assert!(Episodes::load(&path)
            .unwrap_err()
            .to_string()
            .contains("delete it"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn targets_from_contacts() {
        assert_eq!(
            target(Some("https://hooks.example/x"), None),
            Ok(Target::Url("https://hooks.example/x".into()))
        );
        assert_eq!(
            target(Some("#billing"), Some("http://127.0.0.1:1/h")),
            Ok(Target::Channel {
                webhook: "http://127.0.0.1:1/h".into(),
                channel: "#billing".into()
            })
        );
        assert!(target(Some("#billing"), None)
            .unwrap_err()
            .to_string()
            .contains("--alert-webhook-url"));
        assert!(target(None, Some("http://x"))
            .unwrap_err()
            .to_string()
            .contains("contact"));
    }
}
