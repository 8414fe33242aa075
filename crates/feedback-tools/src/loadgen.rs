//! `feedback loadgen`: sends the synthetic workload of `feedback-workload` to the collector
//! at a fixed rate, with bounded concurrency and a progress bar.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use feedback_events::json::{interaction_to_json, rating_to_json};
use feedback_workload::{Generated, Item, Mix, Workload};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Base URL of the collector.
    #[arg(
        long,
        env = "FEEDBACK_COLLECTOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub collector_url: String,
    /// Events per second to offer.
    #[arg(long, env = "FEEDBACK_LOADGEN_RATE", default_value_t = 2000)]
    pub rate: u64,
    /// How long to generate new journeys, in seconds (the delayed remainder is sent after).
    #[arg(long, env = "FEEDBACK_LOADGEN_DURATION_SECS", default_value_t = 30)]
    pub duration_secs: u64,
    /// Seed of the workload; the same seed gives the same events (ids include --run-id).
    #[arg(long, env = "FEEDBACK_LOADGEN_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Prefix of every generated id; defaults to a value derived from the start time.
    #[arg(long, env = "FEEDBACK_LOADGEN_RUN_ID")]
    pub run_id: Option<String>,
    /// Items per HTTP request.
    #[arg(long, env = "FEEDBACK_LOADGEN_BATCH", default_value_t = 250)]
    pub batch: usize,
    /// Requests in flight at once.
    #[arg(long, env = "FEEDBACK_LOADGEN_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Hide the progress bar (for logs and CI).
    #[arg(long, env = "FEEDBACK_LOADGEN_QUIET")]
    pub quiet: bool,
    /// The collector API key to send (`Authorization: Bearer`), or `service=key,...` to send
    /// each event with its own service's key (requests are split by service); prefer the
    /// environment variable. Without one, only a collector started with --allow-anonymous
    /// accepts.
    #[arg(long, env = "FEEDBACK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub accepted: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    failed: AtomicU64,
}

/// Sends `items` as JSON batches to the collector; consecutive items of one kind share a
/// request (with per-service API keys, one request per service of the batch, each with its
/// service's key). Returns how many events the collector accepted.
pub async fn post_batch(
    client: &reqwest::Client,
    base: &str,
    items: &[Generated],
    keys: &feedback_runtime::apikeys::ClientKeys,
) -> anyhow::Result<u64> {
    let (path, body): (&str, Vec<Value>) = match items.first().map(|g| &g.item) {
        Some(Item::Interaction(_)) => (
            "/v1/interactions",
            items
                .iter()
                .filter_map(|g| {
                    if let Item::Interaction(i) = &g.item {
                        Some(interaction_to_json(i))
                    } else {
                        None
                    }
                })
                .collect(),
        ),
        Some(Item::Rating(_)) => (
            "/v1/ratings",
            items
                .iter()
                .filter_map(|g| {
                    if let Item::Rating(r) = &g.item {
                        Some(rating_to_json(r))
                    } else {
                        None
                    }
                })
                .collect(),
        ),
        None => return Ok(0),
    };
    let service = |v: &Value| v["service"].as_str().unwrap_or_default().to_string();
    if !keys.per_service() {
        let header = body.first().and_then(|v| keys.header(&service(v)));
        return send(client, base, path, &body, header).await;
    }
    let mut groups: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for v in body {
        groups.entry(service(&v)).or_default().push(v);
    }
    let mut accepted = 0;
    for (svc, group) in groups {
        accepted += send(client, base, path, &group, keys.header(&svc)).await?;
    }
    Ok(accepted)
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &[Value],
    auth: Option<&reqwest::header::HeaderValue>,
) -> anyhow::Result<u64> {
    let mut backoff = Duration::from_millis(50);
    for attempt in 0..8 {
        let mut req = client.post(format!("{base}{path}")).json(&body);
        if let Some(h) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, h.clone());
        }
        let res = req.send().await;
        match res {
            Ok(r) if r.status().as_u16() == 202 => return Ok(body.len() as u64),
            Ok(r) if r.status().is_server_error() && attempt < 7 => {}
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                return Err(anyhow::anyhow!(
                    "collector answered {status} for {path}: {text}"
                ));
            }
            Err(e) if attempt == 7 => {
                return Err(anyhow::anyhow!("cannot reach the collector at {base}: {e}"))
            }
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
    Err(anyhow::anyhow!("collector at {base} kept failing"))
}

/// Splits the items of one tick into requests of at most `max` items of one kind,
/// interactions first, each kind in generation order, no id twice in one request. Items of a tick (50 ms) may swap order
/// across kinds; a rating generated early by more than a tick still arrives early.
pub fn split_batches(items: Vec<Generated>, max: usize) -> Vec<Vec<Generated>> {
    let (interactions, ratings): (Vec<Generated>, Vec<Generated>) = items
        .into_iter()
        .partition(|g| matches!(g.item, Item::Interaction(_)));
    let mut out = Vec::new();
    for kind in [interactions, ratings] {
        out.extend(feedback_workload::split_requests(kind, max));
    }
    out
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let report = generate(&args).await?;
    println!(
        "loadgen: {} events accepted, {} failed in {:.1}s = {:.0} events/s",
        report.accepted,
        report.failed,
        report.elapsed.as_secs_f64(),
        report.accepted as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    if report.failed > 0 {
        anyhow::bail!(
            "{} events were not accepted; see the errors above",
            report.failed
        );
    }
    Ok(())
}

pub async fn generate(args: &Args) -> anyhow::Result<Report> {
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("lg{}-{}", args.seed, chrono::Utc::now().timestamp()));
    let mut w = Workload::new(args.seed, &run_id, Mix::default());
    let keys = feedback_runtime::apikeys::ClientKeys::parse(args.api_key.as_deref())?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let counters = Arc::new(Counters::default());
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Generated>>(args.concurrency * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (rx, client, counters, base, keys) = (
            rx.clone(),
            client.clone(),
            counters.clone(),
            args.collector_url.clone(),
            keys.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(batch) = next else { break };
                let n = batch.len() as u64;
                match post_batch(&client, &base, &batch, &keys).await {
                    Ok(k) => counters.accepted.fetch_add(k, Ordering::Relaxed),
                    Err(e) => {
                        tracing::error!(error = %e, "batch not accepted");
                        counters.failed.fetch_add(n, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let expected = args.rate * args.duration_secs;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(expected)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} loadgen [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let tick = Duration::from_millis(50);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut generated: u64 = 0;
    while started.elapsed() < Duration::from_secs(args.duration_secs) {
        interval.tick().await;
        let due = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
        let n = due
            .saturating_sub(generated)
            .min(expected.saturating_sub(generated));
        if n == 0 {
            continue;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let items: Vec<Generated> = (0..n).map(|_| w.next_item(now)).collect();
        generated += n;
        for b in split_batches(items, args.batch) {
            if tx.send(b).await.is_err() {
                break;
            }
        }
        bar.set_position(counters.accepted.load(Ordering::Relaxed));
    }
    let rest = w.drain();
    bar.inc_length(rest.len() as u64);
    for b in split_batches(rest, args.batch) {
        let _ = tx.send(b).await;
    }
    drop(tx);
    for wk in workers {
        let _ = wk.await;
    }
    bar.set_position(counters.accepted.load(Ordering::Relaxed));
    bar.finish_and_clear();
    Ok(Report {
        accepted: counters.accepted.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}
