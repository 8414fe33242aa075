//! `feedback attributor`: consume interactions and ratings, attribute each to its team,
//! join ratings to interactions, write attributed events; undecodable input goes to the
//! dead-letter topic with its reason.
//!
//! Delivery (this version): at-least-once. Offsets are committed only after every output of
//! the batch is acknowledged by Kafka. Join and dedup state is in memory: a restart forgets
//! it (the durable, transactional version is tracked separately).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use feedback_events::codec::{decode, Decoded};
use feedback_events::{AttributedEvent, Encoded, Event, SourceRef};
use feedback_kafka::rdkafka::message::{Header, OwnedHeaders};
use feedback_kafka::rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use feedback_kafka::rdkafka::Message;
use feedback_kafka::{commit_positions, Positions};
use feedback_ownership::engine::Outcome;
use feedback_ownership::{Engine, Ownership};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::config::Common;
use crate::now_ms;

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
    /// Consumer group.
    #[arg(
        long,
        env = "FEEDBACK_ATTRIBUTOR_GROUP",
        default_value = "feedback-attributor"
    )]
    pub group: String,
    /// How long a rating waits for its interaction (event time), in seconds. Default 7 days.
    #[arg(long, env = "FEEDBACK_ATTRIBUTOR_HORIZON_SECS", default_value_t = 7 * 86_400)]
    pub horizon_secs: i64,
    /// Most input messages per batch (one commit per batch).
    #[arg(long, env = "FEEDBACK_ATTRIBUTOR_BATCH_MAX", default_value_t = 2000)]
    pub batch_max: usize,
    /// Longest time a batch stays open, in milliseconds.
    #[arg(long, env = "FEEDBACK_ATTRIBUTOR_BATCH_MS", default_value_t = 50)]
    pub batch_ms: u64,
    /// Address of the /metrics endpoint.
    #[arg(
        long,
        env = "FEEDBACK_ATTRIBUTOR_METRICS_LISTEN",
        default_value = "127.0.0.1:9101"
    )]
    pub metrics_listen: SocketAddr,
}

struct Metrics {
    events: IntCounterVec,
    state: IntGaugeVec,
}

impl Metrics {
    fn new(r: &Registry) -> anyhow::Result<Self> {
        let events = IntCounterVec::new(
            Opts::new(
                "feedback_attributor_events_total",
                "Input events by kind and outcome (attributed, parked, duplicate, dead_letter) and emitted orphans",
            ),
            &["kind", "outcome"],
        )?;
        let state = IntGaugeVec::new(
            Opts::new(
                "feedback_attributor_state_entries",
                "Entries held in the join and dedup state",
            ),
            &["state"],
        )?;
        r.register(Box::new(events.clone()))?;
        r.register(Box::new(state.clone()))?;
        Ok(Metrics { events, state })
    }
}

/// A cheap change detector for the ownership directory: names, sizes and mtimes.
fn dir_stamp(dir: &std::path::Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
                .map(|e| {
                    let m = e.metadata().ok();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        m.as_ref().map(|m| m.len()).unwrap_or(0),
                        m.and_then(|m| m.modified().ok()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

struct Output {
    producer: FutureProducer,
    pending: Vec<DeliveryFuture>,
}

impl Output {
    async fn send(
        &mut self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> anyhow::Result<()> {
        loop {
            let mut rec = FutureRecord::to(topic).key(key).payload(payload);
            if let Some(h) = headers.clone() {
                rec = rec.headers(h);
            }
            match self.producer.send_result(rec) {
                Ok(f) => {
                    self.pending.push(f);
                    return Ok(());
                }
                Err((
                    feedback_kafka::rdkafka::error::KafkaError::MessageProduction(
                        feedback_kafka::rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => {
                    self.wait().await?;
                }
                Err((e, _)) => {
                    return Err(anyhow::anyhow!(
                        "cannot queue a message for topic {topic}: {e}"
                    ))
                }
            }
        }
    }

    /// Waits for every queued message; fails on the first that Kafka refused.
    async fn wait(&mut self) -> anyhow::Result<()> {
        for f in self.pending.drain(..) {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    anyhow::bail!("Kafka did not acknowledge an attributed event: {e}")
                }
                Err(_) => anyhow::bail!("the Kafka producer was dropped before acknowledging"),
            }
        }
        Ok(())
    }
}

fn key_of(a: &AttributedEvent) -> &str {
    match &a.event {
        Event::Interaction(i) => &i.interaction_id,
        Event::Rating(r) => r.key(),
    }
}

pub async fn run(
    args: Args,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    let metrics = Metrics::new(&registry)?;
    crate::metrics::serve(args.metrics_listen, registry.clone()).await?;
    let kafka = args.common.kafka();
    let topics = args.common.topics();
    let ownership = Ownership::load_dir(&args.ownership_dir).map_err(anyhow::Error::msg)?;
    tracing::info!(version = %ownership.version, teams = ownership.teams.len(), claims = ownership.claims.len(), "ownership loaded");
    let mut stamp = dir_stamp(&args.ownership_dir);
    let mut engine = Engine::new(Arc::new(ownership), args.horizon_secs.saturating_mul(1000));

    let consumer = kafka
        .consumer(
            &args.group,
            30_000,
            &[&topics.interactions, &topics.ratings],
        )
        .map_err(anyhow::Error::msg)?;
    let producer = kafka
        .idempotent_producer()
        .with_context(|| format!("cannot create the Kafka producer for {}", kafka.brokers))?;
    let mut out = Output {
        producer,
        pending: Vec::new(),
    };
    tracing::info!(group = %args.group, input = ?[&topics.interactions, &topics.ratings], output = %topics.attributed, "attributor ready");

    tokio::pin!(shutdown);
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let mut last_reload_check = Instant::now();
    let batch_wait = Duration::from_millis(args.batch_ms);
    let mut buf = Vec::with_capacity(512);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = housekeeping.tick() => {
                let orphans = engine.expire(now_ms());
                for a in &orphans {
                    buf.clear();
                    a.encode_into(&mut buf);
                    out.send(&topics.attributed, key_of(a), &buf, None).await?;
                }
                out.wait().await?;
                metrics.events.with_label_values(&["rating", "orphan"]).inc_by(orphans.len() as u64);
                let st = engine.stats();
                metrics.state.with_label_values(&["interactions"]).set(st.interactions as i64);
                metrics.state.with_label_values(&["parked"]).set(st.parked as i64);
                metrics.state.with_label_values(&["seen"]).set(st.seen as i64);
                if last_reload_check.elapsed() >= Duration::from_secs(5) {
                    last_reload_check = Instant::now();
                    let now = dir_stamp(&args.ownership_dir);
                    if now != stamp {
                        stamp = now;
                        match Ownership::load_dir(&args.ownership_dir) {
                            Ok(o) => {
                                tracing::info!(version = %o.version, "ownership files changed; new version in force");
                                engine.set_ownership(Arc::new(o));
                            }
                            Err(e) => tracing::error!(error = %e, "ownership files changed but do not load; keeping version {}", engine.ownership().version),
                        }
                    }
                }
                continue;
            }
            m = consumer.recv() => m,
        };
        let deadline = tokio::time::Instant::now() + batch_wait;
        let mut next = Some(first);
        let mut offsets = Positions::new();
        let mut n = 0usize;
        while let Some(m) = next.take() {
            let m = m.context("Kafka consumer error")?;
            let source = SourceRef {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
            };
            offsets.insert((source.topic.clone(), source.partition), source.offset);
            let payload = m.payload().unwrap_or(&[]);
            let now = now_ms();
            let decoded = decode(payload);
            let is_ratings = source.topic == topics.ratings;
            let (kind, outcome) = match decoded {
                Ok(Decoded::Interaction(i)) if !is_ratings => (
                    "interaction",
                    Ok(engine.on_interaction(i, source.clone(), now)),
                ),
                Ok(Decoded::Rating(r)) if is_ratings => {
                    ("rating", Ok(engine.on_rating(r, source.clone(), now)))
                }
                Ok(_) => (
                    if is_ratings { "rating" } else { "interaction" },
                    Err((
                        "wrong_schema",
                        format!("message on {} holds another record type", source.topic),
                    )),
                ),
                Err(e) => (
                    if is_ratings { "rating" } else { "interaction" },
                    Err((e.code(), e.to_string())),
                ),
            };
            match outcome {
                Ok(Outcome::Emit(list)) => {
                    metrics
                        .events
                        .with_label_values(&[
                            kind,
                            if list.is_empty() {
                                "parked"
                            } else {
                                "attributed"
                            },
                        ])
                        .inc();
                    for a in &list {
                        buf.clear();
                        a.encode_into(&mut buf);
                        out.send(&topics.attributed, key_of(a), &buf, None).await?;
                    }
                }
                Ok(Outcome::Duplicate) => {
                    metrics.events.with_label_values(&[kind, "duplicate"]).inc()
                }
                Err((code, text)) => {
                    metrics
                        .events
                        .with_label_values(&[kind, "dead_letter"])
                        .inc();
                    tracing::warn!(topic = %source.topic, partition = source.partition, offset = source.offset, reason = code, error = %text, "dead-lettering undecodable message");
                    let headers = OwnedHeaders::new()
                        .insert(Header {
                            key: "reason",
                            value: Some(code),
                        })
                        .insert(Header {
                            key: "error",
                            value: Some(text.as_str()),
                        })
                        .insert(Header {
                            key: "component",
                            value: Some("attributor"),
                        })
                        .insert(Header {
                            key: "source_topic",
                            value: Some(source.topic.as_str()),
                        })
                        .insert(Header {
                            key: "source_partition",
                            value: Some(source.partition.to_string().as_str()),
                        })
                        .insert(Header {
                            key: "source_offset",
                            value: Some(source.offset.to_string().as_str()),
                        });
                    let key = m
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default();
                    out.send(&topics.deadletter, &key, payload, Some(headers))
                        .await?;
                }
            }
            n += 1;
            if n >= args.batch_max {
                break;
            }
            next = tokio::time::timeout_at(deadline, consumer.recv())
                .await
                .ok();
        }
        out.wait().await?;
        commit_positions(&consumer, &offsets).context("cannot commit consumer offsets")?;
    }
    out.wait().await?;
    tracing::info!("attributor stopped");
    Ok(())
}
