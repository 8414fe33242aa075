//! A readiness probe: can Kafka take (or serve) the service's topics now?

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;

use crate::{Error, KafkaConfig};

type Fetch = Box<dyn Fn(&str, Duration) -> KafkaResult<Metadata> + Send + Sync>;

/// Asks the brokers for the metadata of a service's topics. Built on a client of its own
/// ([`MetadataProbe::new`]) or on the connections of the producer it checks
/// ([`crate::FeedbackProducer::probe`]).
pub struct MetadataProbe {
    pub(crate) fetch: Fetch,
    pub(crate) topics: Vec<String>,
    pub(crate) brokers: String,
}

impl MetadataProbe {
    /// A probe with its own client for `topics` (reconnecting at least every second, so a
    /// returned broker shows within about a second).
    pub fn new(kafka: &KafkaConfig, topics: Vec<String>) -> Result<MetadataProbe, Error> {
        let client: BaseConsumer =
            kafka
                .probe_client()
                .create()
                .map_err(|source| Error::Create {
                    role: "readiness probe",
                    brokers: kafka.brokers.clone(),
                    source: Box::new(source),
                })?;
        Ok(MetadataProbe {
            fetch: Box::new(move |topic, timeout| client.fetch_metadata(Some(topic), timeout)),
            topics,
            brokers: kafka.brokers.clone(),
        })
    }

    /// Blocks at most `timeout` per topic. `Ok`: what was seen; `Err`: what is wrong.
    pub fn check(&self, timeout: Duration) -> Result<String, String> {
        let mut partitions = 0;
        for topic in &self.topics {
            let md = (self.fetch)(topic, timeout).map_err(|e| {
                format!(
                    "Kafka at {} does not answer ({e}); is the broker running?",
                    self.brokers
                )
            })?;
            let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
                return Err(format!(
                    "Kafka at {} did not describe topic {topic}",
                    self.brokers
                ));
            };
            if let Some(e) = t.error() {
                let code = rdkafka::types::RDKafkaErrorCode::from(e);
                return Err(format!(
                    "topic {topic} on {}: {code}; run `feedback setup` to create the topics",
                    self.brokers
                ));
            }
            if md.brokers().is_empty() {
                return Err(format!("Kafka at {} lists no brokers", self.brokers));
            }
            if let Some(p) = t.partitions().iter().find(|p| p.leader() < 0) {
                return Err(format!(
                    "partition {topic}[{}] has no leader on {} (a broker is down or being elected)",
                    p.id(),
                    self.brokers
                ));
            }
            partitions += t.partitions().len();
        }
        Ok(format!(
            "{partitions} partitions of {} topics have a leader",
            self.topics.len()
        ))
    }
}
