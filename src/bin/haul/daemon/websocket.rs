//! The WebSocket protocol (RFC 6455) as the RPC endpoint needs it, server side: the opening
//! handshake's accept key, and text messages in and out over an upgraded connection. Frames
//! from the client are masked, may be fragmented and interleaved with pings; frames to it are
//! unmasked and whole. A message over the size limit, a binary message, or a broken frame
//! closes the connection. (Written here rather than pulled in as a crate: the RPC needs text
//! messages only, and this is about 150 lines.)

use base64::Engine as _;
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The GUID every WebSocket server appends to the client's key (RFC 6455, section 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The `Sec-WebSocket-Accept` value answering a client's `Sec-WebSocket-Key`.
pub(crate) fn accept_key(client_key: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(client_key.trim().as_bytes());
    hasher.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
}

/// What the client sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A whole text message.
    Text(String),
    /// A ping, to be answered with a pong carrying the same bytes.
    Ping(Vec<u8>),
    /// The client closed the connection (or broke the protocol: the reason says).
    Closed(Option<&'static str>),
}

/// Reads messages from a client, at most `limit` bytes each.
pub(crate) struct Reader<R> {
    io: R,
    limit: usize,
    /// A fragmented text message read so far (a ping may come between its fragments).
    partial: Option<Vec<u8>>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub(crate) fn new(io: R, limit: usize) -> Self {
        Self {
            io,
            limit,
            partial: None,
        }
    }

    /// The next message (pongs are skipped). An I/O error or end of stream is `Closed(None)`.
    pub(crate) async fn next(&mut self) -> Incoming {
        loop {
            let frame = match self.frame().await {
                Ok(frame) => frame,
                Err(reason) => return Incoming::Closed(reason),
            };
            match frame.opcode {
                PING => return Incoming::Ping(frame.payload),
                PONG => {}
                CLOSE => return Incoming::Closed(None),
                TEXT if self.partial.is_none() => self.partial = Some(frame.payload),
                CONTINUATION if self.partial.is_some() => {
                    let message = self.partial.get_or_insert_default();
                    if message.len() + frame.payload.len() > self.limit {
                        return Incoming::Closed(Some("message too large"));
                    }
                    message.extend_from_slice(&frame.payload);
                }
                BINARY => return Incoming::Closed(Some("binary messages are not accepted")),
                _ => return Incoming::Closed(Some("unexpected frame")),
            }
            // Only a data frame can end a message (a pong between fragments does not).
            if frame.last
                && matches!(frame.opcode, TEXT | CONTINUATION)
                && let Some(message) = self.partial.take()
            {
                return match String::from_utf8(message) {
                    Ok(text) => Incoming::Text(text),
                    Err(_) => Incoming::Closed(Some("a text message that is not UTF-8")),
                };
            }
        }
    }

    async fn frame(&mut self) -> Result<Frame, Option<&'static str>> {
        let mut head = [0u8; 2];
        self.io.read_exact(&mut head).await.map_err(|_| None)?;
        let last = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0F;
        if head[1] & 0x80 == 0 {
            return Err(Some("a client frame without a mask"));
        }
        let length = match head[1] & 0x7F {
            126 => u64::from(self.io.read_u16().await.map_err(|_| None)?),
            127 => self.io.read_u64().await.map_err(|_| None)?,
            short => u64::from(short),
        };
        if length > self.limit as u64 {
            return Err(Some("message too large"));
        }
        let mut mask = [0u8; 4];
        self.io.read_exact(&mut mask).await.map_err(|_| None)?;
        let mut payload = vec![0u8; length as usize];
        self.io.read_exact(&mut payload).await.map_err(|_| None)?;
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        Ok(Frame {
            last,
            opcode,
            payload,
        })
    }
}

struct Frame {
    last: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A text message as one unmasked frame.
pub(crate) fn text_frame(text: &str) -> Vec<u8> {
    frame(TEXT, text.as_bytes())
}

/// A pong answering a ping's payload.
pub(crate) fn pong_frame(payload: &[u8]) -> Vec<u8> {
    frame(PONG, payload)
}

/// A close frame with status 1000 (normal) or 1009 (too big) / 1003 (unacceptable data).
pub(crate) fn close_frame(reason: Option<&str>) -> Vec<u8> {
    let (code, text): (u16, &str) = match reason {
        None => (1000, ""),
        Some(reason) if reason.contains("too large") => (1009, reason),
        Some(reason) => (1002, reason),
    };
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(text.as_bytes());
    frame(CLOSE, &payload)
}

fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if u16::try_from(n).is_ok() => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Writes already-framed bytes.
pub(crate) async fn send<W: AsyncWrite + Unpin>(io: &mut W, frame: &[u8]) -> std::io::Result<()> {
    io.write_all(frame).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn masked(opcode: u8, last: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if last { 0x80 } else { 0 } | opcode];
        assert!(payload.len() < 126);
        out.push(0x80 | payload.len() as u8);
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[tokio::test]
    async fn fragmented_text_with_a_ping_between_is_one_message_and_a_ping() {
        let mut wire = masked(TEXT, false, b"Hel");
        wire.extend(masked(PING, true, b"p"));
        wire.extend(masked(PONG, true, b""));
        wire.extend(masked(CONTINUATION, true, b"lo"));
        let mut reader = Reader::new(wire.as_slice(), 1024);
        assert_eq!(reader.next().await, Incoming::Ping(b"p".to_vec()));
        assert_eq!(reader.next().await, Incoming::Text("Hello".into()));
        assert_eq!(reader.next().await, Incoming::Closed(None));
    }

    #[tokio::test]
    async fn an_oversized_or_unmasked_message_closes_the_connection() {
        let wire = masked(TEXT, true, &[b'a'; 100]);
        let mut reader = Reader::new(wire.as_slice(), 10);
        assert_eq!(
            reader.next().await,
            Incoming::Closed(Some("message too large"))
        );
        let unmasked = text_frame("hi");
        let mut reader = Reader::new(unmasked.as_slice(), 10);
        assert!(matches!(reader.next().await, Incoming::Closed(Some(_))));
    }

    #[test]
    fn long_frames_use_the_extended_lengths() {
        assert_eq!(&text_frame(&"a".repeat(200))[..4], &[0x81, 126, 0, 200]);
        assert_eq!(&text_frame(&"a".repeat(70_000))[..2], &[0x81, 127]);
    }
}
