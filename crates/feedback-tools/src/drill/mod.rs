//! `feedback drill`: a seeded workload through collector, attributor and sink (child
//! processes of this one) while faults are injected at seeded random moments: SIGKILL of
//! each component, Kafka broker restarts, ClickHouse restarts and ClickHouse outages. At
//! the end ClickHouse is reconciled with what was generated and what the collector
//! answered; the table is printed and any difference makes the exit status 1.

mod faults;
mod procs;
mod reconcile;
mod traffic;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use feedback_clickhouse::{Ch, ChConfig};
use feedback_kafka::Topics;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};

use faults::{Fault, ServiceCommands, Services};
use feedback_runtime::Common;
use procs::Proc;
use traffic::Outcome;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Kafka and ClickHouse to drill against. The drill uses its own topics (prefix
    /// `<name>.`) and database (`<name>`); --topic-prefix and --clickhouse-database are ignored.
    #[command(flatten)]
    pub common: Common,
    /// Seed of the workload, the fault plan and the moments of the faults.
    #[arg(long, env = "FEEDBACK_DRILL_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Generated workload items (plus the ratings and duplicates the generator still holds
    /// back at the end).
    #[arg(long, env = "FEEDBACK_DRILL_EVENTS", default_value_t = 20_000)]
    pub events: usize,
    /// Faults of every kind (6 kinds: SIGKILL of collector, attributor, sink; Kafka restart;
    /// ClickHouse restart; ClickHouse outage).
    #[arg(long, env = "FEEDBACK_DRILL_FAULTS_PER_KIND", default_value_t = 10)]
    pub faults_per_kind: u32,
    /// How long each ClickHouse outage lasts, in seconds.
    #[arg(long, env = "FEEDBACK_DRILL_OUTAGE_SECS", default_value_t = 12)]
    pub outage_secs: u64,
    /// Shortest pause before a fault, in milliseconds.
    #[arg(long, env = "FEEDBACK_DRILL_MIN_GAP_MS", default_value_t = 500)]
    pub min_gap_ms: u64,
    /// Longest pause before a fault, in milliseconds.
    #[arg(long, env = "FEEDBACK_DRILL_MAX_GAP_MS", default_value_t = 3000)]
    pub max_gap_ms: u64,
    /// Requests built to be refused (each a few valid items and one invalid one).
    #[arg(long, env = "FEEDBACK_DRILL_REJECTS", default_value_t = 40)]
    pub rejects: usize,
    /// Garbage messages written straight to the input topics (must become dead letters).
    #[arg(long, env = "FEEDBACK_DRILL_GARBAGE", default_value_t = 50)]
    pub garbage: usize,
    /// Workload items per window; each window is sent as one ratings and one interactions request.
    #[arg(long, env = "FEEDBACK_DRILL_WINDOW", default_value_t = 100)]
    pub window: usize,
    /// Requests in flight at once.
    #[arg(long, env = "FEEDBACK_DRILL_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// How long one request is retried (5xx, no answer) before it counts as unresolved, in seconds.
    #[arg(
        long,
        env = "FEEDBACK_DRILL_REQUEST_DEADLINE_SECS",
        default_value_t = 300
    )]
    pub request_deadline_secs: u64,
    /// After the last fault and request: how long the pipeline may take to land everything, in seconds.
    #[arg(long, env = "FEEDBACK_DRILL_SETTLE_SECS", default_value_t = 300)]
    pub settle_secs: u64,
    /// Partitions of each of the drill's topics.
    #[arg(long, env = "FEEDBACK_DRILL_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// Name of this drill's topics prefix and database. Default: drill_<seed>_<unix time>.
    #[arg(long, env = "FEEDBACK_DRILL_NAME")]
    pub name: Option<String>,
    /// Where the components' logs go. Default: <temp dir>/feedback-drill-<name>.
    #[arg(long, env = "FEEDBACK_DRILL_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Keep the drill's database after a drill without differences (it is always kept after one with differences).
    #[arg(long, env = "FEEDBACK_DRILL_KEEP")]
    pub keep: bool,
    /// Ownership files for the attributor.
    #[arg(
        long,
        env = "FEEDBACK_OWNERSHIP_DIR",
        default_value = "deploy/ownership"
    )]
    pub ownership_dir: PathBuf,
    /// Shell command that stops the Kafka broker.
    #[arg(
        long,
        env = "FEEDBACK_DRILL_KAFKA_STOP",
        default_value = "deploy/local/stack.sh stop-kafka"
    )]
    pub kafka_stop_cmd: String,
    /// Shell command that starts the Kafka broker and returns once it answers.
    #[arg(
        long,
        env = "FEEDBACK_DRILL_KAFKA_START",
        default_value = "deploy/local/stack.sh start-kafka"
    )]
    pub kafka_start_cmd: String,
    /// Shell command that stops ClickHouse.
    #[arg(
        long,
        env = "FEEDBACK_DRILL_CLICKHOUSE_STOP",
        default_value = "deploy/local/stack.sh stop-clickhouse"
    )]
    pub clickhouse_stop_cmd: String,
    /// Shell command that starts ClickHouse and returns once it answers.
    #[arg(
        long,
        env = "FEEDBACK_DRILL_CLICKHOUSE_START",
        default_value = "deploy/local/stack.sh start-clickhouse"
    )]
    pub clickhouse_start_cmd: String,
}

/// Client context of the drill's own producer: the broker restarts are on purpose, so
/// librdkafka's connection errors would only bury the drill's log; delivery failures are
/// counted from the delivery results instead.
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: rdkafka::error::KafkaError, _: &str) {}
}

/// Lines above the progress bar, or on stdout when there is no bar (not a terminal).
#[derive(Clone)]
struct Log {
    pb: ProgressBar,
    started: Instant,
}

impl Log {
    fn line(&self, msg: impl AsRef<str>) {
        let l = format!(
            "[{:>7.1}s] {}",
            self.started.elapsed().as_secs_f64(),
            msg.as_ref()
        );
        if self.pb.is_hidden() {
            println!("{l}");
        } else {
            self.pb.println(l);
        }
    }
    fn secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

struct Procs {
    collector: Proc,
    attributor: Proc,
    sink: Proc,
}

impl Procs {
    fn all(&mut self) -> [&mut Proc; 3] {
        [&mut self.collector, &mut self.attributor, &mut self.sink]
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot find a free loopback port")?
        .local_addr()?
        .port())
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("drill_{}_{}", args.seed, chrono::Utc::now().timestamp()));
    anyhow::ensure!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "--name {name:?}: use letters, digits and _ only (it names a ClickHouse database)"
    );
    anyhow::ensure!(
        args.window > 0 && args.concurrency > 0,
        "--window and --concurrency must be at least 1"
    );
    let log_dir = args
        .log_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("feedback-drill-{name}")));
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create log directory {}", log_dir.display()))?;
    let services = Services::new(ServiceCommands {
        kafka_stop: args.kafka_stop_cmd.clone(),
        kafka_start: args.kafka_start_cmd.clone(),
        clickhouse_stop: args.clickhouse_stop_cmd.clone(),
        clickhouse_start: args.clickhouse_start_cmd.clone(),
    });
    let drill = drill(&args, &name, &log_dir, &services);
    let result = tokio::select! {
        r = drill => r,
        _ = feedback_runtime::shutdown::signal() => Err(anyhow::anyhow!("interrupted (Ctrl-C or SIGTERM); the components were killed, Kafka and ClickHouse are started again")),
    };
    // `services` starts again anything still stopped when dropped here.
    drop(services);
    result
}

async fn drill(
    args: &Args,
    name: &str,
    log_dir: &std::path::Path,
    services: &Services,
) -> anyhow::Result<ExitCode> {
    let prefix = format!("{name}.");
    let topics = Topics::with_prefix(&prefix);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    println!(
        "drill {name}: seed {}, {} workload items, {} faults of each of {} kinds, outages of {}s; component logs in {}",
        args.seed,
        args.events,
        args.faults_per_kind,
        Fault::ALL.len(),
        args.outage_secs,
        log_dir.display()
    );

    // Topics and schema of this drill.
    feedback_kafka::admin::ensure_topics(&args.common.kafka(), &topics, args.partitions, 1)
        .await
        .context("creating the drill's topics")?;
    let ch = Ch::new(&ChConfig {
        url: args.common.clickhouse_url.clone(),
        database: name.to_string(),
        user: args.common.clickhouse_user.clone(),
        password: args.common.clickhouse_password.clone(),
    })?;
    ch.migrate()
        .await
        .context("creating the drill's database")?;

    // The components.
    let collector_port = free_port()?;
    let base = format!("http://127.0.0.1:{collector_port}");
    let mut envs: Vec<(String, String)> = vec![
        ("FEEDBACK_BROKERS".into(), args.common.brokers.clone()),
        (
            "FEEDBACK_KAFKA_PROPERTIES".into(),
            args.common.kafka_properties.join(","),
        ),
        ("FEEDBACK_TOPIC_PREFIX".into(), prefix.clone()),
        (
            "FEEDBACK_CLICKHOUSE_URL".into(),
            args.common.clickhouse_url.clone(),
        ),
        ("FEEDBACK_CLICKHOUSE_DATABASE".into(), name.to_string()),
        (
            "FEEDBACK_CLICKHOUSE_USER".into(),
            args.common.clickhouse_user.clone(),
        ),
        (
            "FEEDBACK_CLICKHOUSE_PASSWORD".into(),
            args.common.clickhouse_password.clone(),
        ),
        (
            "FEEDBACK_COLLECTOR_LISTEN".into(),
            format!("127.0.0.1:{collector_port}"),
        ),
        // The drill's collector is local and unauthenticated (see the access options).
        ("FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS".into(), "1".into()),
        (
            "FEEDBACK_ATTRIBUTOR_METRICS_LISTEN".into(),
            "127.0.0.1:0".into(),
        ),
        ("FEEDBACK_SINK_METRICS_LISTEN".into(), "127.0.0.1:0".into()),
        (
            "FEEDBACK_ATTRIBUTOR_GROUP".into(),
            format!("{prefix}attributor"),
        ),
        ("FEEDBACK_SINK_GROUP".into(), format!("{prefix}sink")),
    ];
    if std::env::var_os("FEEDBACK_LOG").is_none() {
        envs.push(("FEEDBACK_LOG".into(), "info,rdkafka=warn".into()));
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let ownership = args.ownership_dir.to_string_lossy().to_string();
    let procs = Arc::new(Mutex::new(Procs {
        collector: Proc::new("collector", s(&["collector"]), envs.clone(), log_dir),
        attributor: Proc::new(
            "attributor",
            s(&[
                "attributor",
                "--instance",
                "drill",
                "--ownership-dir",
                &ownership,
            ]),
            envs.clone(),
            log_dir,
        ),
        sink: Proc::new(
            "sink",
            s(&[
                "sink",
                "--instance-id",
                "drill-sink",
                "--session-timeout-ms",
                "10000",
                "--flush-ms",
                "300",
                "--max-backoff-ms",
                "1000",
            ]),
            envs.clone(),
            log_dir,
        ),
    }));
    for p in procs.lock().unwrap().all() {
        p.start()?;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(45))
        .build()?;
    wait_healthy(&client, &base, &procs).await?;

    // The workload and the fault plan.
    let start_ms = feedback_runtime::now_ms();
    let requests = traffic::requests(
        args.seed,
        name,
        args.events,
        args.window,
        args.rejects,
        start_ms,
        &mut rng,
    );
    let plan = faults::plan(
        &mut rng,
        args.faults_per_kind,
        Duration::from_millis(args.min_gap_ms),
        Duration::from_millis(args.max_gap_ms.max(args.min_gap_ms)),
    );
    let outage = Duration::from_secs(args.outage_secs);
    let estimate: Duration = plan.iter().map(|(g, f)| *g + f.estimate(outage)).sum();
    let n_faults = plan.len();

    let pb = ProgressBar::new(requests.len() as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} drill [{elapsed_precise}] {wide_bar} {pos}/{len} requests {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let log = Log {
        pb: pb.clone(),
        started: Instant::now(),
    };
    log.line(format!(
        "{} requests ({} built to be refused), {} garbage messages, {n_faults} faults; planned about {}s",
        requests.len(),
        args.rejects,
        args.garbage,
        estimate.as_secs()
    ));

    // Restart whatever exits on its own (and report it), like a process supervisor would.
    let done = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let procs = procs.clone();
        let done = done.clone();
        let log = log.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let mut ps = procs.lock().unwrap();
                for p in ps.all() {
                    if let Some(what) = p.check_exit(log.secs()) {
                        log.line(format!(
                            "UNEXPECTED: {} {what}; see {}; starting it again",
                            p.name,
                            p.log_path().display()
                        ));
                        if let Err(e) = p.start() {
                            log.line(format!("cannot start {} again: {e:#}", p.name));
                        }
                    }
                }
            }
        })
    };

    // Faults.
    let faults_done = Arc::new(AtomicUsize::new(0));
    let fault_task = {
        let procs = procs.clone();
        let log = log.clone();
        let faults_done = faults_done.clone();
        let pb = pb.clone();
        async move {
            let mut counts = [0u32; 6];
            for (k, (gap, f)) in plan.into_iter().enumerate() {
                tokio::time::sleep(gap).await;
                let what = inject(f, &procs, services, outage).await?;
                counts[Fault::ALL.iter().position(|x| *x == f).unwrap_or(0)] += 1;
                log.line(format!("fault {:>3}/{n_faults}  {f}: {what}", k + 1));
                faults_done.fetch_add(1, Ordering::SeqCst);
                pb.set_message(format!("· {}/{n_faults} faults", k + 1));
            }
            anyhow::Ok(counts)
        }
    };

    // Traffic, paced over the fault plan and never more than one fault's share ahead.
    let garbage_producer: FutureProducer<Quiet> = args
        .common
        .kafka()
        .bare_idempotent_producer_spec(300_000)
        .create_with_context(Quiet)
        .context("creating the garbage producer")?;
    let total = requests.len();
    let garbage_total = args.garbage;
    let garbage_failed = Arc::new(AtomicUsize::new(0));
    let traffic_started = Instant::now();
    let deadline_each = Duration::from_secs(args.request_deadline_secs);
    let retries = Arc::new(AtomicUsize::new(0));
    let traffic_task = {
        let faults_done = faults_done.clone();
        let pb = pb.clone();
        let client = client.clone();
        let base = base.clone();
        let requests = &requests;
        let garbage_failed = garbage_failed.clone();
        let retries = retries.clone();
        let topics = topics.clone();
        let name = name.to_string();
        async move {
            futures::stream::iter(requests.iter().enumerate())
                .map(|(k, req)| {
                    let faults_done = faults_done.clone();
                    let client = client.clone();
                    let base = base.clone();
                    let pb = pb.clone();
                    let garbage_producer = garbage_producer.clone();
                    let garbage_failed = garbage_failed.clone();
                    let retries = retries.clone();
                    let topics = topics.clone();
                    let name = name.clone();
                    async move {
                        let share = k as f64 / total as f64;
                        loop {
                            let fd = faults_done.load(Ordering::SeqCst);
                            let by_time = traffic_started.elapsed().as_secs_f64()
                                >= share * estimate.as_secs_f64();
                            let by_faults = share * n_faults as f64 <= (fd + 1) as f64;
                            if (by_time || fd >= n_faults) && by_faults {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        for g in (k * garbage_total / total)..((k + 1) * garbage_total / total) {
                            let bad = traffic::garbage(&name, g);
                            let topic = if bad.topic_is_ratings {
                                &topics.ratings
                            } else {
                                &topics.interactions
                            };
                            let key = format!("{name}-garbage-{g}");
                            let r = garbage_producer
                                .send(
                                    FutureRecord::to(topic).key(&key).payload(&bad.payload),
                                    Duration::from_secs(300),
                                )
                                .await;
                            if r.is_err() {
                                garbage_failed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        let (o, attempts) =
                            traffic::send(&client, &base, req, Instant::now() + deadline_each)
                                .await;
                        retries.fetch_add(attempts as usize - 1, Ordering::SeqCst);
                        pb.inc(1);
                        o
                    }
                })
                .buffered(args.concurrency)
                .collect::<Vec<Outcome>>()
                .await
        }
    };
    let (counts, outcomes) = tokio::join!(fault_task, traffic_task);
    let counts = counts?;
    log.line(format!(
        "traffic and faults done; {} retried attempts; waiting for the pipeline to land everything (at most {}s)",
        retries.load(Ordering::SeqCst),
        args.settle_secs
    ));

    // Expected state, then wait (bounded) until ClickHouse holds at least that much.
    let garbage_reasons: Vec<&'static str> = (0..garbage_total)
        .map(|g| traffic::garbage(name, g).reason.as_str())
        .collect();
    let expected = reconcile::Expected::new(&requests, &outcomes, &garbage_reasons);
    let want = (
        expected.truth.interactions.len() as u64,
        expected.truth.ratings.len() as u64,
        garbage_total as u64,
    );
    let settle = Instant::now() + Duration::from_secs(args.settle_secs);
    let mut last = (0, 0, 0);
    loop {
        if let Ok(l) = reconcile::landed(&ch).await {
            last = l;
            // Landed means the batch's rollups too (they follow its raw rows).
            let rolled = ch.rollup_coverage().await.is_ok_and(|c| {
                c.rolled_ratings == c.raw_ratings as i64
                    && c.rolled_interactions == c.raw_interactions as i64
            });
            if l.0 >= want.0 && l.1 >= want.1 && l.2 >= want.2 && rolled {
                break;
            }
        }
        if Instant::now() > settle {
            log.line(format!(
                "after {}s ClickHouse holds {} of {} interactions, {} of {} ratings, {} of {} dead letters; reconciling anyway",
                args.settle_secs, last.0, want.0, last.1, want.1, last.2, want.2
            ));
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Would-be duplicates arrive with the same batches; give stragglers a moment.
    tokio::time::sleep(Duration::from_secs(3)).await;
    done.store(true, Ordering::SeqCst);
    let _ = supervisor.await;
    pb.finish_and_clear();
    let report = reconcile::reconcile(&ch, &expected).await?;
    let unexpected: Vec<String> = {
        let mut ps = procs.lock().unwrap();
        ps.all()
            .iter()
            .flat_map(|p| p.unexpected.iter().map(move |u| format!("{}: {u}", p.name)))
            .collect()
    };
    let starts: Vec<(String, u32)> = {
        let mut ps = procs.lock().unwrap();
        ps.all()
            .iter()
            .map(|p| (p.name.to_string(), p.starts))
            .collect()
    };
    // Stop the components (SIGKILL: only pids this drill started).
    for p in procs.lock().unwrap().all() {
        p.kill();
    }

    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Accepted))
        .count();
    let rejected = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Rejected(_)))
        .count();
    println!();
    println!("faults                      injected");
    println!("-----------------------------------------");
    for (f, n) in Fault::ALL.iter().zip(counts) {
        println!("{:<26}  {n:>8}", f.label());
    }
    println!("{:<26}  {:>8}", "total", counts.iter().sum::<u32>());
    println!();
    println!(
        "requests: {} sent, {accepted} accepted (202), {rejected} refused (4xx), {} unresolved; {} retried attempts",
        outcomes.len(),
        outcomes.len() - accepted - rejected,
        retries.load(Ordering::SeqCst)
    );
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    for o in &outcomes {
        match o {
            Outcome::Rejected(s) => *statuses.entry(*s).or_default() += 1,
            Outcome::Unresolved(why) => println!("  unresolved request, last answer: {why}"),
            Outcome::Accepted => {}
        }
    }
    println!(
        "refusals by status: {}",
        statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "processes started: {}",
        starts
            .iter()
            .map(|(n, s)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    let refused_wrong = requests
        .iter()
        .zip(&outcomes)
        .filter(|(r, o)| r.must_reject != matches!(o, Outcome::Rejected(_)))
        .count();
    let mut report = report;
    report.push(
        "requests answered against expectation",
        0,
        refused_wrong as u64,
        "valid refused or invalid accepted".into(),
    );
    report.push(
        "garbage messages Kafka did not acknowledge",
        0,
        garbage_failed.load(Ordering::SeqCst) as u64,
        String::new(),
    );
    report.push(
        "component exits nobody caused",
        0,
        unexpected.len() as u64,
        String::new(),
    );
    print!("{}", report.render());
    let mut ok = report.ok;
    for u in &unexpected {
        println!("  {u}");
    }
    let missing_kinds: Vec<&str> = Fault::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n < args.faults_per_kind)
        .map(|(f, _)| f.label())
        .collect();
    if !missing_kinds.is_empty() {
        println!("faults not all injected: {}", missing_kinds.join(", "));
        ok = false;
    }
    println!();
    if ok {
        println!(
            "drill {name}: no differences ({} faults, {:.0}s)",
            counts.iter().sum::<u32>(),
            log.secs()
        );
        if !args.keep {
            let _ = feedback_clickhouse::queries::bench::drop_database(&ch).await;
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "drill {name}: DIFFERENCES found; database {name} and the logs in {} are kept for inspection",
            log_dir.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Waits (bounded) until the collector answers its health check.
async fn wait_healthy(
    client: &reqwest::Client,
    base: &str,
    procs: &Arc<Mutex<Procs>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        {
            let mut ps = procs.lock().unwrap();
            for p in ps.all() {
                if let Some(what) = p.check_exit(0.0) {
                    anyhow::bail!(
                        "{} {what} before the drill began; see {}",
                        p.name,
                        p.log_path().display()
                    );
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the collector did not answer on {base}/healthz within 60s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Injects one fault; returns what happened, for the log.
async fn inject(
    f: Fault,
    procs: &Arc<Mutex<Procs>>,
    services: &Services,
    outage: Duration,
) -> anyhow::Result<String> {
    use faults::Service;
    let t = Instant::now();
    Ok(match f {
        Fault::KillCollector | Fault::KillAttributor | Fault::KillSink => {
            let mut ps = procs.lock().unwrap();
            let p = match f {
                Fault::KillCollector => &mut ps.collector,
                Fault::KillAttributor => &mut ps.attributor,
                _ => &mut ps.sink,
            };
            let killed = p.kill();
            let pid = p.start()?;
            match killed {
                Some(old) => format!("pid {old} killed, started again as pid {pid}"),
                None => format!("was not running; started as pid {pid}"),
            }
        }
        Fault::KafkaRestart => {
            services.stop(Service::Kafka).await?;
            let down = t.elapsed();
            services.start(Service::Kafka).await?;
            format!(
                "stopped in {:.1}s, answering again after {:.1}s",
                down.as_secs_f64(),
                t.elapsed().as_secs_f64()
            )
        }
        Fault::ClickhouseRestart => {
            services.stop(Service::Clickhouse).await?;
            services.start(Service::Clickhouse).await?;
            format!("answering again after {:.1}s", t.elapsed().as_secs_f64())
        }
        Fault::ClickhouseOutage => {
            services.stop(Service::Clickhouse).await?;
            tokio::time::sleep(outage).await;
            services.start(Service::Clickhouse).await?;
            format!("down for {:.1}s in all", t.elapsed().as_secs_f64())
        }
    })
}
