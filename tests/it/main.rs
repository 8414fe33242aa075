//! Integration tests: real Kafka and ClickHouse on loopback (start them with
//! `deploy/local/stack.sh start`; addresses from FEEDBACK_TEST_BROKERS and
//! FEEDBACK_TEST_CLICKHOUSE_URL). Every test uses fresh topic names and a fresh database.
//! One test binary, several modules: faster to build than many.

mod access;
mod architecture;
mod attributor;
mod avro_interop;
mod bench;
mod board;
mod cli;
mod clickhouse_versions;
mod collector_errors;
mod fault_drill;
mod harness;
mod hostile_kafka;
mod pipeline;
mod producer_lib;
mod readiness;
mod rollups;
mod sink_chaos;
mod sink_dead_letters;
mod sink_rebalance;
mod sink_support;
mod tracing_ids;
