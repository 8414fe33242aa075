//! Every Kafka client of the pipeline is configured here, and only here.
//!
//! A builder on [`KafkaConfig`] names the client's role (the read_committed consumer, the
//! transactional producer, the idempotent producer, the admin client, ...) and returns a
//! [`ClientSpec`]: the librdkafka properties of that role, ready to create the client with
//! the caller's context. The properties are laid down in this order, later ones winning:
//!
//! 1. `bootstrap.servers` (the broker list) and `client.id=feedback`;
//! 2. the user's [`KafkaConfig::extra`] properties (security settings and the like), which
//!    therefore override 1;
//! 3. the role's properties (those the role's guarantees depend on, e.g.
//!    `enable.auto.commit=false`, `isolation.level=read_committed`), which override 2.
//!
//! Services call the named methods; only benchmarks tune properties freely
//! ([`ClientSpec::tuned`]).

use std::collections::BTreeMap;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfig, FromClientConfigAndContext};
use rdkafka::error::KafkaResult;

use crate::KafkaConfig;

/// The librdkafka properties of one client, fixed by a builder of [`KafkaConfig`].
#[derive(Clone)]
pub struct ClientSpec {
    config: ClientConfig,
}

impl ClientSpec {
    fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.config.set(key, value);
        self
    }

    /// Sets any librdkafka property, after every other: for benchmarks that measure a tuned
    /// baseline. Services use the named builders instead.
    pub fn tuned(self, key: &str, value: impl Into<String>) -> Self {
        self.set(key, value)
    }

    /// The value of property `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.config.get(key)
    }

    /// Every property set, sorted by key (secrets included: never log this).
    pub fn properties(&self) -> BTreeMap<String, String> {
        self.config
            .config_map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Creates the client (`BaseConsumer`, `StreamConsumer`, `FutureProducer`,
    /// `ThreadedProducer`, `AdminClient`, ...) with the default context.
    pub fn create<T: FromClientConfig>(&self) -> KafkaResult<T> {
        self.config.create()
    }

    /// Creates the client with `context` (rebalance callbacks, statistics, error capture).
    pub fn create_with_context<C: ClientContext, T: FromClientConfigAndContext<C>>(
        &self,
        context: C,
    ) -> KafkaResult<T> {
        self.config.create_with_context(context)
    }
}

/// A consumer that reads only committed transactional data and never commits by itself:
/// `group.id`, `enable.auto.commit=false`, `isolation.level=read_committed`, plus what the
/// methods add.
#[derive(Clone)]
pub struct ConsumerSpec {
    spec: ClientSpec,
}

impl ConsumerSpec {
    /// `auto.offset.reset=earliest`: a group without committed offsets starts at the
    /// beginning (nothing is skipped).
    pub fn from_earliest(self) -> Self {
        self.set("auto.offset.reset", "earliest")
    }

    /// `enable.partition.eof=true`: reaching the end of a partition is reported (readers
    /// that stop at the end).
    pub fn partition_eof(self) -> Self {
        self.set("enable.partition.eof", "true")
    }

    /// `group.instance.id`: static membership; a restarted instance takes its partitions
    /// back at once instead of waiting for the group to notice the old member is gone.
    pub fn static_member(self, instance_id: &str) -> Self {
        self.set("group.instance.id", instance_id)
    }

    /// `partition.assignment.strategy=range`: one member gets the same partition number of
    /// every subscribed topic (what co-partitioned state needs).
    pub fn range_assignment(self) -> Self {
        self.set("partition.assignment.strategy", "range")
    }

    /// `session.timeout.ms`.
    pub fn session_timeout_ms(self, ms: u64) -> Self {
        self.set("session.timeout.ms", ms.to_string())
    }

    /// `heartbeat.interval.ms`.
    pub fn heartbeat_interval_ms(self, ms: u64) -> Self {
        self.set("heartbeat.interval.ms", ms.to_string())
    }

    /// `max.poll.interval.ms`.
    pub fn max_poll_interval_ms(self, ms: u64) -> Self {
        self.set("max.poll.interval.ms", ms.to_string())
    }

    /// `fetch.wait.max.ms`: how long the broker may hold a fetch waiting for data.
    pub fn fetch_wait_max_ms(self, ms: u64) -> Self {
        self.set("fetch.wait.max.ms", ms.to_string())
    }

    /// `statistics.interval.ms`: how often the context's statistics callback runs.
    pub fn statistics_interval_ms(self, ms: u64) -> Self {
        self.set("statistics.interval.ms", ms.to_string())
    }

    /// Sets any librdkafka property, after every other (benchmarks only; see
    /// [`ClientSpec::tuned`]).
    pub fn tuned(self, key: &str, value: impl Into<String>) -> Self {
        self.set(key, value)
    }

    fn set(self, key: &str, value: impl Into<String>) -> Self {
        ConsumerSpec {
            spec: self.spec.set(key, value),
        }
    }
}

impl std::ops::Deref for ConsumerSpec {
    type Target = ClientSpec;

    fn deref(&self) -> &ClientSpec {
        &self.spec
    }
}

/// The producer settings every component shares: idempotent (no duplicates or reordering
/// on retry; implies `acks=all`, set explicitly too), lz4 batches lingering up to 5 ms.
const PRODUCER: [(&str, &str); 4] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    ("compression.type", "lz4"),
];

impl KafkaConfig {
    /// The brokers, `client.id=feedback`, then the user's extra properties.
    fn base(&self) -> ClientSpec {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("client.id", "feedback");
        for (k, v) in &self.extra {
            config.set(k, v);
        }
        ClientSpec { config }
    }

    /// A client with only the connection settings: for metadata requests and checks.
    pub fn plain_client(&self) -> ClientSpec {
        self.base()
    }

    /// The readiness probe's client: metadata only, reconnecting at least every second.
    pub fn probe_client(&self) -> ClientSpec {
        self.base().set("reconnect.backoff.max.ms", "1000")
    }

    /// The admin client (topic creation and deletion).
    pub fn admin_client(&self) -> ClientSpec {
        self.base()
    }

    /// A consumer that only names `group` (to read the group's committed offsets without
    /// joining it; librdkafka defaults otherwise).
    pub fn group_client(&self, group: &str) -> ClientSpec {
        self.base().set("group.id", group)
    }

    /// The read_committed consumer in `group` that commits only when told to; refine it
    /// with the [`ConsumerSpec`] methods.
    pub fn read_committed_consumer(&self, group: &str) -> ConsumerSpec {
        ConsumerSpec {
            spec: self
                .base()
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed"),
        }
    }

    /// The idempotent producer (`acks=all`, lz4, linger 5 ms) giving up on a message after
    /// `message_timeout_ms`, reconnecting to a returned broker within a second (the
    /// collector's readiness follows these connections).
    pub fn idempotent_producer_spec(&self, message_timeout_ms: u64) -> ClientSpec {
        PRODUCER
            .iter()
            .fold(self.base(), |s, (k, v)| s.set(k, *v))
            .set("message.timeout.ms", message_timeout_ms.to_string())
            .set("reconnect.backoff.max.ms", "1000")
    }

    /// An idempotent producer with librdkafka's batching defaults (no linger, no
    /// compression), giving up on a message after `message_timeout_ms`: for tools that
    /// write test data, not for the pipeline's own writes.
    pub fn bare_idempotent_producer_spec(&self, message_timeout_ms: u64) -> ClientSpec {
        self.base()
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", message_timeout_ms.to_string())
    }

    /// The transactional producer `transactional_id` (idempotent, `acks=all`, lz4, linger
    /// 5 ms) whose transactions the broker aborts after `transaction_timeout_ms`.
    pub fn transactional_producer_spec(
        &self,
        transactional_id: &str,
        transaction_timeout_ms: u64,
    ) -> ClientSpec {
        PRODUCER
            .iter()
            .fold(
                self.base().set("transactional.id", transactional_id),
                |s, (k, v)| s.set(k, *v),
            )
            .set("transaction.timeout.ms", transaction_timeout_ms.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(extra: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "b1:9092,b2:9092".into(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BASE: [(&str, &str); 2] = [
        ("bootstrap.servers", "b1:9092,b2:9092"),
        ("client.id", "feedback"),
    ];

    fn with_base(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut p = props(&BASE);
        p.extend(props(pairs));
        p
    }

    #[test]
    fn plain_admin_and_group_clients_carry_the_connection_settings_only() {
        let k = kafka(&[]);
        assert_eq!(k.plain_client().properties(), with_base(&[]));
        assert_eq!(k.admin_client().properties(), with_base(&[]));
        assert_eq!(
            k.group_client("g").properties(),
            with_base(&[("group.id", "g")])
        );
    }

    #[test]
    fn the_attributor_consumer() {
        let spec = kafka(&[])
            .read_committed_consumer("grp")
            .from_earliest()
            .range_assignment()
            .static_member("a-1")
            .session_timeout_ms(10_000)
            .heartbeat_interval_ms(1000)
            .statistics_interval_ms(5000);
        assert_eq!(
            spec.properties(),
            with_base(&[
                ("group.id", "grp"),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
                ("partition.assignment.strategy", "range"),
                ("group.instance.id", "a-1"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "1000"),
                ("statistics.interval.ms", "5000"),
            ])
        );
    }

    #[test]
    fn the_changelog_and_inspect_readers() {
        assert_eq!(
            kafka(&[])
                .read_committed_consumer("g.restore")
                .partition_eof()
                .from_earliest()
                .properties(),
            with_base(&[
                ("group.id", "g.restore"),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "true"),
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "earliest"),
            ])
        );
        // Without from_earliest, auto.offset.reset stays librdkafka's default.
        let inspect = kafka(&[]).read_committed_consumer("check").partition_eof();
        assert_eq!(inspect.get("auto.offset.reset"), None);
        assert_eq!(
            inspect.properties(),
            with_base(&[
                ("group.id", "check"),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "true"),
                ("isolation.level", "read_committed"),
            ])
        );
    }

    #[test]
    fn the_sink_consumer() {
        let spec = kafka(&[])
            .read_committed_consumer("sink")
            .static_member("s-0")
            .from_earliest()
            .fetch_wait_max_ms(100)
            .session_timeout_ms(45_000)
            .max_poll_interval_ms(300_000);
        assert_eq!(
            spec.properties(),
            with_base(&[
                ("group.instance.id", "s-0"),
                ("group.id", "sink"),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
                ("fetch.wait.max.ms", "100"),
                ("session.timeout.ms", "45000"),
                ("max.poll.interval.ms", "300000"),
            ])
        );
    }

    #[test]
    fn the_producers() {
        let k = kafka(&[]);
        assert_eq!(
            k.idempotent_producer_spec(30_000).properties(),
            with_base(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("compression.type", "lz4"),
                ("message.timeout.ms", "30000"),
                ("reconnect.backoff.max.ms", "1000"),
            ])
        );
        assert_eq!(
            k.transactional_producer_spec("g-a-1", 60_000).properties(),
            with_base(&[
                ("transactional.id", "g-a-1"),
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("compression.type", "lz4"),
                ("transaction.timeout.ms", "60000"),
            ])
        );
        assert_eq!(
            k.bare_idempotent_producer_spec(300_000).properties(),
            with_base(&[
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "300000"),
            ])
        );
    }

    #[test]
    fn extra_properties_override_the_connection_settings_and_the_role_overrides_them() {
        let k = kafka(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.password", "pw"),
            ("client.id", "mine"),
            ("enable.auto.commit", "true"),
            ("acks", "1"),
        ]);
        let c = k.read_committed_consumer("g");
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.password"), Some("pw"));
        assert_eq!(c.get("client.id"), Some("mine"));
        // The role's guarantees are not the user's to turn off.
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        let p = k.idempotent_producer_spec(30_000);
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(k.plain_client().get("client.id"), Some("mine"));
        // Extras with the same key: the last one wins.
        let twice = kafka(&[
            ("linger.ms", "1"),
            ("socket.timeout.ms", "1"),
            ("socket.timeout.ms", "2"),
        ]);
        assert_eq!(twice.admin_client().get("socket.timeout.ms"), Some("2"));
    }

    #[test]
    fn tuned_properties_come_last() {
        let p = kafka(&[])
            .idempotent_producer_spec(60_000)
            .tuned("linger.ms", "50")
            .tuned("batch.size", "1000000");
        assert_eq!(p.get("linger.ms"), Some("50"));
        assert_eq!(p.get("batch.size"), Some("1000000"));
        let c = kafka(&[])
            .read_committed_consumer("g")
            .tuned("fetch.min.bytes", "1");
        assert_eq!(c.get("fetch.min.bytes"), Some("1"));
    }
}
