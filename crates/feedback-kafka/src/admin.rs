//! Topic administration.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::{KafkaConfig, Topics};

/// Creates the pipeline's topics if they do not exist. Returns the names created now.
/// Interactions and ratings get the same partition count so that a rating and its
/// interaction (same key) land on the same partition number.
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    topics: &Topics,
    partitions: i32,
    replication: i32,
) -> Result<Vec<String>, String> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create().map_err(|e| {
        format!(
            "cannot create Kafka admin client for {}: {e}",
            kafka.brokers
        )
    })?;
    let new: Vec<NewTopic> = topics
        .all()
        .into_iter()
        .map(|t| {
            NewTopic::new(t, partitions, TopicReplication::Fixed(replication))
                .set("compression.type", "producer")
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|e| format!("creating topics on {} failed: {e}", kafka.brokers))?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(format!(
                    "cannot create topic {name} on {}: {code}",
                    kafka.brokers
                ))
            }
        }
    }
    Ok(created)
}
