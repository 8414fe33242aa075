//! The `--config` file against clap's whole command tree: every option of every subcommand
//! set from a file and, separately, from the environment; the precedence
//! flag > environment > file > default; and what the file layer refuses.
//!
//! The options are found by walking `Cli::command()`, so an option added later is covered
//! without touching this file (or the test fails naming it, when no value can be derived).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use feedback_runtime::config::{check_values, is_file_key, ConfigFileError};

use super::{command, Cli, Command as Sub};

/// These tests set process environment variables; one at a time.
static ENV: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every subcommand path that can run (`["sink"]`, `["ownership", "check"]`, ...).
fn runnable(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
    if !path.is_empty() && !cmd.is_subcommand_required_set() {
        out.push(path.clone());
    }
    for sc in cmd.get_subcommands() {
        let mut p = path.clone();
        p.push(sc.get_name().to_string());
        runnable(sc, p, out);
    }
}

fn all_paths() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    runnable(&Cli::command(), Vec::new(), &mut out);
    out
}

/// The options along `path`, each with its depth (0: the root).
fn options(root: &clap::Command, path: &[String]) -> Vec<(usize, Arg)> {
    let mut levels = vec![root.clone()];
    for name in path {
        let next = levels
            .last()
            .unwrap()
            .find_subcommand(name)
            .unwrap()
            .clone();
        levels.push(next);
    }
    levels
        .iter()
        .enumerate()
        .flat_map(|(d, c)| c.get_arguments().map(move |a| (d, a.clone())))
        .collect()
}

/// Every environment variable any option reads: cleared so the test sees only its own.
fn clear_option_env() {
    fn walk(cmd: &clap::Command) {
        for a in cmd.get_arguments() {
            if let Some(e) = a.get_env() {
                std::env::remove_var(e);
            }
        }
        cmd.get_subcommands().for_each(walk);
    }
    walk(&Cli::command());
}

/// A valid value for `arg` (two for a repeatable option) that differs from its default.
fn values_for(arg: &Arg) -> Vec<String> {
    let id = arg.get_id();
    if !arg.get_action().takes_values() {
        return match arg.get_action() {
            ArgAction::SetTrue => vec!["true".into()],
            ArgAction::SetFalse => vec!["false".into()],
            other => panic!("--{id}: a flag of kind {other:?}; teach this test a value for it"),
        };
    }
    let default: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let mut candidates: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| p.get_name().to_string())
        .collect();
    if let Some(d) = default.first() {
        if let Ok(n) = d.parse::<i64>() {
            candidates.extend([(n + 1).to_string(), (n - 1).to_string()]);
        } else if let Ok(x) = d.parse::<f64>() {
            candidates.extend([(x + 0.25).to_string(), (x / 2.0).to_string()]);
        }
    }
    candidates.extend(
        [
            "7",
            "0.25",
            "127.0.0.1:7",
            "30m",
            "x-from-test",
            "2026-03-01",
        ]
        .map(String::from),
    );
    candidates.retain(|c| !default.contains(c));
    candidates.dedup();
    let valid: Vec<String> = candidates
        .into_iter()
        .filter(|c| check_values(arg, std::slice::from_ref(c)).is_ok())
        .collect();
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    let n = if repeatable { 2 } else { 1 };
    assert!(
        valid.len() >= n,
        "--{id}: no valid non-default value among the candidates; teach this test one"
    );
    valid[..n].to_vec()
}

/// The TOML text of `values`, typed as the value looks (integer, float, string).
fn toml_value(arg: &Arg, values: &[String]) -> String {
    let one = |v: &String| {
        if v.parse::<i64>().is_ok() || (v.contains('.') && v.parse::<f64>().is_ok()) {
            v.clone()
        } else {
            format!("{v:?}")
        }
    };
    if !arg.get_action().takes_values() {
        values[0].clone()
    } else if matches!(arg.get_action(), ArgAction::Append) {
        format!(
            "[{}]",
            values.iter().map(one).collect::<Vec<_>>().join(", ")
        )
    } else {
        one(&values[0])
    }
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("feedback-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

fn argv(items: &[&str]) -> Vec<OsString> {
    std::iter::once("feedback")
        .chain(items.iter().copied())
        .map(OsString::from)
        .collect()
}

fn matches(argv: &[OsString]) -> ArgMatches {
    let cmd = command(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    cmd.try_get_matches_from(argv)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn cli(argv: &[OsString]) -> Cli {
    Cli::from_arg_matches(&matches(argv)).unwrap()
}

/// The matches of the command at `depth` along `path`.
fn at<'m>(m: &'m ArgMatches, path: &[String], depth: usize) -> &'m ArgMatches {
    path[..depth]
        .iter()
        .fold(m, |m, name| m.subcommand_matches(name).unwrap())
}

fn raw(m: &ArgMatches, id: &str) -> Vec<String> {
    m.get_raw(id)
        .map(|r| r.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Positional arguments the path requires (e.g. `explain`'s event): given on the command line.
fn positionals(opts: &[(usize, Arg)]) -> Vec<String> {
    opts.iter()
        .filter(|(_, a)| a.is_positional() && a.is_required_set())
        .map(|_| "{}".to_string())
        .collect()
}

#[test]
fn every_option_of_every_subcommand_can_be_set_from_the_file() {
    let _g = lock();
    clear_option_env();
    let root = Cli::command();
    let paths = all_paths();
    assert!(paths.len() >= 15, "{paths:?}");
    let mut checked = 0;
    for path in &paths {
        let opts = options(&root, path);
        let mut table = String::new();
        let mut expected = Vec::new();
        for (depth, arg) in opts.iter().filter(|(_, a)| is_file_key(a)) {
            let values = values_for(arg);
            let long = arg.get_long().unwrap();
            table.push_str(&format!("{long} = {}\n", toml_value(arg, &values)));
            expected.push((*depth, arg.get_id().to_string(), values));
        }
        let file = temp_file(&format!("{}.toml", path.join("-")), &table);
        let mut items = vec!["--config".to_string(), file.display().to_string()];
        items.extend(path.iter().cloned());
        items.extend(positionals(&opts));
        let argv = argv(&items.iter().map(String::as_str).collect::<Vec<_>>());
        let m = matches(&argv);
        Cli::from_arg_matches(&m).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        for (depth, id, values) in &expected {
            let m = at(&m, path, *depth);
            assert_eq!(&raw(m, id), values, "{path:?} --{id}");
            assert_eq!(
                m.value_source(id),
                Some(ValueSource::DefaultValue),
                "{path:?} --{id}: the file's value sits at the default's place"
            );
            checked += 1;
        }
    }
    // The common connection options alone are 13 per service.
    assert!(checked > 150, "{checked} options checked");
}

#[test]
fn every_option_can_be_set_from_its_environment_variable() {
    let _g = lock();
    clear_option_env();
    let root = Cli::command();
    let mut checked = 0;
    let mut missing: Vec<String> = Vec::new();
    for path in all_paths() {
        let opts = options(&root, &path);
        let mut items: Vec<String> = path.clone();
        let mut expected = Vec::new();
        let mut set = Vec::new();
        for (depth, arg) in opts.iter().filter(|(_, a)| is_file_key(a)) {
            let values = values_for(arg);
            let long = arg.get_long().unwrap();
            match arg.get_env() {
                Some(var) => {
                    let (text, values) = match arg.get_value_delimiter() {
                        Some(d) => (values.join(&d.to_string()), values),
                        None => (values[0].clone(), values[..1].to_vec()),
                    };
                    std::env::set_var(var, &text);
                    set.push(var.to_owned());
                    expected.push((*depth, arg.get_id().to_string(), values));
                }
                // Every option can be set from the environment (design contract); list
                // those that cannot, and give a required one on the command line meanwhile.
                None => {
                    missing.push(format!("{} --{long}", path.join(" ")));
                    if arg.is_required_set() {
                        items.push(format!("--{long}={}", values[0]));
                    }
                }
            }
        }
        items.extend(positionals(&opts));
        let argv = argv(&items.iter().map(String::as_str).collect::<Vec<_>>());
        let m = matches(&argv);
        Cli::from_arg_matches(&m).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        for (depth, id, values) in &expected {
            let m = at(&m, &path, *depth);
            assert_eq!(&raw(m, id), values, "{path:?} --{id}");
            assert_eq!(
                m.value_source(id),
                Some(ValueSource::EnvVariable),
                "{path:?} --{id}"
            );
            checked += 1;
        }
        for var in &set {
            std::env::remove_var(var);
        }
    }
    assert!(
        missing.is_empty(),
        "options without an environment variable (add `env = \"FEEDBACK_...\"`): {}",
        missing.join(", ")
    );
    assert!(checked > 150, "{checked} options checked");
}

fn sink_batch_rows(argv: &[OsString]) -> usize {
    match cli(argv).command {
        Sub::Sink(a) => a.batch_rows,
        _ => panic!("not the sink"),
    }
}

#[test]
fn flag_beats_environment_beats_file_beats_default_and_fields_change() {
    let _g = lock();
    clear_option_env();
    let file = temp_file(
        "layers.toml",
        "batch-rows = 1000\nkafka-property = [\"linger.ms=7\", \"acks=all\"]\n",
    );
    let f = file.to_str().unwrap();
    assert_eq!(sink_batch_rows(&argv(&["sink"])), 50_000);
    assert_eq!(sink_batch_rows(&argv(&["--config", f, "sink"])), 1000);
    // --config is global: after the subcommand, as --config=, or from FEEDBACK_CONFIG.
    assert_eq!(sink_batch_rows(&argv(&["sink", "--config", f])), 1000);
    assert_eq!(
        sink_batch_rows(&argv(&["sink", &format!("--config={f}")])),
        1000
    );
    std::env::set_var("FEEDBACK_CONFIG", f);
    assert_eq!(sink_batch_rows(&argv(&["sink"])), 1000);
    std::env::remove_var("FEEDBACK_CONFIG");
    std::env::set_var("FEEDBACK_SINK_BATCH_ROWS", "2000");
    assert_eq!(sink_batch_rows(&argv(&["--config", f, "sink"])), 2000);
    assert_eq!(
        sink_batch_rows(&argv(&["--config", f, "sink", "--batch-rows", "3000"])),
        3000
    );
    std::env::remove_var("FEEDBACK_SINK_BATCH_ROWS");
    assert_eq!(
        sink_batch_rows(&argv(&["--config", f, "sink", "--batch-rows=3000"])),
        3000
    );
    let Sub::Sink(a) = cli(&argv(&["--config", f, "sink"])).command else {
        panic!("not the sink")
    };
    assert_eq!(a.common.kafka_properties, ["linger.ms=7", "acks=all"]);
    // A flag replaces the file's list, it does not add to it.
    let Sub::Sink(a) = cli(&argv(&["--config", f, "sink", "--kafka-property", "a=b"])).command
    else {
        panic!("not the sink")
    };
    assert_eq!(a.common.kafka_properties, ["a=b"]);

    let file = temp_file(
        "collector.toml",
        "listen = \"127.0.0.1:7070\"\nallow-anonymous = true\nmax-past-secs = 60\nbrokers = \"10.0.0.1:9092\"\n",
    );
    let Sub::Collector(a) = cli(&argv(&["--config", file.to_str().unwrap(), "collector"])).command
    else {
        panic!("not the collector")
    };
    assert_eq!(a.listen, "127.0.0.1:7070".parse().unwrap());
    assert!(a.allow_anonymous);
    assert_eq!(a.max_past_secs, 60);
    assert_eq!(a.common.brokers, "10.0.0.1:9092");

    let file = temp_file("board.toml", "refresh-ms = 250\nalert-alpha = 0.05\n");
    let Sub::Board(a) = cli(&argv(&["--config", file.to_str().unwrap(), "board"])).command else {
        panic!("not the board")
    };
    assert_eq!((a.refresh_ms, a.alert_alpha), (250, 0.05));

    // A required option is satisfied by the file.
    let file = temp_file("erase.toml", "customer-ref = \"c-81\"\n");
    let Sub::Erase(a) = cli(&argv(&["--config", file.to_str().unwrap(), "erase"])).command else {
        panic!("not erase")
    };
    assert_eq!(a.customer_ref, "c-81");
}

fn refused(text: &str, sub: &[&str]) -> (ConfigFileError, String) {
    let file = temp_file("refused.toml", text);
    let mut items = vec!["--config", file.to_str().unwrap()];
    items.extend(sub);
    let e = match command(&argv(&items)) {
        Ok(_) => panic!("{text:?} accepted for {sub:?}"),
        Err(e) => e,
    };
    let message = e.to_string();
    assert!(
        message.starts_with(&format!("config file {}", file.display())),
        "{message}"
    );
    (e, message)
}

#[test]
fn unknown_keys_wrong_types_and_bad_values_are_refused_naming_file_and_key() {
    let _g = lock();
    clear_option_env();
    let (e, m) = refused("batch_rows = 5\n", &["sink"]);
    assert!(matches!(e, ConfigFileError::UnknownKey { .. }), "{e:?}");
    assert!(
        m.contains("unknown key \"batch_rows\" for `feedback sink` (did you mean \"batch-rows\"?); known keys are brokers, kafka-property,"),
        "{m}"
    );
    // A key of another subcommand is no key of this one.
    let (_, m) = refused("max-body-bytes = 5\n", &["sink"]);
    assert!(
        m.contains("unknown key \"max-body-bytes\" for `feedback sink`"),
        "{m}"
    );
    let file = temp_file("accepted.toml", "sample-max = 5\n");
    let items = ["--config", file.to_str().unwrap(), "ownership", "check"];
    command(&argv(&items)).expect("sample-max is an option of `ownership check`");
    let (_, m) = refused("service = \"x\"\n", &["collector"]);
    assert!(
        m.contains("unknown key \"service\" for `feedback collector`"),
        "{m}"
    );
    let (_, m) = refused("config = \"other.toml\"\n", &["sink"]);
    assert!(m.contains("unknown key \"config\""), "{m}");

    let (e, m) = refused("allow-anonymous = \"yes\"\n", &["collector"]);
    assert!(matches!(e, ConfigFileError::WrongType { .. }), "{e:?}");
    assert!(
        m.ends_with("key \"allow-anonymous\" is a string, but --allow-anonymous of `feedback collector` takes true or false (it is a flag)"),
        "{m}"
    );
    let (_, m) = refused("brokers = [\"a:1\", \"b:2\"]\n", &["sink"]);
    assert!(
        m.ends_with("key \"brokers\" is an array, but --brokers of `feedback sink` takes one value (a string, number or boolean)"),
        "{m}"
    );
    let (_, m) = refused("kafka-property = { acks = 1 }\n", &["sink"]);
    assert!(m.contains("is a table, but --kafka-property"), "{m}");

    let (e, m) = refused("batch-rows = \"many\"\n", &["sink"]);
    assert!(matches!(e, ConfigFileError::InvalidValue { .. }), "{e:?}");
    assert!(
        m.ends_with("key \"batch-rows\" of `feedback sink`: invalid value 'many' for '--batch-rows <BATCH_ROWS>': invalid digit found in string"),
        "{m}"
    );
    let (_, m) = refused("batch-rows = -1\n", &["sink"]);
    assert!(m.contains("invalid value '-1' for '--batch-rows"), "{m}");
    let (_, m) = refused("listen = \"nowhere\"\n", &["collector"]);
    assert!(m.contains("invalid value 'nowhere' for '--listen"), "{m}");
    let (_, m) = refused("kafka-property = [\"a=1,2\"]\n", &["sink"]);
    assert!(m.contains("holds ','"), "{m}");

    let (e, m) = refused("batch-rows = \n", &["sink"]);
    assert!(matches!(e, ConfigFileError::Toml { .. }), "{e:?}");
    assert!(m.ends_with("is not valid TOML"), "{m}");
}
