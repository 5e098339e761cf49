//! Hostile clients against `kumulus up`: half-sent and idle connections
//! are closed, connections past the limit get a JSON 503, a slow client
//! cannot hold up a stop, the HTTP layer's own errors have the JSON body,
//! and failed logins slow the guesser, never the user.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{Kumulus, Options, USERS};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn start(extra: &[(&str, &str)]) -> impl std::future::Future<Output = Kumulus> {
    let env = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Kumulus::start(Options {
        env,
        ..Options::default()
    })
}

fn addr(k: &Kumulus) -> String {
    k.base.trim_start_matches("http://").to_string()
}

/// Whether the server closed `s` (EOF) within `secs`.
fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A raw request; returns the status and the body.
fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test]
async fn half_sent_and_idle_connections_are_closed() {
    let k = start(&[
        ("KUMULUS_API__HEADER_TIMEOUT_SECS", "1"),
        ("KUMULUS_API__IDLE_TIMEOUT_SECS", "2"),
    ])
    .await;
    let a = addr(&k);
    let mut half: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(&a).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    for s in &mut half {
        assert!(closed_within(s, 15), "a half-sent request stayed open");
    }
    // A keep-alive connection that goes quiet after its request.
    let mut s = TcpStream::connect(&a).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(s.read(&mut buf).unwrap() > 0, "an answer first");
    assert!(closed_within(&mut s, 15), "an idle connection stayed open");
    let (status, _) = raw(
        &a,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
}

#[tokio::test]
async fn connections_past_the_limit_get_a_json_503() {
    let k = start(&[
        ("KUMULUS_API__MAX_CONNECTIONS", "10"),
        ("KUMULUS_API__HEADER_TIMEOUT_SECS", "60"),
        ("KUMULUS_API__IDLE_TIMEOUT_SECS", "60"),
    ])
    .await;
    let a = addr(&k);
    let held: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(&a).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = raw(&a, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unavailable");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = raw(
            &a,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slots never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_slow_client_cannot_hold_up_a_stop() {
    let mut k = start(&[("KUMULUS_API__SHUTDOWN_DEADLINE_SECS", "2")]).await;
    let token = k.login("ana").await;
    let mut s = TcpStream::connect(addr(&k)).unwrap();
    // A submit whose body never finishes arriving.
    write!(
        s,
        "POST /api/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"url\":"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    let status = k.stop();
    assert!(status.success(), "{status}");
    // The stop waited for the deadline, not for the client.
    assert!(stopped.elapsed() < Duration::from_secs(25));
    drop(s);
}

#[tokio::test]
async fn the_http_layers_own_errors_have_the_json_body() {
    let k = start(&[]).await;
    let a = addr(&k);
    let cases = [
        (
            "DELETE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
            405,
            "method_not_allowed",
        ),
        (
            format!(
                "GET /api/jobs?x={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "a".repeat(9000)
            ),
            414,
            "uri_too_long",
        ),
        (
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                "b".repeat(40_000)
            ),
            431,
            "headers_too_large",
        ),
    ];
    for (request, want, code) in cases {
        let (status, body) = raw(&a, &request);
        assert_eq!(status, want, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"], code, "{body}");
    }
}

/// Logs in from `from` (a loopback address of its own).
async fn login_from(k: &Kumulus, from: &str, user: &str, password: &str) -> u16 {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    client
        .post(k.url("/auth/token"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn failed_logins_slow_the_guesser_never_the_user() {
    let k = start(&[]).await;
    let (ana, password) = USERS[0];
    let mut refused = 0;
    for _ in 0..200 {
        match login_from(&k, "127.0.0.2", ana, "wrong").await {
            401 => {}
            429 => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        refused > 100,
        "the guesser was not slowed: {refused} refusals"
    );
    // Ana, from her own address, logs in at once.
    assert_eq!(login_from(&k, "127.0.0.3", ana, password).await, 200);
    // Spraying names that do not exist is slowed the same way.
    let mut sprayed = 0;
    for i in 0..100 {
        if login_from(&k, "127.0.0.4", &format!("nobody{i}"), "x").await == 429 {
            sprayed += 1;
        }
    }
    assert!(sprayed > 0, "spraying unknown names was never limited");
    assert_eq!(login_from(&k, "127.0.0.5", ana, password).await, 200);
}
