//! The Kumulus REST API (axum on hyper).
//!
//! - [`jobs`] - `/api/jobs` (submit, list, show, cancel)
//! - [`files`] - `/api/jobs/{id}/files` (list, download)
//! - [`seed`] - the seed's routes for existing clients
//! - [`auth`] - bearer tokens and the login routes
//! - [`health`] - `/health`, `/health/load`, `/metrics`
//! - [`autoscaler`] - `/api/autoscaler`, the autoscaler's recent decisions
//! - [`ui`] - the web UI at `/` (its files are built into the binary)
//! - [`reaper`] - stalled jobs queued again (job leases)
//! - [`error`] - the one error type and its HTTP mapping

pub mod auth;
pub mod autoscaler;
pub mod body;
pub mod error;
pub mod files;
pub mod health;
pub mod idempotency;
pub mod jobs;
pub mod limits;
pub mod login_guard;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod reaper;
pub mod request_id;
pub mod retention;
pub mod seed;
pub mod server;
pub mod ui;
pub mod webhooks;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use kumulus_core::config::Config;
use kumulus_core::observation::ObservationFeed;
use kumulus_core::ports::{
    Authenticator, BlobStore, CancelBus, Intake, JobQueue, JobStore, LogBus, StatusBus,
};
use kumulus_core::submission::Limits;

use error::ApiError;

/// The ports the frontend talks through.
pub struct FrontendPorts {
    pub store: Arc<dyn JobStore>,
    pub queue: Arc<dyn JobQueue>,
    /// New jobs: the record and the queue entry ([`Intake::accept`]).
    pub intake: Arc<dyn Intake>,
    pub status: Arc<dyn StatusBus>,
    pub cancels: Arc<dyn CancelBus>,
    pub blobs: Arc<dyn BlobStore>,
    pub auth: Arc<dyn Authenticator>,
    pub observations: Arc<dyn ObservationFeed>,
    /// Running jobs' output, from the workers.
    pub logs: Arc<dyn LogBus>,
}

pub struct AppState {
    pub ports: FrontendPorts,
    pub submission_limits: Limits,
    pub body_limit: usize,
    pub limits: limits::RateLimits,
    pub logins: login_guard::LoginGuard,
    pub connections: server::ConnLimits,
    pub body_timeout: std::time::Duration,
    pub idempotency_ttl: std::time::Duration,
    pub webhooks: kumulus_core::config::WebhooksConfig,
    pub live_logs: logs::Relay,
    pub metrics: metrics::Metrics,
}

impl AppState {
    pub fn new(cfg: &Config, ports: FrontendPorts) -> Result<Self, prometheus::Error> {
        Ok(Self {
            ports,
            submission_limits: cfg.limits(),
            body_limit: cfg.api.body_limit_bytes,
            limits: limits::RateLimits::new(cfg.api.rate_per_sec, cfg.api.rate_burst),
            logins: login_guard::LoginGuard::new(login_guard::Budget::default()),
            connections: server::ConnLimits::from_config(&cfg.api),
            body_timeout: std::time::Duration::from_secs(cfg.api.body_timeout_secs),
            idempotency_ttl: std::time::Duration::from_secs(cfg.api.idempotency_ttl_secs),
            webhooks: cfg.webhooks.clone(),
            live_logs: logs::Relay::new(cfg.api.live_logs_buffer_bytes),
            metrics: metrics::Metrics::new(&cfg.kafka.placement)?,
        })
    }
}

/// Every documented route, with its document ([`openapi`]).
pub fn routes() -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    use utoipa_axum::routes;
    let (router, mut doc) =
        utoipa_axum::router::OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
            .routes(routes!(jobs::create, jobs::list))
            .routes(routes!(jobs::show, jobs::delete))
            .routes(routes!(jobs::cancel_only))
            .routes(routes!(files::list))
            .routes(routes!(files::download))
            .routes(routes!(logs::logs))
            .routes(routes!(seed::add_job))
            .routes(routes!(seed::status_all))
            .routes(routes!(seed::status_one))
            .routes(routes!(seed::results))
            .routes(routes!(seed::delete_job))
            .routes(routes!(auth::token))
            .routes(routes!(auth::seed_login))
            .routes(routes!(health::health))
            .routes(routes!(health::load))
            .routes(routes!(health::metrics))
            .routes(routes!(autoscaler::history))
            .split_for_parts();
    openapi::finish(&mut doc);
    (router, doc)
}

pub fn router(state: Arc<AppState>) -> Router {
    let (routes, doc) = routes();
    let page = Arc::new(openapi::page(&doc));
    let doc = Arc::new(openapi::json(&doc));
    routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let page = page.clone();
                async move { axum::response::Html(page.as_ref().clone()) }
            }),
        )
        .merge(ui::routes())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(request_size))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and logs every request by its route template, never its path
/// (the seed's login route carries a password in the path).
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = Instant::now();
    let id = request_id::of(req.headers());
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = request_id::scope(id.clone(), next.run(req).instrument(span)).await;
    if let Some(v) = request_id::header_value(&id) {
        resp.headers_mut().insert(request_id::HEADER, v);
    }
    let status = resp.status();
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    tracing::debug!(%method, %route, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    resp
}

/// Longest request target accepted (414 past it).
const MAX_URI: usize = 8 * 1024;
/// Largest request headers accepted, all together (431 past them).
const MAX_HEADERS: usize = 32 * 1024;

/// Request line and headers within their limits, answered with the JSON
/// error like every other error.
async fn request_size(req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    if req.uri().to_string().len() > MAX_URI {
        return ApiError::UriTooLong(MAX_URI).into_response();
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers > MAX_HEADERS {
        return ApiError::HeadersTooLarge(MAX_HEADERS).into_response();
    }
    next.run(req).await
}

/// Serves the API on `listener` until `shutdown` (see [`server`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    server::raise_fd_limit();
    let limits = state.connections;
    server::serve(listener, router(state), limits, shutdown).await
}
