//! gRPC status codes and the mapping of HTTP-level outcomes onto them.

use std::fmt;
use std::time::Duration;

/// A gRPC status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// The call was cancelled, usually by the caller.
    Cancelled = 1,
    /// An error with no better code.
    Unknown = 2,
    /// The request was malformed (TiKV: cluster id mismatch).
    InvalidArgument = 3,
    /// The deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// A requested entity was not found.
    NotFound = 5,
    /// The entity a request tried to create already exists.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A quota or a size limit was exceeded.
    ResourceExhausted = 8,
    /// The system is not in a state the call needs (PD: cluster id mismatch).
    FailedPrecondition = 9,
    /// The operation was aborted, typically by a concurrency conflict.
    Aborted = 10,
    /// A value was out of its valid range.
    OutOfRange = 11,
    /// The server does not implement the method.
    Unimplemented = 12,
    /// An invariant broke inside the server or the transport.
    Internal = 13,
    /// The service cannot be reached now; retrying may help.
    Unavailable = 14,
    /// Data was lost or corrupted.
    DataLoss = 15,
    /// The caller did not authenticate.
    Unauthenticated = 16,
}

impl Code {
    /// The code for a numeric `grpc-status`; numbers gRPC does not define map to `Unknown`.
    pub fn from_i32(value: i32) -> Self {
        match value {
            0 => Self::Ok,
            1 => Self::Cancelled,
            2 => Self::Unknown,
            3 => Self::InvalidArgument,
            4 => Self::DeadlineExceeded,
            5 => Self::NotFound,
            6 => Self::AlreadyExists,
            7 => Self::PermissionDenied,
            8 => Self::ResourceExhausted,
            9 => Self::FailedPrecondition,
            10 => Self::Aborted,
            11 => Self::OutOfRange,
            12 => Self::Unimplemented,
            13 => Self::Internal,
            14 => Self::Unavailable,
            15 => Self::DataLoss,
            16 => Self::Unauthenticated,
            _ => Self::Unknown,
        }
    }

    /// Parses the ASCII value of a `grpc-status` header; `None` when it is not a number.
    pub fn from_header(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        text.trim().parse::<i32>().ok().map(Self::from_i32)
    }

    /// The code gRPC clients synthesise for a non-200 HTTP status without a `grpc-status`.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// The numeric value sent in `grpc-status`.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A non-OK gRPC status received from (or sent to) a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The status code.
    pub code: Code,
    /// The human-readable message, already percent-decoded.
    pub message: String,
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Builds a status from raw `grpc-status` and `grpc-message` header values.
    ///
    /// Returns `None` when the status header is missing or malformed.
    pub fn from_headers(status: Option<&[u8]>, message: Option<&[u8]>) -> Option<Self> {
        let code = Code::from_header(status?)?;
        let message = message.map(percent_decode).unwrap_or_default();
        Some(Self { code, message })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

/// Percent-encodes a `grpc-message` value as the gRPC spec asks: bytes outside printable ASCII,
/// and `%` itself, become `%XX`.
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes a percent-encoded `grpc-message`; malformed escapes are kept as they are and invalid
/// UTF-8 is replaced, because a garbled message must never fail a call.
pub fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' && i + 2 < value.len() {
            if let (Some(hi), Some(lo)) = (hex_value(value[i + 1]), hex_value(value[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Formats a `grpc-timeout` header value: at most eight digits and a unit, rounding up so that
/// the server never sees a shorter deadline than the caller's.
pub fn encode_timeout(timeout: Duration) -> String {
    const MAX_DIGITS: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (scale, unit) in units {
        let value = nanos.div_ceil(scale);
        if value <= MAX_DIGITS {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX_DIGITS}H")
}

/// Parses a `grpc-timeout` header value; `None` when it is malformed.
pub fn decode_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let duration = match unit {
        b'n' => Duration::from_nanos(amount),
        b'u' => Duration::from_micros(amount),
        b'm' => Duration::from_millis(amount),
        b'S' => Duration::from_secs(amount),
        b'M' => Duration::from_secs(amount.checked_mul(60)?),
        b'H' => Duration::from_secs(amount.checked_mul(3600)?),
        _ => return None,
    };
    Some(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn codes_round_trip_and_unknown_numbers_map_to_unknown() {
        for n in 0..=16 {
            assert_eq!(Code::from_i32(n).as_i32(), n);
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        assert_eq!(Code::from_header(b"14"), Some(Code::Unavailable));
        assert_eq!(Code::from_header(b"x"), None);
    }

    #[test]
    fn http_status_mapping() {
        assert_eq!(Code::from_http_status(404), Code::Unimplemented);
        assert_eq!(Code::from_http_status(503), Code::Unavailable);
        assert_eq!(Code::from_http_status(400), Code::Internal);
        assert_eq!(Code::from_http_status(418), Code::Unknown);
    }

    #[test]
    fn status_from_headers_decodes_message() {
        let status = Status::from_headers(Some(b"9"), Some(b"mismatch%20cluster%20id%E2%9C%93"));
        assert_eq!(
            status,
            Some(Status::new(
                Code::FailedPrecondition,
                "mismatch cluster id\u{2713}"
            ))
        );
        assert_eq!(Status::from_headers(None, Some(b"x")), None);
        assert_eq!(percent_decode(b"bad%zzescape%4"), "bad%zzescape%4");
    }

    #[test]
    fn timeout_formats() {
        assert_eq!(encode_timeout(Duration::from_millis(1)), "1000000n");
        assert_eq!(encode_timeout(Duration::from_secs(30)), "30000000u");
        assert_eq!(encode_timeout(Duration::from_secs(3600)), "3600000m");
        assert_eq!(encode_timeout(Duration::from_nanos(1)), "1n");
        assert_eq!(decode_timeout(b"30S"), Some(Duration::from_secs(30)));
        assert_eq!(decode_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(decode_timeout(b"S"), None);
        assert_eq!(decode_timeout(b"123456789S"), None);
        assert_eq!(decode_timeout(b"12x"), None);
    }

    quickcheck! {
        fn percent_coding_round_trips(message: String) -> bool {
            percent_decode(percent_encode(&message).as_bytes()) == message
        }

        fn timeout_never_shrinks(nanos: u64) -> bool {
            let timeout = Duration::from_nanos(nanos);
            decode_timeout(encode_timeout(timeout).as_bytes()).is_some_and(|d| d >= timeout)
        }
    }
}
