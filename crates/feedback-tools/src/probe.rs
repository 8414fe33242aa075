//! `feedback probe`: end-to-end latency, from a rating's 202 at the collector to its team's
//! per-minute aggregate changing in ClickHouse.
//!
//! Each probe writes an interaction and its rating at a minute of event time that nothing
//! else uses (a random minute 10 to 20 days ago, checked empty first), so the aggregate of
//! that minute going from 0 to 1 is this rating arriving.

use std::time::{Duration, Instant};

use feedback_clickhouse::queries::probe;
use feedback_events::json::{interaction_to_json, rating_to_json};
use feedback_events::{Channel, Interaction, Metric, Rating};
use rand::Rng;

use feedback_runtime::Common;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Base URL of the collector.
    #[arg(
        long,
        env = "FEEDBACK_COLLECTOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub collector_url: String,
    /// Number of probes.
    #[arg(long, env = "FEEDBACK_PROBE_COUNT", default_value_t = 20)]
    pub count: usize,
    /// Pause between probes, in milliseconds.
    #[arg(long, env = "FEEDBACK_PROBE_INTERVAL_MS", default_value_t = 250)]
    pub interval_ms: u64,
    /// Give up on one probe after this many seconds.
    #[arg(long, env = "FEEDBACK_PROBE_TIMEOUT_SECS", default_value_t = 60)]
    pub timeout_secs: u64,
    /// The collector API key to send (`Authorization: Bearer`), or `service=key,...` (the
    /// probe emits as checkout-api and survey); prefer the environment variable. Without
    /// one, only a collector started with --allow-anonymous accepts.
    #[arg(long, env = "FEEDBACK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

const TEAM: &str = "payments";

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn responses(ch: &feedback_clickhouse::Ch, minute_secs: i64) -> anyhow::Result<u64> {
    Ok(probe::minute_responses(ch, TEAM, Metric::Csat, minute_secs).await?)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let ch = args.common.clickhouse()?;
    let keys = feedback_runtime::apikeys::ClientKeys::parse(args.api_key.as_deref())?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut latencies = Vec::with_capacity(args.count);
    let run = chrono::Utc::now().timestamp_millis();
    for i in 0..args.count {
        let now = chrono::Utc::now().timestamp();
        let mut minute = 0;
        for _ in 0..20 {
            // A minute 2 hours to 3 days back: free of the live load's minutes, and well
            // inside the attributor's join horizon (older events are late: their ratings
            // would be orphans, not credited through the interaction).
            let candidate = (now - 7_200 - rand::rng().random_range(0..3 * 1440) * 60) / 60 * 60;
            if responses(&ch, candidate).await? == 0 {
                minute = candidate;
                break;
            }
        }
        anyhow::ensure!(
            minute != 0,
            "found no unused minute for the probe; is {} full of probe data?",
            ch.database()
        );
        let iid = format!("probe-{run}-{i}");
        let interaction = Interaction {
            interaction_id: iid.clone(),
            occurred_at: minute * 1000 + 1000,
            service: "checkout-api".into(),
            channel: Channel::Web,
            kind: "order".into(),
            customer_ref: "probe".into(),
            product: None,
            region: None,
            agent_id: None,
            team: None,
            attributes: [("probe".to_string(), "true".to_string())].into(),
        };
        let rating = Rating {
            rating_id: format!("{iid}-r"),
            occurred_at: minute * 1000 + 2000,
            interaction_id: Some(iid.clone()),
            metric: Metric::Csat,
            score: 5,
            comment: None,
            service: "survey".into(),
            channel: Channel::Web,
            customer_ref: "probe".into(),
            product: None,
            region: None,
            attributes: [("probe".to_string(), "true".to_string())].into(),
        };
        let mut req = client
            .post(format!("{}/v1/interactions", args.collector_url))
            .json(&interaction_to_json(&interaction));
        if let Some(h) = keys.header(&interaction.service) {
            req = req.header(reqwest::header::AUTHORIZATION, h.clone());
        }
        let r = req.send().await?;
        anyhow::ensure!(
            r.status().as_u16() == 202,
            "collector refused the probe interaction: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        let mut req = client
            .post(format!("{}/v1/ratings", args.collector_url))
            .json(&rating_to_json(&rating));
        if let Some(h) = keys.header(&rating.service) {
            req = req.header(reqwest::header::AUTHORIZATION, h.clone());
        }
        let r = req.send().await?;
        let accepted = Instant::now();
        anyhow::ensure!(
            r.status().as_u16() == 202,
            "collector refused the probe rating: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        loop {
            if responses(&ch, minute).await? > 0 {
                latencies.push(accepted.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            anyhow::ensure!(
                accepted.elapsed() < Duration::from_secs(args.timeout_secs),
                "probe {iid}: the aggregate did not change within {}s; are the attributor and the sink running?",
                args.timeout_secs
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "probe: {} ratings, 202 → team aggregate changed: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
