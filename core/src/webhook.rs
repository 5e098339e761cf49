//! Webhooks: where a job's record is POSTed when it ends, and how.
//!
//! - A `callback_url` is `https` (or `http` with `webhooks.allow_http`), to
//!   a host of `webhooks.allow_hosts` (any public host when the list is
//!   empty), never to a loopback, private, link-local or otherwise
//!   non-public address unless `webhooks.allow_private`: checked on the URL
//!   as written ([`check_url`]) and, by the sender, on every address its
//!   name resolves to ([`is_public`]), at submission and at each delivery.
//! - Each delivery is signed as Svix and Standard Webhooks do: headers
//!   `webhook-id` (the same for every try of one job's notice),
//!   `webhook-timestamp` (Unix seconds) and `webhook-signature`
//!   (`v1,<base64 of HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`).
//! - A failed try is retried with a growing pause ([`retry_after`]) until
//!   `webhooks.retry_for_secs` after the job's end; the record shows how it
//!   went ([`Delivery`]).

use std::net::IpAddr;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Where a webhook may go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    pub allow_hosts: Vec<String>,
    pub allow_http: bool,
    pub allow_private: bool,
}

/// How a job's webhook went, on its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    pub url: String,
    pub state: DeliveryState,
    /// Tries made.
    pub attempts: u32,
    /// The next try's time (pending only).
    pub next_at: Option<DateTime<Utc>>,
    /// The receiver's last status code, if it answered.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for the job to end, or for the next try.
    Pending,
    Delivered,
    /// Given up after `webhooks.retry_for_secs`.
    Failed,
}

impl Delivery {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            state: DeliveryState::Pending,
            attempts: 0,
            next_at: None,
            last_status: None,
            last_error: None,
            delivered_at: None,
        }
    }
}

/// The host (an IPv6 address without its brackets) and port of a callback
/// URL the rules allow, or why not. Names are checked again once resolved
/// ([`is_public`]).
pub fn check_url(url: &str, rules: &Rules) -> Result<(String, u16), String> {
    if url.len() > 2048 {
        return Err("is longer than 2048 characters".into());
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("must be an absolute URL (https://host/path)")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" if rules.allow_http => 80,
        "http" => return Err("must be https (webhooks.allow_http is off)".into()),
        other => return Err(format!("scheme `{other}` is not allowed; use https")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("must not carry credentials".into());
    }
    let (host, port) = split_host_port(authority)?;
    let port = port.unwrap_or(default_port);
    if host.is_empty() {
        return Err("has no host".into());
    }
    let host = host.to_ascii_lowercase();
    if !rules.allow_hosts.is_empty()
        && !rules
            .allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host))
    {
        return Err(format!("host `{host}` is not in webhooks.allow_hosts"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !rules.allow_private && !is_public(ip) {
            return Err(format!(
                "address {ip} is not public (webhooks.allow_private is off)"
            ));
        }
    } else if !rules.allow_private && (host == "localhost" || host.ends_with(".localhost")) {
        return Err("`localhost` is not public (webhooks.allow_private is off)".into());
    }
    Ok((host, port))
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let bad_port = || "has a port that is not a number from 1 to 65535".to_string();
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("has an unclosed [")?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((
                host,
                Some(p.parse().ok().filter(|&p| p > 0).ok_or_else(bad_port)?),
            )),
            None if after.is_empty() => Ok((host, None)),
            None => Err("has text after its address".into()),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, p)) => Ok((
            host,
            Some(p.parse().ok().filter(|&p| p > 0).ok_or_else(bad_port)?),
        )),
        None => Ok((authority, None)),
    }
}

/// Whether an address is a public one: not loopback, private (RFC 1918,
/// unique local), link-local, shared (CGNAT), unspecified, multicast,
/// broadcast, documentation or reserved; an IPv4-mapped IPv6 address counts
/// as its IPv4 one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// The `webhook-signature` header for `body` sent as message `id` at
/// `timestamp` (Unix seconds).
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// The pause before try `attempts + 1`: 2 s, doubling, at most 10 min.
pub fn retry_after(attempts: u32) -> std::time::Duration {
    std::time::Duration::from_secs((2u64 << attempts.min(12)).min(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_are_checked_against_the_rules() {
        let strict = Rules::default();
        let lab = Rules {
            allow_hosts: vec!["hooks.example.com".into()],
            allow_http: true,
            allow_private: true,
        };
        for (url, rules, ok) in [
            ("https://hooks.example.com/k", &strict, true),
            ("https://hooks.example.com:8443/k?x=1", &strict, true),
            ("http://hooks.example.com/k", &strict, false),
            ("ftp://hooks.example.com/k", &strict, false),
            ("https://user:pw@hooks.example.com/k", &strict, false),
            ("https://127.0.0.1/k", &strict, false),
            ("https://10.1.2.3/k", &strict, false),
            ("https://169.254.169.254/latest", &strict, false),
            ("https://[::1]:8080/k", &strict, false),
            ("https://[::ffff:127.0.0.1]/k", &strict, false),
            ("https://localhost/k", &strict, false),
            ("https://8.8.8.8/k", &strict, true),
            ("https://hooks.example.com:0/k", &strict, false),
            ("hooks.example.com/k", &strict, false),
            ("http://hooks.example.com/k", &lab, true),
            ("https://other.example.com/k", &lab, false),
        ] {
            assert_eq!(
                check_url(url, rules).is_ok(),
                ok,
                "{url}: {:?}",
                check_url(url, rules)
            );
        }
        assert_eq!(
            check_url("https://Hooks.Example.com:8443/x", &strict).unwrap(),
            ("hooks.example.com".into(), 8443)
        );
        assert_eq!(
            check_url("https://[2606:4700::1111]:8443/x", &strict).unwrap(),
            ("2606:4700::1111".into(), 8443)
        );
    }

    #[test]
    fn only_public_addresses_are_public() {
        for (ip, public) in [
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("127.0.0.1", false),
            ("10.0.0.1", false),
            ("172.16.5.4", false),
            ("192.168.1.1", false),
            ("169.254.1.1", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("2606:4700::1111", true),
            ("::1", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:10.0.0.1", false),
        ] {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_over_id_timestamp_and_body() {
        // RFC 4231, test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let sig = signature(b"Jefe", "what do ya want", 0, b"");
        assert!(sig.starts_with("v1,"));
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let got: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want);
        // The signed text is "{id}.{timestamp}.{body}": a different id,
        // time or body signs differently.
        let base = signature(b"k", "msg_1", 1700000000, b"{}");
        for other in [
            signature(b"k", "msg_2", 1700000000, b"{}"),
            signature(b"k", "msg_1", 1700000001, b"{}"),
            signature(b"k", "msg_1", 1700000000, b"{ }"),
            signature(b"k2", "msg_1", 1700000000, b"{}"),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(base, signature(b"k", "msg_1", 1700000000, b"{}"));
    }

    #[test]
    fn retries_back_off_up_to_ten_minutes() {
        let secs: Vec<u64> = (0..12).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(secs[..4], [2, 4, 8, 16]);
        assert!(secs.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(retry_after(40).as_secs(), 600);
    }
}
