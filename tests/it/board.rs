//! `feedback board`: the index and a team page in headless Chromium (Debian's `chromium`
//! driven through `chromedriver` with fantoccini) against the real pipeline; the comment
//! restriction both ways; team alerts to a local webhook receiver.
//!
//! Expected numbers are computed here from the ratings the test sends, and compared with
//! ClickHouse's views as well.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use feedback_clickhouse::Ch;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::{free_port, unique, Env};

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Starts `feedback board` on a free port with `extra` options; returns its base URL once
/// /healthz answers.
async fn start_board(env: &mut Env, extra: &[&str]) -> String {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["board", "--listen", listen.as_str()];
    args.extend_from_slice(extra);
    env.spawn(&args);
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return base;
            }
        }
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "board did not answer on {base} within 30s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chromedriver child process, stopped (by pid) on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let bin =
            std::env::var("FEEDBACK_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin}: {e}; install Debian's chromium and chromium-driver (tests/run.sh does)")
            });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {url} within 30s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, url }
    }

    async fn browser(&self) -> Client {
        let chromium =
            std::env::var("FEEDBACK_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--hide-scrollbars", "--window-size=1280,1700"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a headless Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of every element matching `css`, read in one script: the page re-renders on
/// every snapshot, so finding elements and then asking each for its text could meet
/// elements already replaced.
async fn texts(c: &Client, css: &str) -> Vec<String> {
    let v = c
        .execute(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText.trim());",
            vec![json!(css)],
        )
        .await
        .unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The text of the first element matching `css` (empty when there is none).
async fn text(c: &Client, css: &str) -> String {
    texts(c, css).await.into_iter().next().unwrap_or_default()
}

/// Waits (at most `secs`) until every (selector, text) pair shows; returns what was seen
/// last for the message.
async fn wait_texts(c: &Client, want: &[(&str, String)], secs: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut seen = Vec::new();
        for (css, _) in want {
            seen.push(text(c, css).await);
        }
        if want.iter().zip(&seen).all(|((_, w), s)| w == s) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "after {secs}s: wanted {:?}, page shows {seen:?}",
                want.iter()
                    .map(|(c, w)| format!("{c}={w}"))
                    .collect::<Vec<_>>()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) {
    let r = http
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status.as_u16(), 202, "{v}");
}

fn rating(id: &str, at_ms: i64, metric: &str, score: i32, channel: &str, service: &str) -> Value {
    json!({"rating_id": id, "occurred_at": ts(at_ms), "metric": metric, "score": score,
           "service": service, "channel": channel, "customer_ref": "c-1"})
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct N {
    n: u64,
}

async fn wait_ratings(env: &mut Env, ch: &Ch, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r: Vec<N> = ch
            .fetch("SELECT count() AS n FROM {db}.ratings")
            .await
            .unwrap();
        if r[0].n >= n {
            assert_eq!(r[0].n, n, "exactly the ratings sent landed");
            return;
        }
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "only {} of {n} ratings landed in 120s",
            r[0].n
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct W {
    team: String,
    metric: String,
    window: String,
    responses: u64,
    value: f64,
}

/// ClickHouse's own numbers for the 1h windows, formatted as the page formats them.
async fn clickhouse_shows(ch: &Ch, team: &str, metric: &str, window: &str) -> (String, String) {
    let rows: Vec<W> = ch
        .fetch("SELECT team, metric, window, responses, value FROM {db}.team_metrics_window WHERE window IN ('last_1h', 'prev_1h')")
        .await
        .unwrap();
    let r = rows
        .iter()
        .find(|r| r.team == team && r.metric == metric && r.window == window)
        .unwrap_or_else(|| panic!("ClickHouse has no {team}/{metric}/{window}: {rows:?}"));
    let digits = if metric == "ces" { 2 } else { 1 };
    (format!("{:.*}", digits, r.value), r.responses.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_pages_in_chromium_equal_clickhouse_and_update_live() {
    let mut env = Env::new("board");
    env.prepare();
    env.start_collector(&[]);
    env.spawn(&["attributor"]);
    env.spawn(&["sink", "--flush-ms", "200"]);
    let http = reqwest::Client::new();
    let base = env.collector_url();
    let now = chrono::Utc::now().timestamp_millis();

    post(&http, &base, "/v1/interactions", json!([{
        "interaction_id": "I-1", "occurred_at": ts(now - 300_000), "service": "checkout-api", "channel": "web",
        "kind": "order", "customer_ref": "c-1", "product": "payments-card"}]))
    .await;
    // payments, last hour: CSAT web 5 5 4 4 3 (4 of 5 positive), app 2 1 5 4 2 (2 of 5):
    // 6 of 10 = 60.0%; NPS 10 9 7 3 → (2 − 1) / 4 = 25.0; CES 6 5 2 → 13 / 3 = 4.33.
    // payments, the hour before: CSAT 5 5 5 1 → 75.0% on 4. web-shop: CSAT 5 1 → 50.0%.
    // One rating no team claims (email, unknown service).
    let mut ratings = Vec::new();
    for (i, s) in [5, 5, 4, 4, 3].iter().enumerate() {
        ratings.push(rating(
            &format!("R-w{i}"),
            now - 200_000,
            "csat",
            *s,
            "web",
            "checkout-api",
        ));
    }
    for (i, s) in [2, 1, 5, 4, 2].iter().enumerate() {
        ratings.push(rating(
            &format!("R-a{i}"),
            now - 200_000,
            "csat",
            *s,
            "app",
            "checkout-api",
        ));
    }
    ratings[0]["interaction_id"] = json!("I-1");
    ratings[0]["occurred_at"] = json!(ts(now - 120_000));
    ratings[0]["comment"] = json!("The card payment went through at once");
    ratings[6]["occurred_at"] = json!(ts(now - 60_000));
    ratings[6]["comment"] = json!("Charged twice <b>and</b> nobody answers");
    for (i, s) in [10, 9, 7, 3].iter().enumerate() {
        ratings.push(rating(
            &format!("R-n{i}"),
            now - 200_000,
            "nps",
            *s,
            "web",
            "checkout-api",
        ));
    }
    for (i, s) in [6, 5, 2].iter().enumerate() {
        ratings.push(rating(
            &format!("R-c{i}"),
            now - 200_000,
            "ces",
            *s,
            "app",
            "checkout-api",
        ));
    }
    for (i, s) in [5, 5, 5, 1].iter().enumerate() {
        ratings.push(rating(
            &format!("R-p{i}"),
            now - 5_400_000,
            "csat",
            *s,
            "web",
            "checkout-api",
        ));
    }
    ratings.push(rating("R-s0", now - 200_000, "csat", 5, "web", "shop-web"));
    ratings.push(rating("R-s1", now - 200_000, "csat", 1, "web", "shop-web"));
    ratings.push(rating(
        "R-u0",
        now - 200_000,
        "csat",
        3,
        "email",
        "nobody-svc",
    ));
    let sent = ratings.len() as u64;
    post(&http, &base, "/v1/ratings", Value::Array(ratings)).await;
    let ch = env.clickhouse();
    wait_ratings(&mut env, &ch, sent).await;

    let board = start_board(&mut env, &["--alert-interval-ms", "0"]).await;
    let driver = Driver::start().await;
    let c = driver.browser().await;

    // The index: every team, with its numbers.
    c.goto(&format!("{board}/?window=1h")).await.unwrap();
    let (v, n) = clickhouse_shows(&ch, "payments", "csat", "last_1h").await;
    assert_eq!((v.as_str(), n.as_str()), ("60.0", "10"));
    wait_texts(
        &c,
        &[
            ("#idx-payments-csat", v),
            ("#idx-payments-csat-n", format!("{n} responses")),
            ("#idx-payments-csat-delta", "▼ -15.0".into()),
            ("#idx-payments-nps", "25.0".into()),
            ("#idx-payments-ces", "4.33".into()),
            ("#idx-web-shop-csat", "50.0".into()),
            ("#idx-web-shop-csat-n", "2 responses".into()),
            ("#idx-billing-csat", "–".into()),
            ("#unowned", "1".into()),
        ],
        10,
    )
    .await
    .unwrap();
    let rows = texts(&c, "#teams tbody tr").await;
    // 9 teams of deploy/ownership plus "unowned".
    assert_eq!(rows.len(), 10);

    // The team page, timed from navigation to the numbers on screen.
    let started = Instant::now();
    c.goto(&format!("{board}/team/payments?window=1h"))
        .await
        .unwrap();
    let mut want = Vec::new();
    for (m, w) in [
        ("csat", "last_1h"),
        ("csat", "prev_1h"),
        ("nps", "last_1h"),
        ("ces", "last_1h"),
    ] {
        let (v, n) = clickhouse_shows(&ch, "payments", m, w).await;
        let p = if w == "last_1h" { "now" } else { "prev" };
        want.push((format!("#{m}-{p}"), v));
        want.push((format!("#{m}-{p}-n"), n));
    }
    let expected: Vec<(String, String)> = [
        ("#csat-now", "60.0"),
        ("#csat-now-n", "10"),
        ("#csat-prev", "75.0"),
        ("#csat-prev-n", "4"),
        ("#nps-now", "25.0"),
        ("#nps-now-n", "4"),
        ("#ces-now", "4.33"),
        ("#ces-now-n", "3"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(
        want, expected,
        "ClickHouse's views agree with the hand count"
    );
    let want_ref: Vec<(&str, String)> = want.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
    wait_texts(&c, &want_ref, 10).await.unwrap();
    let shown_after = started.elapsed();
    let timing = c
        .execute(
            "const n = performance.getEntriesByType('navigation')[0]; \
             return [n.responseEnd, n.domContentLoadedEventEnd, n.loadEventEnd, window.__board.firstRenderMs];",
            vec![],
        )
        .await
        .unwrap();
    eprintln!(
        "team page: numbers on screen {} ms after goto; navigation timing [responseEnd, DOMContentLoaded, load, first render] ms = {timing}",
        shown_after.as_millis()
    );
    assert_eq!(text(&c, "#csat-delta").await, "▼ -15.0");

    // Breakdown by channel, worst first: app 40.0 (5) before web 80.0 (5).
    let mut csat_rows = Vec::new();
    for t in texts(&c, "#bd-channel tbody tr").await {
        if t.contains("CSAT") {
            csat_rows.push(t.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    assert_eq!(csat_rows, vec!["app CSAT 40.0 5", "web CSAT 80.0 5"]);

    // Latest comments, newest first, with their interaction's context; markup stays text.
    let words = texts(&c, "#comments .words").await;
    assert_eq!(
        words,
        vec![
            "Charged twice <b>and</b> nobody answers",
            "The card payment went through at once"
        ]
    );
    let meta1 = texts(&c, "#comments .meta").await[1].clone();
    assert!(
        meta1.contains("order · payments-card · web · checkout-api · I-1"),
        "{meta1}"
    );
    assert_eq!(text(&c, "#orphans").await, "0");
    assert_eq!(text(&c, "#unowned").await, "1");
    if let Ok(path) = std::env::var("FEEDBACK_BOARD_SCREENSHOT") {
        std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
        eprintln!("screenshot of the team page saved to {path}");
    }

    // Live: five more CSAT answers of 1 through the collector → 6 of 15 = 40.0%, no reload.
    c.execute("window.__marker = 42;", vec![]).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let more: Vec<Value> = (0..5)
        .map(|i| {
            rating(
                &format!("R-x{i}"),
                now - 1000,
                "csat",
                1,
                "app",
                "checkout-api",
            )
        })
        .collect();
    post(&http, &base, "/v1/ratings", Value::Array(more)).await;
    let sent_at = Instant::now();
    wait_texts(
        &c,
        &[("#csat-now", "40.0".into()), ("#csat-now-n", "15".into())],
        5,
    )
    .await
    .expect("the page shows the new numbers within 5 s of the collector's 202");
    eprintln!(
        "live update on screen {} ms after the collector's 202",
        sent_at.elapsed().as_millis()
    );
    let marker = c.execute("return window.__marker;", vec![]).await.unwrap();
    assert_eq!(marker, json!(42), "the page was not reloaded");
    let (v, n) = clickhouse_shows(&ch, "payments", "csat", "last_1h").await;
    assert_eq!((v.as_str(), n.as_str()), ("40.0", "15"));
    c.close().await.unwrap();
}

/// Inserts ratings straight into `ratings` and rebuilds the rollups of the last two weeks:
/// `(id, team, metric, score, seconds ago, comment)`.
/// (rating id, team, metric, score, seconds ago, comment)
type Seed<'a> = (String, &'a str, &'a str, i32, i64, Option<&'a str>);

async fn insert_ratings(ch: &Ch, rows: &[Seed<'_>]) {
    let values: Vec<String> = rows
        .iter()
        .map(|(id, team, metric, score, ago, comment)| {
            let comment = comment.map_or("NULL".to_string(), |c| format!("'{c}'"));
            format!(
                "('{id}', now() - {ago}, (toInt64(toUInt32(now())) - {ago}) * 1000, NULL, '{metric}', {score}, {comment}, \
                 'svc', 'web', 'c', NULL, '{{}}', '{team}', 'claim', 'v', 0, NULL, 't', 0, 0, 0)"
            )
        })
        .collect();
    for chunk in values.chunks(500) {
        ch.execute(&format!(
            "INSERT INTO {{db}}.ratings (rating_id, occurred_at, occurred_at_ms, interaction_id, metric, score, comment, \
             service, channel, customer_ref, product, attributes, team, attribution, ownership_version, orphan, \
             interaction_kind, source_topic, source_partition, source_offset, attributed_at_ms) VALUES {}",
            chunk.join(", ")
        ))
        .await
        .unwrap();
    }
    // The board reads the rollups: count the new rows as `feedback rollups rebuild` does
    // (the days of the last two weeks; rows counted before are left as they are).
    let today = (chrono::Utc::now().timestamp() as u32) / 86400 * 86400;
    for d in 0..15 {
        ch.rebuild_day(today - d * 86400, "board-test")
            .await
            .unwrap();
    }
}

/// The latest comments of each team are read from the hour its comment counts in the
/// rollups say its newest `limit` start at (the whole last day when it has fewer): whatever
/// hour a team's comments are in, it gets its newest `limit`, newest first; comments older
/// than 24 h are not shown; a team whose counts promise more than `rating_comments` holds
/// (comments erased, or lost by the view until a rebuild) is read again over the whole day;
/// the interaction's context comes from `interaction_context` (migration 8), or the kind the
/// join recorded when the interaction never landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_comments_start_at_the_hour_the_comment_counts_give() {
    let env = Env::new("boardcomments");
    env.run(&["migrate"]);
    let ch = env.clickhouse();
    let c = |id: &str, team: &'static str, ago: i64| -> Seed<'static> {
        (id.to_string(), team, "csat", 2, ago, Some("slow"))
    };
    // d1 rates a landed interaction (its context from interaction_context), l1 one that
    // never landed (the kind from the rating's join only).
    ch.execute(
        "INSERT INTO {db}.ratings (rating_id, occurred_at, occurred_at_ms, interaction_id, metric, score, comment, \
         service, channel, customer_ref, product, attributes, team, attribution, ownership_version, orphan, \
         interaction_kind, source_topic, source_partition, source_offset, attributed_at_ms) VALUES \
         ('d1', now() - 300, (toInt64(toUInt32(now())) - 300) * 1000, 'i-d1', 'csat', 2, 'slow', 'svc', 'web', 'c', NULL, \
          '{}', 'delivery', 'interaction', 'v', 0, 'order', 't', 0, 0, 0), \
         ('l1', now() - 72000, (toInt64(toUInt32(now())) - 72000) * 1000, 'i-l1', 'csat', 2, 'slow', 'svc', 'web', 'c', NULL, \
          '{}', 'loyalty', 'interaction', 'v', 0, 'visit', 't', 0, 0, 0)",
    )
    .await
    .unwrap();
    ch.execute(
        "INSERT INTO {db}.interactions (interaction_id, occurred_at, occurred_at_ms, service, channel, kind, customer_ref, \
         product, attributes, team, attribution, ownership_version, source_topic, source_partition, source_offset, attributed_at_ms) \
         VALUES ('i-d1', now() - 400, 0, 'parcel-tracker', 'phone', 'order', 'c', 'parcels', '{}', 'delivery', 'claim', 'v', 't', 0, 0, 0)",
    )
    .await
    .unwrap();
    insert_ratings(
        &ch,
        &[
            // payments: three in the last minutes (limit 2: the two newest) and an older one.
            c("p1", "payments", 60),
            c("p2", "payments", 120),
            c("p3", "payments", 180),
            c("p4", "payments", 7200),
            // delivery: d1 5 minutes ago (above), one an hour ago, one 10 h ago.
            c("d2", "delivery", 3600),
            c("d3", "delivery", 36000),
            // loyalty: l1 20 h ago (above); stores: only one 30 h ago (none shown).
            c("s1", "stores", 108000),
            // support: one a minute ago and one 3 h ago; its counts are inflated below.
            c("u1", "support", 60),
            c("u2", "support", 10800),
            // a rating without comment is never shown.
            ("n1".to_string(), "loyalty", "csat", 1, 60, None),
        ],
    )
    .await;
    // support's counts promise two comments in u1's hour, where `rating_comments` holds one
    // (as after an erasure): the read from that hour finds one and reads the day again.
    let hour = |ago: i64| ((chrono::Utc::now().timestamp() - ago) / 3600 * 3600) as u32;
    ch.insert_rollups(
        &[feedback_clickhouse::rollups::RollupRow {
            grain: feedback_clickhouse::rollups::COMMENT_HOUR.into(),
            bucket: hour(60),
            team: "support".into(),
            metric: "csat".into(),
            dimension: String::new(),
            dim_value: String::new(),
            channel: String::new(),
            kind: String::new(),
            responses: 1,
            score_sum: 2,
            score_sq_sum: 4,
            positive: 0,
            negative: 1,
            orphans: 0,
            interactions: 0,
            mark: 0,
        }],
        "board-test-inflate",
    )
    .await
    .unwrap();
    // The bounds: each team from the hour of its second newest comment (support's counts
    // say u1's), loyalty over the whole day (one comment).
    let hours = feedback_clickhouse::queries::board::comment_hours(&ch, None)
        .await
        .unwrap();
    let bounds = feedback_clickhouse::queries::board::comment_bounds(&hours, 2);
    assert_eq!(bounds["payments"], Some(hour(120)), "{bounds:?}");
    assert_eq!(bounds["delivery"], Some(hour(3600)), "{bounds:?}");
    assert_eq!(bounds["support"], Some(hour(60)), "{bounds:?}");
    assert_eq!(bounds["loyalty"], None, "{bounds:?}");
    let all = feedback_clickhouse::queries::board::comments(&ch, None, 2)
        .await
        .unwrap();
    let got: Vec<(&str, &str)> = all
        .iter()
        .map(|c| (c.rating.team.as_str(), c.rating.rating_id.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("delivery", "d1"),
            ("delivery", "d2"),
            ("loyalty", "l1"),
            ("payments", "p1"),
            ("payments", "p2"),
            ("support", "u1"),
            ("support", "u2"),
        ]
    );
    let d1 = &all[0];
    assert_eq!(
        (
            d1.i_kind.as_str(),
            d1.i_channel.as_str(),
            d1.i_service.as_str(),
            d1.i_product.as_str()
        ),
        ("order", "phone", "parcel-tracker", "parcels")
    );
    let l1 = &all[2];
    assert_eq!(
        (
            l1.i_kind.as_str(),
            l1.i_channel.as_str(),
            l1.rating.interaction_id.as_str()
        ),
        ("visit", "", "i-l1")
    );
    // One team at a time: the same rows.
    for team in ["payments", "delivery", "loyalty", "stores", "support"] {
        let one = feedback_clickhouse::queries::board::comments(&ch, Some(team), 2)
            .await
            .unwrap();
        let want: Vec<&str> = got
            .iter()
            .filter(|(t, _)| *t == team)
            .map(|(_, id)| *id)
            .collect();
        let one: Vec<&str> = one.iter().map(|c| c.rating.rating_id.as_str()).collect();
        assert_eq!(one, want, "{team}");
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_comments_open_or_restricted_to_the_team_token() {
    let mut env = Env::new("boardacc");
    env.run(&["migrate"]);
    let ch = env.clickhouse();
    insert_ratings(
        &ch,
        &[
            (
                "a1".into(),
                "payments",
                "csat",
                5,
                120,
                Some("quick refund"),
            ),
            (
                "a2".into(),
                "payments",
                "csat",
                1,
                60,
                Some("card declined"),
            ),
            ("b1".into(), "web-shop", "csat", 4, 60, Some("nice shop")),
        ],
    )
    .await;
    let dir = temp_dir("access");
    let token = "s3cret-payments";
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file = dir.join("access.toml");
    std::fs::write(
        &file,
        format!("[comment_tokens]\npayments = \"sha256:{hash}\"\n"),
    )
    .unwrap();
    let board = start_board(
        &mut env,
        &[
            "--alert-interval-ms",
            "0",
            "--access-file",
            file.to_str().unwrap(),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let get = |path: String, bearer: Option<&'static str>| {
        let http = http.clone();
        let board = board.clone();
        async move {
            let mut r = http.get(format!("{board}{path}"));
            if let Some(b) = bearer {
                r = r.bearer_auth(b);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            (status, body)
        }
    };
    let comments = |body: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(body).unwrap();
        let items = if v["items"].is_array() {
            &v["items"]
        } else {
            &v["comments"]["items"]
        };
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["comment"].as_str().unwrap().to_string())
            .collect()
    };

    // Open: a team without a token shows its comments to anyone.
    let (s, b) = get("/api/teams/web-shop/comments".into(), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(comments(&b), vec!["nice shop"]);
    let (_, b) = get("/api/teams/web-shop".into(), None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["comments"]["access"],
        "open"
    );

    // Restricted, no token: 401 for the comments, numbers still open.
    let (s, b) = get("/api/teams/payments/comments".into(), None).await;
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("token"), "{b}");
    let (s, b) = get("/api/teams/payments?window=1h".into(), None).await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["metrics"]["csat"]["now"]["responses"], 2);
    assert_eq!(v["metrics"]["csat"]["now"]["value"], 50.0);
    assert_eq!(v["comments"]["access"], "restricted");
    assert_eq!(comments(&b), Vec::<String>::new());
    let (_, page) = get("/team/payments?window=1h".into(), None).await;
    assert!(!page.contains("card declined") && page.contains("\"restricted\""));

    // Restricted, the team's token: accepted (query or bearer), newest first.
    let (s, b) = get(format!("/api/teams/payments/comments?token={token}"), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(comments(&b), vec!["card declined", "quick refund"]);
    let (s, b) = get(
        "/api/teams/payments/comments".into(),
        Some("s3cret-payments"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = get(format!("/api/teams/payments?window=1h&token={token}"), None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["comments"]["access"],
        "granted"
    );
    assert_eq!(comments(&b), vec!["card declined", "quick refund"]);
    let (_, page) = get(format!("/team/payments?window=1h&token={token}"), None).await;
    assert!(page.contains("card declined"));

    // Restricted, a wrong token: refused, numbers still there.
    let (s, b) = get("/api/teams/payments/comments?token=guess".into(), None).await;
    assert_eq!(s, 403, "{b}");
    let (_, b) = get("/api/teams/payments?window=1h&token=guess".into(), None).await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["comments"]["access"], "refused");
    assert_eq!(v["metrics"]["csat"]["now"]["responses"], 2);
    assert_eq!(comments(&b), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(dir);
}

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A local Slack-compatible webhook receiver: records (path, JSON body), answers "ok".
async fn webhook_receiver() -> (SocketAddr, Received) {
    let got: Received = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().fallback(axum::routing::post(
        move |uri: axum::http::Uri, body: axum::Json<Value>| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push((uri.path().to_string(), body.0));
                "ok"
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, got)
}

async fn evaluations(http: &reqwest::Client, board: &str) -> u64 {
    let m = http
        .get(format!("{board}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("feedback_board_alert_evaluations_total "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Waits until the board completed `more` further evaluation rounds (bounded).
async fn wait_rounds(env: &mut Env, http: &reqwest::Client, board: &str, more: u64) {
    let target = evaluations(http, board).await + more;
    let deadline = Instant::now() + Duration::from_secs(60);
    while evaluations(http, board).await < target {
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "the board stopped evaluating alerts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_alerts_once_per_real_drop_and_never_on_small_samples() {
    let mut env = Env::new("boardalert");
    env.run(&["migrate"]);
    let ch = env.clickhouse();
    let (addr, got) = webhook_receiver().await;
    let dir = temp_dir("owners");
    for (team, contact) in [
        ("alpha", format!("http://{addr}/hook/alpha")),
        ("beta", format!("http://{addr}/hook/beta")),
        ("gamma", "#gamma-feedback".to_string()),
    ] {
        let name = format!("{}{}", team[..1].to_uppercase(), &team[1..]);
        std::fs::write(
            dir.join(format!("{team}.toml")),
            format!("team = \"{team}\"\nname = \"{name}\"\ncontact = \"{contact}\"\n\n[[claim]]\nservice = \"{team}-svc\"\n"),
        )
        .unwrap();
    }
    // alpha: CSAT 90 of 100 positive the hour before, 50 of 100 in the last hour: a real drop.
    // beta: 9 of 10 → 2 of 10: as steep, but on 10 responses (< 30): no alert.
    // gamma: CES 20×6 + 20×4 (mean 5.00) → 20×5 + 20×3 (mean 4.00) on 40 each: a real drop.
    let mut rows = Vec::new();
    let mut add = |team: &'static str, metric: &'static str, score: i32, count: usize, ago: i64| {
        for _ in 0..count {
            let id = format!("{team}-{}", rows.len());
            rows.push((id, team, metric, score, ago, None));
        }
    };
    add("alpha", "csat", 5, 90, 5400);
    add("alpha", "csat", 1, 10, 5400);
    add("alpha", "csat", 5, 50, 300);
    add("alpha", "csat", 1, 50, 300);
    add("beta", "csat", 5, 9, 5400);
    add("beta", "csat", 1, 1, 5400);
    add("beta", "csat", 5, 2, 300);
    add("beta", "csat", 1, 8, 300);
    add("gamma", "ces", 6, 20, 5400);
    add("gamma", "ces", 4, 20, 5400);
    add("gamma", "ces", 5, 20, 300);
    add("gamma", "ces", 3, 20, 300);
    insert_ratings(&ch, &rows).await;

    let webhook = format!("http://{addr}/default");
    let state = dir.join("alert-state.json");
    let board_args = [
        "--ownership-dir",
        dir.to_str().unwrap(),
        "--alert-interval-ms",
        "200",
        "--alert-webhook-url",
        &webhook,
        "--public-url",
        "http://127.0.0.1:8090",
        "--alert-state-file",
        state.to_str().unwrap(),
    ];
    let board = start_board(&mut env, &board_args).await;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < 2 {
        env.assert_alive();
        assert!(
            Instant::now() < deadline,
            "no alerts within 30s: {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Many more rounds on the same data, then the drop deepens (same episode), more rounds.
    wait_rounds(&mut env, &http, &board, 10).await;
    let deeper: Vec<_> = (0..50)
        .map(|i| (format!("alpha-more-{i}"), "alpha", "csat", 1, 240, None))
        .collect();
    insert_ratings(&ch, &deeper).await;
    wait_rounds(&mut env, &http, &board, 10).await;
    // A second board (as after a restart) reads the open episodes from the state file.
    let second = start_board(&mut env, &board_args).await;
    wait_rounds(&mut env, &http, &second, 10).await;

    let got = got.lock().unwrap().clone();
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths.len(), 2, "exactly two alerts, got {paths:?}");
    let alpha = &got
        .iter()
        .find(|(p, _)| p == "/hook/alpha")
        .expect("alpha alerted")
        .1;
    let gamma = &got
        .iter()
        .find(|(p, _)| p == "/default")
        .expect("gamma alerted via the default webhook")
        .1;
    assert!(!paths.contains(&"/hook/beta"), "no alert on 10 responses");
    let text = alpha["text"].as_str().unwrap();
    assert!(
        text.starts_with("CSAT of Alpha dropped from 90.0% to 50.0% (−40.0 points) in the last hour vs the one before, on 100 responses (100 before); one-sided two-proportion z-test p = "),
        "{text}"
    );
    assert!(
        text.ends_with("Team page: http://127.0.0.1:8090/team/alpha"),
        "{text}"
    );
    assert_eq!(alpha["blocks"][0]["type"], "section");
    assert!(alpha.get("channel").is_none());
    assert_eq!(gamma["channel"], "#gamma-feedback");
    let text = gamma["text"].as_str().unwrap();
    assert!(
        text.starts_with("CES of Gamma dropped from 5.00 to 4.00 (−1.00) in the last hour vs the one before, on 40 responses (40 before); one-sided Welch t-test p = "),
        "{text}"
    );
    let m = http
        .get(format!("{board}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("feedback_board_alerts_sent_total{team=\"alpha\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("feedback_board_alerts_sent_total{team=\"gamma\"} 1"),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn board_refuses_bad_access_files_and_options_with_what_to_do() {
    let env = Env::new("boardcli");
    let dir = temp_dir("badaccess");
    let file = dir.join("access.toml");
    std::fs::write(&file, "[comment_tokens]\nnobody = \"sha256:00\"\n").unwrap();
    let out = env
        .cmd(&[
            "board",
            "--listen",
            "127.0.0.1:0",
            "--access-file",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("names team \"nobody\", which has no ownership file; known teams: billing, customer-care"),
        "{err}"
    );
    std::fs::write(&file, "[comment_tokens]\npayments = \"s3cret\"\n").unwrap();
    let out = env
        .cmd(&[
            "board",
            "--listen",
            "127.0.0.1:0",
            "--access-file",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("printf %s 'TOKEN' | sha256sum"), "{err}");
    let out = env
        .cmd(&["board", "--listen", "127.0.0.1:0", "--alert-window", "2h"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--alert-window \"2h\" is not a window; use 1h, 24h or 7d"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Measurement, not a check (run by hand): loads a running board's team page in headless
/// Chromium `FEEDBACK_BOARD_LOADS` times (default 10) and prints each load's Navigation Timing
/// and when the numbers were on screen. `FEEDBACK_BOARD_URL` (e.g. http://127.0.0.1:8090),
/// `FEEDBACK_BOARD_TEAM` (default payments), `FEEDBACK_BOARD_SCREENSHOT` (a PNG path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement against a running board; see its doc comment"]
async fn board_team_page_load_time() {
    let board = std::env::var("FEEDBACK_BOARD_URL")
        .expect("set FEEDBACK_BOARD_URL to a running board, e.g. http://127.0.0.1:8090");
    let team = std::env::var("FEEDBACK_BOARD_TEAM").unwrap_or_else(|_| "payments".into());
    let loads: usize = std::env::var("FEEDBACK_BOARD_LOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let driver = Driver::start().await;
    let c = driver.browser().await;
    let mut shown = Vec::new();
    for i in 0..loads {
        let started = Instant::now();
        c.goto(&format!("{board}/team/{team}?window=24h"))
            .await
            .unwrap();
        let timing = c
            .execute(
                "const n = performance.getEntriesByType('navigation')[0]; \
                 return [Math.round(n.responseEnd), Math.round(n.loadEventEnd), Math.round(window.__board.firstRenderMs)];",
                vec![],
            )
            .await
            .unwrap();
        let ms = started.elapsed().as_millis();
        eprintln!("load {i}: goto returned after {ms} ms; [responseEnd, load, numbers rendered] = {timing} ms");
        shown.push(timing[2].as_u64().unwrap_or(0));
    }
    shown.sort();
    eprintln!(
        "numbers rendered after navigation start: median {} ms, max {} ms over {loads} loads",
        shown[shown.len() / 2],
        shown[shown.len() - 1]
    );
    if let Ok(path) = std::env::var("FEEDBACK_BOARD_SCREENSHOT") {
        std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
        eprintln!("screenshot saved to {path}");
    }
    c.close().await.unwrap();
}
