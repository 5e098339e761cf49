//! The Kumulus REST API (axum on hyper).
//!
//! - [`jobs`] - `/api/jobs` (submit, list, show, cancel)
//! - [`files`] - `/api/jobs/{id}/files` (list, download)
//! - [`seed`] - the seed's routes for existing clients
//! - [`auth`] - bearer tokens and the login routes
//! - [`health`] - `/health`, `/health/load`, `/metrics`
//! - [`reaper`] - stalled jobs queued again (job leases)
//! - [`error`] - the one error type and its HTTP mapping

pub mod auth;
pub mod body;
pub mod error;
pub mod files;
pub mod health;
pub mod idempotency;
pub mod jobs;
pub mod limits;
pub mod login_guard;
pub mod metrics;
pub mod reaper;
pub mod request_id;
pub mod retention;
pub mod seed;
pub mod server;
pub mod webhooks;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use kumulus_core::config::Config;
use kumulus_core::observation::ObservationFeed;
use kumulus_core::ports::{Authenticator, BlobStore, CancelBus, JobQueue, JobStore, StatusBus};
use kumulus_core::submission::Limits;

use error::ApiError;

/// The ports the frontend talks through.
pub struct FrontendPorts {
    pub store: Arc<dyn JobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub status: Arc<dyn StatusBus>,
    pub cancels: Arc<dyn CancelBus>,
    pub blobs: Arc<dyn BlobStore>,
    pub auth: Arc<dyn Authenticator>,
    pub observations: Arc<dyn ObservationFeed>,
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
            metrics: metrics::Metrics::new()?,
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/jobs", post(jobs::create).get(jobs::list))
        .route("/jobs/{id}", get(jobs::show).delete(jobs::delete))
        .route("/jobs/{id}/files", get(files::list))
        .route("/jobs/{id}/files/{*path}", get(files::download))
        .route("/addJob", post(seed::add_job))
        .route("/status", get(seed::status_all))
        .route("/status/{id}", get(seed::status_one))
        .route("/results/{id}/{file}", get(seed::results))
        .route("/deleteJob/{id}", get(seed::delete_job));
    Router::new()
        .nest("/api", api)
        .route("/auth/token", post(auth::token))
        .route("/auth/{user}/{password}", get(auth::seed_login))
        .route("/health", get(health::health))
        .route("/health/load", get(health::load))
        .route("/metrics", get(health::metrics))
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
