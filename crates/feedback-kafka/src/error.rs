//! Why setting up a Kafka client or topic failed.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// An error of this crate's setup functions (connection checks, client creation, topic
/// administration). Messages name the brokers and what to check; the librdkafka error,
/// where there is one, is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// librdkafka refused the client's properties.
    #[error("cannot create a Kafka {role} for {brokers}; check the Kafka properties (FEEDBACK_KAFKA_PROPERTIES and the FEEDBACK_KAFKA_* security settings)")]
    Create {
        role: &'static str,
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    /// The broker refused the credentials or the TLS handshake.
    #[error("Kafka at {brokers} refused the connection ({identity}): {reason}. Check the SASL user and password (FEEDBACK_KAFKA_SASL_USERNAME, FEEDBACK_KAFKA_SASL_PASSWORD_FILE), the mechanism, and the CA file (FEEDBACK_KAFKA_SSL_CA_LOCATION)")]
    Refused {
        brokers: String,
        /// Protocol, mechanism and user (never the password).
        identity: String,
        /// What librdkafka reported.
        reason: String,
    },
    #[error("cannot read metadata of topic {topic} from {brokers}; check that the brokers are reachable")]
    Metadata {
        topic: String,
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("creating topics {topics} on {brokers} failed; check that the brokers are reachable")]
    CreateTopics {
        topics: String,
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("cannot create topic {topic} on {brokers}: {code}; check that this user may create topics and that the replication factor fits the cluster")]
    TopicRefused {
        topic: String,
        brokers: String,
        code: RDKafkaErrorCode,
    },
}
