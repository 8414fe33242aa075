//! The architecture, checked: which crate may depend on which (read from `cargo metadata`),
//! and where SQL text and Kafka client configuration may appear (read from the sources).
//! ARCHITECTURE.md states these invariants; this test is where they are enforced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

const SERVICES: [&str; 4] = [
    "feedback-collector",
    "feedback-attributor",
    "feedback-sink",
    "feedback-board",
];
const TOOLS: [&str; 1] = ["feedback-tools"];
const RUNTIME: &str = "feedback-runtime";
/// Crates that do no I/O: no network client, no async runtime, no clock of their own.
const PURE: [&str; 4] = [
    "feedback-events",
    "feedback-attribution",
    "feedback-redact",
    "feedback-workload",
];
/// Crates that do I/O; a pure crate may not reach any of them, directly or through others.
const IO_CRATES: [&str; 12] = [
    "rdkafka",
    "rdkafka-sys",
    "clickhouse",
    "tokio",
    "reqwest",
    "hyper",
    "axum",
    "feedback-kafka",
    "feedback-clickhouse",
    "feedback-runtime",
    "prometheus",
    "tracing-subscriber",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Normal (non-dev, non-build) dependencies of every package, by package name.
fn dependency_graph() -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| name_of[id.as_str().unwrap()].to_string())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let from = name_of[node["id"].as_str().unwrap()].to_string();
        let deps = graph.entry(from).or_default();
        for dep in node["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                deps.insert(name_of[dep["pkg"].as_str().unwrap()].to_string());
            }
        }
    }
    (members, graph)
}

fn closure(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(p) = todo.pop() {
        for d in graph.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn crates_depend_only_along_the_allowed_edges() {
    let (members, graph) = dependency_graph();
    for c in SERVICES.iter().chain(&TOOLS).chain(&PURE).chain(&[RUNTIME]) {
        assert!(
            members.contains(*c),
            "{c} is not a workspace member: update this test and ARCHITECTURE.md together"
        );
    }
    let direct = |c: &str| graph.get(c).cloned().unwrap_or_default();
    let mut problems = Vec::new();
    // Services do not depend on each other, on the tools or on the binary.
    for s in SERVICES {
        for d in closure(&graph, s) {
            if (SERVICES.contains(&d.as_str()) && d != s)
                || TOOLS.contains(&d.as_str())
                || d == "feedback"
            {
                problems.push(format!("service {s} depends on {d}"));
            }
        }
    }
    // Only feedback-clickhouse talks to ClickHouse through the clickhouse crate.
    for m in &members {
        if m != "feedback-clickhouse" && direct(m).contains("clickhouse") {
            problems.push(format!(
                "{m} depends on the clickhouse crate; only feedback-clickhouse may"
            ));
        }
    }
    // The pure crates reach no I/O crate, even indirectly.
    for p in PURE {
        for d in closure(&graph, p) {
            if IO_CRATES.contains(&d.as_str()) {
                problems.push(format!("pure crate {p} depends on the I/O crate {d}"));
            }
        }
    }
    // The binary dispatches: among our crates it depends on services, tools and the runtime,
    // and on no client library.
    for d in direct("feedback") {
        let ours = members.contains(&d);
        let allowed = SERVICES.contains(&d.as_str()) || TOOLS.contains(&d.as_str()) || d == RUNTIME;
        if (ours && !allowed) || ["rdkafka", "clickhouse", "reqwest", "axum"].contains(&d.as_str())
        {
            problems.push(format!("the binary depends on {d} directly"));
        }
    }
    // Every workspace crate is placed in one of the layers above.
    for m in &members {
        let placed = SERVICES.contains(&m.as_str())
            || TOOLS.contains(&m.as_str())
            || PURE.contains(&m.as_str())
            || [RUNTIME, "feedback", "feedback-kafka", "feedback-clickhouse"].contains(&m.as_str());
        if !placed {
            problems.push(format!(
                "{m} is in no layer of this test; place it here and in ARCHITECTURE.md"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals of Rust `source` (comments skipped), each with the line it starts on.
fn string_literals(source: &str) -> Vec<(usize, String)> {
    let b = source.as_bytes();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    let newlines = |s: &[u8]| s.iter().filter(|c| **c == b'\n').count();
    while i < b.len() {
        match b[i] {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = source[i + 2..]
                    .find("*/")
                    .map_or(b.len(), |e| i + 2 + e + 2);
                line += newlines(&b[i..end]);
                i = end;
            }
            b'\'' => {
                // A char literal ('x', '\n', '"') or a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    let end = source[i + 2..]
                        .find('\'')
                        .map_or(b.len(), |e| i + 2 + e + 1);
                    i = end;
                } else if b.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let start = i + 2 + hashes;
                let close = format!("\"{}", "#".repeat(hashes));
                let end = source[start..].find(&close).map_or(b.len(), |e| start + e);
                out.push((line, source[start..end].to_string()));
                line += newlines(&b[i..end]);
                i = (end + close.len()).min(b.len());
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let end = j.min(b.len());
                out.push((line, source[start..end].to_string()));
                line += newlines(&b[i..end]);
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Whether `text` holds an SQL statement: an upper-case statement phrase at a word boundary.
fn is_sql(text: &str) -> bool {
    const PHRASES: [&str; 17] = [
        "SELECT",
        "INSERT INTO",
        "ALTER TABLE",
        "CREATE TABLE",
        "CREATE VIEW",
        "CREATE MATERIALIZED VIEW",
        "CREATE DATABASE",
        "DROP TABLE",
        "DROP VIEW",
        "DROP DATABASE",
        "TRUNCATE TABLE",
        "OPTIMIZE TABLE",
        "RENAME TABLE",
        "SYSTEM FLUSH",
        "SYSTEM STOP",
        "SYSTEM START",
        "SHOW TABLES",
    ];
    let word = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
    let b = text.as_bytes();
    PHRASES.iter().any(|p| {
        text.match_indices(p).any(|(at, _)| {
            !word(at.checked_sub(1).and_then(|k| b.get(k)))
                && b.get(at + p.len()).is_none_or(|c| c.is_ascii_whitespace())
        })
    })
}

/// The first line of `source` (1-based) where a string literal holding SQL starts.
fn sql_line(source: &str) -> Option<usize> {
    string_literals(source)
        .into_iter()
        .find(|(_, s)| is_sql(s))
        .map(|(line, _)| line)
}

#[test]
fn the_sql_finder_finds_sql_and_nothing_else() {
    assert_eq!(sql_line("let q = \"SELECT count() FROM t\";"), Some(1));
    assert_eq!(
        sql_line("x\n    .query(\"ALTER TABLE {db}.ratings DELETE WHERE x = ?\")"),
        Some(2)
    );
    assert_eq!(
        sql_line("let c = '\"';\nconst Q: &str = r#\"\n  SELECT\n  1\"#;"),
        Some(2)
    );
    assert_eq!(
        sql_line("let q = format!(\"{}\", \"a\\\"b\");\n\"SELECT x\""),
        Some(2)
    );
    assert_eq!(sql_line("// \"SELECT in a comment\""), None);
    assert_eq!(sql_line("/* \"SELECT\n x\" */ let a = 1;"), None);
    assert_eq!(sql_line("let s = \"selected teams\";"), None);
    assert_eq!(sql_line("let s = \"UNSELECT me, SELECTED\";"), None);
    assert_eq!(sql_line("enum E { SELECT }"), None);
}

#[test]
fn sql_lives_only_in_feedback_clickhouse_and_kafka_clients_only_in_feedback_kafka() {
    let crates = root().join("crates");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    let mut problems = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&crates).unwrap().display().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        if !rel.starts_with("feedback-clickhouse/") {
            if let Some(line) = sql_line(&text) {
                problems.push(format!(
                    "crates/{rel}:{line}: SQL outside feedback-clickhouse: {}",
                    text.lines().nth(line - 1).unwrap_or("").trim()
                ));
            }
        }
        if !rel.starts_with("feedback-kafka/") {
            for (i, line) in text.lines().enumerate() {
                if line.contains("ClientConfig::new") || line.contains("ClientConfig::from") {
                    problems.push(format!(
                        "crates/{rel}:{}: a Kafka client configured outside feedback-kafka: {}",
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
