//! Webhook delivery ([`kumulus_core::webhook`]): a callback URL is checked
//! at submission (its name resolved: every address must be public unless
//! `webhooks.allow_private`), and once the job ends one frontend (the one
//! holding the reaper's lead) POSTs the record there, signed, connecting
//! only to the addresses it checked again just before, with no redirects;
//! failed tries are retried with a growing pause for
//! `webhooks.retry_for_secs`. Delivery is at least once: a receiver tells
//! a repeat by its `webhook-id`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use kumulus_core::job::JobRecord;
use kumulus_core::ports::{Leadership, PortResult};
use kumulus_core::webhook::{self, Delivery, DeliveryState};

use crate::error::ApiError;
use crate::AppState;

/// Deliveries tried per round.
const BATCH: usize = 50;
const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// Checks a submission's callback URL; the delivery to put on its record.
pub async fn accept(state: &AppState, url: &str) -> Result<Delivery, ApiError> {
    let invalid = |m: String| ApiError::Invalid(format!("callback_url: {m}"));
    if state.webhooks.secret.as_ref().is_none_or(|s| s.is_empty()) {
        return Err(invalid(
            "webhooks are off on this server (webhooks.secret is not set)".into(),
        ));
    }
    let rules = state.webhooks.rules();
    let (host, port) = webhook::check_url(url, &rules).map_err(invalid)?;
    resolve(&host, port, rules.allow_private)
        .await
        .map_err(invalid)?;
    Ok(Delivery::new(url))
}

/// The addresses `host` resolves to, all allowed by the rules.
async fn resolve(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(RESOLVE_WITHIN, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| {
                format!(
                    "`{host}` did not resolve within {} s",
                    RESOLVE_WITHIN.as_secs()
                )
            })?
            .map_err(|e| format!("`{host}` does not resolve: {e}"))?
            .collect();
    if addrs.is_empty() {
        return Err(format!("`{host}` resolves to no address"));
    }
    if !allow_private {
        if let Some(a) = addrs.iter().find(|a| !webhook::is_public(a.ip())) {
            return Err(format!(
                "`{host}` resolves to {}, which is not public (webhooks.allow_private is off)",
                a.ip()
            ));
        }
    }
    Ok(addrs)
}

pub struct Deliverer {
    pub state: Arc<AppState>,
    /// The reaper's lead, under the reaper's name for this replica.
    pub leader: Arc<dyn Leadership>,
    pub holder: String,
    pub lead_ttl: Duration,
}

impl Deliverer {
    pub async fn run(self, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.state.webhooks.poll_ms);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.leader.lead(&self.holder, self.lead_ttl).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the webhooks' lead");
                    continue;
                }
            }
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "webhook deliveries failed; retrying");
            }
        }
    }

    /// Tries every delivery that is due; returns how many it tried.
    pub async fn round(&self) -> PortResult<usize> {
        let due = self
            .state
            .ports
            .store
            .webhooks_due(chrono::Utc::now(), BATCH)
            .await?;
        for rec in &due {
            let Some(mut delivery) = rec.webhook.clone() else {
                continue;
            };
            let outcome = self.send(rec, &delivery.url).await;
            let now = chrono::Utc::now();
            delivery.attempts += 1;
            match outcome {
                Ok(status) if (200..300).contains(&status) => {
                    delivery.state = DeliveryState::Delivered;
                    delivery.last_status = Some(status);
                    delivery.last_error = None;
                    delivery.delivered_at = Some(now);
                    delivery.next_at = None;
                }
                failed => {
                    let (status, error, final_) = match failed {
                        Ok(status) => (
                            Some(status),
                            format!("the receiver answered {status}"),
                            false,
                        ),
                        Err(Try::Refused(e)) => (None, e, true),
                        Err(Try::Failed(e)) => (None, e, false),
                    };
                    delivery.last_status = status;
                    delivery.last_error = Some(error);
                    let next = now
                        + chrono::Duration::from_std(webhook::retry_after(delivery.attempts))
                            .unwrap_or_default();
                    let give_up_at = rec.finished_at.unwrap_or(now)
                        + chrono::Duration::seconds(self.state.webhooks.retry_for_secs as i64);
                    if final_ || next > give_up_at {
                        delivery.state = DeliveryState::Failed;
                        delivery.next_at = None;
                    } else {
                        delivery.next_at = Some(next);
                    }
                }
            }
            tracing::info!(
                job_id = %rec.id, attempts = delivery.attempts, state = ?delivery.state,
                status = ?delivery.last_status, "webhook"
            );
            self.state
                .ports
                .store
                .set_webhook(rec.id, &delivery)
                .await?;
        }
        Ok(due.len())
    }

    /// One try: the receiver's status code.
    async fn send(&self, rec: &JobRecord, url: &str) -> Result<u16, Try> {
        let cfg = &self.state.webhooks;
        let rules = cfg.rules();
        let (host, port) = webhook::check_url(url, &rules).map_err(Try::Refused)?;
        let addrs = resolve(&host, port, rules.allow_private)
            .await
            .map_err(Try::Failed)?;
        let secret = cfg
            .secret
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let mut body = rec.clone();
        body.webhook = None;
        let body = serde_json::to_vec(&body).map_err(|e| Try::Failed(e.to_string()))?;
        let id = format!("job_{}", rec.id);
        let ts = chrono::Utc::now().timestamp();
        // Only the addresses just checked: a name cannot resolve to
        // another one between the check and the connection.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .resolve_to_addrs(&host, &addrs)
            .build()
            .map_err(|e| Try::Failed(e.to_string()))?;
        let resp = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                webhook::signature(secret.as_bytes(), &id, ts, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| Try::Failed(format!("could not deliver: {}", without_url(&e))))?;
        Ok(resp.status().as_u16())
    }
}

/// Why a try failed: `Refused` is final (the URL is no longer allowed).
enum Try {
    Refused(String),
    Failed(String),
}

/// reqwest's error without the URL (it may hold a token of the receiver's).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "the callback URL");
    }
    s
}
