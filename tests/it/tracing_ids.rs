//! One rating can be followed through the pipeline by its id: with `FEEDBACK_LOG` at debug
//! for the three services, the collector's request span, the attributor's transaction
//! span and the sink's batch span each log the rating's id (issue 15).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{unique, Env};

const FILTER: &str = "warn,feedback_collector=debug,feedback_attributor=debug,feedback_sink=debug";

/// The services of this test, SIGKILLed when it ends (passed or not).
struct Services(Vec<Child>);

impl Drop for Services {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(env: &Env, args: &[&str], log: &Path) -> Child {
    env.cmd(args)
        .env("FEEDBACK_LOG", FILTER)
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("create log file"))
        .spawn()
        .expect("spawn feedback")
}

fn ts(offset_ms: i64) -> String {
    feedback_events::json::format_ts(chrono::Utc::now().timestamp_millis() + offset_ms)
}

/// `text` without ANSI colour sequences (the log format colours field names).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The lines of `log` that mention `id`, without colours.
fn lines_with(log: &Path, id: &str) -> Vec<String> {
    plain(&std::fs::read_to_string(log).unwrap_or_default())
        .lines()
        .filter(|l| l.contains(id))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rating_is_followed_by_its_id_from_collector_to_sink() {
    let env = Env::new("trace");
    env.prepare();
    let dir: PathBuf = std::env::temp_dir().join(unique("trace-logs"));
    std::fs::create_dir_all(&dir).unwrap();
    let logs = ["collector", "attributor", "sink"].map(|s| dir.join(format!("{s}.log")));
    let mut services = Services(Vec::new());
    services.0.push(spawn(&env, &["collector"], &logs[0]));
    services.0.push(spawn(&env, &["attributor"], &logs[1]));
    services
        .0
        .push(spawn(&env, &["sink", "--flush-ms", "200"], &logs[2]));

    let client = reqwest::Client::new();
    let base = env.collector_url();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "collector did not answer within 30s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let interaction_id = format!("{}-interaction", env.database);
    let rating_id = format!("{}-rating", env.database);
    let posts = [
        (
            "/v1/interactions",
            json!([{"interaction_id": interaction_id, "occurred_at": ts(-2000), "service": "checkout-api",
                    "channel": "web", "kind": "order", "customer_ref": "c-1"}]),
        ),
        (
            "/v1/ratings",
            json!([{"rating_id": rating_id, "occurred_at": ts(-1000), "interaction_id": interaction_id,
                    "metric": "csat", "score": 4, "service": "survey", "channel": "email", "customer_ref": "c-1"}]),
        ),
    ];
    for (path, body) in posts {
        let r = client
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .expect("collector reachable");
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    }

    // Each component names the rating inside its own span.
    let expect = [
        (
            "collector",
            "request{request=",
            "request accepted for Kafka",
        ),
        ("attributor", "attributor_batch{txn=", "attributed"),
        ("sink", "sink_batch{batch=", "landed"),
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let missing: Vec<&str> = expect
            .iter()
            .zip(&logs)
            .filter(|((_, span, message), log)| {
                !lines_with(log, &rating_id)
                    .iter()
                    .any(|l| l.contains(span) && l.contains(message))
            })
            .map(|((name, _, _), _)| *name)
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let all: Vec<String> = logs
                .iter()
                .map(|l| {
                    format!(
                        "--- {}:\n{}",
                        l.display(),
                        std::fs::read_to_string(l).unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "rating {rating_id} not logged within its span by {missing:?} after 90s\n{}",
                all.join("\n")
            );
        }
        for c in &mut services.0 {
            if let Ok(Some(status)) = c.try_wait() {
                panic!(
                    "a service exited early with {status}; logs in {}",
                    dir.display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The attributor names the team it decided, the sink the table it landed in.
    let attributed = lines_with(&logs[1], &rating_id).join("\n");
    assert!(attributed.contains("team="), "{attributed}");
    let landed = lines_with(&logs[2], &rating_id).join("\n");
    assert!(
        landed.contains("table=\"ratings\"") || landed.contains("table=ratings"),
        "{landed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
