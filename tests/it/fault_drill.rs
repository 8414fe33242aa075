//! The short fault drill of the test suite: `feedback drill` as a process against the
//! local stack, with at least 10 faults of every kind (SIGKILL of collector, attributor and
//! sink; Kafka broker restarts; ClickHouse restarts; ClickHouse outages of 10 s). It must
//! exit 0 and print a reconciliation table without a single difference; the numbers the
//! drill's options imply (garbage per reason, refused requests) are checked here too.
//!
//! It stops and starts the local Kafka and ClickHouse (`deploy/local/stack.sh`, ports from
//! the environment), so `tests/run.sh` runs it on its own, after the other tests.

use std::time::Duration;

use crate::harness::{brokers, clickhouse_url, repo_root, unique};

/// Columns of a table line: (label, expected, found, result).
fn line<'a>(out: &'a str, label: &str) -> (u64, u64, &'a str) {
    let l = out
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no line {label:?} in the drill's output:\n{out}"));
    let cols: Vec<&str> = l[label.len()..].split_whitespace().collect();
    (cols[0].parse().unwrap(), cols[1].parse().unwrap(), cols[2])
}

#[test]
fn short_fault_drill_reconciles_without_a_difference() {
    let name = unique("drill");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_feedback"))
        .current_dir(repo_root())
        .env("FEEDBACK_BROKERS", brokers())
        .env("FEEDBACK_CLICKHOUSE_URL", clickhouse_url())
        .args([
            "drill",
            "--name",
            &name,
            "--seed",
            "8",
            "--events",
            "20000",
            "--faults-per-kind",
            "10",
            "--outage-secs",
            "10",
            "--min-gap-ms",
            "300",
            "--max-gap-ms",
            "1500",
            "--rejects",
            "40",
            "--garbage",
            "50",
        ])
        .output()
        .expect("run feedback drill");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the drill found differences or failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("drill {name}: no differences")));
    assert!(!stdout.contains("DIFFERENT"));

    // At least 10 faults of every kind.
    for kind in [
        "SIGKILL collector",
        "SIGKILL attributor",
        "SIGKILL sink",
        "Kafka broker restart",
        "ClickHouse restart",
        "ClickHouse outage",
    ] {
        let n: u64 = stdout
            .lines()
            .find(|l| l.starts_with(kind) && !l.contains(": "))
            .and_then(|l| l[kind.len()..].trim().parse().ok())
            .unwrap_or_else(|| panic!("no fault count for {kind}"));
        assert!(n >= 10, "{kind}: {n} faults");
    }
    // 50 garbage messages, five kinds in turn: 10 dead letters of each reason.
    for reason in [
        "bad_marker",
        "too_short",
        "truncated",
        "unknown_fingerprint",
        "wrong_schema",
    ] {
        assert_eq!(
            line(&stdout, &format!("dead letters attributor/{reason}")),
            (10, 10, "ok")
        );
    }
    // Every one of the 40 requests built to be refused was refused, and nothing else.
    let refused: u64 = stdout
        .lines()
        .find(|l| l.starts_with("refusals by status:"))
        .expect("refusals line")
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').split_once('×'))
        .map(|(_, n)| n.parse::<u64>().unwrap())
        .sum();
    assert_eq!(refused, 40);
    for table in ["interactions", "ratings"] {
        let (want, got, ok) = line(&stdout, &format!("{table}: landed exactly once"));
        assert!(want > 5000, "{table}: {want} accepted");
        assert_eq!((got, ok), (want, "ok"));
    }

    // Kafka and ClickHouse are up again.
    let ping = std::process::Command::new("curl")
        .args(["-s", "-m", "5", &format!("{}/ping", clickhouse_url())])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ping.stdout).trim(), "Ok.");
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    c.fetch_metadata(None, Duration::from_secs(30))
        .expect("Kafka answers after the drill");
}
