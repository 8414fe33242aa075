//! `feedback attributor`: consume interactions and ratings, attribute each to its team,
//! join ratings to interactions, write attributed events; undecodable, oversized or
//! rule-breaking input goes to the dead-letter topic with its reason.
//!
//! Exactly-once: every batch is one Kafka transaction holding the attributed events, the
//! dead letters, the state changes (changelog topic) and the consumed offsets, so for
//! `read_committed` readers each input yields its output exactly once, across crashes and
//! rebalances. See `worker.rs` for the loop and `changelog.rs` for state restore.

mod changelog;
mod metrics;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;

use prometheus::Registry;

use feedback_runtime::health::Health;
use feedback_runtime::shutdown::Shutdown;
use feedback_runtime::supervise::{supervise_blocking, Restart, Restartable};
use feedback_runtime::Common;
use worker::WorkerError;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Directory holding one <team>.toml per team; re-read when a file changes.
    #[arg(
        long,
        env = "FEEDBACK_OWNERSHIP_DIR",
        default_value = "deploy/ownership"
    )]
    pub ownership_dir: PathBuf,
    /// How often the ownership directory is checked for changes, in milliseconds.
    #[arg(long, env = "FEEDBACK_OWNERSHIP_RELOAD_MS", default_value_t = 1000)]
    pub ownership_reload_ms: u64,
    /// Consumer group. Instances in one group share the input partitions.
    #[arg(
        long,
        env = "FEEDBACK_ATTRIBUTOR_GROUP",
        default_value = "feedback-attributor"
    )]
    pub group: String,
    /// This instance's stable name within the group (e.g. a StatefulSet pod name). The
    /// transactional id is <group>-<instance>: a restarted instance with the same name
    /// aborts its predecessor's unfinished transaction at once instead of after the
    /// transaction timeout. Two live instances must not share a name. Default: host name.
    #[arg(long, env = "FEEDBACK_ATTRIBUTOR_INSTANCE")]
    pub instance: Option<String>,
    /// Compacted topic holding the join and dedup state. Default: <group>.state.
    #[arg(long, env = "FEEDBACK_ATTRIBUTOR_CHANGELOG")]
    pub changelog: Option<String>,
    /// How long a rating waits for its interaction (event time), in seconds. Default 7 days.
    /// Ids are deduplicated over the same horizon.
    #[arg(long, env = "FEEDBACK_ATTRIBUTOR_HORIZON_SECS", default_value_t = 7 * 86_400)]
    pub horizon_secs: i64,
    /// Most input messages per transaction.
    #[arg(long, env = "FEEDBACK_ATTRIBUTOR_BATCH_MAX", default_value_t = 5000)]
    pub batch_max: usize,
    /// Longest time a batch stays open before its transaction commits, in milliseconds.
    #[arg(long, env = "FEEDBACK_ATTRIBUTOR_BATCH_MS", default_value_t = 100)]
    pub batch_ms: u64,
    /// Kafka transaction timeout in milliseconds: how long readers may wait on an
    /// unfinished transaction of a crashed instance that does not come back.
    #[arg(
        long,
        env = "FEEDBACK_ATTRIBUTOR_TRANSACTION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub transaction_timeout_ms: u64,
    /// Largest input message, in bytes; larger ones are dead-lettered as `oversized`
    /// (any event the collector accepts is under 20 KB).
    #[arg(
        long,
        env = "FEEDBACK_ATTRIBUTOR_MAX_MESSAGE_BYTES",
        default_value_t = 64 * 1024
    )]
    pub max_message_bytes: usize,
    /// Address of the /metrics endpoint.
    #[arg(
        long,
        env = "FEEDBACK_ATTRIBUTOR_METRICS_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    pub metrics_listen: SocketAddr,
}

impl Args {
    pub fn changelog_topic(&self) -> String {
        self.changelog
            .clone()
            .unwrap_or_else(|| format!("{}.state", self.group))
    }

    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "0".to_string())
        })
    }
}

pub async fn run(args: Args, shutdown: Shutdown) -> anyhow::Result<()> {
    let registry = Registry::new();
    let metrics = metrics::Metrics::new(&registry)?;
    let health = readiness(&args, &shutdown)?;
    feedback_runtime::metrics::serve(args.metrics_listen, registry.clone(), &health, &shutdown)
        .await?;
    // The consume → attribute → produce loop is synchronous (librdkafka's transactional
    // calls block), so it runs on its own thread; the runtime keeps serving /metrics.
    let worker = std::thread::Builder::new()
        .name("attributor".into())
        .spawn(move || run_worker(args, metrics, health, &shutdown))?;
    tokio::task::spawn_blocking(move || worker.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the attributor thread panicked"))?
}

/// The attributor is ready when Kafka serves its input topics, it holds input partitions
/// (`partitions`) and its last transaction committed (`transactions`).
fn readiness(args: &Args, shutdown: &Shutdown) -> anyhow::Result<Health> {
    let health = Health::new(
        "attributor",
        &["kafka", worker::PARTITIONS, worker::TRANSACTIONS],
    );
    health.set_ok(worker::TRANSACTIONS, "none needed yet");
    let topics = args.common.topics();
    let probe = std::sync::Arc::new(feedback_kafka::MetadataProbe::new(
        &args.common.kafka(),
        vec![topics.interactions, topics.ratings],
    )?);
    health.probe(shutdown, "kafka", move || {
        feedback_runtime::health::kafka_probe(probe.clone())
    });
    Ok(health)
}

/// Fenced this many times within [`FENCE_WINDOW`]: another instance shares the name.
const FENCE_LIMIT: usize = 3;
const FENCE_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);
/// Fresh workers after a lost producer allowed within [`FENCE_WINDOW`].
const PRODUCER_LOST_LIMIT: usize = 5;

impl Restartable for WorkerError {
    fn restart(&self) -> Option<Restart> {
        match self {
            // Same as a process restart (the SIGKILL-tested path), without leaving the
            // process: found by `feedback drill`, where the attributor exited on it twice
            // in 17 broker restarts. Bounded, in case Kafka keeps failing it.
            WorkerError::ProducerLost(_) => Some(Restart {
                kind: "producer lost",
                max_restarts: PRODUCER_LOST_LIMIT,
                window: FENCE_WINDOW,
                action: "the transactional producer cannot go on; starting the worker again with a new producer (state from the changelog, input from the committed offsets)",
            }),
            WorkerError::Fenced(_) => Some(Restart {
                kind: "fenced",
                max_restarts: FENCE_LIMIT - 1,
                window: FENCE_WINDOW,
                action: "fenced out of the consumer group (the session expired while Kafka was unreachable, or another instance uses the same --instance); starting the worker again",
            }),
            WorkerError::Other(_) => None,
        }
    }
}

/// Runs the worker; when the group coordinator fences it, starts a fresh worker (new
/// consumer and producer, state restored from the changelog) instead of exiting. A Kafka
/// broker restart longer than the session timeout fences a lone static member too (found
/// by `feedback drill`): exiting then only moved the restart to a supervisor. Two live
/// instances with one name fence each other again at once, so being fenced
/// [`FENCE_LIMIT`] times within [`FENCE_WINDOW`] still ends the process with that diagnosis.
fn run_worker(
    args: Args,
    metrics: metrics::Metrics,
    health: Health,
    stop: &Shutdown,
) -> anyhow::Result<()> {
    let attempt = || {
        health.set_failing(
            worker::PARTITIONS,
            "waiting for the consumer group to assign partitions",
        );
        worker::Worker::start(args.clone(), metrics.clone(), health.clone())?.run(stop)
    };
    let Err(g) = supervise_blocking(stop, attempt) else {
        return Ok(());
    };
    match g.error {
        WorkerError::Other(e) => Err(e),
        WorkerError::ProducerLost(p) => Err(anyhow::Error::new(p).context(format!(
            "the transactional producer failed {} times within {}s; is Kafka healthy?",
            g.failures,
            g.window.as_secs()
        ))),
        WorkerError::Fenced(f) => anyhow::bail!(
            "{f}, {} times within {}s: another attributor runs as instance {:?} in group {}; give every instance its own --instance",
            g.failures,
            g.window.as_secs(),
            f.instance,
            f.group
        ),
    }
}
