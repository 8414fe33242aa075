//! `feedback bench --read-scale`: what reading costs as the history grows (issue 13, item 6).
//!
//! For each size of `--read-scale-ratings`, a scratch database (`fbread_<n>_<time>`, dropped
//! at the end unless `--keep`) gets the migrations, a generated history of `n` ratings and
//! `n` interactions over `--read-scale-days` ending now, written straight into the raw tables
//! in chunks (`feedback_clickhouse::queries::bench::History`), and its rollups rebuilt day by
//! day (`Ch::rebuild_day`, as `feedback rollups rebuild` does). Then, against the real
//! ClickHouse server:
//! 1. every JSON API call of a `feedback board` child process (this executable) whose cache
//!    lives `API_REFRESH_MS`, the calls spaced further apart than any of its caches, so every
//!    timed call runs its queries (checked per call with the board's `feedback_board_query_seconds`
//!    count: the table says how many calls reached ClickHouse);
//! 2. every ClickHouse query of the Grafana dashboards, expanded like the datasource plugin
//!    expands it, for the last 24 hours and the last 7 days;
//! 3. ClickHouse's CPU while the index and every team's page are open live (server-sent
//!    events) on a board with the production refresh, from `/proc/<pid>/stat` of the
//!    server (the local stack's pid file), and each page's first snapshot.
//!
//! The sizes go side by side in one table with the ratio large/small and the targets
//! as verdicts; `results.json` and `table.md` land in `<out>/<run id>/` after every size, so a
//! run stopped during the large size keeps the small one's figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use feedback_clickhouse::queries::bench::{self as bench_sql, History, RawTable};
use feedback_clickhouse::Ch;
use serde::Serialize;

use super::procs::{self, Proc, Server};
use super::report::{self, Machine};
use super::Args;

/// The API board's snapshot cache lifetime (the board's smallest).
const API_REFRESH_MS: u64 = 100;
/// Pause between two timed API calls: longer than every cache of the board is fresh
/// (snapshots and the board's numbers one refresh, the latest comments five), so that each
/// call finds its numbers stale and has them read again.
const API_SPACING_MS: u64 = 6 * API_REFRESH_MS;
/// Pause between two calls of one endpoint in the "looked at again" rows: longer than the
/// board's numbers are fresh (one refresh), shorter than it serves them stale (10 refreshes).
const SERVED_SPACING_MS: u64 = 2 * API_REFRESH_MS;
/// The board's default number of latest comments per team (`--comments`).
const DEFAULT_COMMENTS: u64 = 20;
/// The live board's refresh: the production default.
const LIVE_REFRESH_MS: u64 = 1000;
const DAY: u32 = 86_400;

/// The targets.
const API_P95_MS: f64 = 100.0;
const PANEL_P95_MS: f64 = 200.0;
const LIVE_CORES: f64 = 0.25;
const FIRST_SNAPSHOT_MS: f64 = 1000.0;
const MAX_RATIO: f64 = 2.0;

/// Latency figures of one measurement at one size.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Figure {
    pub id: String,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
    /// Timed samples.
    pub samples: usize,
    /// Failed calls (HTTP status other than 200, query errors).
    pub errors: usize,
    /// API calls: how many of the timed calls ran ClickHouse queries in the board.
    pub queried: Option<usize>,
    pub note: String,
}

/// One page open live.
#[derive(Debug, Clone, Serialize)]
pub struct LiveClient {
    pub path: String,
    pub first_snapshot_ms: Option<f64>,
    pub snapshots: u64,
    pub problems: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Live {
    pub seconds: f64,
    pub clickhouse_cpu_seconds: Option<f64>,
    /// ClickHouse CPU seconds per second while the pages were open (1.0 = one core).
    pub clickhouse_cores: Option<f64>,
    /// The same with no page open, just before (background merges, logs).
    pub clickhouse_idle_cores: Option<f64>,
    pub board_cores: Option<f64>,
    pub clients: Vec<LiveClient>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Coverage {
    pub raw_ratings: u64,
    pub raw_interactions: u64,
    pub rolled_ratings: i64,
    pub rolled_interactions: i64,
}

/// Everything measured at one size.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SizeResult {
    pub ratings: u64,
    pub interactions: u64,
    pub days: u32,
    pub database: String,
    pub fill_seconds: f64,
    pub rebuild_seconds: f64,
    pub rebuilt_days: u32,
    pub coverage: Coverage,
    /// Background merges still running when the measurements started.
    pub merges_at_start: u64,
    /// Every latency measured (ms), in the table's order.
    pub figures: Vec<Figure>,
    pub live: Live,
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub id: String,
    pub group: &'static str,
    pub name: String,
    /// Per size: "p50 / p95 / max" (ms) or the live figure.
    pub cells: Vec<String>,
    /// Largest size's p95 (or figure) / smallest size's.
    pub ratio: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadReport {
    pub run_id: String,
    pub started_at: String,
    pub machine: Machine,
    pub method: Vec<String>,
    pub sizes: Vec<SizeResult>,
    pub lines: Vec<Line>,
    pub total_seconds: f64,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn figure(
    id: String,
    mut ms: Vec<f64>,
    errors: usize,
    queried: Option<usize>,
    note: String,
) -> Figure {
    ms.sort_by(f64::total_cmp);
    Figure {
        id,
        p50: percentile(&ms, 50.0),
        p95: percentile(&ms, 95.0),
        max: ms.last().copied(),
        samples: ms.len(),
        errors,
        queried,
        note,
    }
}

fn progress(tag: &str, msg: impl std::fmt::Display) {
    eprintln!("[read-scale {tag}] {msg}");
}

fn secs_left(started: Instant, done: u64, total: u64) -> f64 {
    let e = started.elapsed().as_secs_f64();
    if done == 0 {
        return f64::NAN;
    }
    e / done as f64 * (total - done) as f64
}

/// The teams the board knows (ownership files, plus `unowned`) and the busy one.
fn teams(dir: &Path) -> anyhow::Result<(Vec<String>, String)> {
    let own = feedback_attribution::Ownership::load_dir(dir)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("reading the ownership files in {}", dir.display()))?;
    let mut t: Vec<String> = own.teams.iter().map(|t| t.team.clone()).collect();
    t.sort();
    if !t.iter().any(|x| x == "unowned") {
        t.push("unowned".into());
    }
    let busy = t
        .iter()
        .find(|x| *x == "payments")
        .or_else(|| t.first())
        .cloned()
        .context("no team in the ownership files")?;
    Ok((t, busy))
}

/// Team slots of the history: the busy team three times, `unowned` once, the others twice.
fn slots(teams: &[String], busy: &str) -> Vec<String> {
    let mut s = Vec::new();
    for t in teams {
        let k = if t == busy {
            3
        } else if t == "unowned" {
            1
        } else {
            2
        };
        s.extend(std::iter::repeat_n(t.clone(), k));
    }
    s
}

struct Ctx<'a> {
    args: &'a Args,
    exe: PathBuf,
    dir: PathBuf,
    teams: Vec<String>,
    busy: String,
    /// The local stack's pid file of ClickHouse (read again before each use: the server
    /// may have been restarted since).
    pid_file: PathBuf,
    http: reqwest::Client,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let run_id = format!("readscale{}", started_at.timestamp());
    let dir = args.out.join(&run_id);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the results folder {}", dir.display()))?;
    let load_at_start = report::loadavg();
    let (teams, busy) = teams(&args.ownership_dir)?;
    anyhow::ensure!(
        !args.read_scale_ratings.is_empty() && args.read_scale_ratings.iter().all(|n| *n > 0),
        "--read-scale-ratings needs at least one size above 0"
    );
    anyhow::ensure!(
        args.read_scale_days > 0,
        "--read-scale-days must be at least 1"
    );
    let pid_file = args.local_dir.join("clickhouse/pid");
    if Server::find(&pid_file).cpu().is_none() {
        eprintln!(
            "warning: no running ClickHouse server found from {}: its CPU will not be reported (--local-dir / FEEDBACK_LOCAL_DIR)",
            pid_file.display()
        );
    }
    let ctx = Ctx {
        exe: std::env::current_exe().context("cannot find this executable to run the board")?,
        dir: dir.clone(),
        teams,
        busy,
        pid_file,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?,
        args: &args,
    };
    let mut sizes = Vec::new();
    let mut failure = None;
    for &n in &args.read_scale_ratings {
        let tag = n.to_string();
        match measure_size(&ctx, n, &run_id).await {
            Ok(r) => sizes.push(r),
            Err(e) => {
                progress(&tag, format!("failed: {e:#}"));
                failure = Some(e.context(format!("read scale at {n} ratings")));
                break;
            }
        }
        write(&ctx, &run_id, &started_at, &load_at_start, &sizes, started)?;
    }
    let report = write(&ctx, &run_id, &started_at, &load_at_start, &sizes, started)?;
    println!("{}", markdown(&report));
    println!(
        "results: {}/results.json, table.md (for docs/benchmarks.md, \"Reads at scale\")",
        dir.display()
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn write(
    ctx: &Ctx,
    run_id: &str,
    started_at: &chrono::DateTime<chrono::Utc>,
    load_at_start: &str,
    sizes: &[SizeResult],
    started: Instant,
) -> anyhow::Result<ReadReport> {
    let report = ReadReport {
        run_id: run_id.to_string(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: report::machine(load_at_start.to_string()),
        method: method(ctx),
        lines: lines(sizes),
        sizes: sizes.to_vec(),
        total_seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        ctx.dir.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(ctx.dir.join("table.md"), markdown(&report))?;
    Ok(report)
}

fn method(ctx: &Ctx) -> Vec<String> {
    vec![
        format!(
            "history: N ratings and N interactions over {} days ending now, written straight into the raw tables \
             (no Kafka coordinates), teams of {} (busy team: {}), rollups rebuilt from the raw rows day by day",
            ctx.args.read_scale_days,
            ctx.args.ownership_dir.display(),
            ctx.busy
        ),
        format!(
            "API: `feedback board` child process, refresh {API_REFRESH_MS} ms (its numbers are fresh for one refresh and \
             served while read again up to 10), alerts off; {} call(s) per row after one warm-up, wall time of the HTTP \
             call (body read). \"read before answering\" rows: the endpoints called in turn, {API_SPACING_MS} ms apart, so \
             each finds its numbers older than the stale limit and waits for the query set (the cold path: nobody looked \
             for a while); \"served while read again\" rows: one endpoint called every {SERVED_SPACING_MS} ms (a page looked \
             at again). \"queried\" counts calls during which the board ran ClickHouse queries",
            ctx.args.read_scale_calls
        ),
        format!(
            "board reads: the board's query sets (feedback_clickhouse::queries::board) run as the board runs them, \
             every team at once, {} sequential run(s) after one warm-up",
            ctx.args.read_scale_calls
        ),
        format!(
            "panels: every ClickHouse query of the dashboards (variables: team = {}, period = the range, grain = hour; \
             macros as tests/dashboards_test.py), {} run(s) after one warm-up, whole answer read",
            ctx.busy, ctx.args.read_scale_panel_runs
        ),
        format!(
            "live: `feedback board` with the production refresh ({LIVE_REFRESH_MS} ms), alerts off, the index and every \
             team's page open over server-sent events for {} s; ClickHouse CPU from /proc/<pid>/stat of the server",
            ctx.args.read_scale_live_secs
        ),
    ]
}

async fn measure_size(ctx: &Ctx<'_>, n: u64, run_id: &str) -> anyhow::Result<SizeResult> {
    let tag = n.to_string();
    let database = format!(
        "fbread_{n}_{}",
        run_id.trim_start_matches(|c: char| !c.is_ascii_digit())
    );
    let mut common = ctx.args.common.clone();
    common.clickhouse_database = database.clone();
    let ch = common.clickhouse()?;
    progress(&tag, format!("scratch database {database}"));
    bench_sql::drop_database(&ch).await?;
    ch.migrate()
        .await
        .context("migrating the scratch database")?;
    let result = fill_and_measure(ctx, &ch, &common, n, &tag).await;
    if ctx.args.keep {
        progress(&tag, format!("kept database {database} (--keep)"));
    } else if let Err(e) = bench_sql::drop_database(&ch).await {
        eprintln!("warning: cannot drop {database}: {e}");
    }
    let mut r = result?;
    r.database = database;
    Ok(r)
}

async fn fill_and_measure(
    ctx: &Ctx<'_>,
    ch: &Ch,
    common: &feedback_runtime::Common,
    n: u64,
    tag: &str,
) -> anyhow::Result<SizeResult> {
    let days = ctx.args.read_scale_days;
    let now = u32::try_from(chrono::Utc::now().timestamp()).context("clock")?;
    let history = History {
        total: n,
        from: now - days * DAY,
        span: days * DAY,
        team_slots: slots(&ctx.teams, &ctx.busy),
    };
    let chunk = ctx.args.read_scale_chunk.max(1000);
    let fill_started = Instant::now();
    for table in [RawTable::Ratings, RawTable::Interactions] {
        let started = Instant::now();
        let mut done = 0;
        while done < n {
            let count = chunk.min(n - done);
            bench_sql::fill(ch, table, &history, done, count)
                .await
                .with_context(|| format!("writing {} rows {done}..", table.name()))?;
            done += count;
            progress(
                tag,
                format!(
                    "{} {done}/{n} ({:.0}%), {:.1} s, about {:.0} s left",
                    table.name(),
                    100.0 * done as f64 / n as f64,
                    started.elapsed().as_secs_f64(),
                    secs_left(started, done, n)
                ),
            );
        }
    }
    let fill_seconds = fill_started.elapsed().as_secs_f64();

    // Rollups: every day of the history, as `feedback rollups rebuild` does.
    let first = history.from - history.from % DAY;
    let end = (now / DAY + 1) * DAY;
    let total_days = (end - first) / DAY;
    let rebuild_started = Instant::now();
    let run = format!("readscale{}", feedback_runtime::now_ms());
    for (i, day) in (first..end).step_by(DAY as usize).enumerate() {
        let r = ch
            .rebuild_day(day, &run)
            .await
            .with_context(|| format!("rebuilding the rollups of day {day}"))?;
        let done = i as u64 + 1;
        progress(
            tag,
            format!(
                "rollups day {done}/{total_days}: {} events, {} rows; {:.1} s, about {:.0} s left",
                r.events,
                r.corrections,
                rebuild_started.elapsed().as_secs_f64(),
                secs_left(rebuild_started, done, u64::from(total_days))
            ),
        );
    }
    let rebuild_seconds = rebuild_started.elapsed().as_secs_f64();
    let c = ch.rollup_coverage().await?;
    let coverage = Coverage {
        raw_ratings: c.raw_ratings,
        raw_interactions: c.raw_interactions,
        rolled_ratings: c.rolled_ratings,
        rolled_interactions: c.rolled_interactions,
    };
    progress(
        tag,
        format!(
            "raw {} ratings, {} interactions; rollups count {} ratings, {} interactions",
            c.raw_ratings, c.raw_interactions, c.rolled_ratings, c.rolled_interactions
        ),
    );
    if c.raw_ratings != n
        || c.raw_interactions != n
        || c.rolled_ratings != n as i64
        || c.rolled_interactions != n as i64
    {
        eprintln!("warning: the scratch database does not hold exactly {n} of each (see above)");
    }

    // Let background merges of the fill settle: they would count as the pages' CPU.
    let wait_started = Instant::now();
    let mut merges = bench_sql::merges_running(ch).await?;
    while merges > 0 && wait_started.elapsed().as_secs() < ctx.args.read_scale_merge_wait_secs {
        tokio::time::sleep(Duration::from_secs(2)).await;
        merges = bench_sql::merges_running(ch).await?;
    }
    progress(
        tag,
        format!(
            "{merges} background merge(s) running after {:.0} s of waiting",
            wait_started.elapsed().as_secs_f64()
        ),
    );

    let mut figures = Vec::new();
    api(ctx, common, tag, &mut figures).await?;
    reads(ctx, ch, tag, &mut figures).await?;
    panels(ctx, ch, tag, now, &mut figures).await?;
    let live = live(ctx, common, tag).await?;
    Ok(SizeResult {
        ratings: n,
        interactions: n,
        days,
        database: String::new(),
        fill_seconds,
        rebuild_seconds,
        rebuilt_days: total_days,
        coverage,
        merges_at_start: merges,
        figures,
        live,
    })
}

/// A `feedback board` child on a free loopback port against the scratch database.
async fn board(
    ctx: &Ctx<'_>,
    common: &feedback_runtime::Common,
    name: &str,
    refresh_ms: u64,
) -> anyhow::Result<(Proc, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let env: Vec<(String, String)> = [
        ("FEEDBACK_CLICKHOUSE_URL", common.clickhouse_url.clone()),
        (
            "FEEDBACK_CLICKHOUSE_DATABASE",
            common.clickhouse_database.clone(),
        ),
        ("FEEDBACK_CLICKHOUSE_USER", common.clickhouse_user.clone()),
        (
            "FEEDBACK_CLICKHOUSE_PASSWORD",
            common.clickhouse_password.clone(),
        ),
        ("FEEDBACK_BOARD_LISTEN", addr.clone()),
        (
            "FEEDBACK_OWNERSHIP_DIR",
            ctx.args.ownership_dir.display().to_string(),
        ),
        ("FEEDBACK_BOARD_REFRESH_MS", refresh_ms.to_string()),
        ("FEEDBACK_BOARD_ALERT_INTERVAL_MS", "0".into()),
        ("FEEDBACK_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut p = Proc::spawn(name, &ctx.exe, &["board"], &env, &ctx.dir)?;
    let base = format!("http://{addr}");
    let started = Instant::now();
    loop {
        p.poll(&ctx.dir)?;
        if let Ok(r) = ctx.http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return Ok((p, base));
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the board did not answer /healthz within 30 s; see {}",
            ctx.dir.join(format!("{name}.log")).display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the timed calls of one API row gave.
#[derive(Default)]
struct Tally {
    times: Vec<f64>,
    errors: usize,
    queried: usize,
    last_error: String,
}

impl Tally {
    /// One timed call: its outcome, its time, and the board's query count around it.
    fn add(&mut self, r: Result<(), String>, ms: f64, before: Option<f64>, after: Option<f64>) {
        match r {
            Ok(()) => self.times.push(ms),
            Err(e) => {
                self.errors += 1;
                self.last_error = e;
            }
        }
        if let (Some(b), Some(a)) = (before, after) {
            if a > b {
                self.queried += 1;
            }
        }
    }

    fn figure(self, id: String, note: String) -> Figure {
        let note = if self.errors > 0 {
            format!("{note}; last error: {}", self.last_error)
        } else {
            note
        };
        figure(id, self.times, self.errors, Some(self.queried), note)
    }
}

/// `GET url`, the whole body read: `Err` with the status and the start of the body (or the
/// transport error) unless it succeeded; and its wall time in ms.
async fn timed_get(ctx: &Ctx<'_>, url: &str) -> (Result<(), String>, f64) {
    let t = Instant::now();
    let r = match ctx.http.get(url).send().await {
        Ok(r) => {
            let status = r.status();
            match (status.is_success(), r.bytes().await) {
                (true, Ok(_)) => Ok(()),
                (_, b) => Err(format!(
                    "HTTP {status}: {}",
                    b.map(|b| String::from_utf8_lossy(&b).chars().take(200).collect())
                        .unwrap_or_else(|e| e.to_string())
                )),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    (r, t.elapsed().as_secs_f64() * 1000.0)
}

/// The board's count of ClickHouse queries so far.
async fn queries_run(ctx: &Ctx<'_>, base: &str) -> Option<f64> {
    let text = ctx
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("feedback_board_query_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
}

async fn api(
    ctx: &Ctx<'_>,
    common: &feedback_runtime::Common,
    tag: &str,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let (board, base) = board(ctx, common, &format!("board-api-{tag}"), API_REFRESH_MS).await?;
    let busy = &ctx.busy;
    let mut calls: Vec<(String, String)> = Vec::new();
    for w in ["1h", "24h", "7d"] {
        calls.push((format!("api_index_{w}"), format!("/api/teams?window={w}")));
    }
    for w in ["1h", "24h", "7d"] {
        calls.push((
            format!("api_team_{w}"),
            format!("/api/teams/{busy}?window={w}"),
        ));
    }
    calls.push(("api_comments".into(), format!("/api/teams/{busy}/comments")));
    let rounds = ctx.args.read_scale_calls.max(1);
    let mut cold_rows: Vec<Tally> = calls.iter().map(|_| Tally::default()).collect();
    progress(
        tag,
        format!(
            "API: {} calls of {} endpoints on {base}",
            rounds + 1,
            calls.len()
        ),
    );
    for round in 0..=rounds {
        for (k, (_, path)) in calls.iter().enumerate() {
            let before = queries_run(ctx, &base).await;
            let (r, ms) = timed_get(ctx, &format!("{base}{path}")).await;
            let after = queries_run(ctx, &base).await;
            if round > 0 {
                cold_rows[k].add(r, ms, before, after);
            }
            tokio::time::sleep(Duration::from_millis(API_SPACING_MS)).await;
        }
    }
    // The same calls repeated every two refreshes, one endpoint at a time, as a page that
    // is looked at again: each finds its numbers older than one refresh but younger than
    // the stale limit, so it is served the last ones while they are read again.
    let mut again_rows: Vec<Tally> = calls.iter().map(|_| Tally::default()).collect();
    for (k, (_, path)) in calls.iter().enumerate() {
        for round in 0..=rounds {
            let before = queries_run(ctx, &base).await;
            let (r, ms) = timed_get(ctx, &format!("{base}{path}")).await;
            tokio::time::sleep(Duration::from_millis(SERVED_SPACING_MS)).await;
            let after = queries_run(ctx, &base).await;
            if round > 0 {
                again_rows[k].add(r, ms, before, after);
            }
        }
    }
    let _ = board.stop();
    let n = calls.len();
    let cold = format!(
        "looked at again after {:.1} s: read before answering",
        (n as u64 * API_SPACING_MS) as f64 / 1000.0
    );
    let again = format!("looked at again every {SERVED_SPACING_MS} ms: served while read again");
    for (((id, path), a), c) in calls.into_iter().zip(again_rows).zip(cold_rows) {
        for (id, t, what) in [(format!("{id}_again"), a, &again), (id, c, &cold)] {
            let (queried, errors) = (t.queried, t.errors);
            let f = t.figure(id.clone(), format!("GET {path}, {what}"));
            progress(
                tag,
                format!(
                    "{id}: p50 {} ms, p95 {} ms, max {} ms ({queried} of {rounds} calls queried ClickHouse, {errors} errors)",
                    ms(f.p50),
                    ms(f.p95),
                    ms(f.max),
                ),
            );
            figures.push(f);
        }
    }
    Ok(())
}

/// The board's query sets themselves, run as the board runs them (concurrently, every team
/// at once) against the scratch database: how long a fresh snapshot takes, so how much older
/// than one refresh the numbers a page shows can be. The API calls above are served while
/// these run again in the background ([`feedback_board::fresh`]).
async fn reads(ctx: &Ctx<'_>, ch: &Ch, tag: &str, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    use feedback_clickhouse::queries::board as b;
    use feedback_clickhouse::Window;
    let rounds = ctx.args.read_scale_calls.max(1);
    let mut sets: Vec<(String, String, Option<Window>)> = Vec::new();
    for w in [Window::Hour, Window::Day, Window::Week] {
        sets.push((
            format!("read_index_{}", w.name()),
            format!("index numbers, {}: windows, trend, health", w.name()),
            Some(w),
        ));
        sets.push((
            format!("read_breakdown_{}", w.name()),
            format!("team pages' breakdowns, {}", w.name()),
            Some(w),
        ));
    }
    sets.push((
        "read_comments".into(),
        "latest comments of every team".into(),
        None,
    ));
    progress(
        tag,
        format!(
            "board reads: {} runs of {} query sets",
            rounds + 1,
            sets.len()
        ),
    );
    for (id, label, window) in sets {
        let mut times = Vec::new();
        let mut errors = 0;
        let mut last_error = String::new();
        for round in 0..=rounds {
            let t = Instant::now();
            let r: Result<(), feedback_clickhouse::Error> = match window {
                Some(w) if id.starts_with("read_index") => tokio::try_join!(
                    b::windows(ch, w, None),
                    b::trend(ch, w, None),
                    b::health(ch)
                )
                .map(|_| ()),
                Some(w) => b::breakdown(ch, None, w).await.map(|_| ()),
                None => b::comments(ch, None, DEFAULT_COMMENTS).await.map(|_| ()),
            };
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if round > 0 {
                match r {
                    Ok(()) => times.push(ms),
                    Err(e) => {
                        errors += 1;
                        last_error = e.to_string();
                    }
                }
            }
        }
        let f = figure(
            id.clone(),
            times,
            errors,
            None,
            if errors > 0 {
                format!("{label}; last error: {last_error}")
            } else {
                label
            },
        );
        progress(
            tag,
            format!(
                "{id}: p50 {} ms, p95 {} ms, max {} ms",
                ms(f.p50),
                ms(f.p95),
                ms(f.max)
            ),
        );
        figures.push(f);
    }
    Ok(())
}

/// `(id, label, raw SQL)` of every ClickHouse query of the dashboards: template variables,
/// then panel targets (as tests/dashboards_test.py finds them).
fn dashboard_queries(dir: &Path) -> anyhow::Result<Vec<(String, String, String)>> {
    const CH_UID: &str = "feedback-clickhouse";
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the dashboards in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f)?)
            .with_context(|| format!("parsing {}", f.display()))?;
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let title = d["title"].as_str().unwrap_or(&stem).to_string();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut push = |label: String, sql: &str| {
            let k = seen.entry(label.clone()).or_default();
            *k += 1;
            let label = if *k > 1 {
                format!("{label} ({k})")
            } else {
                label
            };
            let slug: String = label
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            out.push((
                format!("panel_{stem}_{slug}"),
                format!("{title} / {label}"),
                sql.to_string(),
            ));
        };
        if let Some(vars) = d["templating"]["list"].as_array() {
            for v in vars {
                if v["type"] == "query" && v["datasource"]["uid"] == CH_UID {
                    if let Some(q) = v["query"].as_str() {
                        push(format!("var {}", v["name"].as_str().unwrap_or("?")), q);
                    }
                }
            }
        }
        if let Some(panels) = d["panels"].as_array() {
            for p in panels {
                for t in p["targets"].as_array().into_iter().flatten() {
                    let ds = if t["datasource"].is_object() {
                        &t["datasource"]
                    } else {
                        &p["datasource"]
                    };
                    if ds["uid"] == CH_UID {
                        if let Some(q) = t["rawSql"].as_str() {
                            push(p["title"].as_str().unwrap_or("?").to_string(), q);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

async fn panels(
    ctx: &Ctx<'_>,
    ch: &Ch,
    tag: &str,
    now: u32,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let queries = dashboard_queries(&ctx.args.dashboards_dir)?;
    let runs = ctx.args.read_scale_panel_runs.max(1);
    progress(
        tag,
        format!(
            "panels: {} queries × 2 ranges × {} runs",
            queries.len(),
            runs + 1
        ),
    );
    for (range, secs) in [("24h", 86_400i64), ("7d", 7 * 86_400)] {
        let to = i64::from(now);
        let vars = [
            ("team", ctx.busy.as_str()),
            ("period", range),
            ("grain", "hour"),
        ];
        for (id, label, raw) in &queries {
            let id = format!("{id}_{range}");
            let sql = match bench_sql::grafana_sql(raw, &vars, to - secs, to, (secs / 1440).max(1))
            {
                Ok(s) => s,
                Err(e) => {
                    figures.push(Figure {
                        id,
                        note: format!("{label}: cannot expand: {e}"),
                        ..Figure::default()
                    });
                    continue;
                }
            };
            let mut times = Vec::new();
            let mut errors = 0;
            let mut last = String::new();
            for run in 0..=runs {
                let t = Instant::now();
                match bench_sql::run_panel(ch, &sql).await {
                    Ok(_) if run > 0 => times.push(t.elapsed().as_secs_f64() * 1000.0),
                    Ok(_) => {}
                    Err(e) => {
                        errors += 1;
                        last = e.to_string();
                    }
                }
            }
            let f = figure(
                id,
                times,
                errors,
                None,
                if errors > 0 {
                    format!("{label}, last {range}; error: {last}")
                } else {
                    format!("{label}, last {range}")
                },
            );
            progress(
                tag,
                format!(
                    "{label}, last {range}: p50 {} ms, p95 {} ms{}",
                    ms(f.p50),
                    ms(f.p95),
                    if errors > 0 {
                        format!(", {errors} errors: {last}")
                    } else {
                        String::new()
                    }
                ),
            );
            figures.push(f);
        }
    }
    Ok(())
}

/// Reads one server-sent-event stream until `until`: when the first `snapshot` arrived,
/// how many snapshots and problems.
async fn watch_page(
    http: reqwest::Client,
    url: String,
    path: String,
    until: tokio::time::Instant,
) -> LiveClient {
    let started = Instant::now();
    let mut c = LiveClient {
        path,
        first_snapshot_ms: None,
        snapshots: 0,
        problems: 0,
        error: None,
    };
    let work = async {
        let mut r = http
            .get(&url)
            .header("accept", "text/event-stream")
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(anyhow::anyhow!("HTTP {}", r.status()));
        }
        let mut buf = String::new();
        while let Some(bytes) = r.chunk().await? {
            buf.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = buf.find("\n\n") {
                let ev: String = buf.drain(..end + 2).collect();
                if ev.lines().any(|l| l == "event: snapshot") {
                    c.snapshots += 1;
                    if c.first_snapshot_ms.is_none() {
                        c.first_snapshot_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                    }
                } else if ev.lines().any(|l| l == "event: problem") {
                    c.problems += 1;
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    match tokio::time::timeout_at(until, work).await {
        Ok(Err(e)) => c.error = Some(format!("{e:#}")),
        Ok(Ok(())) => c.error = Some("the stream ended early".into()),
        Err(_) => {}
    }
    c
}

async fn live(ctx: &Ctx<'_>, common: &feedback_runtime::Common, tag: &str) -> anyhow::Result<Live> {
    let (mut board, base) =
        board(ctx, common, &format!("board-live-{tag}"), LIVE_REFRESH_MS).await?;
    let clickhouse = Server::find(&ctx.pid_file);
    // Idle: the server with no page open, for comparison.
    let idle_secs = 5.0;
    let c0 = clickhouse.cpu();
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let c1 = clickhouse.cpu();
    let idle = c0.zip(c1).map(|(a, b)| (b - a) / idle_secs);
    let secs = ctx.args.read_scale_live_secs.max(1);
    let mut paths = vec!["/events".to_string()];
    paths.extend(ctx.teams.iter().map(|t| format!("/events/team/{t}")));
    progress(
        tag,
        format!("live: {} pages open for {secs} s", paths.len()),
    );
    // No client timeout: the streams stay open for the whole measurement.
    let http = reqwest::Client::builder().build()?;
    let board_pid = board.pid();
    let b0 = procs::sample(board_pid).map(|s| s.0);
    let ch0 = clickhouse.cpu();
    let started = Instant::now();
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = paths
        .iter()
        .map(|p| {
            tokio::spawn(watch_page(
                http.clone(),
                format!("{base}{p}"),
                p.clone(),
                until,
            ))
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ch1 = clickhouse.cpu();
    let b1 = procs::sample(board_pid).map(|s| s.0);
    board.poll(&ctx.dir)?;
    let _ = board.stop();
    let cpu = ch0.zip(ch1).map(|(a, b)| b - a);
    let live = Live {
        seconds: elapsed,
        clickhouse_cpu_seconds: cpu,
        clickhouse_cores: cpu.map(|c| c / elapsed),
        clickhouse_idle_cores: idle,
        board_cores: b0.zip(b1).map(|(a, b)| (b - a) / elapsed),
        clients,
    };
    let got = live
        .clients
        .iter()
        .filter(|c| c.first_snapshot_ms.is_some())
        .count();
    progress(
        tag,
        format!(
            "live: ClickHouse {} core(s) ({} idle), {got}/{} pages got a first snapshot, slowest {} ms",
            cores(live.clickhouse_cores),
            cores(live.clickhouse_idle_cores),
            live.clients.len(),
            ms(slowest_first(&live))
        ),
    );
    Ok(live)
}

fn slowest_first(l: &Live) -> Option<f64> {
    if l.clients.is_empty() || l.clients.iter().any(|c| c.first_snapshot_ms.is_none()) {
        return None;
    }
    l.clients
        .iter()
        .filter_map(|c| c.first_snapshot_ms)
        .max_by(f64::total_cmp)
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

fn cores(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.3}"))
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The verdict of a row: `value` (the largest size's) against `limit`, and the ratio.
fn judge(value: Option<f64>, limit: f64, unit: &str, ratio: Option<f64>) -> (Option<bool>, String) {
    let Some(v) = value else {
        return (None, "not measured".into());
    };
    let mut missed = Vec::new();
    if v > limit {
        missed.push(format!("{} {unit} > {limit} {unit}", ms(Some(v))));
    }
    if let Some(r) = ratio {
        if r > MAX_RATIO {
            missed.push(format!("{r:.1}× > {MAX_RATIO}×"));
        }
    }
    if missed.is_empty() {
        (Some(true), "met".into())
    } else {
        (Some(false), format!("missed: {}", missed.join(", ")))
    }
}

fn ratio(first: Option<f64>, last: Option<f64>, sizes: usize) -> Option<f64> {
    if sizes < 2 {
        return None;
    }
    match (first, last) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    }
}

/// The table's lines from the sizes measured.
pub fn lines(sizes: &[SizeResult]) -> Vec<Line> {
    let mut out = Vec::new();
    let Some(first) = sizes.first() else {
        return out;
    };
    let last = sizes.last().expect("non-empty");
    for f0 in &first.figures {
        let id = &f0.id;
        let group = if id.starts_with("api_") {
            "board API"
        } else if id.starts_with("read_") {
            "board reads"
        } else {
            "Grafana panel"
        };
        let (limit, target) = if group != "Grafana panel" {
            (API_P95_MS, format!("p95 ≤ {API_P95_MS} ms, ≤ {MAX_RATIO}×"))
        } else {
            (
                PANEL_P95_MS,
                format!("p95 ≤ {PANEL_P95_MS} ms, ≤ {MAX_RATIO}×"),
            )
        };
        let cells: Vec<String> = sizes
            .iter()
            .map(|s| match s.figures.iter().find(|f| &f.id == id) {
                Some(f) => {
                    let mut c = format!("{} / {} / {}", ms(f.p50), ms(f.p95), ms(f.max));
                    if f.errors > 0 {
                        c.push_str(&format!(" ({} errors)", f.errors));
                    }
                    if let Some(q) = f.queried {
                        if q < f.samples {
                            c.push_str(&format!(" ({q}/{} queried)", f.samples));
                        }
                    }
                    c
                }
                None => "–".into(),
            })
            .collect();
        let p95_last = last
            .figures
            .iter()
            .find(|f| &f.id == id)
            .and_then(|f| f.p95);
        let r = ratio(f0.p95, p95_last, sizes.len());
        let (met, verdict) = judge(p95_last, limit, "ms", r);
        let name = f0
            .note
            .split("; ")
            .next()
            .unwrap_or(id)
            .trim_start_matches("GET ")
            .to_string();
        out.push(Line {
            id: id.clone(),
            group,
            name,
            cells,
            ratio: r,
            target,
            met,
            verdict,
        });
    }
    let cpu: Vec<Option<f64>> = sizes.iter().map(|s| s.live.clickhouse_cores).collect();
    let r = ratio(cpu[0], *cpu.last().expect("non-empty"), sizes.len());
    let (met, verdict) = judge(*cpu.last().expect("non-empty"), LIVE_CORES, "core", r);
    out.push(Line {
        id: "live_clickhouse_cores".into(),
        group: "live pages",
        name: "ClickHouse CPU, index + every team page live (cores)".into(),
        cells: sizes
            .iter()
            .map(|s| {
                format!(
                    "{} (idle {})",
                    cores(s.live.clickhouse_cores),
                    cores(s.live.clickhouse_idle_cores)
                )
            })
            .collect(),
        ratio: r,
        target: format!("≤ {LIVE_CORES} core, ≤ {MAX_RATIO}×"),
        met,
        verdict,
    });
    out.push(Line {
        id: "live_board_cores".into(),
        group: "live pages",
        name: "board CPU, same pages (cores)".into(),
        cells: sizes.iter().map(|s| cores(s.live.board_cores)).collect(),
        ratio: ratio(
            sizes[0].live.board_cores,
            last.live.board_cores,
            sizes.len(),
        ),
        target: String::new(),
        met: None,
        verdict: String::new(),
    });
    let first_ms: Vec<Option<f64>> = sizes.iter().map(|s| slowest_first(&s.live)).collect();
    let r = ratio(
        first_ms[0],
        *first_ms.last().expect("non-empty"),
        sizes.len(),
    );
    let (met, verdict) = match last
        .live
        .clients
        .iter()
        .find(|c| c.first_snapshot_ms.is_none())
    {
        Some(c) => (
            Some(false),
            format!(
                "missed: {} got no snapshot{}",
                c.path,
                c.error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        ),
        None => judge(
            *first_ms.last().expect("non-empty"),
            FIRST_SNAPSHOT_MS,
            "ms",
            None,
        ),
    };
    out.push(Line {
        id: "live_first_snapshot".into(),
        group: "live pages",
        name: "slowest first snapshot of the pages (ms); pages that got one".into(),
        cells: sizes
            .iter()
            .map(|s| {
                let got = s
                    .live
                    .clients
                    .iter()
                    .filter(|c| c.first_snapshot_ms.is_some())
                    .count();
                format!(
                    "{} ms; {got}/{}",
                    ms(slowest_first(&s.live)),
                    s.live.clients.len()
                )
            })
            .collect(),
        ratio: r,
        target: format!("≤ {FIRST_SNAPSHOT_MS} ms, every page"),
        met,
        verdict,
    });
    out
}

pub fn markdown(r: &ReadReport) -> String {
    let mut s = String::new();
    let sizes: Vec<String> = r
        .sizes
        .iter()
        .map(|z| format!("{} ratings", count(z.ratings)))
        .collect();
    s.push_str(&format!(
        "Reads at scale, run {} ({}), {} CPUs ({}), load {} → {}, {:.0} s in all.\n\n",
        r.run_id,
        r.started_at,
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.load_at_start,
        r.machine.load_at_end,
        r.total_seconds
    ));
    for z in &r.sizes {
        s.push_str(&format!(
            "- {} ratings + {} interactions over {} days: written in {:.0} s, rollups of {} days rebuilt in {:.0} s; \
             raw {} / {}, rollups count {} / {}; {} merge(s) still running at the start of the measurements\n",
            count(z.ratings),
            count(z.interactions),
            z.days,
            z.fill_seconds,
            z.rebuilt_days,
            z.rebuild_seconds,
            z.coverage.raw_ratings,
            z.coverage.raw_interactions,
            z.coverage.rolled_ratings,
            z.coverage.rolled_interactions,
            z.merges_at_start
        ));
    }
    s.push('\n');
    s.push_str("| measurement |");
    for z in &sizes {
        s.push_str(&format!(" {z}: p50 / p95 / max |"));
    }
    s.push_str(" ratio (p95) | target | verdict |\n|---|");
    for _ in &sizes {
        s.push_str("---|");
    }
    s.push_str("---|---|---|\n");
    for l in &r.lines {
        s.push_str(&format!("| {} |", l.name));
        for c in &l.cells {
            s.push_str(&format!(" {c} |"));
        }
        s.push_str(&format!(
            " {} | {} | {} |\n",
            l.ratio.map_or("–".into(), |x| format!("{x:.2}×")),
            l.target,
            l.verdict
        ));
    }
    s.push_str("\nTimes in ms. Method:\n");
    for m in &r.method {
        s.push_str(&format!("- {m}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(n: u64, p95: f64, cores: f64) -> SizeResult {
        let mut s = SizeResult {
            ratings: n,
            ..SizeResult::default()
        };
        s.figures.push(figure(
            "api_index_1h".into(),
            vec![p95 / 2.0, p95],
            0,
            Some(2),
            "GET /api/teams?window=1h".into(),
        ));
        s.live.clickhouse_cores = Some(cores);
        s.live.clients = vec![LiveClient {
            path: "/events".into(),
            first_snapshot_ms: Some(40.0),
            snapshots: 3,
            problems: 0,
            error: None,
        }];
        s
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 95.0), Some(19.0));
        assert_eq!(percentile(&[], 95.0), None);
    }

    #[test]
    fn verdicts_judge_the_largest_size_and_the_ratio() {
        let l = lines(&[size(500_000, 10.0, 0.05), size(50_000_000, 30.0, 0.08)]);
        let api = l.iter().find(|l| l.id == "api_index_1h").unwrap();
        assert_eq!(api.name, "/api/teams?window=1h");
        assert_eq!(api.ratio, Some(3.0));
        assert_eq!(api.met, Some(false));
        assert_eq!(api.verdict, "missed: 3.0× > 2×");
        let cpu = l.iter().find(|l| l.id == "live_clickhouse_cores").unwrap();
        assert_eq!(cpu.met, Some(true));
        let l = lines(&[size(500_000, 90.0, 0.05), size(50_000_000, 120.0, 0.5)]);
        assert_eq!(l[0].verdict, "missed: 120 ms > 100 ms");
        let cpu = l.iter().find(|l| l.id == "live_clickhouse_cores").unwrap();
        assert!(cpu.verdict.starts_with("missed: 0.5 core > 0.25 core"));
        // One size: no ratio, the targets still judged.
        let l = lines(&[size(20_000, 5.0, 0.01)]);
        assert_eq!((l[0].ratio, l[0].met), (None, Some(true)));
    }

    #[test]
    fn the_busy_team_weighs_most() {
        let t = vec!["billing".to_string(), "payments".into(), "unowned".into()];
        assert_eq!(
            slots(&t, "payments"),
            ["billing", "billing", "payments", "payments", "payments", "unowned"]
        );
    }
}
