//! Who is calling: the bearer-token extractor (with the per-user rate
//! limit) and the login routes, new and seed.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::Json;
use serde_json::Value;
use std::sync::Arc;

use kumulus_core::ports::Principal;

use crate::error::ApiError;
use crate::openapi::{Credentials, SeedToken, Token};
use crate::server::ClientAddr;
use crate::AppState;
use kumulus_core::ports::AuthError;

/// The authenticated caller of an `/api` route.
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        let principal = state.ports.auth.verify(token).await.inspect_err(|e| {
            // The reason only: never the token.
            if let kumulus_core::ports::AuthError::InvalidToken(reason) = e {
                tracing::info!(%reason, "refused a bearer token");
            }
        })?;
        state.limits.check_user(&principal.username)?;
        Ok(Caller(principal))
    }
}

/// Logs `username` in, within the failed-login budgets of its address
/// ([`crate::login_guard`]): a correct password is never refused because of
/// someone else's failures.
async fn issue(
    state: &AppState,
    from: ClientAddr,
    username: &str,
    password: &str,
) -> Result<(String, u64), ApiError> {
    let now = std::time::Instant::now();
    state
        .logins
        .check(from.0, username, now)
        .map_err(|wait| ApiError::RateLimited {
            retry_after_secs: wait.as_secs().max(1),
        })?;
    match state.ports.auth.login(username, password).await {
        Ok(token) => Ok((token.access_token, token.expires_in)),
        Err(e @ AuthError::InvalidCredentials) => {
            let failures = state.logins.failed(from.0, username, now);
            if failures.is_multiple_of(100) {
                tracing::warn!(failures, "many failed logins for one user name");
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /auth/token` with `{"username","password"}`.
#[utoipa::path(
    post,
    path = "/auth/token",
    operation_id = "getToken",
    tag = "auth",
    summary = "Log in: a bearer token for the `/api` routes",
    description = "Failed logins are limited per address and per user name (429 past them); a correct password is never refused for someone else's failures.",
    request_body(content = Credentials, content_type = "application/json"),
    responses(
        (status = 200, description = "A token", body = Token),
        (status = 401, description = "Wrong user name or password", body = crate::openapi::ErrorBody),
        (status = 422, description = "A field is missing or not text", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many failed logins; see Retry-After", body = crate::openapi::ErrorBody),
        (status = 503, description = "The identity provider is unavailable", body = crate::openapi::ErrorBody)
    )
)]
pub async fn token(
    State(state): State<Arc<AppState>>,
    from: ClientAddr,
    body: axum::body::Body,
) -> Result<Json<Token>, ApiError> {
    let body = crate::body::read_within(body, state.body_limit, state.body_timeout).await?;
    let value = crate::body::json(&body)?;
    let field = |name: &'static str| -> Result<String, ApiError> {
        match value.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                Err(ApiError::Invalid(format!("{name}: is required")))
            }
            Some(_) => Err(ApiError::Invalid(format!("{name}: must be a string"))),
        }
    };
    if !value.is_object() {
        return Err(ApiError::Invalid("body: expected a JSON object".into()));
    }
    let (username, password) = (field("username")?, field("password")?);
    let (access_token, expires_in) = issue(&state, from, &username, &password).await?;
    Ok(Json(Token {
        access_token,
        token_type: "Bearer".into(),
        expires_in,
    }))
}

/// The seed's `GET /auth/{user}/{password}` -> `{"token"}`. The password is
/// in the path: the request log shows route templates, never paths.
#[utoipa::path(
    get,
    path = "/auth/{user}/{password}",
    operation_id = "seedLogin",
    tag = "seed",
    summary = "Log in (the seed's route; prefer POST /auth/token)",
    params(
        ("user" = String, Path, description = "User name"),
        ("password" = String, Path, description = "Password")
    ),
    responses(
        (status = 200, description = "A token", body = SeedToken),
        (status = 401, description = "Wrong user name or password", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many failed logins; see Retry-After", body = crate::openapi::ErrorBody),
        (status = 503, description = "The identity provider is unavailable", body = crate::openapi::ErrorBody)
    )
)]
pub async fn seed_login(
    State(state): State<Arc<AppState>>,
    from: ClientAddr,
    Path((user, password)): Path<(String, String)>,
) -> Result<Json<SeedToken>, ApiError> {
    let (token, _) = issue(&state, from, &user, &password).await?;
    Ok(Json(SeedToken { token }))
}
