//! Live logs: what a running job writes, in chunks, from the worker to the
//! frontends ([`crate::ports::LogBus`]). Best effort by design: the stored
//! `stdout.log` and `stderr.log` are the record; a chunk lost on the way
//! shows as a jump in `offset`.

use serde::{Deserialize, Serialize};

use crate::job::JobId;

/// Which of the job's outputs a chunk is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }

    /// The stored file of this stream.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout.log",
            Self::Stderr => "stderr.log",
        }
    }
}

/// A piece of a running job's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogChunk {
    pub job: JobId,
    /// The attempt that wrote it: a new attempt starts its logs over.
    pub attempt: u32,
    pub stream: LogStream,
    /// Bytes of this stream before this chunk (a jump means bytes were
    /// dropped on the way: the job wrote faster than the live rate).
    pub offset: u64,
    /// The bytes, as UTF-8 (invalid sequences replaced).
    pub text: String,
}

/// Largest chunk a worker sends.
pub const MAX_CHUNK: usize = 16 * 1024;

/// The next chunk from the front of `buf`: at most [`MAX_CHUNK`] bytes, as
/// text, cut between characters (an unfinished last one waits unless
/// `finished` and it is the end), removed from `buf`; the text and the
/// bytes it took. `None` when nothing can go yet.
pub fn next_chunk(buf: &mut Vec<u8>, finished: bool) -> Option<(String, usize)> {
    let n = buf.len().min(MAX_CHUNK);
    let mut piece = buf[..n].to_vec();
    let text = take_text(&mut piece, finished && n == buf.len());
    let used = n - piece.len();
    if used == 0 {
        return None;
    }
    buf.drain(..used);
    Some((text, used))
}

/// Splits `buf` at the last complete UTF-8 character (at most 3 bytes of
/// an unfinished one are kept back for the next chunk), as text.
pub fn take_text(buf: &mut Vec<u8>, finished: bool) -> String {
    let cut = match std::str::from_utf8(buf) {
        Ok(_) => buf.len(),
        Err(e) if e.error_len().is_none() && !finished && buf.len() - e.valid_up_to() <= 3 => {
            e.valid_up_to()
        }
        Err(_) => buf.len(),
    };
    let rest = buf.split_off(cut);
    let text = String::from_utf8_lossy(buf).into_owned();
    *buf = rest;
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_between_characters() {
        // "é" is 0xC3 0xA9: a chunk that ends inside it keeps the first byte.
        let mut buf = b"caf\xC3".to_vec();
        assert_eq!(take_text(&mut buf, false), "caf");
        assert_eq!(buf, b"\xC3");
        buf.push(0xA9);
        assert_eq!(take_text(&mut buf, false), "é");
        assert!(buf.is_empty());
        // At the end, or on bytes that are not UTF-8 at all, nothing waits.
        let mut buf = b"x\xC3".to_vec();
        assert_eq!(take_text(&mut buf, true), "x\u{FFFD}");
        let mut buf = b"\xFF\xFEok".to_vec();
        assert_eq!(take_text(&mut buf, false), "\u{FFFD}\u{FFFD}ok");
        assert!(buf.is_empty());
    }

    #[test]
    fn chunks_are_bounded_and_cut_between_characters() {
        // MAX_CHUNK - 1 ASCII bytes, then "é" across the bound, then more.
        let mut buf = vec![b'a'; MAX_CHUNK - 1];
        buf.extend_from_slice("éb".as_bytes());
        let (text, used) = next_chunk(&mut buf, false).unwrap();
        assert_eq!((text.len(), used), (MAX_CHUNK - 1, MAX_CHUNK - 1));
        assert_eq!(next_chunk(&mut buf, false), Some(("éb".into(), 3)));
        assert!(buf.is_empty());
        // Half a character waits, unless the stream is over.
        let mut buf = b"\xC3".to_vec();
        assert_eq!(next_chunk(&mut buf, false), None);
        assert_eq!(next_chunk(&mut buf, true), Some(("\u{FFFD}".into(), 1)));
        assert_eq!(next_chunk(&mut buf, true), None);
    }
}
