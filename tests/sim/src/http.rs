//! A minimal HTTP/1.1 server for the simulated cluster's HTTP APIs (PD's `/pd/api/v1/...`
//! and each store's status `/config`).
//!
//! Real PD serves its HTTP API on the same port as its gRPC service, and clients find a
//! store's status port through `status_address`; `crate::serve` routes each connection here
//! or to the gRPC server by its first bytes. What this implements of HTTP/1.1 (RFC 9112):
//! request line and header fields (CRLF or bare LF line ends), `Content-Length` request bodies
//! (read and handed over; `Transfer-Encoding` bodies are refused with 501),
//! `Expect: 100-continue`, persistent connections with pipelining (HTTP/1.1 keeps the
//! connection unless `Connection: close`; HTTP/1.0 closes unless `Connection: keep-alive`),
//! `HEAD`, and `Date` when the handler has a clock. Malformed requests get 400 and the
//! connection closes, as the spec asks.
//!
//! Parsing ([`parse_head`]) and encoding ([`encode_response`]) are pure functions; only
//! [`serve_connection`] touches IO.

mod json;
mod routes;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use json::Json;
pub use routes::api_version_config;

/// Largest request head (request line plus header fields) accepted.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long a persistent connection may sit idle between requests before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers HTTP requests.
pub trait HttpHandler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: &HttpRequest) -> HttpResponse;

    /// Wall-clock milliseconds since the Unix epoch for the `Date` header; `None` (the
    /// default) leaves the header out, as a server without a clock does.
    fn now_ms(&self) -> Option<u64> {
        None
    }
}

/// One parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method, case-sensitive as sent (`GET`).
    pub method: String,
    /// The request target as sent (`/pd/api/v1/regions?limit=1`).
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header fields in order; names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body (empty without `Content-Length`).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The path part of the target (before any `?`).
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The first value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after this request's response.
    pub fn keep_alive(&self) -> bool {
        let tokens = connection_tokens(&self.headers);
        if tokens.iter().any(|t| t == "close") {
            return false;
        }
        self.minor_version >= 1 || tokens.iter().any(|t| t == "keep-alive")
    }
}

/// One response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// Extra header fields (`Allow` on a 405, ...).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A JSON response with `status`.
    pub fn json(status: u16, body: &Json) -> Self {
        Self {
            status,
            content_type: "application/json; charset=UTF-8",
            headers: Vec::new(),
            body: body.to_text().into_bytes(),
        }
    }

    /// A plain-text response with `status`.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into().into_bytes(),
        }
    }

    /// 404, worded as Go's HTTP mux words it.
    pub fn not_found() -> Self {
        Self::text(404, "404 page not found\n")
    }

    /// 405 with the `Allow` header listing `allowed`.
    pub fn method_not_allowed(allowed: &str) -> Self {
        let mut response = Self::text(405, "405 method not allowed\n");
        response.headers.push(("allow", allowed.to_owned()));
        response
    }
}

/// Why a request could not be parsed; every variant closes the connection after the answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The request line or a header field is malformed.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The head is longer than [`MAX_HEAD_BYTES`].
    #[error("request head too large")]
    HeadTooLarge,
    /// The body is longer than [`MAX_BODY_BYTES`].
    #[error("request body too large")]
    BodyTooLarge,
    /// A `Transfer-Encoding` body (chunked uploads are not supported).
    #[error("transfer-encoding not implemented")]
    TransferEncoding,
    /// A major version other than 1.
    #[error("http version not supported")]
    Version,
}

impl HttpError {
    /// The response this error gets.
    pub fn response(&self) -> HttpResponse {
        let status = match self {
            Self::BadRequest(_) => 400,
            Self::BodyTooLarge => 413,
            Self::HeadTooLarge => 431,
            Self::TransferEncoding => 501,
            Self::Version => 505,
        };
        HttpResponse::text(status, format!("{self}\n"))
    }
}

/// A request head: everything but the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The request without its body.
    pub request: HttpRequest,
    /// The body length from `Content-Length` (0 without one).
    pub content_length: usize,
}

/// Parses a request head from the front of `buf`; returns the head and the number of bytes it
/// took, or `None` while the head is incomplete.
///
/// Errors with [`HttpError`] on malformed or oversized input.
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HttpError> {
    // RFC 9112 2.2: ignore empty lines before the request line.
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") || buf[start..].starts_with(b"\n") {
        start += if buf[start] == b'\r' { 2 } else { 1 };
    }
    let Some(end) = find_head_end(&buf[start..]) else {
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HttpError::HeadTooLarge);
        }
        return Ok(None);
    };
    let head_end = start + end;
    if head_end > MAX_HEAD_BYTES {
        return Err(HttpError::HeadTooLarge);
    }
    let head = std::str::from_utf8(&buf[start..head_end])
        .map_err(|_| HttpError::BadRequest("head is not UTF-8"))?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let (method, target, minor_version) = parse_request_line(request_line)?;
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        headers.push(parse_field(line)?);
    }
    if headers.iter().any(|(name, _)| name == "transfer-encoding") {
        return Err(HttpError::TransferEncoding);
    }
    let content_length = content_length(&headers)?;
    if content_length > MAX_BODY_BYTES {
        return Err(HttpError::BodyTooLarge);
    }
    let request = HttpRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        minor_version,
        headers,
        body: Vec::new(),
    };
    Ok(Some((
        RequestHead {
            request,
            content_length,
        },
        head_end,
    )))
}

/// Encodes `response` to a request with `method`; `keep_alive` says whether the connection
/// stays open, `now_ms` (if any) fills the `Date` header.
pub fn encode_response(
    response: &HttpResponse,
    method: &str,
    keep_alive: bool,
    minor_version: u8,
    now_ms: Option<u64>,
) -> Vec<u8> {
    let mut head = String::new();
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    if let Some(now_ms) = now_ms {
        let _ = write!(head, "date: {}\r\n", http_date(now_ms));
    }
    let _ = write!(head, "content-type: {}\r\n", response.content_type);
    let _ = write!(head, "content-length: {}\r\n", response.body.len());
    for (name, value) in &response.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !keep_alive {
        head.push_str("connection: close\r\n");
    } else if minor_version == 0 {
        head.push_str("connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(&response.body);
    }
    out
}

/// Serves HTTP/1.1 requests on `io` until the client closes, asks to close, sends a malformed
/// request or stays idle for [`IDLE_TIMEOUT`]. `buffered` holds bytes already read from `io`
/// (by protocol sniffing).
///
/// Errors when reading or writing fails.
pub async fn serve_connection<IO, H>(
    mut io: IO,
    buffered: &[u8],
    handler: Arc<H>,
) -> std::io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: HttpHandler + ?Sized,
{
    let mut buf = BytesMut::from(buffered);
    loop {
        let parsed = loop {
            match parse_head(&buf) {
                Ok(Some(parsed)) => break Ok(parsed),
                Ok(None) => {}
                Err(err) => break Err(err),
            }
            match tokio::time::timeout(IDLE_TIMEOUT, io.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(err),
            }
        };
        let (head, head_len) = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                let out = encode_response(&err.response(), "GET", false, 1, handler.now_ms());
                io.write_all(&out).await?;
                return io.shutdown().await;
            }
        };
        buf.advance(head_len);
        let RequestHead {
            mut request,
            content_length,
        } = head;
        if content_length > buf.len()
            && request
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        while buf.len() < content_length {
            match tokio::time::timeout(IDLE_TIMEOUT, io.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(err),
            }
        }
        request.body = buf.split_to(content_length).to_vec();
        let keep_alive = request.keep_alive();
        let response = handler.handle(&request);
        let out = encode_response(
            &response,
            &request.method,
            keep_alive,
            request.minor_version,
            handler.now_ms(),
        );
        io.write_all(&out).await?;
        if !keep_alive {
            return io.shutdown().await;
        }
    }
}

/// Offset just past the empty line that ends a head (`\n\r\n` or `\n\n`), if present.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let after = i + pos + 1;
        match buf.get(after..) {
            Some([b'\n', ..]) => return Some(after + 1),
            Some([b'\r', b'\n', ..]) => return Some(after + 2),
            _ => i = after,
        }
    }
    None
}

fn parse_request_line(line: &str) -> Result<(&str, &str, u8), HttpError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequest("malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(HttpError::BadRequest("malformed method"));
    }
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7F) {
        return Err(HttpError::BadRequest("malformed request target"));
    }
    let minor = match version.as_bytes() {
        [
            b'H',
            b'T',
            b'T',
            b'P',
            b'/',
            b'1',
            b'.',
            minor @ b'0'..=b'9',
        ] => minor - b'0',
        [b'H', b'T', b'T', b'P', b'/', major, b'.', b'0'..=b'9'] if major.is_ascii_digit() => {
            return Err(HttpError::Version);
        }
        _ => return Err(HttpError::BadRequest("malformed http version")),
    };
    Ok((method, target, minor))
}

fn parse_field(line: &str) -> Result<(String, String), HttpError> {
    if line.starts_with([' ', '\t']) {
        // Obsolete line folding (RFC 9112 5.2).
        return Err(HttpError::BadRequest("folded header field"));
    }
    let Some((name, value)) = line.split_once(':') else {
        return Err(HttpError::BadRequest("header field without colon"));
    };
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(HttpError::BadRequest("malformed header field name"));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7F) {
        return Err(HttpError::BadRequest("control character in header value"));
    }
    Ok((name.to_ascii_lowercase(), value.to_owned()))
}

fn content_length(headers: &[(String, String)]) -> Result<usize, HttpError> {
    let mut length: Option<usize> = None;
    for (_, value) in headers.iter().filter(|(name, _)| name == "content-length") {
        // A list of identical values is allowed (RFC 9110 8.6); anything else is an error.
        for item in value.split(',').map(str::trim) {
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::BadRequest("malformed content-length"));
            }
            let parsed = item.parse::<usize>().map_err(|_| HttpError::BodyTooLarge)?;
            if length.is_some_and(|l| l != parsed) {
                return Err(HttpError::BadRequest("conflicting content-length"));
            }
            length = Some(parsed);
        }
    }
    Ok(length.unwrap_or(0))
}

fn connection_tokens(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(name, _)| name == "connection")
        .flat_map(|(_, value)| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .collect()
}

/// `tchar` of RFC 9110 5.6.2.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// `now_ms` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 5.6.7).
pub fn http_date(now_ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now_ms / 1000;
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_date(days);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
    )
}

/// The proleptic Gregorian `(year, month, day)` of `days` since 1970-01-01.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Count in 400-year eras starting on 0000-03-01, so the leap day ends each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn head(text: &str) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn parses_a_request_head() {
        let text = "GET /pd/api/v1/regions?x=1 HTTP/1.1\r\nHost: pd\r\nX-A:  b c \r\n\r\nrest";
        let (head, len) = head(text).unwrap().unwrap();
        assert_eq!(&text[len..], "rest");
        assert_eq!(head.content_length, 0);
        let request = head.request;
        assert_eq!(request.method, "GET");
        assert_eq!(request.path(), "/pd/api/v1/regions");
        assert_eq!(request.minor_version, 1);
        assert_eq!(request.header("host"), Some("pd"));
        assert_eq!(request.header("x-a"), Some("b c"));
        assert!(request.keep_alive());
    }

    #[test]
    fn accepts_bare_lf_and_leading_empty_lines() {
        let (head, len) = head("\r\n\nGET / HTTP/1.0\nContent-Length: 3\n\nabc")
            .unwrap()
            .unwrap();
        assert_eq!(len, 37);
        assert_eq!(head.content_length, 3);
        assert!(!head.request.keep_alive());
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert_eq!(head("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(head(""), Ok(None));
        assert_eq!(head("\r\n"), Ok(None));
    }

    #[test]
    fn malformed_heads_are_rejected() {
        for text in [
            "GET /\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 x\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTQ/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nA: \u{1}\r\n\r\n",
        ] {
            assert!(
                matches!(head(text), Err(HttpError::BadRequest(_))),
                "{text:?}: {:?}",
                head(text)
            );
        }
        assert_eq!(head("GET / HTTP/2.0\r\n\r\n"), Err(HttpError::Version));
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::TransferEncoding)
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Err(HttpError::BodyTooLarge)
        );
        let huge = format!("GET / HTTP/1.1\r\nA: {}", "x".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&huge), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn identical_content_length_lists_are_accepted() {
        let (head, _) = head("POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.content_length, 2);
    }

    #[test]
    fn connection_header_decides_persistence() {
        let keep = |text: &str| head(text).unwrap().unwrap().0.request.keep_alive();
        assert!(!keep("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!keep(
            "GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n"
        ));
        assert!(keep("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
    }

    #[test]
    fn encodes_responses() {
        let response = HttpResponse::text(200, "hi");
        let out = encode_response(&response, "GET", true, 1, None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 2\r\n\r\nhi"
        );
        let out = encode_response(&HttpResponse::not_found(), "HEAD", false, 0, Some(0));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
             content-type: text/plain; charset=utf-8\r\ncontent-length: 19\r\n\
             connection: close\r\n\r\n"
        );
        let out = encode_response(
            &HttpResponse::method_not_allowed("GET"),
            "PUT",
            true,
            0,
            None,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("allow: GET\r\n"));
        assert!(text.contains("connection: keep-alive\r\n"));
    }

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(
            http_date(4_102_444_799_999),
            "Thu, 31 Dec 2099 23:59:59 GMT"
        );
    }

    quickcheck! {
        fn parsing_never_panics(bytes: Vec<u8>) -> bool {
            let _ = parse_head(&bytes);
            true
        }

        fn heads_split_anywhere_parse_the_same(cut: usize) -> bool {
            let text = b"GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
            let cut = cut % text.len();
            parse_head(&text[..cut]) == Ok(None) && parse_head(text).is_ok_and(|h| h.is_some())
        }
    }
}
