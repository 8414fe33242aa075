//! Topic administration.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::{Error, KafkaConfig, Topics};

fn admin_client(kafka: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, Error> {
    kafka
        .admin_client()
        .create()
        .map_err(|source| Error::Create {
            role: "admin client",
            brokers: kafka.brokers.clone(),
            source: Box::new(source),
        })
}

/// Creates the pipeline's topics if they do not exist. Returns the names created now.
/// Interactions and ratings get the same partition count so that a rating and its
/// interaction (same key) land on the same partition number.
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    topics: &Topics,
    partitions: i32,
    replication: i32,
) -> Result<Vec<String>, Error> {
    kafka.check_credentials(Duration::from_secs(15))?;
    let admin = admin_client(kafka)?;
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
        .map_err(|source| Error::CreateTopics {
            topics: topics.all().join(", "),
            brokers: kafka.brokers.clone(),
            source: Box::new(source),
        })?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::TopicRefused {
                    topic,
                    brokers: kafka.brokers.clone(),
                    code,
                })
            }
        }
    }
    Ok(created)
}

/// Partition count and replication factor of `topic`, or `None` when it does not exist.
pub fn describe_topic(
    kafka: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Option<(i32, i32)>, Error> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = kafka
        .plain_client()
        .create()
        .map_err(|source| Error::Create {
            role: "client",
            brokers: kafka.brokers.clone(),
            source: Box::new(source),
        })?;
    let md = c
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| Error::Metadata {
            topic: topic.to_string(),
            brokers: kafka.brokers.clone(),
            source: Box::new(source),
        })?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    let replication = t.partitions()[0].replicas().len() as i32;
    Ok(Some((t.partitions().len() as i32, replication)))
}

/// Creates `topic` with the given settings unless it exists; returns whether it was created.
pub async fn ensure_topic(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
) -> Result<bool, Error> {
    let admin = admin_client(kafka)?;
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&t], &opts)
        .await
        .map_err(|source| Error::CreateTopics {
            topics: topic.to_string(),
            brokers: kafka.brokers.clone(),
            source: Box::new(source),
        })?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => Ok(false),
        Some(Err((topic, code))) => Err(Error::TopicRefused {
            topic,
            brokers: kafka.brokers.clone(),
            code,
        }),
    }
}
