//! `feedback bench --quick`: the benchmark itself must not rot. Checks that the run
//! completes against the real stack, prints every row, writes complete JSON, the markdown
//! table and the chart, lands exactly the workload's distinct events, and removes its
//! topics and databases. No timing is asserted.

use std::process::Command;

use serde_json::Value;

use crate::harness::{brokers, clickhouse_url, repo_root, unique};

const ROWS: [&str; 22] = [
    "codec_encode_ours",
    "codec_encode_avro",
    "codec_decode_ours",
    "codec_decode_avro",
    "kafka_produce_rdkafka",
    "kafka_consume_rdkafka",
    "kafka_produce_perf",
    "kafka_consume_perf",
    "kafka_pass_through",
    "stage_attributor",
    "stage_sink",
    "clickhouse_insert_client",
    "stage_collector",
    "e2e_drain",
    "freshness_p50",
    "freshness_p95",
    "freshness_p99",
    "engine_empty",
    "engine_keys_small",
    "state_bytes_small",
    "engine_keys_large",
    "state_bytes_large",
];

const TARGETS: [&str; 9] = [
    "e2e_vs_produce",
    "sink_vs_client",
    "attributor_vs_pass_through",
    "codec_encode",
    "codec_decode",
    "freshness_p99",
    "state_throughput",
    "state_bytes_small",
    "state_bytes_large",
];

fn query(sql: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", &clickhouse_url(), "--data-binary", sql])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn bench_quick_run_is_complete() {
    let out_dir = std::env::temp_dir().join(unique("bench"));
    let out = Command::new(env!("CARGO_BIN_EXE_feedback"))
        .args(["bench", "--quick", "--out"])
        .arg(&out_dir)
        .current_dir(repo_root())
        .env("FEEDBACK_BROKERS", brokers())
        .env("FEEDBACK_CLICKHOUSE_URL", clickhouse_url())
        .env("FEEDBACK_LOG", "warn")
        .output()
        .expect("run feedback bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "feedback bench --quick failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<_> = std::fs::read_dir(&out_dir)
        .expect("results folder")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "one run folder: {runs:?}");
    let run = &runs[0];
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap())
            .expect("results.json parses");
    let rows = report["rows"].as_array().expect("rows");
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ROWS, "every measurement, in order");
    for r in rows {
        let name = r["name"].as_str().unwrap();
        assert!(
            stdout.contains(&format!("| {name} |")),
            "row {name} missing from the printed table:\n{stdout}"
        );
        let figure = r["rate"].as_f64().or(r["value"].as_f64());
        assert!(
            figure.is_some_and(|v| v.is_finite() && v > 0.0),
            "row {name} has no figure: {r}"
        );
    }
    let ratios = report["ratios"].as_array().expect("ratios");
    for t in TARGETS {
        let r = ratios
            .iter()
            .find(|r| r["id"] == t)
            .unwrap_or_else(|| panic!("ratio {t} missing: {ratios:?}"));
        assert!(r["value"].as_f64().is_some_and(f64::is_finite), "{r}");
        assert!(r["met"].is_boolean(), "target {t} not judged: {r}");
        assert!(stdout.contains(r["name"].as_str().unwrap()));
    }
    // The workload's ground truth, independent of the pipeline: every event once, duplicates
    // dropped. clickhouse-client re-inserts exactly what the sink landed.
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(
        row("kafka_produce_rdkafka")["count"],
        report["events"],
        "raw produce sends every generated event"
    );
    assert_eq!(
        row("clickhouse_insert_client")["count"],
        report["distinct_events"],
        "the sink landed each distinct event exactly once"
    );
    let md = std::fs::read_to_string(run.join("table.md")).unwrap();
    assert!(stdout.contains(md.trim()), "table.md is the printed table");
    let svg = std::fs::read_to_string(run.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("sink alone") && svg.contains("Kafka produce, rdkafka"));
    // Nothing left behind.
    let run_id = report["run_id"].as_str().unwrap();
    assert_eq!(
        query(&format!(
            "SELECT count() FROM system.databases WHERE name LIKE '{run_id}%'"
        )),
        "0"
    );
    let admin: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let md = rdkafka::consumer::Consumer::fetch_metadata(
        &admin,
        None,
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let left: Vec<&str> = md
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|n| n.starts_with(run_id))
        .collect();
    assert!(left.is_empty(), "topics left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// `feedback bench --read-scale` at a tiny size: the history is written exactly (N ratings,
/// N interactions), the rollups rebuilt from it count exactly N of each, every measurement
/// has a line in the printed table and in table.md, and the scratch database is dropped.
/// No timing is asserted.
#[test]
fn bench_read_scale_small_run_is_exact_and_complete() {
    const N: u64 = 20_000;
    let out_dir = std::env::temp_dir().join(unique("readscale"));
    let out = Command::new(env!("CARGO_BIN_EXE_feedback"))
        .args([
            "bench",
            "--read-scale",
            "--read-scale-ratings",
            &N.to_string(),
            "--read-scale-days",
            "3",
            "--read-scale-chunk",
            "7000",
            "--read-scale-calls",
            "2",
            "--read-scale-panel-runs",
            "1",
            "--read-scale-live-secs",
            "3",
            "--read-scale-merge-wait-secs",
            "5",
            "--out",
        ])
        .arg(&out_dir)
        .current_dir(repo_root())
        .env("FEEDBACK_CLICKHOUSE_URL", clickhouse_url())
        .env("FEEDBACK_LOG", "warn")
        .output()
        .expect("run feedback bench --read-scale");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "feedback bench --read-scale failed:\n{stdout}\n{stderr}"
    );
    let run = std::fs::read_dir(&out_dir)
        .expect("results folder")
        .map(|e| e.unwrap().path())
        .next()
        .expect("a run folder");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap())
            .expect("results.json parses");
    let sizes = report["sizes"].as_array().expect("sizes");
    assert_eq!(sizes.len(), 1);
    let s = &sizes[0];
    let c = &s["coverage"];
    assert_eq!(
        (
            c["raw_ratings"].as_u64(),
            c["raw_interactions"].as_u64(),
            c["rolled_ratings"].as_i64(),
            c["rolled_interactions"].as_i64()
        ),
        (Some(N), Some(N), Some(N as i64), Some(N as i64)),
        "raw rows and rollups hold exactly the history: {c}\n{stderr}"
    );
    assert!(
        stderr.contains("rollups day 4/4"),
        "rebuild progress:\n{stderr}"
    );
    let figures = s["figures"].as_array().expect("figures");
    let figure = |id: &str| {
        figures
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("no figure {id}"))
    };
    for id in [
        "api_index_1h",
        "api_index_24h",
        "api_index_7d",
        "api_team_1h",
        "api_team_24h",
        "api_team_7d",
        "api_comments",
    ] {
        let f = figure(id);
        assert_eq!(f["samples"], 2, "{id}: {f}");
        assert_eq!(f["errors"], 0, "{id}: {f}");
    }
    let panels: Vec<&Value> = figures
        .iter()
        .filter(|f| f["id"].as_str().unwrap().starts_with("panel_"))
        .collect();
    assert!(panels.len() >= 20, "every panel, both ranges: {panels:?}");
    for p in panels {
        assert_eq!(p["errors"], 0, "{p}");
        assert_eq!(p["samples"], 1, "{p}");
    }
    // The index and every team the board knows (9 ownership files + unowned) were opened.
    assert_eq!(s["live"]["clients"].as_array().unwrap().len(), 11);
    let md = std::fs::read_to_string(run.join("table.md")).unwrap();
    assert!(stdout.contains(md.trim()), "table.md is the printed table");
    for l in report["lines"].as_array().unwrap() {
        assert!(
            md.contains(&format!("| {} |", l["name"].as_str().unwrap())),
            "{l}"
        );
    }
    let db = s["database"].as_str().unwrap();
    assert!(db.starts_with("fbread_20000_"), "{db}");
    assert_eq!(
        query(&format!(
            "SELECT count() FROM system.databases WHERE name = '{db}'"
        )),
        "0",
        "scratch database dropped"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
