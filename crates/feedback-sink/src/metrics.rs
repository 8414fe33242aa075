//! The sink's Prometheus metrics (names are a contract with dashboards and alert rules).

use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub rows: IntCounterVec,
    pub bytes: IntCounterVec,
    pub batch_rows: Histogram,
    pub insert_seconds: Histogram,
    pub retries: IntCounterVec,
    pub errors: IntCounterVec,
    pub dead: IntCounterVec,
    pub lag: GaugeVec,
    pub freshness: Gauge,
    pub skipped: IntCounterVec,
}

impl Metrics {
    pub fn new(r: &Registry) -> anyhow::Result<Self> {
        let m = Metrics {
            rows: IntCounterVec::new(
                Opts::new(
                    "feedback_sink_rows_inserted_total",
                    "Rows inserted into ClickHouse, by table",
                ),
                &["table"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "feedback_sink_bytes_inserted_total",
                    "Bytes of the Kafka messages whose rows were inserted, by table",
                ),
                &["table"],
            )?,
            batch_rows: Histogram::with_opts(
                HistogramOpts::new("feedback_sink_batch_rows", "Rows per landed batch").buckets(
                    vec![1.0, 10.0, 100.0, 1000.0, 10_000.0, 50_000.0, 100_000.0, 500_000.0],
                ),
            )?,
            insert_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "feedback_sink_insert_seconds",
                    "Duration of one INSERT (one table, one batch or one bisection step)",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "feedback_sink_insert_retries_total",
                    "INSERTs retried after a retriable error, by reason",
                ),
                &["reason"],
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "feedback_sink_insert_errors_total",
                    "Failed INSERTs: retriable (retried) or rejected (rows isolated and dead-lettered)",
                ),
                &["kind"],
            )?,
            dead: IntCounterVec::new(
                Opts::new(
                    "feedback_sink_dead_letters_total",
                    "Dead letters landed in ClickHouse, by reason",
                ),
                &["reason"],
            )?,
            lag: GaugeVec::new(
                Opts::new(
                    "feedback_sink_consumer_lag",
                    "Messages between the sink's position and the end of the partition",
                ),
                &["topic", "partition"],
            )?,
            freshness: Gauge::new(
                "feedback_sink_freshness_seconds",
                "Now minus the newest event time landed, at the last flush",
            )?,
            skipped: IntCounterVec::new(
                Opts::new(
                    "feedback_sink_already_landed_total",
                    "Messages read again whose rows ClickHouse already held (dropped, not inserted twice)",
                ),
                &["table"],
            )?,
        };
        // Known label values start at zero, so alert rules see the first increment.
        for kind in ["retriable", "rejected"] {
            m.errors.with_label_values(&[kind]);
        }
        for reason in [
            "connection",
            "timeout",
            "too_many_parts",
            "shutdown",
            "schema",
            "server_error",
        ] {
            m.retries.with_label_values(&[reason]);
        }
        r.register(Box::new(m.rows.clone()))?;
        r.register(Box::new(m.bytes.clone()))?;
        r.register(Box::new(m.batch_rows.clone()))?;
        r.register(Box::new(m.insert_seconds.clone()))?;
        r.register(Box::new(m.retries.clone()))?;
        r.register(Box::new(m.errors.clone()))?;
        r.register(Box::new(m.dead.clone()))?;
        r.register(Box::new(m.lag.clone()))?;
        r.register(Box::new(m.freshness.clone()))?;
        r.register(Box::new(m.skipped.clone()))?;
        Ok(m)
    }
}
