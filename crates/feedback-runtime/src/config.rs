//! Options shared by every component, and the `--config` file.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Arg, ArgAction, Args, Command};
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

/// What is wrong with the `--config` file; every message names the file, and the key when
/// one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {} is not valid TOML", path.display())]
    Toml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error(
        "config file {}: unknown key \"{key}\" for `{command}`{}; known keys are {}",
        path.display(),
        suggestion.as_ref().map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default(),
        known.join(", ")
    )]
    UnknownKey {
        path: PathBuf,
        key: String,
        command: String,
        suggestion: Option<String>,
        known: Vec<String>,
    },
    #[error(
        "config file {}: key \"{key}\" is {found}, but --{key} of `{command}` takes {expected}",
        path.display()
    )]
    WrongType {
        path: PathBuf,
        key: String,
        command: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("config file {}: key \"{key}\" of `{command}`: {reason}", path.display())]
    InvalidValue {
        path: PathBuf,
        key: String,
        command: String,
        reason: String,
    },
}

/// Applies the `--config FILE` / `--config=FILE` (else the `--config` option's environment
/// variable, `FEEDBACK_CONFIG`) TOML file to `cmd`, the whole command tree of the binary,
/// before `argv` is parsed with it.
///
/// The keys are checked against clap's own description of the subcommand named in `argv`
/// (its options, those of its parent commands; key = long flag name without `--`), so there
/// is no list of keys to keep in step with the options. A file value becomes the option's
/// default value, which is exactly the file's place in the precedence
/// flag > environment > file > built-in default: clap takes a default only when neither the
/// command line nor the option's environment variable gives one. Such a value then counts as
/// given (a required option is satisfied by the file), shows as the default in `--help`
/// (unless the option hides its values, as secrets do), and is parsed by the option's own
/// value parser, like any value.
///
/// Refused, naming file and key: a key that is no option of that subcommand (with the
/// closest match), a TOML type the option cannot take (flags take booleans, repeatable
/// options arrays, tables nothing), a value the option's parser rejects. Without a
/// subcommand on the command line the file is not read (clap reports what is missing).
pub fn apply_config_file(cmd: Command, argv: &[OsString]) -> Result<Command, ConfigFileError> {
    let scan = scan_command_line(&cmd, argv);
    let from_env = || {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(CONFIG_FLAG))
            .and_then(Arg::get_env)
            .and_then(std::env::var_os)
    };
    let Some(path) = scan.config.or_else(from_env).map(PathBuf::from) else {
        return Ok(cmd);
    };
    if scan.path.is_empty() {
        return Ok(cmd);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|source| ConfigFileError::Toml {
        path: path.clone(),
        source,
    })?;

    // The commands along the chosen path: the root, its subcommand, ... the one run.
    let mut levels = vec![&cmd];
    for name in &scan.path {
        let next = levels[levels.len() - 1]
            .find_subcommand(name)
            .expect("the scan found this subcommand");
        levels.push(next);
    }
    let command = std::iter::once(cmd.get_name())
        .chain(scan.path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let keys: Vec<(usize, &Arg)> = levels
        .iter()
        .enumerate()
        .flat_map(|(depth, c)| c.get_arguments().map(move |a| (depth, a)))
        .filter(|(_, a)| is_file_key(a))
        .collect();

    let mut settings: Vec<(usize, String, Vec<String>)> = Vec::new();
    for (key, value) in &table {
        // The deepest command's option wins should a parent have one of the same name.
        let Some((depth, arg)) = keys
            .iter()
            .rev()
            .find(|(_, a)| a.get_long() == Some(key.as_str()))
        else {
            let known: Vec<String> = keys
                .iter()
                .filter_map(|(_, a)| a.get_long().map(str::to_owned))
                .collect();
            return Err(ConfigFileError::UnknownKey {
                path,
                key: key.clone(),
                command,
                suggestion: closest(key, &known),
                known,
            });
        };
        let values =
            file_values(value, arg).map_err(|(found, expected)| ConfigFileError::WrongType {
                path: path.clone(),
                key: key.clone(),
                command: command.clone(),
                found,
                expected,
            })?;
        let invalid = |reason: String| ConfigFileError::InvalidValue {
            path: path.clone(),
            key: key.clone(),
            command: command.clone(),
            reason,
        };
        if let (Some(d), toml::Value::Array(_)) = (arg.get_value_delimiter(), value) {
            if let Some(v) = values.iter().find(|v| v.contains(d)) {
                return Err(invalid(format!(
                    "the element {v:?} holds {d:?}, which --{key} splits values on; give each part as its own element"
                )));
            }
        }
        check_values(arg, &values).map_err(|e| invalid(clap_reason(&e)))?;
        settings.push((*depth, arg.get_id().to_string(), values));
    }
    Ok(set_defaults(cmd, 0, &scan.path, &settings))
}

/// The long name of the option that names the config file (never a key of the file).
pub const CONFIG_FLAG: &str = "config";

/// Whether an option can be set from the file: it has a long name and is not `--config`,
/// `--help` or `--version`.
pub fn is_file_key(arg: &Arg) -> bool {
    arg.get_long().is_some_and(|l| l != CONFIG_FLAG)
        && !matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

/// Parses `values` with `arg`'s own value parser (as `--long=value` each), the way clap
/// parses the option: the error is clap's, naming the option and what it expects.
pub fn check_values(arg: &Arg, values: &[String]) -> Result<(), clap::Error> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    if !arg.get_action().takes_values() {
        // A flag: `file_values` only lets booleans through.
        return Ok(());
    }
    Command::new("feedback")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(arg.clone().env(None).required(false))
        .try_get_matches_from(values.iter().map(|v| format!("--{long}={v}")))
        .map(drop)
}

/// clap's message without its `error: ` prefix and its `--help` tip.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let text = text
        .split("\n\nFor more information")
        .next()
        .unwrap_or(text);
    text.trim().to_string()
}

/// A TOML value as the raw values clap gets, or (what it is, what the option takes).
fn file_values(
    value: &toml::Value,
    arg: &Arg,
) -> Result<Vec<String>, (&'static str, &'static str)> {
    use toml::Value as V;
    let kind = |v: &V| match v {
        V::String(_) => "a string",
        V::Integer(_) => "an integer",
        V::Float(_) => "a float",
        V::Boolean(_) => "a boolean",
        V::Datetime(_) => "a date-time",
        V::Array(_) => "an array",
        V::Table(_) => "a table",
    };
    let scalar = |v: &V| match v {
        V::String(s) => Some(s.clone()),
        V::Integer(i) => Some(i.to_string()),
        V::Float(f) => Some(f.to_string()),
        V::Boolean(b) => Some(b.to_string()),
        V::Datetime(d) => Some(d.to_string()),
        V::Array(_) | V::Table(_) => None,
    };
    if !arg.get_action().takes_values() {
        return match value {
            V::Boolean(b) => Ok(vec![b.to_string()]),
            other => Err((kind(other), "true or false (it is a flag)")),
        };
    }
    let repeatable = matches!(arg.get_action(), ArgAction::Append)
        || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    match value {
        V::Array(items) if repeatable => items
            .iter()
            .map(|i| {
                scalar(i).ok_or(("an array holding an array or a table", "an array of values"))
            })
            .collect(),
        V::Array(_) | V::Table(_) => Err((
            kind(value),
            if repeatable {
                "a value or an array of values"
            } else {
                "one value (a string, number or boolean)"
            },
        )),
        other => Ok(scalar(other).into_iter().collect()),
    }
}

/// Makes each file value the default of its option, at `depth` of the command tree and below.
fn set_defaults(
    mut cmd: Command,
    depth: usize,
    path: &[String],
    settings: &[(usize, String, Vec<String>)],
) -> Command {
    for (_, id, values) in settings.iter().filter(|(d, _, _)| *d == depth) {
        // clap keeps defaults as `&'static str` (its `string` feature is off); the file is
        // read once per process, so these few strings live as long as the process anyway.
        let values: Vec<&'static str> = values
            .iter()
            .map(|v| &*Box::leak(v.clone().into_boxed_str()))
            .collect();
        cmd = cmd.mut_arg(id, |a| {
            let a = a.default_values(values).required(false);
            if a.is_hide_env_values_set() {
                a.hide_default_value(true)
            } else {
                a
            }
        });
    }
    match path.get(depth) {
        Some(name) => cmd.mut_subcommand(name, |sc| set_defaults(sc, depth + 1, path, settings)),
        None => cmd,
    }
}

/// The known key closest to a mistyped one, if any is close.
fn closest(key: &str, known: &[String]) -> Option<String> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for j in 0..b.len() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != b[j]))
                    .min(row[j] + 1)
                    .min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    };
    let dashed = key.replace('_', "-");
    known
        .iter()
        .map(|k| (distance(&dashed, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// What the command line says before clap parses it: the `--config` value and the path of
/// subcommands (e.g. `["ownership", "check"]`).
struct Scan {
    config: Option<OsString>,
    path: Vec<String>,
}

fn scan_command_line(root: &Command, argv: &[OsString]) -> Scan {
    let mut levels = vec![root];
    let mut scan = Scan {
        config: None,
        path: Vec::new(),
    };
    let mut tokens = argv.iter().skip(1);
    while let Some(token) = tokens.next() {
        let text = token.to_string_lossy();
        let current = levels[levels.len() - 1];
        let find = |pred: &dyn Fn(&Arg) -> bool| {
            levels
                .iter()
                .rev()
                .find_map(|c| c.get_arguments().find(|a| pred(a)))
        };
        if text == "--" {
            break;
        } else if let Some(flag) = text.strip_prefix("--") {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(OsString::from(v))),
                None => (flag, None),
            };
            let arg = find(&|a| a.get_long() == Some(name));
            let takes_value = arg.is_some_and(|a| a.get_action().takes_values());
            let value = match inline {
                Some(v) => Some(v),
                None if takes_value => tokens.next().cloned(),
                None => None,
            };
            if name == CONFIG_FLAG && root.get_arguments().any(|a| a.get_long() == Some(name)) {
                scan.config = value;
            }
        } else if let Some(shorts) = text.strip_prefix('-').filter(|s| !s.is_empty()) {
            // A cluster like `-vx`; the first short option taking a value takes the rest of
            // the token, or the next token.
            for (i, c) in shorts.char_indices() {
                if find(&|a| a.get_short() == Some(c) && a.get_action().takes_values()).is_some() {
                    if i + c.len_utf8() == shorts.len() {
                        tokens.next();
                    }
                    break;
                }
            }
        } else if let Some(sub) = current.find_subcommand(&*text) {
            scan.path.push(sub.get_name().to_string());
            levels.push(sub);
        }
    }
    scan
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
