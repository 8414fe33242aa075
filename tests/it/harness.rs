//! Shared test plumbing: unique names, the `feedback` binary as child processes, Kafka
//! and ClickHouse helpers.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

pub fn brokers() -> String {
    std::env::var("FEEDBACK_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("FEEDBACK_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test run: `t<pid>_<time>_<n>`.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!("t{}_{t}_{n}_{tag}", std::process::id())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One isolated pipeline: topic prefix, database, ports.
pub struct Env {
    pub prefix: String,
    pub database: String,
    pub collector_port: u16,
    children: Vec<(String, Child)>,
    /// Children this test killed on purpose ([`Env::kill`]); not reported as crashed.
    killed: Vec<usize>,
}

impl Env {
    pub fn new(tag: &str) -> Env {
        let name = unique(tag);
        Env {
            prefix: format!("{name}."),
            database: name,
            collector_port: free_port(),
            children: Vec::new(),
            killed: Vec::new(),
        }
    }

    pub fn collector_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.collector_port)
    }

    pub fn topic(&self, base: &str) -> String {
        format!("{}feedback.{base}.v1", self.prefix)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_feedback"));
        c.args(args)
            .current_dir(repo_root())
            .env("FEEDBACK_BROKERS", brokers())
            .env("FEEDBACK_CLICKHOUSE_URL", clickhouse_url())
            .env("FEEDBACK_CLICKHOUSE_DATABASE", &self.database)
            .env("FEEDBACK_TOPIC_PREFIX", &self.prefix)
            .env(
                "FEEDBACK_COLLECTOR_LISTEN",
                format!("127.0.0.1:{}", self.collector_port),
            )
            .env("FEEDBACK_ATTRIBUTOR_METRICS_LISTEN", "127.0.0.1:0")
            .env("FEEDBACK_SINK_METRICS_LISTEN", "127.0.0.1:0")
            .env(
                "FEEDBACK_ATTRIBUTOR_GROUP",
                format!("{}attributor", self.prefix),
            )
            .env("FEEDBACK_SINK_GROUP", format!("{}sink", self.prefix))
            .env("FEEDBACK_LOG", "warn")
            // Collectors accept requests without API keys unless a test gives them a keys
            // file (FEEDBACK_COLLECTOR_API_KEYS; then keys are required): tests/it/access.rs.
            .env("FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS", "1");
        c
    }

    /// Runs a one-shot subcommand and returns its stdout; panics with its output on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run feedback");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "feedback {args:?} failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Starts `feedback <args>` with extra environment; returns its index for [`Env::kill`].
    pub fn spawn_with(&mut self, args: &[&str], envs: &[(&str, &str)]) -> usize {
        let mut cmd = self.cmd(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn feedback");
        self.children.push((args.join(" "), child));
        self.children.len() - 1
    }

    /// The process id of the child started last.
    pub fn last_pid(&self) -> u32 {
        self.children.last().expect("a child").1.id()
    }

    /// Sends SIGTERM to the child started last and waits at most `limit` for it to exit.
    pub fn terminate_last(&mut self, limit: Duration) -> std::process::ExitStatus {
        let index = self.children.len() - 1;
        self.killed.push(index);
        let (name, c) = &mut self.children[index];
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM `feedback {name}`");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "`feedback {name}` still runs {limit:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs (no clean shutdown) the child started as number `index` and reaps it.
    pub fn kill(&mut self, index: usize) {
        let (_, c) = &mut self.children[index];
        let _ = c.kill();
        let _ = c.wait();
        self.killed.push(index);
    }

    pub fn spawn(&mut self, args: &[&str]) {
        let child = self
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn feedback");
        self.children.push((args.join(" "), child));
    }

    /// Topics and schema.
    pub fn prepare(&self) {
        self.run(&["topics", "--partitions", "3"]);
        self.run(&["migrate"]);
    }

    pub fn start_collector(&mut self, extra: &[&str]) {
        let mut args = vec!["collector"];
        args.extend_from_slice(extra);
        self.spawn(&args);
        let url = format!("{}/healthz", self.collector_url());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = http_get::is_ok(&url) {
                if r {
                    return;
                }
            }
            self.assert_alive();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("collector did not answer on {url} within 30s");
    }

    pub fn assert_alive(&mut self) {
        for (i, (name, c)) in self.children.iter_mut().enumerate() {
            if self.killed.contains(&i) {
                continue;
            }
            if let Ok(Some(status)) = c.try_wait() {
                panic!("`feedback {name}` exited early with {status}");
            }
        }
    }

    pub fn clickhouse(&self) -> feedback_clickhouse::Ch {
        feedback_clickhouse::Ch::new(&feedback_clickhouse::ChConfig {
            url: clickhouse_url(),
            database: self.database.clone(),
            ..Default::default()
        })
        .unwrap()
    }

    /// Sum of high watermarks over every partition of `topic`.
    pub fn topic_messages(&self, topic: &str) -> i64 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique("wm"))
            .create()
            .unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let t = &md.topics()[0];
        assert!(t.error().is_none(), "topic {topic}: {:?}", t.error());
        t.partitions()
            .iter()
            .map(|p| {
                // A just-created topic's partition may have no leader for a moment
                // (NotLeaderForPartition): ask again, at most 20 times.
                let mut last = None;
                for _ in 0..20 {
                    match c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)) {
                        Ok((lo, hi)) => return hi - lo,
                        Err(e) => last = Some(e),
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                panic!("watermarks of {topic}/{}: {last:?}", p.id())
            })
            .sum()
    }
}

/// Every record of `topic` a `read_committed` reader sees (committed transactions and
/// non-transactional writes; no aborted data, no control markers), from all partitions.
pub fn read_committed(topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::error::KafkaError;
    use rdkafka::Message;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("rc"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut pending: std::collections::BTreeSet<i32> = parts.into_iter().collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic}: partitions {pending:?} never reached their end"
        );
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    out
}

impl Drop for Env {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            // Leave the database of a failed test for inspection; drop the others.
            let db = self.database.clone();
            let _ = std::process::Command::new("curl")
                .args([
                    "-s",
                    "-XPOST",
                    &clickhouse_url(),
                    "--data-binary",
                    &format!("DROP DATABASE IF EXISTS {db}"),
                ])
                .output();
        }
    }
}

/// Minimal blocking GET (the tests' reqwest is async only).
mod http_get {
    pub fn is_ok(url: &str) -> Result<bool, std::io::Error> {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf.starts_with("HTTP/1.1 200"))
    }
}
