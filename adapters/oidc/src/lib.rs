//! OpenID Connect (Keycloak) authentication. Logins use the realm's
//! password grant ("direct access grant") with the configured client; bearer
//! tokens are RS256 JWTs checked against the realm's JWKS: signature,
//! issuer, audience and expiry. Keys are cached and fetched again when a
//! token names a key id not seen before (key rotation), at most every few
//! seconds so that garbage tokens cannot hammer the provider.

use async_trait::async_trait;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

use kumulus_core::config::OidcConfig;
use kumulus_core::ports::{AuthError, Authenticator, IssuedToken, Principal};

/// Fetches of the JWKS caused by unknown key ids are at most this frequent.
const REFETCH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    token_endpoint: String,
    jwks_uri: String,
}

pub struct OidcAuth {
    cfg: OidcConfig,
    http: reqwest::Client,
    discovery: Mutex<Option<Discovery>>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
}

fn unavailable(e: impl std::fmt::Display) -> AuthError {
    AuthError::Unavailable(e.to_string())
}

impl OidcAuth {
    pub fn new(cfg: &OidcConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            cfg: cfg.clone(),
            http,
            discovery: Mutex::new(None),
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
        })
    }

    /// GETs a JSON document from the provider.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, AuthError> {
        self.http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)
    }

    /// The provider's endpoints, from its discovery document (cached).
    async fn discovery(&self) -> Result<Discovery, AuthError> {
        let mut cached = self.discovery.lock().await;
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let d: Discovery = self.get_json(&url).await?;
        if d.issuer != self.cfg.issuer {
            return Err(unavailable(format!(
                "the provider says its issuer is {}, not oidc.issuer {}",
                d.issuer, self.cfg.issuer
            )));
        }
        *cached = Some(d.clone());
        Ok(d)
    }

    /// Fetches the JWKS again, unless it was fetched moments ago. One fetch
    /// at a time: requests that arrive during it wait for its keys (a fresh
    /// frontend's first requests are never refused for a key that is merely
    /// not loaded yet), and only a fetch that succeeded counts as recent.
    async fn refresh_keys(&self) -> Result<(), AuthError> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFETCH_EVERY) {
            return Ok(());
        }
        let d = self.discovery().await?;
        let set: JwkSet = self.get_json(&d.jwks_uri).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, key);
                }
                Err(e) => tracing::debug!(kid, error = %e, "skipping a key of the JWKS"),
            }
        }
        tracing::debug!(keys = keys.len(), "fetched the provider's keys");
        *self.keys.write().await = keys;
        *last = Some(Instant::now());
        Ok(())
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        if let Some(k) = self.keys.read().await.get(kid) {
            return Ok(k.clone());
        }
        // Waits for a fetch in flight, or makes one.
        self.refresh_keys().await?;
        self.keys
            .read()
            .await
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthError::InvalidToken("signed with an unknown key".into()))
    }
}

#[async_trait]
impl Authenticator for OidcAuth {
    async fn login(&self, username: &str, password: &str) -> Result<IssuedToken, AuthError> {
        let d = self.discovery().await?;
        let form = [
            ("grant_type", "password"),
            ("client_id", self.cfg.client_id.as_str()),
            ("client_secret", self.cfg.client_secret.expose()),
            ("username", username),
            ("password", password),
            ("scope", "openid"),
        ];
        let resp = self
            .http
            .post(&d.token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        if status.is_success() {
            let t: TokenResponse = resp.json().await.map_err(unavailable)?;
            return Ok(IssuedToken {
                access_token: t.access_token,
                expires_in: t.expires_in,
            });
        }
        let error = resp
            .json::<TokenError>()
            .await
            .map(|e| e.error)
            .unwrap_or_default();
        match (status.as_u16(), error.as_str()) {
            (_, "invalid_grant") => Err(AuthError::InvalidCredentials),
            (_, "invalid_client") | (_, "unauthorized_client") => Err(unavailable(
                "the identity provider refused Kumulus' client; check oidc.client_id and oidc.client_secret",
            )),
            (400 | 401, _) => Err(AuthError::InvalidCredentials),
            (code, _) => Err(unavailable(format!("the identity provider answered {code}"))),
        }
    }

    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::InvalidToken(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::InvalidToken("the token names no key".into()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.cfg.issuer]);
        validation.set_audience(&[&self.cfg.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let username = data
            .claims
            .get(&self.cfg.username_claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                AuthError::InvalidToken(format!(
                    "the token has no `{}` claim",
                    self.cfg.username_claim
                ))
            })?;
        Ok(Principal {
            username: username.to_string(),
        })
    }
}
