//! Options shared by every component, and the `--config` file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use feedback_clickhouse::{Ch, ChConfig};
use feedback_kafka::{KafkaConfig, Topics};

/// Connection options every component takes. `Debug` masks every secret.
#[derive(Args, Clone)]
pub struct Common {
    /// Kafka bootstrap servers.
    #[arg(long, env = "FEEDBACK_BROKERS", default_value = feedback_kafka::DEFAULT_BROKERS)]
    pub brokers: String,
    /// Extra librdkafka property KEY=VALUE (repeatable; comma-separated in the environment),
    /// e.g. security.protocol=SASL_SSL.
    #[arg(
        long = "kafka-property",
        env = "FEEDBACK_KAFKA_PROPERTIES",
        value_delimiter = ',',
        hide_env_values = true
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
    /// Kafka security protocol: plaintext, ssl, sasl_plaintext or sasl_ssl (librdkafka's
    /// security.protocol). Production uses sasl_ssl.
    #[arg(long, env = "FEEDBACK_KAFKA_SECURITY_PROTOCOL")]
    pub kafka_security_protocol: Option<String>,
    /// SASL mechanism (SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN); SCRAM-SHA-512 when a SASL
    /// user is given.
    #[arg(long, env = "FEEDBACK_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,
    /// SASL user name.
    #[arg(long, env = "FEEDBACK_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password (prefer --kafka-sasl-password-file or the environment variable: a
    /// flag is visible in the process list). Never printed.
    #[arg(long, env = "FEEDBACK_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
    /// File holding the SASL password (a mounted secret; one trailing newline is ignored).
    #[arg(long, env = "FEEDBACK_KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the brokers' certificates (librdkafka's
    /// ssl.ca.location); the system's CAs when absent.
    #[arg(long, env = "FEEDBACK_KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<PathBuf>,
}

impl std::fmt::Debug for Common {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mask = |s: &str| if s.is_empty() { "" } else { "***" };
        let props: Vec<String> = self
            .kafka_properties
            .iter()
            .map(|p| match p.split_once('=') {
                Some((k, _)) if feedback_kafka::is_secret_property(k.trim()) => format!("{k}=***"),
                _ => p.clone(),
            })
            .collect();
        f.debug_struct("Common")
            .field("brokers", &self.brokers)
            .field("kafka_properties", &props)
            .field("topic_prefix", &self.topic_prefix)
            .field("clickhouse_url", &self.clickhouse_url)
            .field("clickhouse_database", &self.clickhouse_database)
            .field("clickhouse_user", &self.clickhouse_user)
            .field("clickhouse_password", &mask(&self.clickhouse_password))
            .field("kafka_security_protocol", &self.kafka_security_protocol)
            .field("kafka_sasl_mechanism", &self.kafka_sasl_mechanism)
            .field("kafka_sasl_username", &self.kafka_sasl_username)
            .field(
                "kafka_sasl_password",
                &self.kafka_sasl_password.as_deref().map(mask),
            )
            .field("kafka_sasl_password_file", &self.kafka_sasl_password_file)
            .field("kafka_ssl_ca_location", &self.kafka_ssl_ca_location)
            .finish()
    }
}

impl Common {
    /// The Kafka client settings; exits with a clear message when the security options
    /// are unusable (a configuration error, found at startup).
    pub fn kafka(&self) -> KafkaConfig {
        match self.try_kafka() {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        }
    }

    /// The Kafka client settings: brokers, the security options as librdkafka properties,
    /// then every --kafka-property (which wins).
    pub fn try_kafka(&self) -> anyhow::Result<KafkaConfig> {
        let mut security: Vec<(String, String)> = Vec::new();
        if let Some(p) = &self.kafka_security_protocol {
            let p = p.trim().to_ascii_lowercase();
            if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&p.as_str()) {
                anyhow::bail!("--kafka-security-protocol / FEEDBACK_KAFKA_SECURITY_PROTOCOL is {p:?}; use plaintext, ssl, sasl_plaintext or sasl_ssl");
            }
            security.push(("security.protocol".into(), p));
        }
        let password = match (&self.kafka_sasl_password, &self.kafka_sasl_password_file) {
            (Some(_), Some(_)) => anyhow::bail!(
                "both a SASL password and a SASL password file are given; keep one (--kafka-sasl-password-file is preferred)"
            ),
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f).with_context(|| {
                    format!(
                        "cannot read the Kafka SASL password file {} (--kafka-sasl-password-file / FEEDBACK_KAFKA_SASL_PASSWORD_FILE)",
                        f.display()
                    )
                })?;
                Some(text.strip_suffix('\n').unwrap_or(&text).trim_end_matches('\r').to_string())
            }
            (None, None) => None,
        };
        match (&self.kafka_sasl_username, password) {
            (Some(user), Some(pw)) => {
                security.push((
                    "sasl.mechanism".into(),
                    self.kafka_sasl_mechanism
                        .clone()
                        .unwrap_or_else(|| "SCRAM-SHA-512".into()),
                ));
                security.push(("sasl.username".into(), user.clone()));
                security.push(("sasl.password".into(), pw));
            }
            (Some(user), None) => anyhow::bail!(
                "Kafka SASL user {user:?} has no password; set FEEDBACK_KAFKA_SASL_PASSWORD_FILE (or FEEDBACK_KAFKA_SASL_PASSWORD)"
            ),
            (None, Some(_)) => anyhow::bail!(
                "a Kafka SASL password is given without a user; set --kafka-sasl-username / FEEDBACK_KAFKA_SASL_USERNAME"
            ),
            (None, None) => {
                if let Some(m) = &self.kafka_sasl_mechanism {
                    security.push(("sasl.mechanism".into(), m.clone()));
                }
            }
        }
        if let Some(ca) = &self.kafka_ssl_ca_location {
            if !ca.is_file() {
                anyhow::bail!(
                    "the Kafka CA file {} does not exist (--kafka-ssl-ca-location / FEEDBACK_KAFKA_SSL_CA_LOCATION)",
                    ca.display()
                );
            }
            security.push(("ssl.ca.location".into(), ca.display().to_string()));
        }
        let extra = self
            .kafka_properties
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                None => (p.clone(), String::new()),
            })
            .collect::<Vec<_>>();
        security.extend(extra);
        Ok(KafkaConfig {
            brokers: self.brokers.clone(),
            extra: security,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        common: Common,
    }

    #[test]
    fn debug_output_and_kafka_config_never_show_secrets() {
        let t = T::parse_from([
            "t",
            "--clickhouse-password",
            "ch-secret-1",
            "--kafka-sasl-username",
            "feedback",
            "--kafka-sasl-password",
            "kafka-secret-2",
            "--kafka-property",
            "ssl.key.password=key-secret-3",
            "--kafka-property",
            "sasl.jaas.config=jaas-secret-4",
            "--kafka-property",
            "linger.ms=7",
        ]);
        let kafka = t.common.try_kafka().unwrap();
        let printed = format!("{:?} {:?}", t.common, kafka);
        for secret in [
            "ch-secret-1",
            "kafka-secret-2",
            "key-secret-3",
            "jaas-secret-4",
        ] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        assert!(
            printed.contains("linger.ms=7") && printed.contains("\"7\""),
            "{printed}"
        );
        // The password does reach librdkafka.
        assert!(kafka
            .extra
            .contains(&("sasl.password".to_string(), "kafka-secret-2".to_string())));
        assert!(kafka
            .extra
            .contains(&("sasl.mechanism".to_string(), "SCRAM-SHA-512".to_string())));
    }

    #[test]
    fn unusable_security_options_say_what_to_do() {
        let e = T::parse_from(["t", "--kafka-sasl-username", "u"])
            .common
            .try_kafka()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has no password") && e.contains("FEEDBACK_KAFKA_SASL_PASSWORD_FILE"),
            "{e}"
        );
        let e = T::parse_from(["t", "--kafka-security-protocol", "tls"])
            .common
            .try_kafka()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("use plaintext, ssl, sasl_plaintext or sasl_ssl"),
            "{e}"
        );
        let e = T::parse_from([
            "t",
            "--kafka-sasl-username",
            "u",
            "--kafka-sasl-password-file",
            "/nonexistent/pw",
        ])
        .common
        .try_kafka()
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot read the Kafka SASL password file /nonexistent/pw"),
            "{e:#}"
        );
    }
}
