//! The attributor's Prometheus metrics (names are a contract with deploy/ dashboards and
//! alert rules).

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    pub events_in: IntCounterVec,
    pub events_out: IntCounterVec,
    pub duplicates: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub parked: IntGauge,
    pub orphans: IntCounter,
    pub join_latency: Histogram,
    pub state_keys: IntGaugeVec,
    pub state_bytes: IntGauge,
    pub transactions: IntCounterVec,
    pub ownership: IntGaugeVec,
    pub lag: IntGaugeVec,
    pub partitions: IntGauge,
    pub restored: IntCounter,
    pub restore_seconds: Histogram,
}

impl Metrics {
    pub fn new(r: &Registry) -> anyhow::Result<Self> {
        let m = Metrics {
            events_in: IntCounterVec::new(
                Opts::new(
                    "feedback_attributor_events_in_total",
                    "Input messages by kind (interaction, rating), counted when their transaction commits",
                ),
                &["kind"],
            )?,
            events_out: IntCounterVec::new(
                Opts::new(
                    "feedback_attributor_events_out_total",
                    "Attributed events written (committed transactions only) by kind, method and team",
                ),
                &["kind", "method", "team"],
            )?,
            duplicates: IntCounterVec::new(
                Opts::new(
                    "feedback_attributor_duplicates_total",
                    "Input events whose id was already seen within the horizon (committed transactions only)",
                ),
                &["kind"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "feedback_attributor_dead_letters_total",
                    "Input messages sent to the dead-letter topic, by reason",
                ),
                &["reason"],
            )?,
            parked: IntGauge::new(
                "feedback_attributor_parked_ratings",
                "Ratings waiting for their interaction",
            )?,
            orphans: IntCounter::new(
                "feedback_attributor_orphans_total",
                "Ratings whose interaction did not arrive within the horizon",
            )?,
            join_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "feedback_attributor_join_latency_seconds",
                    "Processing time a parked rating waited for its interaction",
                )
                .buckets(vec![
                    0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 86_400.0, 604_800.0,
                ]),
            )?,
            state_keys: IntGaugeVec::new(
                Opts::new(
                    "feedback_attributor_state_keys",
                    "Keys held in the join and dedup state, by kind (interaction, rating)",
                ),
                &["kind"],
            )?,
            state_bytes: IntGauge::new(
                "feedback_attributor_state_bytes",
                "Estimated heap bytes of the join and dedup state",
            )?,
            transactions: IntCounterVec::new(
                Opts::new(
                    "feedback_attributor_transactions_total",
                    "Kafka transactions by result (committed, aborted)",
                ),
                &["result"],
            )?,
            ownership: IntGaugeVec::new(
                Opts::new(
                    "feedback_attributor_ownership_info",
                    "The ownership version in force (value 1)",
                ),
                &["version"],
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "feedback_attributor_consumer_lag",
                    "Messages behind the end of each input partition (from librdkafka statistics)",
                ),
                &["topic", "partition"],
            )?,
            partitions: IntGauge::new(
                "feedback_attributor_assigned_partitions",
                "Input partition numbers this instance owns",
            )?,
            restored: IntCounter::new(
                "feedback_attributor_restored_records_total",
                "Changelog records read to restore state",
            )?,
            restore_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "feedback_attributor_restore_seconds",
                    "Time to restore the state of newly assigned partitions",
                )
                .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]),
            )?,
        };
        // Known label values start at zero, so dashboards and alerts see the series
        // before the first event of its kind.
        for kind in ["interaction", "rating"] {
            m.events_in.with_label_values(&[kind]);
            m.duplicates.with_label_values(&[kind]);
            m.state_keys.with_label_values(&[kind]);
        }
        for result in ["committed", "aborted"] {
            m.transactions.with_label_values(&[result]);
        }
        // Every reason the attributor writes (all but the sink's `clickhouse_rejected`).
        for reason in feedback_kafka::deadletter::Reason::ALL {
            if reason != feedback_kafka::deadletter::Reason::ClickhouseRejected {
                m.dead_letters.with_label_values(&[reason.as_str()]);
            }
        }
        r.register(Box::new(m.events_in.clone()))?;
        r.register(Box::new(m.events_out.clone()))?;
        r.register(Box::new(m.duplicates.clone()))?;
        r.register(Box::new(m.dead_letters.clone()))?;
        r.register(Box::new(m.parked.clone()))?;
        r.register(Box::new(m.orphans.clone()))?;
        r.register(Box::new(m.join_latency.clone()))?;
        r.register(Box::new(m.state_keys.clone()))?;
        r.register(Box::new(m.state_bytes.clone()))?;
        r.register(Box::new(m.transactions.clone()))?;
        r.register(Box::new(m.ownership.clone()))?;
        r.register(Box::new(m.lag.clone()))?;
        r.register(Box::new(m.partitions.clone()))?;
        r.register(Box::new(m.restored.clone()))?;
        r.register(Box::new(m.restore_seconds.clone()))?;
        Ok(m)
    }
}
