//! `feedback bench`: the pipeline beside the raw limits of Kafka and ClickHouse on the same
//! machine, in one run, on the same generated events (see docs/benchmarks.md).
//!
//! Every run uses its own topic prefix and databases (`bench<time>a.` ...), spawns the
//! pipeline's own binary (this executable) for the stage measurements, and deletes its
//! topics and databases at the end. Results go to `<out>/<run id>/`: `results.json`,
//! `table.md` (paste into docs/benchmarks.md), `chart.svg`, and every child's log.

mod kafka;
mod procs;
mod readscale;
mod report;
mod state;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use feedback_clickhouse::queries::bench::{self as bench_sql, RawTable};
use feedback_events::{reference, Encoded};
use feedback_kafka::Topics;
use feedback_workload::{Generated, Item, Mix, Workload};
use indicatif::{ProgressBar, ProgressStyle};

use feedback_runtime::Common;
use kafka::Msg;
use procs::{Proc, ProcCost, Server};
use report::{Ratio, Report, Row};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Events in the generated workload (interactions and ratings, duplicates included).
    #[arg(long, env = "FEEDBACK_BENCH_EVENTS", default_value_t = 500_000)]
    pub events: usize,
    /// The reduced run of the test suite: a few thousand events, small state, a few
    /// probes. Its figures only show that every measurement works.
    #[arg(long, env = "FEEDBACK_BENCH_QUICK")]
    pub quick: bool,
    /// Folder for the results (a sub-folder per run).
    #[arg(long, env = "FEEDBACK_BENCH_OUT", default_value = "bench-results")]
    pub out: PathBuf,
    /// Partitions of every topic of the run.
    #[arg(long, env = "FEEDBACK_BENCH_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Live join keys of the state measurements (comma-separated).
    #[arg(long, env = "FEEDBACK_BENCH_STATE_KEYS", value_delimiter = ',', default_values_t = [1_000_000u64, 10_000_000])]
    pub state_keys: Vec<u64>,
    /// Seconds of steady load for the freshness measurement (probes run inside it).
    #[arg(long, env = "FEEDBACK_BENCH_FRESHNESS_SECS", default_value_t = 60)]
    pub freshness_secs: u64,
    /// Ratings probed for freshness (202 → the team's aggregate changed).
    #[arg(long, env = "FEEDBACK_BENCH_PROBES", default_value_t = 60)]
    pub probes: usize,
    /// ClickHouse native TCP port, for clickhouse-client.
    #[arg(long, env = "CLICKHOUSE_TCP_PORT", default_value_t = 9000)]
    pub clickhouse_tcp_port: u16,
    /// The clickhouse-client program.
    #[arg(
        long,
        env = "FEEDBACK_BENCH_CLICKHOUSE_CLIENT",
        default_value = "clickhouse-client"
    )]
    pub clickhouse_client: PathBuf,
    /// Folder of the Kafka jars (for Kafka's perf tools; java must be on PATH).
    #[arg(long, env = "FEEDBACK_KAFKA_LIBS", default_value = ".local/kafka/libs")]
    pub kafka_libs: PathBuf,
    /// The local stack's data folder (pid files of the broker and ClickHouse, to report
    /// their CPU per step).
    #[arg(long, env = "FEEDBACK_LOCAL_DIR", default_value = ".local")]
    pub local_dir: PathBuf,
    /// Directory holding one <team>.toml per team.
    #[arg(
        long,
        env = "FEEDBACK_OWNERSHIP_DIR",
        default_value = "deploy/ownership"
    )]
    pub ownership_dir: PathBuf,
    /// The sink's flush interval in milliseconds (the freshness target is this + 500 ms).
    #[arg(long, env = "FEEDBACK_SINK_FLUSH_MS", default_value_t = 500)]
    pub sink_flush_ms: u64,
    /// Instead of the pipeline benchmark: what reading costs as the history grows. For each
    /// size of --read-scale-ratings, a scratch database filled with a generated history and
    /// its rollups rebuilt; then every board API call, every Grafana panel query, and
    /// ClickHouse's CPU with every team's page live (needs ClickHouse only, not Kafka).
    #[arg(long, env = "FEEDBACK_BENCH_READ_SCALE")]
    pub read_scale: bool,
    /// Sizes of the histories (ratings; as many interactions), comma-separated.
    #[arg(long, env = "FEEDBACK_BENCH_READ_SCALE_RATINGS", value_delimiter = ',', default_values_t = [500_000u64, 50_000_000])]
    pub read_scale_ratings: Vec<u64>,
    /// Days the history spans, ending now.
    #[arg(long, env = "FEEDBACK_BENCH_READ_SCALE_DAYS", default_value_t = 90)]
    pub read_scale_days: u32,
    /// Rows per INSERT while filling a history.
    #[arg(
        long,
        env = "FEEDBACK_BENCH_READ_SCALE_CHUNK",
        default_value_t = 1_000_000
    )]
    pub read_scale_chunk: u64,
    /// Timed calls of each board API call (after one warm-up).
    #[arg(long, env = "FEEDBACK_BENCH_READ_SCALE_CALLS", default_value_t = 20)]
    pub read_scale_calls: usize,
    /// Timed runs of each Grafana panel query per time range (after one warm-up). 20, as
    /// for the API calls: with 10 the p95 was nearly the slowest run, and one scheduler
    /// stall on a 10 ms read moved a 500 k → 50 M ratio by 3×.
    #[arg(
        long,
        env = "FEEDBACK_BENCH_READ_SCALE_PANEL_RUNS",
        default_value_t = 20
    )]
    pub read_scale_panel_runs: usize,
    /// Seconds the index and every team's page stay open live.
    #[arg(
        long,
        env = "FEEDBACK_BENCH_READ_SCALE_LIVE_SECS",
        default_value_t = 30
    )]
    pub read_scale_live_secs: u64,
    /// Longest wait, in seconds, for the background merges of a filled history to finish
    /// before measuring (they would count as the pages' CPU).
    #[arg(
        long,
        env = "FEEDBACK_BENCH_READ_SCALE_MERGE_WAIT_SECS",
        default_value_t = 300
    )]
    pub read_scale_merge_wait_secs: u64,
    /// Keep the scratch databases of --read-scale (default: dropped at the end).
    #[arg(long, env = "FEEDBACK_BENCH_KEEP")]
    pub keep: bool,
    /// Folder of the Grafana dashboards whose ClickHouse queries --read-scale times.
    #[arg(
        long,
        env = "FEEDBACK_BENCH_DASHBOARDS_DIR",
        default_value = "deploy/grafana/dashboards"
    )]
    pub dashboards_dir: PathBuf,
}

/// One isolated pipeline of the run: topic prefix, database.
struct Lane {
    prefix: String,
    database: String,
    topics: Topics,
}

struct Ctx {
    args: Args,
    exe: PathBuf,
    dir: PathBuf,
    rt: tokio::runtime::Handle,
    rows: Vec<Row>,
    broker: Server,
    clickhouse: Server,
    partitions: i32,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {msg:40} {wide_bar} {pos}/{len}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_message(what.to_string());
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

impl Ctx {
    fn lane(&self, run_id: &str, tag: &str) -> Lane {
        let prefix = format!("{run_id}{tag}.");
        Lane {
            topics: Topics::with_prefix(&prefix),
            database: format!("{run_id}{tag}"),
            prefix,
        }
    }

    fn ch(&self, database: &str) -> anyhow::Result<feedback_clickhouse::Ch> {
        let mut c = self.args.common.clone();
        c.clickhouse_database = database.to_string();
        c.clickhouse()
    }

    fn prepare(&self, lane: &Lane) -> anyhow::Result<()> {
        self.rt.block_on(feedback_kafka::admin::ensure_topics(
            &self.args.common.kafka(),
            &lane.topics,
            self.partitions,
            1,
        ))?;
        let ch = self.ch(&lane.database)?;
        self.rt.block_on(ch.migrate())?;
        Ok(())
    }

    /// Environment for a child `feedback` process working on `lane`.
    fn env(&self, lane: &Lane) -> Vec<(String, String)> {
        let c = &self.args.common;
        [
            ("FEEDBACK_BROKERS", c.brokers.clone()),
            ("FEEDBACK_KAFKA_PROPERTIES", c.kafka_properties.join(",")),
            ("FEEDBACK_TOPIC_PREFIX", lane.prefix.clone()),
            ("FEEDBACK_CLICKHOUSE_URL", c.clickhouse_url.clone()),
            ("FEEDBACK_CLICKHOUSE_DATABASE", lane.database.clone()),
            ("FEEDBACK_CLICKHOUSE_USER", c.clickhouse_user.clone()),
            (
                "FEEDBACK_CLICKHOUSE_PASSWORD",
                c.clickhouse_password.clone(),
            ),
            (
                "FEEDBACK_ATTRIBUTOR_GROUP",
                format!("{}attributor", lane.prefix),
            ),
            ("FEEDBACK_SINK_GROUP", format!("{}sink", lane.prefix)),
            (
                "FEEDBACK_OWNERSHIP_DIR",
                self.args.ownership_dir.display().to_string(),
            ),
            (
                "FEEDBACK_SINK_FLUSH_MS",
                self.args.sink_flush_ms.to_string(),
            ),
            ("FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS", "1".into()),
            ("FEEDBACK_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Starts `feedback <cmd>` for `lane`; returns it and its HTTP address (collector
    /// listen address or metrics address).
    fn spawn(&self, lane: &Lane, cmd: &str) -> anyhow::Result<(Proc, String)> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut env = self.env(lane);
        let var = match cmd {
            "collector" => "FEEDBACK_COLLECTOR_LISTEN",
            "attributor" => "FEEDBACK_ATTRIBUTOR_METRICS_LISTEN",
            _ => "FEEDBACK_SINK_METRICS_LISTEN",
        };
        env.push((var.into(), addr.clone()));
        let name = format!("{}-{cmd}", lane.prefix.trim_end_matches('.'));
        let p = Proc::spawn(&name, &self.exe, &[cmd], &env, &self.dir)?;
        Ok((p, format!("http://{addr}")))
    }

    fn count_rows(&self, database: &str) -> anyhow::Result<u64> {
        let ch = self.ch(database)?;
        Ok(self.rt.block_on(bench_sql::raw_rows(&ch))?)
    }

    /// Sum of every sample of `metric` on the /metrics page at `base` (0 if unreachable).
    /// Only samples whose labels contain `labels`.
    fn metric(&self, base: &str, metric: &str, labels: &str) -> f64 {
        let url = format!("{base}/metrics");
        let text = self.rt.block_on(async {
            match reqwest::get(&url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        });
        text.lines()
            .filter(|l| l.contains(labels))
            .filter(|l| {
                l.strip_prefix(metric)
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn servers_cpu(&self) -> (Option<f64>, Option<f64>) {
        (self.broker.cpu(), self.clickhouse.cpu())
    }

    /// Adds the broker's and ClickHouse's CPU seconds since `before` to `procs`.
    fn with_servers(
        &self,
        mut procs: Vec<ProcCost>,
        before: (Option<f64>, Option<f64>),
    ) -> Vec<ProcCost> {
        let now = self.servers_cpu();
        for (name, b, a) in [
            ("kafka broker", before.0, now.0),
            ("clickhouse server", before.1, now.1),
        ] {
            if let (Some(b), Some(a)) = (b, a) {
                procs.push(ProcCost {
                    name: name.into(),
                    cpu_seconds: Some(a - b),
                    peak_rss_mb: None,
                });
            }
        }
        procs
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        id: &'static str,
        group: &'static str,
        name: &str,
        count: u64,
        unit: &'static str,
        seconds: f64,
        bytes: Option<u64>,
        processes: Vec<ProcCost>,
        note: &str,
    ) -> f64 {
        let rate = count as f64 / seconds.max(1e-9);
        self.rows.push(Row {
            id,
            group,
            name: name.into(),
            count,
            unit,
            seconds,
            rate: Some(rate),
            mb_per_sec: bytes.map(|b| b as f64 / 1e6 / seconds.max(1e-9)),
            value: None,
            value_unit: None,
            processes,
            load1: procs::load1(),
            note: note.into(),
        });
        rate
    }

    /// Waits until `progress()` reaches `target`, polling every 50 ms, checking that `procs`
    /// are alive. Returns (seconds, items) measured from the first progress seen to the end
    /// (so process start and consumer-group joins are left out), or from `start` when all
    /// arrived at once.
    fn drain(
        &self,
        what: &str,
        target: u64,
        timeout: Duration,
        procs: &mut [&mut Proc],
        bar: &ProgressBar,
        mut progress: impl FnMut() -> anyhow::Result<u64>,
    ) -> anyhow::Result<(f64, u64, f64)> {
        let start = Instant::now();
        let mut first: Option<(Instant, u64)> = None;
        loop {
            for p in procs.iter_mut() {
                p.poll(&self.dir)?;
            }
            let n = progress()?;
            bar.set_position(n);
            if n > 0 && first.is_none() {
                first = Some((Instant::now(), n));
            }
            if n >= target {
                let wall = start.elapsed().as_secs_f64();
                let (t1, c1) = first.expect("set above");
                let secs = t1.elapsed().as_secs_f64();
                return Ok(if secs >= 0.2 && c1 < n {
                    (secs, n - c1, wall)
                } else {
                    (wall, n, wall)
                });
            }
            anyhow::ensure!(
                start.elapsed() < timeout,
                "{what}: reached {n} of {target} within {}s; see the logs in {}",
                timeout.as_secs(),
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.read_scale {
        return readscale::run(args).await;
    }
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || run_blocking(args, rt)).await?
}

fn run_blocking(mut args: Args, rt: tokio::runtime::Handle) -> anyhow::Result<()> {
    if args.quick {
        args.events = args.events.min(4000);
        args.state_keys = vec![20_000, 100_000];
        args.freshness_secs = args.freshness_secs.min(8);
        args.probes = args.probes.min(5);
    }
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let run_id = format!("bench{}", started_at.timestamp());
    let dir = args.out.join(&run_id);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the results folder {}", dir.display()))?;
    let load_at_start = report::loadavg();
    let exe = std::env::current_exe().context("cannot find this executable to run the stages")?;
    let mut ctx = Ctx {
        broker: Server::find(&args.local_dir.join("kafka/pid")),
        clickhouse: Server::find(&args.local_dir.join("clickhouse/pid")),
        partitions: args.partitions,
        args,
        exe,
        dir: dir.clone(),
        rt,
        rows: Vec::new(),
    };
    let result = measure(&mut ctx, &run_id);
    let cleaned = cleanup(&ctx, &run_id);
    let (ratios, distinct, events, mean_bytes) = result?;
    if let Err(e) = cleaned {
        eprintln!("warning: cleanup of run {run_id} incomplete: {e:#}");
    }
    let report = Report {
        run_id: run_id.clone(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        quick: ctx.args.quick,
        events,
        distinct_events: distinct,
        mean_message_bytes: mean_bytes,
        machine: report::machine(load_at_start),
        rows: ctx.rows.clone(),
        ratios,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    let md = report.markdown();
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(dir.join("table.md"), &md)?;
    std::fs::write(dir.join("chart.svg"), report.svg())?;
    println!("{md}");
    println!(
        "results: {}/results.json, table.md (for docs/benchmarks.md), chart.svg",
        dir.display()
    );
    Ok(())
}

/// Deletes every topic whose name starts with the run id, and the run's databases.
fn cleanup(ctx: &Ctx, run_id: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let kafka = ctx.args.common.kafka();
    let admin: AdminClient<DefaultClientContext> = kafka.admin_client().create()?;
    let md = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    let names: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.starts_with(run_id))
        .collect();
    if !names.is_empty() {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        ctx.rt.block_on(admin.delete_topics(
            &refs,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))?;
    }
    for tag in ["a", "b", "c"] {
        let ch = ctx.ch(&format!("{run_id}{tag}"))?;
        ctx.rt.block_on(bench_sql::drop_database(&ch))?;
    }
    Ok(())
}

type Measured = (Vec<Ratio>, usize, usize, f64);

fn measure(ctx: &mut Ctx, run_id: &str) -> anyhow::Result<Measured> {
    let steps = 12u64;
    let overall = ProgressBar::new(steps);
    overall.set_style(
        ProgressStyle::with_template("feedback bench {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let step = |msg: &str| {
        overall.inc(1);
        overall.set_message(msg.to_string());
        if overall.is_hidden() {
            eprintln!("[bench] {msg}");
        } else {
            overall.println(format!("[bench] {msg}"));
        }
    };
    let kafka = ctx.args.common.kafka();
    let brokers = ctx.args.common.brokers.clone();
    let a = ctx.lane(run_id, "a");
    let b = ctx.lane(run_id, "b");
    let c = ctx.lane(run_id, "c");
    for l in [&a, &b, &c] {
        ctx.prepare(l)?;
    }
    let passthrough = format!("{}passthrough", a.prefix);
    let perf = format!("{}perf", a.prefix);
    ctx.rt.block_on(feedback_kafka::admin::ensure_topic(
        &kafka,
        &passthrough,
        ctx.partitions,
        1,
        &[("compression.type", "producer")],
    ))?;
    ctx.rt.block_on(feedback_kafka::admin::ensure_topic(
        &kafka,
        &perf,
        ctx.partitions,
        1,
        &[("compression.type", "producer")],
    ))?;

    // The events: one workload, encoded once; every measurement uses these.
    step("generating and encoding the workload");
    let generated: Vec<Generated> = Workload::new(1, run_id, Mix::default())
        .generate(ctx.args.events, feedback_runtime::now_ms());
    let n = generated.len() as u64;
    let distinct = generated
        .iter()
        .filter(|g| !g.duplicate)
        .map(|g| g.item.id().to_string())
        .collect::<BTreeSet<_>>()
        .len() as u64;
    let msgs: Vec<Msg> = generated
        .iter()
        .map(|g| match &g.item {
            Item::Interaction(i) => Msg {
                rating: false,
                key: i.interaction_id.clone(),
                bytes: i.encode(),
            },
            Item::Rating(r) => Msg {
                rating: true,
                key: r.key().to_string(),
                bytes: r.encode(),
            },
        })
        .collect();
    let bytes: u64 = msgs.iter().map(|m| m.bytes.len() as u64).sum();
    let mean = bytes as f64 / n as f64;

    // Codec, in-process (criterion's benches/codec.rs has the careful figures).
    let items: Vec<&Item> = generated.iter().map(|g| &g.item).take(20_000).collect();
    let time = |f: &dyn Fn() -> usize| {
        f();
        let s = Instant::now();
        let mut rounds = 0;
        while s.elapsed() < Duration::from_millis(if ctx.args.quick { 100 } else { 1000 }) {
            std::hint::black_box(f());
            rounds += 1;
        }
        s.elapsed().as_secs_f64() / rounds as f64
    };
    let ours_enc = time(&|| {
        items
            .iter()
            .map(|it| match it {
                Item::Interaction(i) => i.encode().len(),
                Item::Rating(r) => r.encode().len(),
            })
            .sum()
    });
    let avro_enc = time(&|| {
        items
            .iter()
            .map(|it| match it {
                Item::Interaction(i) => reference::encode_interaction(i).map_or(0, |v| v.len()),
                Item::Rating(r) => reference::encode_rating(r).map_or(0, |v| v.len()),
            })
            .sum()
    });
    let enc: Vec<&[u8]> = msgs
        .iter()
        .take(items.len())
        .map(|m| m.bytes.as_slice())
        .collect();
    let ours_dec = time(&|| {
        enc.iter()
            .filter(|m| feedback_events::decode(m).is_ok())
            .count()
    });
    let avro_dec = time(&|| {
        enc.iter()
            .filter(|m| reference::decode_value(m).is_ok())
            .count()
    });
    let k = items.len() as u64;
    let codec_note = "in-process, same records; apache-avro: struct → Value → to_avro_datum, from_avro_datum → Value";
    let r_ours_enc = ctx.row(
        "codec_encode_ours",
        "codec",
        "codec encode (ours)",
        k,
        "events",
        ours_enc,
        None,
        vec![],
        codec_note,
    );
    let r_avro_enc = ctx.row(
        "codec_encode_avro",
        "codec",
        "codec encode (apache-avro Value)",
        k,
        "events",
        avro_enc,
        None,
        vec![],
        codec_note,
    );
    let r_ours_dec = ctx.row(
        "codec_decode_ours",
        "codec",
        "codec decode (ours)",
        k,
        "events",
        ours_dec,
        None,
        vec![],
        codec_note,
    );
    let r_avro_dec = ctx.row(
        "codec_decode_avro",
        "codec",
        "codec decode (apache-avro Value)",
        k,
        "events",
        avro_dec,
        None,
        vec![],
        codec_note,
    );

    // Raw Kafka: librdkafka produce into lane a's input topics (which the attributor stage
    // then drains), and consume them back.
    step("raw Kafka: rdkafka produce");
    let pb = bar(n, "rdkafka produce");
    let cpu0 = procs::self_cpu();
    let srv = ctx.servers_cpu();
    let secs = kafka::produce(
        &kafka,
        &a.topics.interactions,
        &a.topics.ratings,
        &msgs,
        &pb,
    )?;
    pb.finish_and_clear();
    let cost = self_cost("bench (rdkafka)", cpu0);
    let cost = ctx.with_servers(cost, srv);
    let raw_produce = ctx.row("kafka_produce_rdkafka", "raw", "Kafka produce, rdkafka", n, "messages", secs, Some(bytes), cost,
        "same encoded events and keys, idempotent, acks=all, lz4, linger 5 ms (the components' settings)");

    step("raw Kafka: rdkafka consume");
    let pb = bar(n, "rdkafka consume");
    let cpu0 = procs::self_cpu();
    let srv = ctx.servers_cpu();
    let secs = kafka::consume(
        &kafka,
        &format!("{}raw", a.prefix),
        &[&a.topics.interactions, &a.topics.ratings],
        ctx.partitions,
        n,
        &pb,
    )?;
    pb.finish_and_clear();
    let cost = ctx.with_servers(self_cost("bench (rdkafka)", cpu0), srv);
    let raw_consume = ctx.row(
        "kafka_consume_rdkafka",
        "raw",
        "Kafka consume, rdkafka",
        n,
        "messages",
        secs,
        Some(bytes),
        cost,
        "read_committed, from the first message to the last",
    );

    step("raw Kafka: Kafka's perf tools (JVM)");
    let libs = ctx.args.kafka_libs.clone();
    let srv = ctx.servers_cpu();
    let p = kafka::producer_perf(&libs, &brokers, &perf, n, mean.round() as usize, &ctx.dir)?;
    let cost = ctx.with_servers(vec![p.cost], srv);
    let secs = n as f64 / p.records_per_sec;
    ctx.row("kafka_produce_perf", "raw", "Kafka produce, ProducerPerformance", n, "messages", secs, Some((p.mb_per_sec * 1e6 * secs) as u64), cost,
        &format!("record size {} bytes (our mean), random letters; same producer settings; its own figure", mean.round()));
    let srv = ctx.servers_cpu();
    let p = kafka::consumer_perf(
        &libs,
        &brokers,
        &perf,
        &format!("{}perfgroup", a.prefix),
        n,
        &ctx.dir,
    )?;
    let cost = ctx.with_servers(vec![p.cost], srv);
    let secs = n as f64 / p.records_per_sec;
    ctx.row(
        "kafka_consume_perf",
        "raw",
        "Kafka consume, ConsumerPerformance",
        n,
        "messages",
        secs,
        Some((p.mb_per_sec * 1e6 * secs) as u64),
        cost,
        "its fetch.nMsg.sec (rebalance time excluded)",
    );

    // Pass-through: the attributor's transaction pattern without attribution.
    step("raw Kafka: transactional pass-through (attributor's settings)");
    let pb = bar(n, "pass-through");
    let cpu0 = procs::self_cpu();
    let srv = ctx.servers_cpu();
    let secs = kafka::pass_through(
        &kafka,
        &format!("{}pass", a.prefix),
        &[&a.topics.interactions, &a.topics.ratings],
        &passthrough,
        ctx.partitions,
        n,
        5000,
        100,
        &pb,
    )?;
    pb.finish_and_clear();
    let cost = ctx.with_servers(self_cost("bench (rdkafka)", cpu0), srv);
    let raw_pass = ctx.row("kafka_pass_through", "raw", "Kafka consume → produce, transactional", n, "messages", secs, Some(bytes), cost,
        "read_committed; one transaction per ≤ 5000 messages / 100 ms with the offsets (the attributor's defaults)");

    // Attributor alone, draining lane a's input.
    step("attributor alone, draining the pre-filled input topics");
    let pb = bar(n, "attributor");
    let srv = ctx.servers_cpu();
    let (mut attributor, _) = ctx.spawn(&a, "attributor")?;
    let positions = kafka::GroupPositions::new(
        &kafka,
        &format!("{}attributor", a.prefix),
        &[&a.topics.interactions, &a.topics.ratings],
        ctx.partitions,
    )?;
    let (secs, cnt, wall) = ctx.drain(
        "attributor",
        n,
        Duration::from_secs(600),
        &mut [&mut attributor],
        &pb,
        || positions.committed(),
    )?;
    pb.finish_and_clear();
    let cost = ctx.with_servers(vec![attributor.stop()], srv);
    let attributor_rate = ctx.row("stage_attributor", "stage", "attributor alone", cnt, "events", secs, None, cost,
        &format!("input events committed (its group's positions), from the first committed transaction; {wall:.1} s from process start"));

    // Sink alone, draining lane a's attributed topic.
    step("sink alone, draining the pre-filled attributed topic");
    let pb = bar(distinct, "sink");
    let srv = ctx.servers_cpu();
    let (mut sink, _) = ctx.spawn(&a, "sink")?;
    let db = a.database.clone();
    let (secs, cnt, wall) = ctx.drain(
        "sink",
        distinct,
        Duration::from_secs(600),
        &mut [&mut sink],
        &pb,
        || ctx.count_rows(&db),
    )?;
    pb.finish_and_clear();
    let cost = ctx.with_servers(vec![sink.stop()], srv);
    let sink_rate = ctx.row(
        "stage_sink",
        "stage",
        "sink alone",
        cnt,
        "rows",
        secs,
        None,
        cost,
        &format!("rows in ClickHouse, from the first batch landed; {wall:.1} s from process start"),
    );

    // Raw ClickHouse: the same rows again, by clickhouse-client (Native over TCP).
    step("raw ClickHouse: clickhouse-client inserting the same rows");
    let srv = ctx.servers_cpu();
    let (secs, rows, cost) = clickhouse_client_insert(ctx, &a.database)?;
    let cost = ctx.with_servers(cost, srv);
    let raw_ch = ctx.row("clickhouse_insert_client", "raw", "ClickHouse insert, clickhouse-client", rows, "rows", secs, None, cost,
        "the sink's rows exported as Native, inserted again into the same tables, one INSERT per table");

    // Collector alone: the same events over HTTP into lane b.
    step("collector alone, the same events over HTTP");
    let pb = bar(n, "collector");
    let srv = ctx.servers_cpu();
    let (mut collector, url) = ctx.spawn(&b, "collector")?;
    wait_healthy(ctx, &url, &mut collector)?;
    let cpu0 = procs::self_cpu();
    let secs = post_all(ctx, &url, &generated, &pb)?;
    pb.finish_and_clear();
    let mut cost = vec![collector.stop()];
    cost.extend(self_cost("load generator (bench)", cpu0));
    let cost = ctx.with_servers(cost, srv);
    let collector_rate = ctx.row(
        "stage_collector",
        "stage",
        "collector alone",
        n,
        "events",
        secs,
        None,
        cost,
        "HTTP JSON, 250 events per request, 8 in flight; 202 after Kafka acked each",
    );

    // End to end: attributor + sink draining lane b (filled by the collector).
    step("end to end: attributor + sink draining the collector's input");
    let pb = bar(distinct, "end to end");
    let srv = ctx.servers_cpu();
    let (mut at, _) = ctx.spawn(&b, "attributor")?;
    let (mut sk, _) = ctx.spawn(&b, "sink")?;
    let db = b.database.clone();
    let (secs, cnt, wall) = ctx.drain(
        "end to end",
        distinct,
        Duration::from_secs(900),
        &mut [&mut at, &mut sk],
        &pb,
        || ctx.count_rows(&db),
    )?;
    pb.finish_and_clear();
    let cost = ctx.with_servers(vec![at.stop(), sk.stop()], srv);
    // Rows landed per second × input events per row = input events drained per second.
    let e2e_events = (cnt as f64 * n as f64 / distinct as f64).round() as u64;
    let e2e_rate = ctx.row("e2e_drain", "e2e", "end to end drain (attributor + sink)", e2e_events, "events", secs, None, cost,
        &format!("input events per second, from the first rows landed to the last ({cnt} rows); {wall:.1} s from process start"));

    // Freshness at half the maximum rate.
    let max_rate = collector_rate.min(e2e_rate);
    let rate = (max_rate / 2.0).max(10.0) as u64;
    step(&format!(
        "freshness: {} probes at {rate} events/s (half the maximum)",
        ctx.args.probes
    ));
    let (p, cost, achieved) = freshness(ctx, &c, rate)?;
    for (id, name, v) in [
        ("freshness_p50", "freshness p50", p[0]),
        ("freshness_p95", "freshness p95", p[1]),
        ("freshness_p99", "freshness p99", p[2]),
    ] {
        ctx.rows.push(Row {
            id,
            group: "latency",
            name: name.into(),
            count: ctx.args.probes as u64,
            unit: "probes",
            seconds: f64::NAN,
            rate: None,
            mb_per_sec: None,
            value: Some(v),
            value_unit: Some("ms"),
            processes: if id == "freshness_p99" { cost.clone() } else { vec![] },
            load1: procs::load1(),
            note: format!("a rating's 202 → its team's per-minute aggregate changed, with the load generator offering {rate} events/s (collector accepted {achieved:.0}/s)"),
        });
    }

    // Attributor state, in-process.
    step("attributor state: bytes per key and throughput with many live keys");
    let ownership = Arc::new(
        feedback_attribution::Ownership::load_dir(&ctx.args.ownership_dir)
            .map_err(anyhow::Error::msg)?,
    );
    let pb = bar(0, "state");
    let events = if ctx.args.quick { 21_000 } else { 210_000 };
    let keys = ctx.args.state_keys.clone();
    let (empty_rate, figures) = state::measure(&ownership, &keys, events, &pb);
    pb.finish_and_clear();
    let pass = events as u64 / 3;
    let note = "engine in-process (no Kafka): best of three passes of new workload events, each through a fresh engine";
    ctx.row(
        "engine_empty",
        "state",
        "engine, no live keys",
        pass,
        "events",
        pass as f64 / empty_rate,
        None,
        vec![],
        note,
    );
    for f in &figures {
        ctx.row(
            if f.keys == keys[0] {
                "engine_keys_small"
            } else {
                "engine_keys_large"
            },
            "state",
            &format!("engine, {} live keys", f.keys),
            pass,
            "events",
            pass as f64 / f.loaded_rate,
            None,
            vec![],
            &format!(
                "best of three passes of new events through one engine holding {} keys (built in {:.1} s)",
                f.keys, f.build_seconds
            ),
        );
        ctx.rows.push(Row {
            id: if f.keys == keys[0] { "state_bytes_small" } else { "state_bytes_large" },
            group: "state",
            name: format!("state bytes per key, {} keys", f.keys),
            count: f.keys,
            unit: "keys",
            seconds: f.build_seconds,
            rate: None,
            mb_per_sec: None,
            value: Some(f.estimate_bytes_per_key),
            value_unit: Some("B/key"),
            processes: vec![],
            load1: procs::load1(),
            note: format!(
                "engine's estimate (the state_bytes metric, checked within 25% of an allocator count by tests/state_size.rs); process RSS grew {} B/key",
                f.rss_bytes_per_key.map_or("–".into(), |v| format!("{v:.0}"))
            ),
        });
    }
    step("done");
    overall.finish_and_clear();

    // Ratios and targets.
    let mut ratios = Vec::new();
    let mut ratio = |id: &'static str, name: &str, value: f64, target: Option<(&str, bool)>| {
        ratios.push(Ratio {
            id,
            name: name.into(),
            value,
            target: target.map(|t| t.0.to_string()),
            met: target.map(|t| t.1),
        });
    };
    let e2e = e2e_rate / raw_produce;
    ratio(
        "e2e_vs_produce",
        "end-to-end drain ÷ rdkafka produce",
        e2e,
        Some(("≥ 0.3 (ambitious 0.5)", e2e >= 0.3)),
    );
    let s = sink_rate / raw_ch;
    ratio(
        "sink_vs_client",
        "sink ÷ clickhouse-client",
        s,
        Some(("≥ 0.9", s >= 0.9)),
    );
    let at = attributor_rate / raw_pass;
    ratio(
        "attributor_vs_pass_through",
        "attributor ÷ transactional pass-through",
        at,
        Some(("≥ 0.8", at >= 0.8)),
    );
    let ce = r_ours_enc / r_avro_enc;
    ratio(
        "codec_encode",
        "codec encode ÷ apache-avro Value",
        ce,
        Some(("≥ 10", ce >= 10.0)),
    );
    let cd = r_ours_dec / r_avro_dec;
    ratio(
        "codec_decode",
        "codec decode ÷ apache-avro Value",
        cd,
        Some(("≥ 10", cd >= 10.0)),
    );
    let limit = ctx.args.sink_flush_ms as f64 + 500.0;
    ratio(
        "freshness_p99",
        "freshness p99 (ms)",
        p[2],
        Some((
            &format!("≤ {limit:.0} ms (flush interval + 500 ms)"),
            p[2] <= limit,
        )),
    );
    if let Some(big) = figures.last() {
        let t = big.loaded_rate / empty_rate;
        ratio(
            "state_throughput",
            &format!("engine throughput with {} keys ÷ with none", big.keys),
            t,
            Some(("≥ 0.9", t >= 0.9)),
        );
    }
    for f in &figures {
        ratio(
            if f.keys == keys[0] {
                "state_bytes_small"
            } else {
                "state_bytes_large"
            },
            &format!("state bytes per key at {} keys", f.keys),
            f.estimate_bytes_per_key,
            Some(("≤ 200", f.estimate_bytes_per_key <= 200.0)),
        );
    }
    ratio(
        "collector_vs_produce",
        "collector ÷ rdkafka produce",
        collector_rate / raw_produce,
        None,
    );
    ratio(
        "attributor_vs_consume",
        "attributor ÷ rdkafka consume",
        attributor_rate / raw_consume,
        None,
    );
    ratio(
        "e2e_vs_sink",
        "end-to-end drain (rows/s) ÷ sink alone",
        e2e_rate * distinct as f64 / n as f64 / sink_rate,
        None,
    );
    Ok((ratios, distinct as usize, n as usize, mean))
}

fn self_cost(name: &str, cpu0: Option<f64>) -> Vec<ProcCost> {
    match (cpu0, procs::self_cpu()) {
        (Some(a), Some(b)) => vec![ProcCost {
            name: name.into(),
            cpu_seconds: Some(b - a),
            peak_rss_mb: None,
        }],
        _ => vec![],
    }
}

fn wait_healthy(ctx: &Ctx, url: &str, p: &mut Proc) -> anyhow::Result<()> {
    for _ in 0..200 {
        p.poll(&ctx.dir)?;
        let ok = ctx.rt.block_on(async {
            reqwest::get(format!("{url}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        });
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("{} did not answer /healthz at {url} within 10 s", p.name)
}

/// Posts every event to the collector (in generation order, windows of 2000 split into
/// requests of one kind as the load generator does), 8 requests in flight. Returns seconds.
fn post_all(
    ctx: &Ctx,
    url: &str,
    generated: &[Generated],
    bar: &ProgressBar,
) -> anyhow::Result<f64> {
    let batches: Vec<Vec<Generated>> = generated
        .chunks(2000)
        .flat_map(|w| crate::loadgen::split_batches(w.to_vec(), 250))
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    // The bench's collector runs anonymous (FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS): no keys.
    let keys = feedback_runtime::apikeys::ClientKeys::default();
    let start = Instant::now();
    ctx.rt.block_on(async {
        use futures::StreamExt;
        let mut s = futures::stream::iter(batches.iter())
            .map(|b| crate::loadgen::post_batch(&client, url, b, &keys))
            .buffer_unordered(8);
        let mut done = 0u64;
        while let Some(r) = s.next().await {
            done += r?;
            bar.set_position(done);
        }
        anyhow::Ok(())
    })?;
    Ok(start.elapsed().as_secs_f64())
}

/// Exports the rows the sink landed in `database` as Native and inserts them again with
/// clickhouse-client; returns (seconds, rows, cost of the client processes).
fn clickhouse_client_insert(
    ctx: &Ctx,
    database: &str,
) -> anyhow::Result<(f64, u64, Vec<ProcCost>)> {
    let ch = ctx.ch(database)?;
    let port = ctx.args.clickhouse_tcp_port.to_string();
    let client = ctx.args.clickhouse_client.clone();
    let mut work = Vec::new();
    for table in RawTable::ALL {
        let t = table.name();
        let copy = ctx.rt.block_on(bench_sql::native_copy(&ch, table))?;
        let file = ctx.dir.join(format!("{t}.native"));
        let out = std::process::Command::new(&client)
            .args(["--port", &port, "--query", &copy.export])
            .stdout(std::fs::File::create(&file)?)
            .status()
            .with_context(|| {
                format!("cannot run {} (set --clickhouse-client)", client.display())
            })?;
        anyhow::ensure!(
            out.success(),
            "clickhouse-client --port {port} could not export {database}.{t}"
        );
        work.push((t, copy.import, file));
    }
    let before = ctx.count_rows(database)?;
    let mut costs = Vec::new();
    let start = Instant::now();
    for (t, query, file) in &work {
        let name = format!("clickhouse-client-{t}");
        // clickhouse-client reads the rows from stdin: run it through sh for the redirect.
        let script = "exec \"$0\" --port \"$1\" --query \"$2\" < \"$3\"";
        let p = Proc::spawn(
            &name,
            Path::new("sh"),
            &[
                "-c",
                script,
                &client.display().to_string(),
                &port,
                query,
                &file.display().to_string(),
            ],
            &[],
            &ctx.dir,
        )?;
        costs.push(p.wait(Duration::from_secs(300), &ctx.dir)?);
    }
    let secs = start.elapsed().as_secs_f64();
    let after = ctx.count_rows(database)?;
    for (_, _, f) in &work {
        let _ = std::fs::remove_file(f);
    }
    Ok((secs, after - before, costs))
}

/// Collector, attributor and sink on `lane`, the load generator offering `rate` events/s,
/// and `feedback probe` measuring. Returns (p50, p95, p99 in ms), the costs, and the rate
/// the collector accepted while probing.
fn freshness(ctx: &Ctx, lane: &Lane, rate: u64) -> anyhow::Result<([f64; 3], Vec<ProcCost>, f64)> {
    let srv = ctx.servers_cpu();
    let (mut collector, url) = ctx.spawn(lane, "collector")?;
    let (mut attributor, _) = ctx.spawn(lane, "attributor")?;
    let (mut sink, _) = ctx.spawn(lane, "sink")?;
    wait_healthy(ctx, &url, &mut collector)?;
    let mut env = ctx.env(lane);
    env.push(("FEEDBACK_COLLECTOR_URL".into(), url.clone()));
    let secs = ctx.args.freshness_secs.to_string();
    let rate_s = rate.to_string();
    let mut loadgen = Proc::spawn(
        &format!("{}-loadgen", lane.prefix.trim_end_matches('.')),
        &ctx.exe,
        &[
            "loadgen",
            "--rate",
            &rate_s,
            "--duration-secs",
            &secs,
            "--quiet",
            "--run-id",
            &lane.database,
        ],
        &env,
        &ctx.dir,
    )?;
    // Warm-up: consumer groups joined, first batches through.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(if ctx.args.quick { 3 } else { 10 }) {
        for p in [&mut collector, &mut attributor, &mut sink, &mut loadgen] {
            p.poll(&ctx.dir)?;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let accepted = |ctx: &Ctx| {
        ctx.metric(
            &url,
            "feedback_collector_events_total",
            "outcome=\"accepted\"",
        )
    };
    let a0 = accepted(ctx);
    let t0 = Instant::now();
    let count = ctx.args.probes.to_string();
    let probe_name = format!("{}-probe", lane.prefix.trim_end_matches('.'));
    let probe = Proc::spawn(
        &probe_name,
        &ctx.exe,
        &["probe", "--count", &count, "--interval-ms", "200"],
        &env,
        &ctx.dir,
    )?;
    let probe_cost = probe.wait(Duration::from_secs(600), &ctx.dir)?;
    let achieved = (accepted(ctx) - a0) / t0.elapsed().as_secs_f64();
    let out = std::fs::read_to_string(ctx.dir.join(format!("{probe_name}.log")))?;
    let line = out
        .lines()
        .find(|l| l.starts_with("probe:"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "feedback probe printed no result; see {}",
                ctx.dir.join(format!("{probe_name}.log")).display()
            )
        })?;
    let pick = |label: &str| -> f64 {
        line.split(label)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let p = [pick("p50 "), pick("p95 "), pick("p99 ")];
    let costs = vec![
        collector.stop(),
        attributor.stop(),
        sink.stop(),
        loadgen.stop(),
        probe_cost,
    ];
    Ok((p, ctx.with_servers(costs, srv), achieved))
}
