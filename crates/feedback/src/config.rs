//! Options shared by every component, and the `--config` file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use feedback_clickhouse::{Ch, ChConfig};
use feedback_kafka::{KafkaConfig, Topics};

/// Connection options every component takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Kafka bootstrap servers.
    #[arg(long, env = "FEEDBACK_BROKERS", default_value = feedback_kafka::DEFAULT_BROKERS)]
    pub brokers: String,
    /// Extra librdkafka property KEY=VALUE (repeatable; comma-separated in the environment),
    /// e.g. security.protocol=SASL_SSL.
    #[arg(
        long = "kafka-property",
        env = "FEEDBACK_KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub kafka_properties: Vec<String>,
    /// Prefix for every topic name (the names are the contract's otherwise).
    #[arg(long, env = "FEEDBACK_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// ClickHouse HTTP endpoint.
    #[arg(long, env = "FEEDBACK_CLICKHOUSE_URL", default_value = feedback_clickhouse::DEFAULT_URL)]
    pub clickhouse_url: String,
    /// ClickHouse database.
    #[arg(long, env = "FEEDBACK_CLICKHOUSE_DATABASE", default_value = feedback_clickhouse::DEFAULT_DATABASE)]
    pub clickhouse_database: String,
    /// ClickHouse user.
    #[arg(long, env = "FEEDBACK_CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,
    /// ClickHouse password (prefer the environment variable over the flag).
    #[arg(
        long,
        env = "FEEDBACK_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub clickhouse_password: String,
}

impl Common {
    pub fn kafka(&self) -> KafkaConfig {
        let extra = self
            .kafka_properties
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                None => (p.clone(), String::new()),
            })
            .collect();
        KafkaConfig {
            brokers: self.brokers.clone(),
            extra,
        }
    }

    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    pub fn clickhouse(&self) -> anyhow::Result<Ch> {
        Ch::new(&ChConfig {
            url: self.clickhouse_url.clone(),
            database: self.clickhouse_database.clone(),
            user: self.clickhouse_user.clone(),
            password: self.clickhouse_password.clone(),
        })
        .context("--clickhouse-database / FEEDBACK_CLICKHOUSE_DATABASE")
    }
}

/// Reads the file named by `--config FILE` / `--config=FILE` or `FEEDBACK_CONFIG` and sets
/// `FEEDBACK_<KEY>` for each key not already in the environment, so that clap sees
/// file < env < flag.
pub fn load_file_into_env() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut path: Option<PathBuf> = std::env::var_os("FEEDBACK_CONFIG").map(PathBuf::from);
    for (i, a) in args.iter().enumerate() {
        if a == "--config" {
            path = args.get(i + 1).map(PathBuf::from);
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
        }
    }
    let Some(path) = path else { return Ok(()) };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    for (key, value) in table {
        let var = format!("FEEDBACK_{}", key.to_uppercase().replace('-', "_"));
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Array(a) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        if std::env::var_os(&var).is_none() {
            // Called from main before the runtime or any other thread starts.
            std::env::set_var(&var, value);
        }
    }
    Ok(())
}
