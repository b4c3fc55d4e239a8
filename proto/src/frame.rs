//! gRPC length-prefixed message framing, as pure functions over byte buffers.
//!
//! Every message on a gRPC stream is one byte of flags (bit 0: compressed), a four-byte
//! big-endian length, then the payload. A message may span DATA frames and a DATA frame may hold
//! several messages, so the decoder is incremental: feed it bytes as they arrive and take whole
//! messages out.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// Length of the prefix in front of every message.
pub const PREFIX_LEN: usize = 5;

/// Largest message the framing itself can describe.
pub const MAX_FRAMEABLE: usize = u32::MAX as usize;

/// Why bytes could not be framed or unframed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The message is bigger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the message payload.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The peer sent a compressed message; this client never offers compression.
    #[error("peer sent a compressed message but no compression was negotiated")]
    Compressed,
    /// The flags byte has bits gRPC does not define.
    #[error("invalid message flags byte {0:#04x}")]
    InvalidFlags(u8),
    /// The stream ended inside a message.
    #[error("stream ended inside a message: {buffered} of {expected} bytes received")]
    Truncated {
        /// Bytes of the message (prefix included) that did arrive.
        buffered: usize,
        /// Bytes the prefix announced (prefix included).
        expected: usize,
    },
}

/// Appends one uncompressed framed message holding `payload` to `out`.
///
/// Errors with [`FrameError::TooLarge`] when `payload` is longer than `limit`.
pub fn encode_raw(payload: &[u8], limit: usize, out: &mut BytesMut) -> Result<(), FrameError> {
    check_len(payload.len(), limit)?;
    out.reserve(PREFIX_LEN + payload.len());
    put_prefix(payload.len(), out);
    out.put_slice(payload);
    Ok(())
}

/// Encodes `message` and appends it framed to `out`, without an intermediate buffer.
///
/// Errors with [`FrameError::TooLarge`] when the encoded message is longer than `limit`.
pub fn encode_message<M: Message>(
    message: &M,
    limit: usize,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let len = message.encoded_len();
    check_len(len, limit)?;
    out.reserve(PREFIX_LEN + len);
    put_prefix(len, out);
    // `reserve` above guarantees the capacity, so encoding cannot run out of room.
    message.encode_raw(out);
    Ok(())
}

/// Encodes `message` into a fresh framed buffer.
///
/// Errors with [`FrameError::TooLarge`] when the encoded message is longer than `limit`.
pub fn frame_message<M: Message>(message: &M, limit: usize) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::new();
    encode_message(message, limit, &mut out)?;
    Ok(out.freeze())
}

/// One message already framed for the wire (prefix included), ready to hand to a channel.
///
/// Encoding happens once, straight into the buffer the transport sends, so a message is never
/// copied between the encoder and the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framed(Bytes);

impl Framed {
    /// Encodes and frames `message`.
    ///
    /// Errors with [`FrameError::TooLarge`] when the encoded message is longer than `limit`.
    pub fn encode<M: Message>(message: &M, limit: usize) -> Result<Self, FrameError> {
        frame_message(message, limit).map(Self)
    }

    /// Frames an already encoded payload.
    ///
    /// Errors with [`FrameError::TooLarge`] when `payload` is longer than `limit`.
    pub fn from_payload(payload: &[u8], limit: usize) -> Result<Self, FrameError> {
        let mut out = BytesMut::new();
        encode_raw(payload, limit, &mut out)?;
        Ok(Self(out.freeze()))
    }

    /// Length of the payload, without the prefix.
    pub fn payload_len(&self) -> usize {
        self.0.len().saturating_sub(PREFIX_LEN)
    }

    /// The payload, without the prefix.
    pub fn payload(&self) -> Bytes {
        self.0.slice(PREFIX_LEN.min(self.0.len())..)
    }

    /// The wire bytes, prefix included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Consumes the message, returning its wire bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

fn check_len(len: usize, limit: usize) -> Result<(), FrameError> {
    let limit = limit.min(MAX_FRAMEABLE);
    if len > limit {
        return Err(FrameError::TooLarge { size: len, limit });
    }
    Ok(())
}

fn put_prefix(len: usize, out: &mut BytesMut) {
    out.put_u8(0);
    // `check_len` capped `len` at u32::MAX.
    out.put_u32(len as u32);
}

/// Incremental decoder of framed messages.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buffer: BytesMut,
    limit: usize,
}

impl FrameDecoder {
    /// A decoder that refuses messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            limit: limit.min(MAX_FRAMEABLE),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// Appends received bytes without copying when the buffer is empty.
    pub fn push_bytes(&mut self, data: Bytes) {
        if self.buffer.is_empty() {
            // Converting an unshared `Bytes` back into `BytesMut` is free; otherwise it copies.
            self.buffer = BytesMut::from(data);
        } else {
            self.buffer.extend_from_slice(&data);
        }
    }

    /// Takes the next whole message payload, or `None` if more bytes are needed.
    ///
    /// Errors when the next message is compressed, has unknown flags or exceeds the limit; the
    /// decoder should then be dropped, as the stream cannot be resynchronised.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buffer.len() < PREFIX_LEN {
            return Ok(None);
        }
        let flags = self.buffer[0];
        match flags {
            0 => {}
            1 => return Err(FrameError::Compressed),
            other => return Err(FrameError::InvalidFlags(other)),
        }
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge {
                size: len,
                limit: self.limit,
            });
        }
        if self.buffer.len() < PREFIX_LEN + len {
            self.buffer.reserve(PREFIX_LEN + len - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(PREFIX_LEN);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    /// Checks that the stream ended on a message boundary.
    ///
    /// Errors with [`FrameError::Truncated`] when bytes of an unfinished message remain.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let expected = if self.buffer.len() >= PREFIX_LEN {
            PREFIX_LEN
                + u32::from_be_bytes([
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                    self.buffer[4],
                ]) as usize
        } else {
            PREFIX_LEN
        };
        Err(FrameError::Truncated {
            buffered: self.buffer.len(),
            expected,
        })
    }

    /// Number of bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvrpcpb;
    use quickcheck::{QuickCheck, TestResult};

    fn get_request() -> kvrpcpb::GetRequest {
        kvrpcpb::GetRequest {
            context: Some(kvrpcpb::Context {
                region_id: 2,
                ..Default::default()
            }),
            key: Bytes::from_static(b"k1"),
            version: 42,
            ..Default::default()
        }
    }

    #[test]
    fn frame_bytes_are_stable() {
        let framed = frame_message(&get_request(), 1 << 20).unwrap_or_default();
        insta::assert_snapshot!("get_request_frame", hex(&framed));
        let empty = frame_message(&kvrpcpb::RawGetRequest::default(), 1 << 20).unwrap_or_default();
        insta::assert_snapshot!("empty_message_frame", hex(&empty));
        let raw_put = kvrpcpb::RawPutRequest {
            key: Bytes::from_static(b"key"),
            value: Bytes::from_static(b"value"),
            cf: "default".into(),
            ttl: 60,
            ..Default::default()
        };
        let framed = frame_message(&raw_put, 1 << 20).unwrap_or_default();
        insta::assert_snapshot!("raw_put_frame", hex(&framed));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn oversized_message_is_refused_both_ways() {
        let request = get_request();
        let len = request.encoded_len();
        assert_eq!(
            frame_message(&request, len - 1),
            Err(FrameError::TooLarge {
                size: len,
                limit: len - 1
            })
        );
        let framed = frame_message(&request, len).unwrap_or_default();
        let mut decoder = FrameDecoder::new(len - 1);
        decoder.push(&framed);
        assert_eq!(
            decoder.next_message(),
            Err(FrameError::TooLarge {
                size: len,
                limit: len - 1
            })
        );
    }

    #[test]
    fn compressed_and_bad_flags_are_errors() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&[1, 0, 0, 0, 0]);
        assert_eq!(decoder.next_message(), Err(FrameError::Compressed));
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&[0x80, 0, 0, 0, 0]);
        assert_eq!(decoder.next_message(), Err(FrameError::InvalidFlags(0x80)));
    }

    #[test]
    fn truncated_stream_is_reported() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&[0, 0, 0, 0, 3, b'a']);
        assert_eq!(decoder.next_message(), Ok(None));
        assert_eq!(
            decoder.finish(),
            Err(FrameError::Truncated {
                buffered: 6,
                expected: 8
            })
        );
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&[0, 0]);
        assert_eq!(
            decoder.finish(),
            Err(FrameError::Truncated {
                buffered: 2,
                expected: 5
            })
        );
        assert_eq!(FrameDecoder::new(1).finish(), Ok(()));
    }

    /// Any sequence of payloads, framed back to back and fed in arbitrary chunks, decodes to the
    /// same payloads.
    #[test]
    fn framing_round_trips_across_arbitrary_chunking() {
        fn property(payloads: Vec<Vec<u8>>, chunk: usize) -> TestResult {
            let chunk = chunk % 17 + 1;
            let mut wire = BytesMut::new();
            for payload in &payloads {
                if encode_raw(payload, usize::MAX, &mut wire).is_err() {
                    return TestResult::failed();
                }
            }
            let mut decoder = FrameDecoder::new(usize::MAX);
            let mut decoded = Vec::new();
            for piece in wire.chunks(chunk) {
                decoder.push_bytes(Bytes::copy_from_slice(piece));
                loop {
                    match decoder.next_message() {
                        Ok(Some(message)) => decoded.push(message.to_vec()),
                        Ok(None) => break,
                        Err(_) => return TestResult::failed(),
                    }
                }
            }
            TestResult::from_bool(decoded == payloads && decoder.finish().is_ok())
        }
        QuickCheck::new()
            .tests(300)
            .quickcheck(property as fn(Vec<Vec<u8>>, usize) -> TestResult);
    }
}
