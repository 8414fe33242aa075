//! What every service and tool of the `feedback` binary shares: connection options and the
//! `--config` file (`config`), shutdown and its drain (`shutdown`), restarting a failed
//! attempt of a service (`supervise`), the `/metrics` server (`metrics`), liveness and readiness (`health`), the API key formats of the collector and its clients (`apikeys`), and the clock.

pub mod apikeys;
pub mod config;
pub mod health;
pub mod metrics;
pub mod shutdown;
pub mod supervise;

pub use config::Common;

/// Wall-clock time in UTC milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
