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
use serde_json::json;
use tracing::Instrument;

use feedback_runtime::apikeys::{ApiKeys, AuthError};
use feedback_runtime::health::Health;
use feedback_runtime::shutdown::Shutdown;
use feedback_runtime::Common;

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
    /// How long a request body may take to arrive, in seconds; slower uploads get 408.
    #[arg(
        long,
        env = "FEEDBACK_COLLECTOR_BODY_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub body_timeout_secs: u64,
    /// How long a client may take to send a request's headers, in seconds; slower
    /// connections are closed (slow-header attacks hold nothing for long).
    #[arg(
        long,
        env = "FEEDBACK_COLLECTOR_HEADER_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub header_timeout_secs: u64,
    /// The longest a request waits for Kafka, in milliseconds: past it (or at once while
    /// the readiness probe finds Kafka away) the answer is 503 with `Retry-After`, and
    /// nothing of the request is acknowledged. Below the 30 s most HTTP clients give up.
    #[arg(
        long,
        env = "FEEDBACK_COLLECTOR_PRODUCE_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub produce_timeout_ms: u64,
    /// Most request-body bytes held at once, over all requests; a request that would pass
    /// it is answered 503 with `Retry-After` at once, so memory stays bounded whatever the
    /// clients send. A request counts its Content-Length (or --max-body-bytes without one).
    #[arg(
        long,
        env = "FEEDBACK_COLLECTOR_MAX_INFLIGHT_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub max_inflight_bytes: usize,
    #[command(subcommand)]
    pub command: Option<CollectorCommand>,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum CollectorCommand {
    /// Make a new API key for a service: prints the key once (give it to the service) and
    /// the line to add to the collector's --api-keys file (which stores only its hash).
    Keygen {
        /// The producing service the key belongs to, e.g. checkout.
        #[arg(long, env = "FEEDBACK_KEYGEN_SERVICE")]
        service: String,
    },
}

struct Metrics {
    requests: IntCounterVec,
    refused: IntCounterVec,
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
        let refused = IntCounterVec::new(
            Opts::new(
                "feedback_collector_refused_total",
                "Requests answered 503 with Retry-After before reaching Kafka: kafka_unavailable (the readiness probe finds Kafka away), overloaded (--max-inflight-bytes reached)",
            ),
            &["reason"],
        )?;
        for r in ["kafka_unavailable", "overloaded"] {
            refused.with_label_values(&[r]);
        }
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(redactions.clone()))?;
        Ok(Metrics {
            requests,
            refused,
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
    body_timeout: std::time::Duration,
    metrics: Metrics,
    registry: Registry,
    health: Health,
    /// Request-body bytes that may still be taken in (`--max-inflight-bytes`).
    inflight: Arc<tokio::sync::Semaphore>,
    max_inflight_bytes: usize,
}

/// The collector's readiness check: Kafka takes interactions and ratings now.
const KAFKA: &str = "kafka";

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

/// 503 with `Retry-After`: send the same request again later.
fn unavailable(message: impl Into<String>) -> Response {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, message);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(feedback_runtime::health::RETRY_AFTER_SECS),
    );
    resp
}

fn router(state: Arc<AppState>) -> Router {
    let health = state.health.router();
    Router::new()
        .route(
            "/v1/interactions",
            post(|s, h, b| ingest(s, h, b, Kind::Interactions)),
        )
        .route(
            "/v1/ratings",
            post(|s, h, b| ingest(s, h, b, Kind::Ratings)),
        )
        .route(
            "/metrics",
            get(|State(s): State<Arc<AppState>>| async move {
                feedback_runtime::metrics::render(&s.registry)
            }),
        )
        .with_state(state.clone())
        .merge(health)
        // Draining: every answer closes its connection, so keep-alive clients reconnect
        // (to another replica, or find this one gone) instead of sending on a connection
        // that is about to close.
        .layer(axum::middleware::map_response(move |mut r: Response| {
            let draining = state.health.is_draining();
            async move {
                if draining {
                    r.headers_mut().insert(
                        header::CONNECTION,
                        header::HeaderValue::from_static("close"),
                    );
                }
                r
            }
        }))
}

async fn ingest(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Response {
    // One span per request; its id is this process's request count, so the log lines of
    // one request (and, at debug level, the ids of its events) can be followed.
    static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let request = REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let span = tracing::info_span!("request", request, endpoint = kind.endpoint());
    let resp = handle(&s, &headers, body, kind).instrument(span).await;
    s.metrics
        .requests
        .with_label_values(&[kind.endpoint(), resp.status().as_str()])
        .inc();
    resp
}

enum BodyError {
    TooLarge,
    /// The body did not arrive within the body timeout.
    Slow {
        received: usize,
    },
    Read(String),
}

/// How much of an oversized body is read and discarded before answering 413, so that the
/// client sees the answer instead of a connection reset (a lingering close, bounded).
const DRAIN_CAP_BYTES: usize = 64 * 1024 * 1024;

/// Reads the body up to `limit` bytes; past it, drains (bounded) and reports `TooLarge`.
/// The whole body must arrive within `timeout` (slow or stalled uploads get `Slow`, and a
/// client that goes away mid-body gets `Read`: neither holds anything but this request).
async fn read_body(
    mut body: Body,
    limit: usize,
    expected: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt;
    // Sized once from the declared length (no doubling reallocations on the way).
    let mut buf = Vec::with_capacity(expected.min(limit));
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(None) => break,
            Err(_) if seen > limit => return Err(BodyError::TooLarge),
            Err(_) => return Err(BodyError::Slow { received: seen }),
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
    // Refused at once, before the body is read: while Kafka is away (the readiness probe
    // says so) and while the bytes in flight are at their bound.
    if let Some(reason) = s.health.failing(KAFKA) {
        s.metrics
            .refused
            .with_label_values(&["kafka_unavailable"])
            .inc();
        return unavailable(format!(
            "Kafka cannot take events now ({reason}); nothing was accepted; send the batch again in {}s",
            feedback_runtime::health::RETRY_AFTER_SECS
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(s.max_body_bytes);
    let need = declared
        .min(s.max_body_bytes)
        .min(s.max_inflight_bytes)
        .max(1);
    let Ok(_held) = s
        .inflight
        .clone()
        .try_acquire_many_owned(u32::try_from(need).unwrap_or(u32::MAX))
    else {
        s.metrics.refused.with_label_values(&["overloaded"]).inc();
        return unavailable(format!(
            "the collector holds its most request bytes in flight ({} bytes, --max-inflight-bytes); nothing was accepted; send the batch again in {}s",
            s.max_inflight_bytes,
            feedback_runtime::health::RETRY_AFTER_SECS
        ));
    };
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body exceeds {} bytes; split it into smaller batches",
                s.max_body_bytes
            ),
        )
    };
    let bytes = match read_body(body, s.max_body_bytes, need, s.body_timeout).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Slow { received }) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}s ({received} bytes received); send the whole body without pausing, or smaller batches",
                    s.body_timeout.as_secs()
                ),
            )
        }
        Err(BodyError::Read(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )
        }
    };
    let batch_kind = match kind {
        Kind::Interactions => json::BatchKind::Interactions,
        Kind::Ratings => json::BatchKind::Ratings,
    };
    let now = chrono::Utc::now().timestamp_millis();
    let batch = match json::parse_batch(
        &bytes,
        batch_kind,
        &s.limits,
        s.max_batch_items,
        now,
        service.as_deref(),
    )
    .and_then(pseudonymous)
    {
        Ok(b) => b,
        Err(r) => {
            if r.status == 403 {
                s.metrics
                    .auth_failures
                    .with_label_values(&["wrong_service"])
                    .inc();
            }
            if r.items > 0 {
                s.metrics
                    .events
                    .with_label_values(&[kind.name(), "rejected"])
                    .inc_by(r.items as u64);
            }
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            return (status, Json(r.body())).into_response();
        }
    };
    let n = batch.len();
    let ids = batch.ids();
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(events = n, ids = %ids.join(","), "request accepted for Kafka");
    }
    let started = Instant::now();
    let result = match batch {
        json::Batch::Interactions(ok) => s.producer.send_interactions(&ok).await,
        json::Batch::Ratings(mut ok) => {
            // Redacted here to count by type; the producer library redacts again (a no-op
            // on placeholders) so no caller can skip it.
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
        }
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
            match e.retry_after() {
                Some(_) => unavailable(format!(
                    "{e}; the batch may be partly stored: send all of it again"
                )),
                None => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{e}; nothing to fix in the request: the collector's Kafka settings or topics need an operator"),
                ),
            }
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
/// `customer_ref` must be a pseudonymous id (a customer number, a UUID), never an e-mail
/// address, phone number, card number or IBAN: such items are refused with a field error.
fn pseudonymous(batch: json::Batch) -> Result<json::Batch, json::Rejection> {
    let refs: Vec<&str> = match &batch {
        json::Batch::Interactions(v) => v.iter().map(|x| x.customer_ref.as_str()).collect(),
        json::Batch::Ratings(v) => v.iter().map(|x| x.customer_ref.as_str()).collect(),
    };
    let errors: Vec<FieldError> = refs
        .iter()
        .enumerate()
        .filter_map(|(index, r)| {
            feedback_redact::personal_data_kind(r).map(|kind| FieldError {
                index,
                field: "customer_ref".into(),
                reason: format!("looks like a {kind} (personal data); send the customer's pseudonymous id (customer number or UUID) instead"),
            })
        })
        .collect();
    if errors.is_empty() {
        return Ok(batch);
    }
    let n = refs.len();
    Err(json::Rejection {
        status: 422,
        error: format!(
            "{} of {n} item(s) are invalid; nothing was accepted. Fix the fields listed in `errors` and send the batch again",
            errors.len()
        ),
        errors,
        items: n,
    })
}

/// `feedback collector keygen --service X`.
pub fn keygen(service: &str) -> anyhow::Result<()> {
    let (key, line) = feedback_runtime::apikeys::generate(service)?;
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

pub async fn run(args: Args, shutdown: Shutdown) -> anyhow::Result<()> {
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
    kafka.check_credentials(std::time::Duration::from_secs(15))?;
    // Kafka gets the bound less 100 ms; the rest is for reading, validating and answering,
    // so the 503 leaves within the bound.
    let producer = FeedbackProducer::with_delivery_timeout(
        &kafka,
        args.common.topics(),
        std::time::Duration::from_millis(args.produce_timeout_ms.saturating_sub(100)),
    )?;
    let health = Health::new("collector", &[KAFKA]);
    health.register(&registry)?;
    let probe = Arc::new(producer.probe());
    health.probe(&shutdown, KAFKA, move || {
        feedback_runtime::health::kafka_probe(probe.clone())
    });
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
        body_timeout: std::time::Duration::from_secs(args.body_timeout_secs.max(1)),
        metrics,
        registry,
        health: health.clone(),
        inflight: Arc::new(tokio::sync::Semaphore::new(args.max_inflight_bytes.max(1))),
        max_inflight_bytes: args.max_inflight_bytes.max(1),
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {}: {e}; is another collector running? choose another address with --listen", args.listen)
    })?;
    tracing::info!(listen = %args.listen, brokers = %args.common.brokers, "collector ready");
    let draining = health.clone();
    serve(
        listener,
        router(state),
        std::time::Duration::from_secs(args.header_timeout_secs.max(1)),
        async move {
            shutdown.requested().await;
            draining.drain();
        },
    )
    .await;
    let _ = producer.flush(PRODUCER_DRAIN);
    Ok(())
}

/// After shutdown began: how long open connections are served on (every answer with
/// `Connection: close`), then how long requests in flight may run on (at least the produce
/// bound), then how long queued events may take to reach Kafka: together within the
/// process's drain deadline ([`feedback_runtime::shutdown::DRAIN_TIMEOUT`]).
const CLOSE_WINDOW: std::time::Duration = std::time::Duration::from_millis(1000);
const REQUESTS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
const PRODUCER_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// `axum::serve`, plus hyper's header-read timeout (which needs a timer that axum::serve
/// does not give hyper): a connection that does not deliver its request headers within
/// `header_timeout` is closed. On shutdown, stops accepting, answers on open connections
/// for [`CLOSE_WINDOW`] (each answer closing its connection), then closes idle ones and
/// lets requests in flight finish (at most [`REQUESTS_DRAIN`]).
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()>,
) {
    use hyper::server::conn::http1::Builder;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1.1 only, as axum::serve served it here (axum's http2 feature is off).
    let mut builder = Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // hyper's read buffer per connection (default about 400 KiB): request headers fit in
        // 64 KiB, and body bytes pass through it, so many connections hold little memory.
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    // Every connection's task, also those not yet handed to hyper (waiting for a first byte).
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // hyper's header timer starts once a request begins: a client that connects and
        // says nothing is closed here.
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                return;
            }
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // New connections are refused from now on (a clean "connection refused", where a load
    // balancer or client tries elsewhere). Open connections are served on for
    // CLOSE_WINDOW, every answer closing its connection, so a keep-alive client gets the
    // answer to the request it is sending instead of a reset; then idle ones are closed
    // and requests in flight finish.
    drop(listener);
    tokio::time::sleep(CLOSE_WINDOW).await;
    connections.close();
    let drained = async {
        graceful.shutdown().await;
        connections.wait().await;
    };
    if tokio::time::timeout(REQUESTS_DRAIN, drained).await.is_err() {
        tracing::warn!(
            "requests still running {} s after shutdown began; stopping anyway",
            REQUESTS_DRAIN.as_secs()
        );
    }
}
