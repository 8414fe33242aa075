//! `feedback collector`: the HTTP front door. Validates every item, produces a batch only
//! when all of it is valid, and answers 202 only after Kafka acknowledged every event.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use feedback_events::json::{self, FieldError, Limits};
use feedback_kafka::FeedbackProducer;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde_json::{json, Value};

use crate::apikeys::{ApiKeys, AuthError};
use crate::config::Common;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Address to listen on (HTTP API and /metrics).
    #[arg(
        long,
        env = "FEEDBACK_COLLECTOR_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "FEEDBACK_COLLECTOR_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most items in one request.
    #[arg(
        long,
        env = "FEEDBACK_COLLECTOR_MAX_BATCH_ITEMS",
        default_value_t = 1000
    )]
    pub max_batch_items: usize,
    /// How far in the past an event's occurred_at may lie, in seconds (default 30 days).
    #[arg(long, env = "FEEDBACK_COLLECTOR_MAX_PAST_SECS", default_value_t = 30 * 86_400)]
    pub max_past_secs: i64,
    /// How far in the future an event's occurred_at may lie (clock skew), in seconds.
    #[arg(
        long,
        env = "FEEDBACK_COLLECTOR_MAX_FUTURE_SECS",
        default_value_t = 300
    )]
    pub max_future_secs: i64,
    /// File of API keys (`<service> sha256:<hash>` per line, made by `feedback collector
    /// keygen`). Requests must send `Authorization: Bearer <key>`; an event's `service` is
    /// its key's service (filled in when absent, 403 when it names another).
    #[arg(long, env = "FEEDBACK_COLLECTOR_API_KEYS")]
    pub api_keys: Option<std::path::PathBuf>,
    /// Accept requests without API keys (local development only; logged as a warning).
    /// Without it and without --api-keys the collector refuses to start.
    #[arg(
        long,
        env = "FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub allow_anonymous: bool,
    #[command(subcommand)]
    pub command: Option<CollectorCommand>,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum CollectorCommand {
    /// Make a new API key for a service: prints the key once (give it to the service) and
    /// the line to add to the collector's --api-keys file (which stores only its hash).
    Keygen {
        /// The producing service the key belongs to, e.g. checkout.
        #[arg(long)]
        service: String,
    },
}

struct Metrics {
    requests: IntCounterVec,
    events: IntCounterVec,
    produce: HistogramVec,
    auth_failures: IntCounterVec,
    redactions: IntCounterVec,
}

impl Metrics {
    fn new(registry: &Registry) -> anyhow::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "feedback_collector_requests_total",
                "HTTP requests by endpoint and status code",
            ),
            &["endpoint", "status"],
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "feedback_collector_events_total",
                "Events by kind and outcome (accepted, rejected, failed)",
            ),
            &["kind", "outcome"],
        )?;
        let produce = HistogramVec::new(
            HistogramOpts::new(
                "feedback_collector_produce_seconds",
                "Time from a valid request to Kafka's acknowledgement of all its events",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(produce.clone()))?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "feedback_collector_auth_failures_total",
                "Requests refused by API key: missing, malformed, unknown (401) or wrong_service (403)",
            ),
            &["reason"],
        )?;
        let redactions = IntCounterVec::new(
            Opts::new(
                "feedback_collector_redactions_total",
                "Personal data replaced in comments before Kafka, by type (email, phone, card, iban)",
            ),
            &["type"],
        )?;
        for r in ["missing", "malformed", "unknown", "wrong_service"] {
            auth_failures.with_label_values(&[r]);
        }
        for t in ["email", "phone", "card", "iban"] {
            redactions.with_label_values(&[t]);
        }
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(redactions.clone()))?;
        Ok(Metrics {
            requests,
            events,
            produce,
            auth_failures,
            redactions,
        })
    }
}

struct AppState {
    producer: FeedbackProducer,
    /// None: anonymous (local development).
    keys: Option<ApiKeys>,
    limits: Limits,
    max_body_bytes: usize,
    max_batch_items: usize,
    metrics: Metrics,
    registry: Registry,
}

#[derive(Clone, Copy)]
enum Kind {
    Interactions,
    Ratings,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Interactions => "interaction",
            Kind::Ratings => "rating",
        }
    }
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Interactions => "/v1/interactions",
            Kind::Ratings => "/v1/ratings",
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn invalid(errors: Vec<FieldError>, items: usize) -> Response {
    let bad: std::collections::BTreeSet<usize> = errors.iter().map(|e| e.index).collect();
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "error": format!("{} of {items} item(s) are invalid; nothing was accepted. Fix the fields listed in `errors` and send the batch again", bad.len()),
            "errors": errors,
        })),
    )
        .into_response()
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/interactions",
            post(|s, h, b| ingest(s, h, b, Kind::Interactions)),
        )
        .route(
            "/v1/ratings",
            post(|s, h, b| ingest(s, h, b, Kind::Ratings)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(
                |State(s): State<Arc<AppState>>| async move { crate::metrics::render(&s.registry) },
            ),
        )
        .with_state(state)
}

async fn ingest(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Response {
    let resp = handle(&s, &headers, body, kind).await;
    s.metrics
        .requests
        .with_label_values(&[kind.endpoint(), resp.status().as_str()])
        .inc();
    resp
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// How much of an oversized body is read and discarded before answering 413, so that the
/// client sees the answer instead of a connection reset (a lingering close, bounded).
const DRAIN_CAP_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the body up to `limit` bytes; past it, drains (bounded) and reports `TooLarge`.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(None) => break,
            Err(_) if seen > limit => return Err(BodyError::TooLarge),
            Err(_) => {
                return Err(BodyError::Read(format!(
                    "body not received within {}s",
                    DRAIN_DEADLINE.as_secs()
                )))
            }
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_CAP_BYTES {
                return Err(BodyError::TooLarge);
            }
        }
    }
    if seen > limit {
        Err(BodyError::TooLarge)
    } else {
        Ok(buf)
    }
}

/// Validates every item; all valid items, or every error of every item.
fn validate_all<T>(
    items: &[Value],
    f: impl Fn(&Value, usize) -> Result<T, Vec<FieldError>>,
) -> Result<Vec<T>, Vec<FieldError>> {
    let mut ok = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, v) in items.iter().enumerate() {
        match f(v, i) {
            Ok(x) => ok.push(x),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(ok)
    } else {
        Err(errors)
    }
}

async fn handle(s: &AppState, headers: &HeaderMap, body: Body, kind: Kind) -> Response {
    let service = match &s.keys {
        None => None,
        Some(keys) => {
            match keys.authenticate(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
                Ok(svc) => Some(svc.to_string()),
                Err(e) => return unauthorized(s, e),
            }
        }
    };
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be application/json, not {:?}",
                if ctype.is_empty() { "(none)" } else { ctype }
            ),
        );
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body exceeds {} bytes; split it into smaller batches",
                s.max_body_bytes
            ),
        )
    };
    let bytes = match read_body(body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Read(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )
        }
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "malformed JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        }
    };
    let mut items: Vec<Value> = match value {
        Value::Array(a) => a,
        obj @ Value::Object(_) => vec![obj],
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be a JSON object or an array of objects, not {other}"),
            )
        }
    };
    if items.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the batch is empty; send at least one item",
        );
    }
    if items.len() > s.max_batch_items {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the batch has {} items; at most {} are accepted per request",
                items.len(),
                s.max_batch_items
            ),
        );
    }
    if let Some(svc) = &service {
        if let Some(resp) = bind_service(s, &mut items, svc) {
            return resp;
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    let n = items.len();
    let rejected = |errors| {
        s.metrics
            .events
            .with_label_values(&[kind.name(), "rejected"])
            .inc_by(n as u64);
        invalid(errors, n)
    };
    let started = Instant::now();
    let (result, ids) = match kind {
        Kind::Interactions => {
            match validate_all(&items, |v, i| json::interaction(v, i, &s.limits, now))
                .and_then(|ok| pseudonymous(ok, |x| &x.customer_ref))
            {
                Err(errors) => return rejected(errors),
                Ok(ok) => (
                    s.producer.send_interactions(&ok).await,
                    ok.into_iter().map(|x| x.interaction_id).collect::<Vec<_>>(),
                ),
            }
        }
        Kind::Ratings => match validate_all(&items, |v, i| json::rating(v, i, &s.limits, now))
            .and_then(|ok| pseudonymous(ok, |x| &x.customer_ref))
        {
            Err(errors) => return rejected(errors),
            Ok(mut ok) => (
                {
                    // Redacted here to count by type; the producer library redacts again
                    // (a no-op on placeholders) so no caller can skip it.
                    for r in &mut ok {
                        for (t, c) in feedback_kafka::redact_rating(r).by_type() {
                            if c > 0 {
                                s.metrics
                                    .redactions
                                    .with_label_values(&[t])
                                    .inc_by(c.into());
                            }
                        }
                    }
                    s.producer.send_ratings(&ok).await
                },
                ok.into_iter().map(|x| x.rating_id).collect(),
            ),
        },
    };
    s.metrics
        .produce
        .with_label_values(&[kind.name()])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(_) => {
            s.metrics
                .events
                .with_label_values(&[kind.name(), "accepted"])
                .inc_by(n as u64);
            (
                StatusCode::ACCEPTED,
                Json(json!({ "accepted": n, "ids": ids })),
            )
                .into_response()
        }
        Err(e) => {
            s.metrics
                .events
                .with_label_values(&[kind.name(), "failed"])
                .inc_by(n as u64);
            tracing::warn!(error = %e, "produce failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{e}; the batch may be partly stored, send it again (ids are deduplicated downstream)"),
            )
        }
    }
}

fn unauthorized(s: &AppState, e: AuthError) -> Response {
    s.metrics
        .auth_failures
        .with_label_values(&[e.reason()])
        .inc();
    let mut resp = error(StatusCode::UNAUTHORIZED, e.message());
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"feedback-collector\""),
    );
    resp
}

/// The key's service is every item's service: filled in where absent; a request with an
/// item naming another service is refused whole (403), so one service cannot emit as another.
/// Returns the refusal, if any.
fn bind_service(s: &AppState, items: &mut [Value], service: &str) -> Option<Response> {
    for (i, item) in items.iter_mut().enumerate() {
        let Value::Object(obj) = item else { continue };
        match obj.get("service") {
            None | Some(Value::Null) => {
                obj.insert("service".into(), Value::String(service.to_string()));
            }
            Some(Value::String(named)) if named == service => {}
            Some(Value::String(named)) => {
                s.metrics
                    .auth_failures
                    .with_label_values(&["wrong_service"])
                    .inc();
                return Some(error(
                    StatusCode::FORBIDDEN,
                    format!("item {i} names service {named:?}, but this API key belongs to service {service:?}; nothing was accepted. Send each service's events with its own key, or leave `service` out to have it filled in"),
                ));
            }
            // Not a string: validation reports it.
            Some(_) => {}
        }
    }
    None
}

/// `customer_ref` must be a pseudonymous id (a customer number, a UUID), never an e-mail
/// address, phone number, card number or IBAN: such items are refused with a field error.
fn pseudonymous<T>(
    items: Vec<T>,
    customer_ref: impl Fn(&T) -> &String,
) -> Result<Vec<T>, Vec<FieldError>> {
    let errors: Vec<FieldError> = items
        .iter()
        .enumerate()
        .filter_map(|(index, x)| {
            feedback_redact::personal_data_kind(customer_ref(x)).map(|kind| FieldError {
                index,
                field: "customer_ref".into(),
                reason: format!("looks like a {kind} (personal data); send the customer's pseudonymous id (customer number or UUID) instead"),
            })
        })
        .collect();
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

/// `feedback collector keygen --service X`.
pub fn keygen(service: &str) -> anyhow::Result<()> {
    let (key, line) = crate::apikeys::generate(service)?;
    println!(
        "API key for service {service} (shown once; give it to the service as FEEDBACK_API_KEY):"
    );
    println!();
    println!("  {key}");
    println!();
    println!("Add this line to the collector's keys file (--api-keys / FEEDBACK_COLLECTOR_API_KEYS), then restart the collector:");
    println!();
    println!("  {line}");
    Ok(())
}

pub async fn run(
    args: Args,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Some(CollectorCommand::Keygen { service }) = &args.command {
        return keygen(service);
    }
    let keys = match (&args.api_keys, args.allow_anonymous) {
        (Some(path), anon) => {
            let keys = ApiKeys::load(path)?;
            if anon {
                tracing::warn!("--allow-anonymous is ignored: an API keys file is configured, so every request needs a key");
            }
            tracing::info!(keys = keys.len(), file = %path.display(), "API keys loaded");
            Some(keys)
        }
        (None, true) => {
            tracing::warn!("collector accepts requests WITHOUT API keys (--allow-anonymous / FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS): local development only; anyone who can reach it can emit feedback as any service");
            None
        }
        (None, false) => anyhow::bail!(
            "no API keys configured: give the collector a keys file with --api-keys / FEEDBACK_COLLECTOR_API_KEYS (make keys with `feedback collector keygen --service <name>`), or start it with --allow-anonymous / FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS=1 for local development"
        ),
    };
    let registry = Registry::new();
    let metrics = Metrics::new(&registry)?;
    let kafka = args.common.kafka();
    kafka
        .check_credentials(std::time::Duration::from_secs(15))
        .map_err(anyhow::Error::msg)?;
    let producer = FeedbackProducer::new(&kafka, args.common.topics())?;
    let limits = Limits {
        max_past_ms: args.max_past_secs.saturating_mul(1000),
        max_future_ms: args.max_future_secs.saturating_mul(1000),
        ..Limits::default()
    };
    let state = Arc::new(AppState {
        producer: producer.clone(),
        keys,
        limits,
        max_body_bytes: args.max_body_bytes,
        max_batch_items: args.max_batch_items,
        metrics,
        registry,
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {}: {e}; is another collector running? choose another address with --listen", args.listen)
    })?;
    tracing::info!(listen = %args.listen, brokers = %args.common.brokers, "collector ready");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    let _ = producer.flush(std::time::Duration::from_secs(10));
    Ok(())
}
