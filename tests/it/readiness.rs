//! Readiness that tells the truth (issue 19): every service's `/readyz` turns 503 with the
//! reason within 5 s of Kafka (or ClickHouse) stopping and 200 within 5 s of its return,
//! `/healthz` stays 200 throughout, and the collector answers a request while Kafka is away
//! with 503 and `Retry-After` within its produce bound.
//!
//! It stops and starts the local Kafka broker and ClickHouse (`deploy/local/stack.sh
//! stop-kafka` ...), so `tests/run.sh` runs it on its own, after the other tests.

use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::{free_port, repo_root, Env};

fn stack(cmd: &str) {
    let out = std::process::Command::new(repo_root().join("deploy/local/stack.sh"))
        .arg(cmd)
        .output()
        .expect("run stack.sh");
    assert!(
        out.status.success(),
        "stack.sh {cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts Kafka and ClickHouse again if the test fails with either stopped (or Kafka
/// stopped by SIGSTOP).
struct Restore;
impl Drop for Restore {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(pid) = std::fs::read_to_string(repo_root().join(".local/kafka/pid")) {
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", pid.trim()])
                    .status();
            }
            let _ = std::process::Command::new(repo_root().join("deploy/local/stack.sh"))
                .arg("start")
                .output();
        }
    }
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Id {
    id: String,
}

#[derive(Clone)]
struct Svc {
    name: &'static str,
    base: String,
}

async fn get(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = http.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

/// Polls `/readyz` of each service every 100 ms until it is `ready` (or not); returns how
/// long each took and its last body. Panics past `limit` with every last answer.
async fn until(
    http: &reqwest::Client,
    svcs: &[&Svc],
    ready: bool,
    since: Instant,
    limit: Duration,
) -> Vec<(&'static str, Duration, String)> {
    let mut done: Vec<Option<(Duration, String)>> = vec![None; svcs.len()];
    let mut last: Vec<String> = vec![String::new(); svcs.len()];
    while done.iter().any(Option::is_none) {
        for (i, s) in svcs.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let a = get(http, &format!("{}/readyz", s.base)).await;
            last[i] = format!("{a:?}");
            if let Some((status, body)) = a {
                if (status == 200) == ready {
                    assert!(
                        status == 200 || status == 503,
                        "{}: {status} {body}",
                        s.name
                    );
                    done[i] = Some((since.elapsed(), body));
                }
            }
        }
        assert!(
            since.elapsed() < limit,
            "not {} within {limit:?}: {:?}",
            if ready { "ready" } else { "unready" },
            svcs.iter()
                .zip(&last)
                .map(|(s, l)| (s.name, l))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    svcs.iter()
        .zip(done)
        .map(|(s, d)| {
            let (t, b) = d.expect("decided");
            (s.name, t, b)
        })
        .collect()
}

async fn all_live(http: &reqwest::Client, svcs: &[Svc]) {
    for s in svcs {
        let a = get(http, &format!("{}/healthz", s.base)).await;
        assert_eq!(
            a.as_ref().map(|(s, _)| *s),
            Some(200),
            "{} /healthz: {a:?}",
            s.name
        );
    }
}

fn interaction(id: &str) -> serde_json::Value {
    json!([{
        "interaction_id": id,
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "customer_ref": "c-ready",
        "service": "delivery-tracker",
        "channel": "web",
        "kind": "delivery",
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_kafka_and_clickhouse_and_the_collector_refuses_within_its_bound() {
    let _restore = Restore;
    let mut env = Env::new("ready");
    env.prepare();
    let (ap, sp, bp) = (free_port(), free_port(), free_port());
    env.start_collector(&[]);
    env.spawn_with(
        &["attributor"],
        &[(
            "FEEDBACK_ATTRIBUTOR_METRICS_LISTEN",
            &format!("127.0.0.1:{ap}"),
        )],
    );
    env.spawn_with(
        &["sink"],
        &[("FEEDBACK_SINK_METRICS_LISTEN", &format!("127.0.0.1:{sp}"))],
    );
    env.spawn_with(
        &["board"],
        &[("FEEDBACK_BOARD_LISTEN", &format!("127.0.0.1:{bp}"))],
    );
    let svc = |name, port: u16| Svc {
        name,
        base: format!("http://127.0.0.1:{port}"),
    };
    let collector = svc("collector", env.collector_port);
    let attributor = svc("attributor", ap);
    let sink = svc("sink", sp);
    let board = svc("board", bp);
    let all = [
        collector.clone(),
        attributor.clone(),
        sink.clone(),
        board.clone(),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let t = Instant::now();
    until(
        &http,
        &[&collector, &attributor, &sink, &board],
        true,
        t,
        Duration::from_secs(60),
    )
    .await;
    env.assert_alive();
    let post = |id: &str| {
        http.post(format!("{}/v1/interactions", collector.base))
            .json(&interaction(id))
            .send()
    };
    assert_eq!(post("i-before").await.unwrap().status(), 202);

    // Kafka hung (SIGSTOP: connections stay open, nothing answers). A request that passes
    // the gate before the probe notices is answered 503 with Retry-After when the produce
    // bound (default 5 s) passes, never later; the probe notices within 5 s.
    let kafka_pid = std::fs::read_to_string(repo_root().join(".local/kafka/pid"))
        .expect("the local Kafka's pid file")
        .trim()
        .to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &kafka_pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {kafka_pid}");
    };
    signal("-STOP");
    let hung = Instant::now();
    let held = tokio::spawn(post("i-held"));
    let unready = until(&http, &[&collector], false, hung, Duration::from_secs(5)).await;
    let held = held.await.unwrap().unwrap();
    let held_took = hung.elapsed();
    signal("-CONT");
    eprintln!(
        "readiness: a request as Kafka hung got {} after {held_took:?}; the collector was unready after {:?}: {:?}",
        held.status(),
        unready[0].1,
        unready[0].2
    );
    assert_eq!(held.status(), 503);
    assert_eq!(held.headers()["retry-after"], "1");
    assert!(
        held_took >= Duration::from_millis(1000) && held_took <= Duration::from_millis(5000),
        "answered after {held_took:?}"
    );
    until(
        &http,
        &[&collector, &attributor, &sink],
        true,
        Instant::now(),
        Duration::from_secs(30),
    )
    .await;

    // Kafka away.
    stack("stop-kafka");
    let stopped = Instant::now();
    // A request at once, before the probe has noticed: answered by the produce bound (5 s).
    let early = tokio::spawn(post("i-early"));
    let flipped = until(
        &http,
        &[&collector, &attributor, &sink],
        false,
        stopped,
        Duration::from_secs(5),
    )
    .await;
    for (name, took, body) in &flipped {
        eprintln!("readiness: {name} unready {took:?} after Kafka stopped: {body:?}");
        assert!(body.contains("kafka: Kafka at"), "{name}: {body}");
        assert!(body.contains("does not answer"), "{name}: {body}");
    }
    let (status, _) = get(&http, &format!("{}/readyz", board.base)).await.unwrap();
    assert_eq!(status, 200, "the board does not need Kafka");
    all_live(&http, &all).await;
    let early = early.await.unwrap().unwrap();
    let early_took = stopped.elapsed();
    eprintln!(
        "readiness: the request sent as Kafka stopped got {} after at most {early_took:?}",
        early.status()
    );
    assert_eq!(early.status(), 503);
    assert_eq!(early.headers()["retry-after"], "1");
    assert!(
        early_took <= Duration::from_millis(5000),
        "answered after {early_took:?}"
    );
    // Once the probe knows: refused at once, with the reason.
    let t = Instant::now();
    let r = post("i-refused").await.unwrap();
    let took = t.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.starts_with("Kafka cannot take events now (Kafka at ")
            && msg.ends_with("nothing was accepted; send the batch again in 1s"),
        "{msg}"
    );
    assert!(took < Duration::from_millis(500), "refused after {took:?}");
    eprintln!("readiness: a request while Kafka is known away is refused in {took:?}");

    // Kafka back.
    stack("start-kafka");
    let back = Instant::now();
    for (name, took, body) in until(
        &http,
        &[&collector, &attributor, &sink],
        true,
        back,
        Duration::from_secs(5),
    )
    .await
    {
        eprintln!("readiness: {name} ready {took:?} after Kafka answered: {body:?}");
    }
    assert_eq!(post("i-after").await.unwrap().status(), 202);

    // ClickHouse away: the sink and the board only.
    stack("stop-clickhouse");
    let stopped = Instant::now();
    for (name, took, body) in until(
        &http,
        &[&sink, &board],
        false,
        stopped,
        Duration::from_secs(5),
    )
    .await
    {
        eprintln!("readiness: {name} unready {took:?} after ClickHouse stopped: {body:?}");
        assert!(
            body.contains("clickhouse: ClickHouse does not answer"),
            "{name}: {body}"
        );
    }
    for s in [&collector, &attributor] {
        let (status, body) = get(&http, &format!("{}/readyz", s.base)).await.unwrap();
        assert_eq!(status, 200, "{} does not need ClickHouse: {body}", s.name);
    }
    all_live(&http, &all).await;
    stack("start-clickhouse");
    let back = Instant::now();
    for (name, took, body) in
        until(&http, &[&sink, &board], true, back, Duration::from_secs(5)).await
    {
        eprintln!("readiness: {name} ready {took:?} after ClickHouse answered: {body:?}");
    }

    // Nothing acknowledged is lost and nothing refused at once lands.
    let ch = env.clickhouse();
    let read = || async {
        let rows: Vec<Id> = ch
            .fetch("SELECT interaction_id AS id FROM {db}.interactions ORDER BY id")
            .await
            .unwrap_or_default();
        rows.into_iter().map(|r| r.id).collect::<Vec<String>>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read().await.contains(&"i-after".to_string()) {
        assert!(
            Instant::now() < deadline,
            "i-after not landed: {:?}",
            read().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = read().await;
    // i-early and i-held got 503 after reaching the producer: they may have been stored.
    for must in ["i-after", "i-before"] {
        assert!(ids.iter().any(|i| i == must), "{must} missing: {ids:?}");
    }
    for id in &ids {
        assert!(
            ["i-after", "i-before", "i-early", "i-held"].contains(&id.as_str()),
            "{id} landed: {ids:?}"
        );
    }
    env.assert_alive();
}
