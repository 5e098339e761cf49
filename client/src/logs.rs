//! A job's logs as they come (`GET /api/jobs/{id}/logs`, Server-Sent
//! Events): [`crate::Session::logs`].

use serde::Deserialize;

pub use kumulus_core::logs::{LogChunk, LogStream};

use crate::{transport, ClientError, Job, Result};

/// One event of a job's log stream.
#[derive(Debug, Clone)]
pub enum LogEvent {
    /// Output, at its place in its stream.
    Output(LogChunk),
    /// Bytes of `stream` from `from` to `to` were not sent live (the stored
    /// log has them).
    Gap {
        stream: LogStream,
        from: u64,
        to: u64,
    },
    /// The job started over (another attempt): its logs start again.
    Attempt(u32),
    /// The job ended: its record. Nothing follows.
    End(Box<Job>),
}

#[derive(Deserialize)]
struct GapData {
    stream: LogStream,
    from: u64,
    to: u64,
}

#[derive(Deserialize)]
struct AttemptData {
    attempt: u32,
}

/// The events, read as they arrive.
pub struct LogEvents {
    resp: reqwest::Response,
    buf: Vec<u8>,
    done: bool,
}

impl LogEvents {
    pub(crate) fn new(resp: reqwest::Response) -> Self {
        Self {
            resp,
            buf: Vec::new(),
            done: false,
        }
    }

    /// The next event; `None` once the stream is over.
    pub async fn next(&mut self) -> Result<Option<LogEvent>> {
        loop {
            if let Some(end) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..end.0).collect();
                self.buf.drain(..end.1);
                if let Some(event) = parse(&String::from_utf8_lossy(&block))? {
                    return Ok(Some(event));
                }
                continue;
            }
            if self.done {
                return Ok(None);
            }
            match self.resp.chunk().await.map_err(transport)? {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => {
                    self.done = true;
                    // A last event without its blank line still counts.
                    if !self.buf.is_empty() {
                        self.buf.extend_from_slice(b"\n\n");
                    }
                }
            }
        }
    }
}

/// Where the first event ends: its length, and the blank line's.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

fn parse(block: &str) -> Result<Option<LogEvent>> {
    let mut name = "message";
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') {
            continue; // a keep-alive comment
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value,
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return Ok(None);
    }
    let data = data.join("\n");
    let bad = |e: serde_json::Error| ClientError::Decode(format!("a `{name}` event: {e}"));
    Ok(Some(match name {
        "stdout" | "stderr" => LogEvent::Output(serde_json::from_str(&data).map_err(bad)?),
        "gap" => {
            let g: GapData = serde_json::from_str(&data).map_err(bad)?;
            LogEvent::Gap {
                stream: g.stream,
                from: g.from,
                to: g.to,
            }
        }
        "attempt" => LogEvent::Attempt(
            serde_json::from_str::<AttemptData>(&data)
                .map_err(bad)?
                .attempt,
        ),
        "end" => LogEvent::End(Box::new(serde_json::from_str(&data).map_err(bad)?)),
        // Events of a newer server: skipped.
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_the_server_writes_them() {
        let out = parse("event: stdout\ndata: {\"job\":\"01a23124-9c86-70f7-b3e1-24525679bb82\",\"attempt\":1,\"stream\":\"stdout\",\"offset\":7,\"text\":\"hi\\n\"}").unwrap();
        match out {
            Some(LogEvent::Output(c)) => {
                assert_eq!(
                    (c.stream, c.offset, c.text.as_str()),
                    (LogStream::Stdout, 7, "hi\n")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("event: gap\ndata: {\"stream\":\"stderr\",\"from\":3,\"to\":9}").unwrap(),
            Some(LogEvent::Gap {
                stream: LogStream::Stderr,
                from: 3,
                to: 9
            })
        ));
        assert!(matches!(
            parse("event: attempt\ndata: {\"attempt\":2}").unwrap(),
            Some(LogEvent::Attempt(2))
        ));
        // Keep-alives and unknown events are no events; bad data is an error.
        assert!(parse(": keep-alive").unwrap().is_none());
        assert!(parse("event: later\ndata: {}").unwrap().is_none());
        assert!(parse("event: gap\ndata: nope").is_err());
        assert_eq!(find_blank_line(b"a\n\nb"), Some((1, 2)));
        assert_eq!(find_blank_line(b"a\r\n\r\nb"), Some((1, 4)));
        assert_eq!(find_blank_line(b"a\nb"), None);
    }
}
