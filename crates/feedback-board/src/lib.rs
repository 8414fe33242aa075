//! `feedback board`: an open web page for every team, live, and alerts that reach the team.
//!
//! Routes (all on one address, default 127.0.0.1:8090):
//! - `/` index of all teams, `/team/{team}` one team (HTML shells; `assets/board/*` embedded
//!   in the binary, no build step, nothing fetched at run time);
//! - `/api/teams`, `/api/teams/{team}`, `/api/teams/{team}/comments` JSON, `?window=1h|24h|7d`;
//! - `/events`, `/events/team/{team}` server-sent events: the same JSON, pushed when it
//!   changes (checked every `--refresh-ms`);
//! - `/healthz` (liveness), `/readyz` (ClickHouse answers), `/metrics`.

pub mod access;
pub mod alerts;
pub mod fresh;
pub mod queries;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use serde_json::{json, Value};

use self::access::{Access, CommentAccess};
use self::alerts::{Decision, Episodes, Rule, Sample, Target};
use self::fresh::{Ages, Fresh};
use self::queries::{BreakdownRow, CommentRow, Queries, TrendRow, WindowRow};
use feedback_clickhouse::Window;
use feedback_events::Metric;
use feedback_runtime::Common;

const INDEX_HTML: &str = include_str!("../assets/board/index.html");
const TEAM_HTML: &str = include_str!("../assets/board/team.html");
const BOARD_JS: &str = include_str!("../assets/board/board.js");
const BOARD_CSS: &str = include_str!("../assets/board/board.css");

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Address of the pages, the JSON API, the event streams and /metrics.
    #[arg(long, env = "FEEDBACK_BOARD_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Directory holding one <team>.toml per team (names, contacts).
    #[arg(
        long,
        env = "FEEDBACK_OWNERSHIP_DIR",
        default_value = "deploy/ownership"
    )]
    pub ownership_dir: PathBuf,
    /// TOML file restricting teams' comments to bearers of their token ([comment_tokens]
    /// team = "sha256:<hex>"). Without it every comment is open.
    #[arg(long, env = "FEEDBACK_BOARD_ACCESS_FILE")]
    pub access_file: Option<PathBuf>,
    /// How often live pages look for new numbers, in milliseconds.
    #[arg(long, env = "FEEDBACK_BOARD_REFRESH_MS", default_value_t = 1000)]
    pub refresh_ms: u64,
    /// Latest comments shown per team.
    #[arg(long, env = "FEEDBACK_BOARD_COMMENTS", default_value_t = 20)]
    pub comments: u64,
    /// Base URL of the board as people reach it (alert messages link to it).
    #[arg(
        long,
        env = "FEEDBACK_BOARD_PUBLIC_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub public_url: String,
    /// Webhook (Slack-compatible) for teams whose contact is a channel (#name or @person);
    /// teams whose contact is an http(s) URL get their alerts posted there directly.
    #[arg(long, env = "FEEDBACK_BOARD_ALERT_WEBHOOK_URL")]
    pub alert_webhook_url: Option<String>,
    /// How often alerts are evaluated, in milliseconds (0: alerts off).
    #[arg(
        long,
        env = "FEEDBACK_BOARD_ALERT_INTERVAL_MS",
        default_value_t = 30000
    )]
    pub alert_interval_ms: u64,
    /// Window compared with the one before it for alerts: 1h, 24h or 7d.
    #[arg(long, env = "FEEDBACK_BOARD_ALERT_WINDOW", default_value = "1h")]
    pub alert_window: String,
    /// No alert unless both windows hold at least this many responses.
    #[arg(long, env = "FEEDBACK_BOARD_ALERT_MIN_RESPONSES", default_value_t = 30)]
    pub alert_min_responses: u64,
    /// One-sided significance level of the drop tests.
    #[arg(long, env = "FEEDBACK_BOARD_ALERT_ALPHA", default_value_t = 0.01)]
    pub alert_alpha: f64,
    /// Smallest CSAT drop that alerts, in percentage points.
    #[arg(
        long,
        env = "FEEDBACK_BOARD_ALERT_MIN_DROP_CSAT",
        default_value_t = 5.0
    )]
    pub alert_min_drop_csat: f64,
    /// Smallest NPS drop that alerts, in points.
    #[arg(
        long,
        env = "FEEDBACK_BOARD_ALERT_MIN_DROP_NPS",
        default_value_t = 10.0
    )]
    pub alert_min_drop_nps: f64,
    /// Smallest CES drop that alerts (score units, 1–7 scale).
    #[arg(long, env = "FEEDBACK_BOARD_ALERT_MIN_DROP_CES", default_value_t = 0.5)]
    pub alert_min_drop_ces: f64,
    /// JSON file keeping the open alert episodes across restarts (without it a restarted
    /// board may alert again for an ongoing drop).
    #[arg(long, env = "FEEDBACK_BOARD_ALERT_STATE_FILE")]
    pub alert_state_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct TeamInfo {
    team: String,
    name: String,
    contact: Option<String>,
}

struct BoardMetrics {
    requests: IntCounterVec,
    alerts: IntCounterVec,
    evaluations: IntCounter,
}

struct AppState {
    q: Queries,
    teams: Vec<TeamInfo>,
    access: Access,
    metrics: BoardMetrics,
    registry: Registry,
    refresh: Duration,
    comments: u64,
    /// Snapshots computed in the last `refresh`: many viewers of one page cost one query set.
    cache: Mutex<HashMap<String, (Instant, Arc<Value>)>>,
    /// The whole board's numbers per window, read at most once per `refresh` (one query
    /// set for every page open, whatever the number of teams watched), served while read
    /// again ([`fresh`]).
    data: Arc<Fresh<Window, BoardData>>,
    /// Every team's breakdown per window, likewise (the team pages show it, the index not).
    breakdowns: Arc<Fresh<Window, Vec<BreakdownRow>>>,
    /// Every team's latest comments, read every [`COMMENT_REFRESHES`] refreshes.
    comments_cache: Arc<Fresh<(), Vec<CommentRow>>>,
}

/// What the index and every team page show for one window, for every team: read in one
/// query set.
struct BoardData {
    windows: Vec<WindowRow>,
    /// Per team, its events in the window's current span (the data health's counts).
    counts: BTreeMap<String, queries::WindowCounts>,
    trend: Vec<TrendRow>,
    health: Vec<queries::TeamHealthRow>,
    /// When these numbers were read (ms since the epoch): a snapshot served while read
    /// again is older than its `generated_at_ms`.
    read_at_ms: i64,
}

/// A value older than its refresh is served while read again, up to this many times its
/// refresh (a page looked at again after a longer pause waits for new numbers).
const STALE_REFRESHES: u32 = 10;

/// Comments are read every this many refreshes (they cost the most, a slice of raw rows, and
/// change least).
const COMMENT_REFRESHES: u32 = 5;

#[derive(Deserialize, Default)]
struct Params {
    window: Option<String>,
    token: Option<String>,
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response()
}

fn window_of(p: &Params) -> Result<Window, String> {
    let w = p.window.as_deref().unwrap_or(Window::Day.name());
    w.parse().map_err(|_| {
        let names: Vec<String> = Window::ALL
            .iter()
            .map(|w| format!("window={}", w.name()))
            .collect();
        let (last, rest) = names.split_last().expect("windows");
        format!("unknown window {w:?}; use {} or {last}", rest.join(", "))
    })
}

fn token_of<'a>(p: &'a Params, headers: &'a HeaderMap) -> Option<&'a str> {
    p.token.as_deref().or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    })
}

fn sample_json(r: Option<&WindowRow>) -> Value {
    match r {
        Some(r) => json!({
            "responses": r.responses, "positive": r.positive, "negative": r.negative,
            "score_sum": r.score_sum, "value": r.value,
        }),
        None => Value::Null,
    }
}

/// `{csat: {now, prev, delta}, ...}` for one team from the window rows.
fn metrics_json(rows: &[&WindowRow], window: Window) -> Value {
    let (now, prev) = (window.current(), window.previous());
    let mut out = serde_json::Map::new();
    for &m in Metric::ALL {
        let n = rows
            .iter()
            .find(|r| r.metric == m && r.window == now)
            .copied();
        let p = rows
            .iter()
            .find(|r| r.metric == m && r.window == prev)
            .copied();
        let delta = match (n, p) {
            (Some(n), Some(p)) => json!(n.value - p.value),
            _ => Value::Null,
        };
        out.insert(
            m.as_str().to_string(),
            json!({ "now": sample_json(n), "prev": sample_json(p), "delta": delta }),
        );
    }
    Value::Object(out)
}

fn health_json(h: &queries::HealthRow, window: Window) -> Value {
    let last = h.ratings_last.max(h.interactions_last);
    json!({
        "counted_in": window.current(),
        "newest_landed_at": if last > 0 { json!(last) } else { Value::Null },
        "freshness_secs": if last > 0 { json!((h.now_s - last).max(0)) } else { Value::Null },
        "orphans": h.orphans,
        "unowned": h.unowned_ratings + h.unowned_interactions,
        "unowned_ratings": h.unowned_ratings,
        "unowned_interactions": h.unowned_interactions,
    })
}

impl AppState {
    fn team(&self, team: &str) -> Option<&TeamInfo> {
        self.teams.iter().find(|t| t.team == team)
    }

    async fn cached<F, Fut>(&self, key: String, f: F) -> anyhow::Result<Arc<Value>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Value>>,
    {
        if let Some((at, v)) = self.cache.lock().expect("cache").get(&key) {
            if at.elapsed() < self.refresh {
                return Ok(v.clone());
            }
        }
        let v = Arc::new(f().await?);
        let mut c = self.cache.lock().expect("cache");
        c.retain(|_, (at, _)| at.elapsed() < self.refresh * 10);
        c.insert(key, (Instant::now(), v.clone()));
        Ok(v)
    }

    /// How long the board's numbers live: fresh for one refresh, then served while read
    /// again for up to [`STALE_REFRESHES`] refreshes.
    fn ages(&self, refreshes: u32) -> Ages {
        Ages {
            max_age: self.refresh * refreshes,
            stale: self.refresh * refreshes * STALE_REFRESHES,
        }
    }

    /// The board's numbers for `window` ([`fresh::Fresh`]: one read at a time, served
    /// while read again).
    async fn data(&self, window: Window) -> anyhow::Result<Arc<BoardData>> {
        let q = self.q.clone();
        self.data
            .get(window, self.ages(1), move || async move {
                let (windows, trend, health) =
                    tokio::try_join!(q.windows(window, None), q.trend(window, None), q.health())?;
                Ok(BoardData {
                    windows: windows.rows,
                    counts: windows.counts,
                    trend,
                    health,
                    read_at_ms: feedback_runtime::now_ms(),
                })
            })
            .await
    }

    /// Every team's breakdown for `window`, like [`AppState::data`].
    async fn breakdowns(&self, window: Window) -> anyhow::Result<Arc<Vec<BreakdownRow>>> {
        let q = self.q.clone();
        self.breakdowns
            .get(window, self.ages(1), move || async move {
                q.breakdown(None, window).await
            })
            .await
    }

    async fn latest_comments(&self) -> anyhow::Result<Arc<Vec<CommentRow>>> {
        let (q, n) = (self.q.clone(), self.comments);
        self.comments_cache
            .get((), self.ages(COMMENT_REFRESHES), move || async move {
                q.comments(None, n).await
            })
            .await
    }

    async fn index_snapshot(&self, window: Window) -> anyhow::Result<Arc<Value>> {
        self.cached(format!("index/{window}"), || async move {
            let d = self.data(window).await?;
            let rows = &d.windows;
            let trend = &d.trend;
            let health = queries::HealthRow::of(
                &d.health,
                &d.counts,
                None,
                feedback_runtime::now_ms() / 1000,
            );
            let mut names: Vec<(String, String)> = self
                .teams
                .iter()
                .map(|t| (t.team.clone(), t.name.clone()))
                .collect();
            for r in rows {
                if !names.iter().any(|(t, _)| t == &r.team) {
                    names.push((r.team.clone(), r.team.clone()));
                }
            }
            let teams: Vec<Value> = names
                .iter()
                .map(|(team, name)| {
                    let mine: Vec<&WindowRow> = rows.iter().filter(|r| &r.team == team).collect();
                    let mut t: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
                    for r in trend.iter().filter(|r| &r.team == team) {
                        t.entry(r.metric.as_str()).or_default().push(json!([
                            r.ts,
                            r.value,
                            r.responses
                        ]));
                    }
                    json!({
                        "team": team, "name": name,
                        "metrics": metrics_json(&mine, window),
                        "trend": t,
                    })
                })
                .collect();
            Ok(json!({
                "window": window.name(), "grain": window.trend_grain(), "span_secs": window.secs(),
                "generated_at_ms": feedback_runtime::now_ms(), "read_at_ms": d.read_at_ms,
                "teams": teams, "health": health_json(&health, window),
            }))
        })
        .await
    }

    /// The team's numbers (open to all) and, when `access` allows, its comments.
    async fn team_snapshot(
        &self,
        team: &TeamInfo,
        window: Window,
        access: CommentAccess,
    ) -> anyhow::Result<Arc<Value>> {
        let key = format!("team/{}/{window}/{}", team.team, access.allowed());
        self.cached(key, || async move {
            // The numbers, then, for viewers allowed to read them, the comments (read on
            // their own cadence; the index never waits for them). After the numbers, not
            // beside them: comments older than their refresh are served while read again, and
            // that read would otherwise compete for the cores with the numbers the viewer
            // waits for (a cold week's page at 50 M ratings: seven statements on two cores).
            let (d, breakdown) = tokio::try_join!(self.data(window), self.breakdowns(window))?;
            let all_comments = if access.allowed() {
                Some(self.latest_comments().await?)
            } else {
                None
            };
            let mine = |t: &String| *t == team.team;
            let rows: Vec<&WindowRow> = d.windows.iter().filter(|r| mine(&r.team)).collect();
            let health = queries::HealthRow::of(
                &d.health,
                &d.counts,
                Some(&team.team),
                feedback_runtime::now_ms() / 1000,
            );
            let comments: Vec<&CommentRow> = all_comments
                .iter()
                .flat_map(|c| c.iter())
                .filter(|c| mine(&c.rating.team))
                .collect();
            let mut t: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
            for r in d.trend.iter().filter(|r| mine(&r.team)) {
                t.entry(r.metric.as_str())
                    .or_default()
                    .push(json!([r.ts, r.value, r.responses]));
            }
            let mut b: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
            for r in breakdown.iter().filter(|r| mine(&r.team)) {
                b.entry(r.dimension.as_str()).or_default().push(json!({
                    "metric": r.metric, "value": r.dim_value,
                    "score": r.value, "responses": r.responses,
                }));
            }
            Ok(json!({
                "team": team.team, "name": team.name, "contact": team.contact,
                "window": window.name(), "grain": window.trend_grain(), "span_secs": window.secs(),
                "generated_at_ms": feedback_runtime::now_ms(), "read_at_ms": d.read_at_ms,
                "metrics": metrics_json(&rows, window),
                "trend": t,
                "breakdown": b,
                "comments": { "access": "open", "items": comments },
                "health": health_json(&health, window),
            }))
        })
        .await
        .map(|v| {
            // The cached value is shared by every allowed viewer; only the access label
            // differs between open and granted.
            if access == CommentAccess::Open {
                return v;
            }
            let mut v = (*v).clone();
            v["comments"]["access"] = json!(access);
            Arc::new(v)
        })
    }
}

fn server_error(e: anyhow::Error) -> Response {
    tracing::warn!("{e:#}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": format!("{e:#}") })),
    )
        .into_response()
}

fn unknown_team(state: &AppState, team: &str) -> Response {
    let known: Vec<&str> = state.teams.iter().map(|t| t.team.as_str()).collect();
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": format!("no team {team:?}; known teams: {} (see /api/teams)", known.join(", "))
        })),
    )
        .into_response()
}

async fn api_index(State(s): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    let window = match window_of(&p) {
        Ok(w) => w,
        Err(m) => return bad_request(m.to_string()),
    };
    match s.index_snapshot(window).await {
        Ok(v) => Json((*v).clone()).into_response(),
        Err(e) => server_error(e),
    }
}

async fn api_team(
    State(s): State<Arc<AppState>>,
    Path(team): Path<String>,
    Query(p): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let window = match window_of(&p) {
        Ok(w) => w,
        Err(m) => return bad_request(m.to_string()),
    };
    let Some(info) = s.team(&team).cloned() else {
        return unknown_team(&s, &team);
    };
    let access = s.access.check(&team, token_of(&p, &headers));
    match s.team_snapshot(&info, window, access).await {
        Ok(v) => Json((*v).clone()).into_response(),
        Err(e) => server_error(e),
    }
}

async fn api_comments(
    State(s): State<Arc<AppState>>,
    Path(team): Path<String>,
    Query(p): Query<Params>,
    headers: HeaderMap,
) -> Response {
    if s.team(&team).is_none() {
        return unknown_team(&s, &team);
    }
    let access = s.access.check(&team, token_of(&p, &headers));
    match access {
        CommentAccess::Restricted => (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": format!("the comments of team {team:?} are restricted to the team; pass its token as ?token=... or Authorization: Bearer ... (the numbers stay open at /api/teams/{team})"),
                "access": access,
            })),
        )
            .into_response(),
        CommentAccess::Refused => (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": format!("the token given is not team {team:?}'s; ask the team for its current token (the numbers stay open at /api/teams/{team})"),
                "access": access,
            })),
        )
            .into_response(),
        _ => match s.latest_comments().await {
            Ok(all) => {
                let items: Vec<&CommentRow> = all.iter().filter(|c| c.rating.team == team).collect();
                Json(json!({ "team": team, "access": access, "items": items })).into_response()
            }
            Err(e) => server_error(e),
        },
    }
}

/// A stream of `snapshot` events: the first at once, then every new one (looked at every
/// `refresh`; each carries its `generated_at_ms`, the page's "live" heartbeat, so only the
/// same cached snapshot seen twice is not sent again). A failed query sends a `problem` event and the stream goes on.
fn live<F, Fut>(
    refresh: Duration,
    mut next: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Arc<Value>>> + Send + 'static,
{
    use futures::StreamExt;
    let stream = futures::stream::unfold((None::<String>, true), move |(last, first)| {
        let fut = next();
        async move {
            if !first {
                tokio::time::sleep(refresh).await;
            }
            let event = match fut.await {
                Ok(v) => {
                    let body = v.to_string();
                    if last.as_deref() == Some(body.as_str()) {
                        return Some((None, (last, false)));
                    }
                    let e = Event::default().event("snapshot").data(&body);
                    return Some((Some(Ok(e)), (Some(body), false)));
                }
                Err(e) => Event::default().event("problem").data(format!("{e:#}")),
            };
            Some((Some(Ok(event)), (last, false)))
        }
    });
    Sse::new(stream.filter_map(|e| async move { e })).keep_alive(KeepAlive::default())
}

async fn events_index(State(s): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    let window = match window_of(&p) {
        Ok(w) => w,
        Err(m) => return bad_request(m.to_string()),
    };
    let refresh = s.refresh;
    live(refresh, move || {
        let s = s.clone();
        async move { s.index_snapshot(window).await }
    })
    .into_response()
}

async fn events_team(
    State(s): State<Arc<AppState>>,
    Path(team): Path<String>,
    Query(p): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let window = match window_of(&p) {
        Ok(w) => w,
        Err(m) => return bad_request(m.to_string()),
    };
    let Some(info) = s.team(&team).cloned() else {
        return unknown_team(&s, &team);
    };
    let access = s.access.check(&team, token_of(&p, &headers));
    let refresh = s.refresh;
    live(refresh, move || {
        let s = s.clone();
        let info = info.clone();
        async move { s.team_snapshot(&info, window, access).await }
    })
    .into_response()
}

/// The page shell with the first snapshot inlined, so numbers show on first paint (the event
/// stream takes over from there).
fn with_initial(html: &str, snapshot: Option<&Value>) -> String {
    let json = snapshot
        .map(|v| v.to_string().replace('<', "\\u003c"))
        .unwrap_or_else(|| "null".into());
    html.replace(
        r#"<script type="application/json" id="initial">null</script>"#,
        &format!(r#"<script type="application/json" id="initial">{json}</script>"#),
    )
}

async fn index_page(State(s): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    let window = match window_of(&p) {
        Ok(w) => w,
        Err(m) => return bad_request(m.to_string()),
    };
    let snap = s.index_snapshot(window).await.ok();
    Html(with_initial(INDEX_HTML, snap.as_deref())).into_response()
}

async fn team_page(
    State(s): State<Arc<AppState>>,
    Path(team): Path<String>,
    Query(p): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let Some(info) = s.team(&team).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><meta charset=utf-8><title>No such team</title><p>There is no team {:?}. <a href=\"/\">All teams</a></p>",
                html_escape(&team)
            )),
        )
            .into_response();
    };
    let window = match window_of(&p) {
        Ok(w) => w,
        Err(m) => return bad_request(m.to_string()),
    };
    let access = s.access.check(&team, token_of(&p, &headers));
    let snap = s.team_snapshot(&info, window, access).await.ok();
    Html(with_initial(TEAM_HTML, snap.as_deref())).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn count_requests(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    s.metrics
        .requests
        .with_label_values(&[&route, resp.status().as_str()])
        .inc();
    resp
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index_page))
        .route("/team/{team}", get(team_page))
        .route(
            "/assets/board.js",
            get(|| async { asset("text/javascript; charset=utf-8", BOARD_JS) }),
        )
        .route(
            "/assets/board.css",
            get(|| async { asset("text/css; charset=utf-8", BOARD_CSS) }),
        )
        .route("/api/teams", get(api_index))
        .route("/api/teams/{team}", get(api_team))
        .route("/api/teams/{team}/comments", get(api_comments))
        .route("/events", get(events_index))
        .route("/events/team/{team}", get(events_team))
        .route(
            "/metrics",
            get(|State(s): State<Arc<AppState>>| async move {
                feedback_runtime::metrics::render(&s.registry)
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

fn register_metrics(registry: &Registry) -> anyhow::Result<(BoardMetrics, Histogram)> {
    let requests = IntCounterVec::new(
        Opts::new(
            "feedback_board_requests_total",
            "Board HTTP requests by route and status",
        ),
        &["route", "status"],
    )?;
    let alerts = IntCounterVec::new(
        Opts::new(
            "feedback_board_alerts_sent_total",
            "Alerts delivered to a team's webhook",
        ),
        &["team"],
    )?;
    let evaluations = IntCounter::new(
        "feedback_board_alert_evaluations_total",
        "Completed alert evaluation rounds",
    )?;
    let seconds = Histogram::with_opts(
        HistogramOpts::new(
            "feedback_board_query_seconds",
            "Time of one ClickHouse query of the board",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(alerts.clone()))?;
    registry.register(Box::new(evaluations.clone()))?;
    registry.register(Box::new(seconds.clone()))?;
    Ok((
        BoardMetrics {
            requests,
            alerts,
            evaluations,
        },
        seconds,
    ))
}

struct AlertConfig {
    rule: Rule,
    window: Window,
    interval: Duration,
    default_webhook: Option<String>,
    public_url: String,
    state_file: Option<PathBuf>,
}

fn save_episodes(cfg: &AlertConfig, episodes: &Episodes) {
    if let Some(p) = &cfg.state_file {
        if let Err(e) = episodes.save(p) {
            tracing::warn!("{e}; open alert episodes will be forgotten on restart");
        }
    }
}

/// One evaluation round over every team and metric.
async fn evaluate_alerts(
    s: &AppState,
    cfg: &AlertConfig,
    episodes: &mut Episodes,
    http: &reqwest::Client,
    warned: &mut std::collections::BTreeSet<String>,
) -> anyhow::Result<()> {
    let rows = s.q.windows(cfg.window, None).await?.rows;
    let squares = s.q.ces_squares(cfg.window).await?;
    let sample = |team: &str, metric: Metric, window: &str| -> Option<Sample> {
        let r = rows
            .iter()
            .find(|r| r.team == team && r.metric == metric && r.window == window)?;
        let mut smp = Sample {
            responses: r.responses,
            positive: r.positive,
            negative: r.negative,
            score_sum: r.score_sum,
            score_sq_sum: 0,
            value: r.value,
        };
        if metric == Metric::Ces {
            let q = squares
                .iter()
                .find(|q| q.team == team && q.window == window)?;
            // The test uses the raw ratings' moments (consistent with each other); the
            // message shows the view's value.
            smp.responses = q.responses;
            smp.score_sum = q.score_sum;
            smp.score_sq_sum = q.score_sq_sum;
        }
        Some(smp)
    };
    for t in &s.teams {
        for &m in Metric::ALL {
            let before = sample(&t.team, m, cfg.window.previous());
            let now = sample(&t.team, m, cfg.window.current());
            match episodes.evaluate(&cfg.rule, &t.team, m, before.as_ref(), now.as_ref()) {
                Decision::Alert(test) => {
                    let (Some(b), Some(n)) = (before, now) else {
                        continue;
                    };
                    let target = match alerts::target(
                        t.contact.as_deref(),
                        cfg.default_webhook.as_deref(),
                    ) {
                        Ok(target) => target,
                        Err(why) => {
                            if warned.insert(t.team.clone()) {
                                tracing::warn!(
                                    "team {} dropped ({m}) but gets no alert: it {why}",
                                    t.team
                                );
                            }
                            continue;
                        }
                    };
                    let page = format!("{}/team/{}", cfg.public_url.trim_end_matches('/'), t.team);
                    let text = alerts::AlertText {
                        team: &t.team,
                        team_name: &t.name,
                        metric: m,
                        window_label: cfg.window.label(),
                        before: &b,
                        now: &n,
                        test: &test,
                        alpha: cfg.rule.alpha,
                        page_url: &page,
                    };
                    let (url, body) = match &target {
                        Target::Url(u) => (u.clone(), alerts::payload(&text, None)),
                        Target::Channel { webhook, channel } => {
                            (webhook.clone(), alerts::payload(&text, Some(channel)))
                        }
                    };
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            episodes.opened(&t.team, m, b.value);
                            save_episodes(cfg, episodes);
                            s.metrics.alerts.with_label_values(&[&t.team]).inc();
                            tracing::info!(team = %t.team, metric = %m, url = %url, "alert sent");
                        }
                        Ok(r) => tracing::warn!(
                            "alert for team {} ({m}) refused by {url}: HTTP {}; will retry next round",
                            t.team,
                            r.status()
                        ),
                        Err(e) => tracing::warn!(
                            "alert for team {} ({m}) could not reach {url}: {e}; will retry next round",
                            t.team
                        ),
                    }
                }
                Decision::Recovered => {
                    tracing::info!(team = %t.team, metric = %m, "recovered: alert episode ended");
                    save_episodes(cfg, episodes);
                }
                Decision::Quiet | Decision::Ongoing => {}
            }
        }
    }
    Ok(())
}

pub async fn run(args: Args, shutdown: feedback_runtime::shutdown::Shutdown) -> anyhow::Result<()> {
    let ownership = feedback_attribution::Ownership::load_dir(&args.ownership_dir)
        .map_err(anyhow::Error::msg)?;
    let mut teams: Vec<TeamInfo> = ownership
        .teams
        .iter()
        .map(|t| TeamInfo {
            team: t.team.clone(),
            name: t.name.clone(),
            contact: t.contact.clone(),
        })
        .collect();
    teams.sort_by(|a, b| a.team.cmp(&b.team));
    let known: Vec<String> = teams.iter().map(|t| t.team.clone()).collect();
    if !known.iter().any(|t| t == "unowned") {
        teams.push(TeamInfo {
            team: "unowned".into(),
            name: "Unowned (no team claims it)".into(),
            contact: None,
        });
    }
    let access = match &args.access_file {
        Some(p) => Access::load(p, &known).map_err(anyhow::Error::msg)?,
        None => Access::default(),
    };
    let alert_window: Window = args.alert_window.parse().map_err(|_| {
        anyhow::anyhow!(
            "--alert-window {:?} is not a window; use {}",
            args.alert_window,
            Window::expected()
        )
    })?;
    if !(args.alert_alpha > 0.0 && args.alert_alpha < 0.5) {
        anyhow::bail!(
            "--alert-alpha {} is out of range; use a significance level between 0 and 0.5 (e.g. 0.01)",
            args.alert_alpha
        );
    }
    let registry = Registry::new();
    let (metrics, seconds) = register_metrics(&registry)?;
    // Every team's alert counter starts at 0, so `increase()` sees the first alert.
    for t in &known {
        metrics.alerts.with_label_values(&[t]);
    }
    // The board reads the same recent rollup ranges on every refresh: ClickHouse's cache of
    // decompressed blocks spares it decompressing them each time (off by default; the
    // server's `uncompressed_cache_size` bounds it). A cold team page at 50 M ratings: p50
    // 118 -> 97 ms (docs/benchmarks.md).
    let ch = args
        .common
        .clickhouse()?
        .with_setting("use_uncompressed_cache", "1");
    // Ready when ClickHouse answers: every page and panel reads it.
    let health = feedback_runtime::health::Health::new("board", &["clickhouse"]);
    health.register(&registry)?;
    let probe_ch = ch.clone();
    health.probe(&shutdown, "clickhouse", move || {
        feedback_runtime::health::clickhouse_probe(probe_ch.clone())
    });
    let state = Arc::new(AppState {
        q: Queries { ch, seconds },
        teams,
        access,
        metrics,
        registry,
        refresh: Duration::from_millis(args.refresh_ms.max(100)),
        comments: args.comments.clamp(1, 500),
        cache: Mutex::new(HashMap::new()),
        data: Arc::default(),
        breakdowns: Arc::default(),
        comments_cache: Arc::default(),
    });

    if args.alert_interval_ms > 0 {
        let cfg = AlertConfig {
            rule: Rule {
                min_responses: args.alert_min_responses,
                alpha: args.alert_alpha,
                min_drop_csat: args.alert_min_drop_csat,
                min_drop_nps: args.alert_min_drop_nps,
                min_drop_ces: args.alert_min_drop_ces,
            },
            window: alert_window,
            interval: Duration::from_millis(args.alert_interval_ms),
            default_webhook: args.alert_webhook_url.clone(),
            public_url: args.public_url.clone(),
            state_file: args.alert_state_file.clone(),
        };
        let mut episodes = match &cfg.state_file {
            Some(p) => Episodes::load(p).map_err(anyhow::Error::msg)?,
            None => Episodes::default(),
        };
        let s = state.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client");
            let mut warned = std::collections::BTreeSet::new();
            let mut ticker = tokio::time::interval(cfg.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match evaluate_alerts(&s, &cfg, &mut episodes, &http, &mut warned).await {
                    Ok(()) => s.metrics.evaluations.inc(),
                    Err(e) => tracing::warn!("alert evaluation skipped: {e:#}"),
                }
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {}: {e}; is another board running? choose another address with --listen (FEEDBACK_BOARD_LISTEN)",
            args.listen
        )
    })?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, "board ready");
    println!("board on http://{local}/");
    // Not a graceful shutdown: live pages hold their event streams open forever.
    let app = router(state).merge(health.router());
    tokio::select! {
        r = axum::serve(listener, app) => r?,
        _ = shutdown.requested() => health.drain(),
    }
    Ok(())
}
