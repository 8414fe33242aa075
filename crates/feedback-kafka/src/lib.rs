//! The Kafka side of the pipeline.
//!
//! - [`FeedbackProducer`]: the producer library a service embeds to emit interactions and
//!   ratings (idempotent, `acks=all`, Avro single-object encoded, keyed as the contract says).
//! - [`KafkaConfig`] and [`Topics`]: connection settings and topic names shared by every
//!   component.
//! - [`clients`]: the builders of every Kafka client (consumers, producers, admin); no
//!   other crate sets a librdkafka property.
//! - [`admin`]: topic creation.
//! - [`deadletter`]: the dead-letter headers, reason codes and payload cap.
//! - Personal data: rating comments are redacted ([`redact_rating`]) before they are
//!   encoded for Kafka; [`KafkaConfig`]'s `Debug` never shows passwords.
//!
//! Architecture invariant: outside the `feedback` binary, only this crate touches rdkafka.

pub mod admin;
pub mod clients;
pub mod deadletter;
mod error;
mod probe;

use std::time::Duration;

use feedback_events::{Encoded, Interaction, Rating};
use futures::future::join_all;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

pub use clients::{ClientSpec, ConsumerSpec};
pub use error::Error;
pub use probe::MetadataProbe;
pub use rdkafka;

/// Default broker list (contract).
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// Topic names (contract defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub interactions: String,
    pub ratings: String,
    pub attributed: String,
    pub deadletter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics::with_prefix("")
    }
}

impl Topics {
    /// The contract names, each preceded by `prefix` (tests use a fresh prefix each).
    pub fn with_prefix(prefix: &str) -> Self {
        Topics {
            interactions: format!("{prefix}feedback.interactions.v1"),
            ratings: format!("{prefix}feedback.ratings.v1"),
            attributed: format!("{prefix}feedback.attributed.v1"),
            deadletter: format!("{prefix}feedback.deadletter.v1"),
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [
            &self.interactions,
            &self.ratings,
            &self.attributed,
            &self.deadletter,
        ]
    }
}

/// Connection settings common to every client. Its `Debug` output masks secrets
/// (see [`is_secret_property`]), so it can be logged.
#[derive(Clone)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Extra librdkafka properties (`key=value`), applied last; e.g. security settings.
    pub extra: Vec<(String, String)>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: DEFAULT_BROKERS.to_string(),
            extra: Vec::new(),
        }
    }
}

/// Whether the librdkafka property `key` holds a secret (passwords, keys, JAAS and OAuth
/// configuration): such values are never printed.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("jaas")
        || k.ends_with(".pem")
        || k == "sasl.oauthbearer.config"
        || k == "ssl.key.pem"
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_property(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("extra", &extra)
            .finish()
    }
}

/// A client context that keeps the last error librdkafka reported for the connection
/// (authentication, TLS, unreachable broker), which otherwise only shows as a timeout.
#[derive(Clone, Default)]
pub struct ErrorCapture(std::sync::Arc<std::sync::Mutex<Option<(KafkaError, String)>>>);

impl rdkafka::ClientContext for ErrorCapture {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
        if let Ok(mut last) = self.0.lock() {
            *last = Some((error, reason.to_string()));
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ErrorCapture {}

impl ErrorCapture {
    pub fn last(&self) -> Option<(KafkaError, String)> {
        self.0.lock().ok().and_then(|l| l.clone())
    }
}

impl KafkaConfig {
    /// Whether TLS or SASL is configured (`security.protocol` other than plaintext).
    pub fn is_secured(&self) -> bool {
        self.extra
            .iter()
            .any(|(k, v)| k == "security.protocol" && !v.eq_ignore_ascii_case("plaintext"))
    }

    /// The configured user and mechanism, for messages (never the password).
    fn identity(&self) -> String {
        let get = |key: &str| {
            self.extra
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        format!(
            "security.protocol={}, sasl.mechanism={}, user {:?}",
            get("security.protocol").unwrap_or("plaintext"),
            get("sasl.mechanism").unwrap_or("-"),
            get("sasl.username").unwrap_or("-")
        )
    }

    /// When TLS or SASL is configured: connects once and fails with a clear message if the
    /// broker refuses the credentials or the TLS handshake (instead of every later request
    /// timing out). An unreachable broker is not an error here (clients retry it later).
    /// Messages name the user and mechanism, never the password.
    pub fn check_credentials(&self, timeout: Duration) -> Result<(), Error> {
        use rdkafka::consumer::BaseConsumer;
        if !self.is_secured() {
            return Ok(());
        }
        let ctx = ErrorCapture::default();
        let c: BaseConsumer<ErrorCapture> = self
            .plain_client()
            .create_with_context(ctx.clone())
            .map_err(|source| Error::Create {
                role: "client",
                brokers: self.brokers.clone(),
                source: Box::new(source),
            })?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let step = Duration::from_millis(500);
            let ok = c.fetch_metadata(None, step).is_ok();
            // Serves the error callbacks (they arrive on the main queue).
            let _ = c.poll(Duration::from_millis(100));
            if let Some((e, reason)) = ctx.last() {
                let auth = matches!(
                    e.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::Authentication)
                        | Some(rdkafka::types::RDKafkaErrorCode::SaslAuthenticationFailed)
                        | Some(rdkafka::types::RDKafkaErrorCode::SSL)
                ) || reason.contains("SASL")
                    || reason.contains("SSL");
                if auth {
                    return Err(Error::Refused {
                        brokers: self.brokers.clone(),
                        identity: self.identity(),
                        reason,
                    });
                }
            }
            if ok || std::time::Instant::now() >= deadline {
                return Ok(());
            }
        }
    }
}

impl KafkaConfig {
    /// The idempotent producer every component uses (`acks=all`, no duplicates or
    /// reordering on retry, lz4 batches lingering up to 5 ms, 30 s message timeout).
    pub fn idempotent_producer(&self) -> Result<FutureProducer, KafkaError> {
        self.idempotent_producer_spec(30_000).create()
    }
}

/// Why an event was not acknowledged by Kafka. [`ProduceError::Unavailable`] is worth
/// sending again after [`ProduceError::retry_after`]; [`ProduceError::Rejected`] is not
/// (the same event would be refused again).
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create the Kafka producer for {brokers}: {error}")]
    Create {
        brokers: String,
        error: Box<KafkaError>,
    },
    /// Kafka did not take the event in time: no broker answers, the partition has no
    /// leader, too few in-sync replicas, the local queue is full, or the delivery bound
    /// passed. The event may or may not be stored; send it again (ids are deduplicated).
    #[error("Kafka did not take event {id:?} on topic {topic} within {} ms: {reason}; send it again in {}s (event ids are deduplicated)", bound.as_millis(), retry_after.as_secs())]
    Unavailable {
        id: String,
        topic: String,
        /// What librdkafka reported, and the brokers.
        reason: String,
        bound: Duration,
        retry_after: Duration,
    },
    /// Kafka refused the event for good (too large for the topic, not authorized, the
    /// topic does not exist): sending it again does not help.
    #[error("Kafka refused event {id:?} on topic {topic}: {error}")]
    Rejected {
        id: String,
        topic: String,
        error: Box<KafkaError>,
    },
}

impl ProduceError {
    /// How long to wait before sending again, when sending again can help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProduceError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Sort a librdkafka delivery error into [`ProduceError::Unavailable`] (transient:
    /// brokers, leaders, replicas, queues, time) or [`ProduceError::Rejected`].
    fn delivery(
        id: &str,
        topic: &str,
        brokers: &str,
        bound: Duration,
        error: KafkaError,
    ) -> ProduceError {
        use rdkafka::types::RDKafkaErrorCode as C;
        let transient = match error.rdkafka_error_code() {
            Some(
                C::MessageTimedOut
                | C::RequestTimedOut
                | C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::BrokerNotAvailable
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::QueueFull
                | C::NetworkException
                | C::OperationTimedOut
                | C::UnknownTopicOrPartition
                | C::Resolve,
            ) => true,
            Some(_) => false,
            // Not a broker error (e.g. the client is being torn down): try again.
            None => true,
        };
        if transient {
            ProduceError::Unavailable {
                id: id.to_string(),
                topic: topic.to_string(),
                reason: format!("{error} (brokers {brokers})"),
                bound,
                retry_after: RETRY_AFTER,
            }
        } else {
            ProduceError::Rejected {
                id: id.to_string(),
                topic: topic.to_string(),
                error: Box::new(error),
            }
        }
    }
}

/// What [`ProduceError::retry_after`] advises when Kafka is unavailable.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where Kafka stored an acknowledged event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub partition: i32,
    pub offset: i64,
}

/// The producer library: emits interactions and ratings with the contract's encoding and keys.
///
/// Idempotent (`enable.idempotence=true`, which implies `acks=all`), so retries inside
/// librdkafka never duplicate or reorder. A returned `Ok` means every event of the call was
/// acknowledged by all in-sync replicas.
#[derive(Clone)]
pub struct FeedbackProducer {
    producer: FutureProducer,
    topics: Topics,
    brokers: String,
    timeout: Duration,
}

/// The delivery bound of [`FeedbackProducer::new`].
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

impl FeedbackProducer {
    /// A producer whose calls end within [`DEFAULT_DELIVERY_TIMEOUT`].
    pub fn new(kafka: &KafkaConfig, topics: Topics) -> Result<Self, ProduceError> {
        Self::with_delivery_timeout(kafka, topics, DEFAULT_DELIVERY_TIMEOUT)
    }

    /// A producer whose `send_*` calls end within `timeout` (at least 100 ms): Kafka
    /// acknowledged every event, or [`ProduceError::Unavailable`]. An event Kafka has not
    /// taken by then is also dropped from the local queue (`message.timeout.ms`), so a
    /// Kafka outage holds no memory past the bound.
    pub fn with_delivery_timeout(
        kafka: &KafkaConfig,
        topics: Topics,
        timeout: Duration,
    ) -> Result<Self, ProduceError> {
        let timeout = timeout.max(Duration::from_millis(100));
        let producer = kafka
            .idempotent_producer_spec(timeout.as_millis() as u64)
            .create()
            .map_err(|source| ProduceError::Create {
                brokers: kafka.brokers.clone(),
                error: Box::new(source),
            })?;
        Ok(FeedbackProducer {
            producer,
            topics,
            brokers: kafka.brokers.clone(),
            timeout,
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The delivery bound of every `send_*` call.
    pub fn delivery_timeout(&self) -> Duration {
        self.timeout
    }

    /// A readiness probe on this producer's own connections: can Kafka take interactions
    /// and ratings now (every partition of both topics has a leader)?
    pub fn probe(&self) -> MetadataProbe {
        let producer = self.producer.clone();
        MetadataProbe {
            fetch: Box::new(move |topic, timeout| {
                producer.client().fetch_metadata(Some(topic), timeout)
            }),
            topics: vec![
                self.topics.interactions.clone(),
                self.topics.ratings.clone(),
            ],
            brokers: self.brokers.clone(),
        }
    }

    async fn send_all<'a>(
        &self,
        topic: &str,
        items: impl Iterator<Item = (&'a str, &'a str, Vec<u8>)>,
    ) -> Result<Vec<Ack>, ProduceError> {
        let futures: Vec<_> = items
            .map(|(id, key, payload)| {
                let producer = &self.producer;
                let timeout = self.timeout;
                let brokers = &self.brokers;
                async move {
                    let rec = FutureRecord::to(topic).key(key).payload(&payload);
                    // librdkafka's message.timeout.ms drops the event from its queue at
                    // `timeout`; the outer bound makes the call end then whatever happens
                    // to the delivery report.
                    match tokio::time::timeout(timeout, producer.send(rec, Timeout::After(timeout)))
                        .await
                    {
                        Ok(Ok(d)) => Ok(Ack {
                            partition: d.partition,
                            offset: d.offset,
                        }),
                        Ok(Err((source, _))) => {
                            Err(ProduceError::delivery(id, topic, brokers, timeout, source))
                        }
                        Err(_) => Err(ProduceError::delivery(
                            id,
                            topic,
                            brokers,
                            timeout,
                            KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
                            ),
                        )),
                    }
                }
            })
            .collect();
        join_all(futures).await.into_iter().collect()
    }

    /// Sends interactions (key: `interaction_id`) and waits for every acknowledgement.
    pub async fn send_interactions(&self, items: &[Interaction]) -> Result<Vec<Ack>, ProduceError> {
        self.send_all(
            &self.topics.interactions,
            items.iter().map(|i| {
                (
                    i.interaction_id.as_str(),
                    i.interaction_id.as_str(),
                    i.encode(),
                )
            }),
        )
        .await
    }

    /// Sends ratings (key: `interaction_id`, else `rating_id`) and waits for every acknowledgement.
    ///
    /// Comments are redacted first ([`redact_rating`]): e-mail addresses, phone numbers,
    /// card numbers and IBANs never reach Kafka, whoever calls this.
    pub async fn send_ratings(&self, items: &[Rating]) -> Result<Vec<Ack>, ProduceError> {
        self.send_all(
            &self.topics.ratings,
            items
                .iter()
                .map(|r| (r.rating_id.as_str(), r.key(), encode_redacted(r))),
        )
        .await
    }

    /// Waits until everything queued is delivered (for shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// Replaces personal data in the rating's comment with typed placeholders
/// ([`feedback_redact::redact`]) and returns what was replaced. Idempotent.
pub fn redact_rating(r: &mut Rating) -> feedback_redact::Counts {
    match r.comment.as_deref().map(feedback_redact::redact) {
        Some((std::borrow::Cow::Owned(clean), counts)) => {
            r.comment = Some(clean);
            counts
        }
        _ => feedback_redact::Counts::default(),
    }
}

/// The Avro encoding of `r` with its comment redacted (the only way ratings are encoded
/// for Kafka by this library).
fn encode_redacted(r: &Rating) -> Vec<u8> {
    match r.comment.as_deref().map(feedback_redact::redact) {
        Some((std::borrow::Cow::Owned(clean), _)) => {
            let mut copy = r.clone();
            copy.comment = Some(clean);
            copy.encode()
        }
        _ => r.encode(),
    }
}

/// Offset ranges as log text, `topic[partition]:first..=last` per partition, sorted by topic
/// and partition: what the attributor's and the sink's batch spans record as `offsets`.
pub fn offset_ranges_text<'a, T: AsRef<str> + 'a>(
    ranges: impl IntoIterator<Item = (&'a (T, i32), &'a (i64, i64))>,
) -> String {
    let mut parts: Vec<(&str, i32, i64, i64)> = ranges
        .into_iter()
        .map(|((t, p), (a, b))| (t.as_ref(), *p, *a, *b))
        .collect();
    parts.sort();
    parts
        .iter()
        .map(|(t, p, a, b)| format!("{t}[{p}]:{a}..={b}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod offset_ranges_tests {
    #[test]
    fn ranges_are_sorted_and_named() {
        let m: std::collections::HashMap<(String, i32), (i64, i64)> = [
            (("b".to_string(), 0), (5, 9)),
            (("a".to_string(), 2), (1, 1)),
            (("a".to_string(), 1), (0, 3)),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            super::offset_ranges_text(&m),
            "a[1]:0..=3 a[2]:1..=1 b[0]:5..=9"
        );
    }
}
