//! The checks TiKV's storage layer runs on a request before it reads or writes anything:
//! the request's API version against the store's, the key mode of every key (API V2), and the
//! key size. Raw and transactional commands share them, as they do in TiKV
//! (`Storage::check_api_version`, `Storage::check_api_version_ranges` and the
//! `check_key_size!` of `src/storage/mod.rs`).
//!
//! Transactional commands hand their keys over memcomparable-encoded, as TiKV checks
//! `Key::as_encoded()`: the key mode is judged by the encoded key's first byte (the raw key's
//! first byte for any non-empty key), the size limit applies to the encoded length, and the
//! key printed in an error is the encoded key.

use std::fmt;

use bytes::Bytes;
use tikv_proto::codec::{encode_bytes, encode_bytes_into, encoded_len};
use tikv_proto::kvrpcpb::{self, ApiVersion, Context, KeyError};
use tikv_proto::tikvpb::batch_commands_request::request::Cmd as Req;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as Resp;

use crate::raw::RawCommand;

/// First byte of every raw key in API V2.
pub(crate) const RAW_KEY_PREFIX: u8 = b'r';
/// First byte of every transactional key in API V2.
pub(crate) const TXN_KEY_PREFIX: u8 = b'x';

/// A transactional command that TiKV's storage checks before running, named as TiKV's
/// `CommandKind` names it in error texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxnCommand {
    /// KvGet.
    Get,
    /// KvBatchGet.
    BatchGet,
    /// KvBufferBatchGet.
    BufferBatchGet,
    /// KvScan.
    Scan,
    /// KvPrewrite (optimistic and pessimistic).
    Prewrite,
    /// KvFlush.
    Flush,
    /// KvPessimisticLock.
    AcquirePessimisticLock,
    /// KvDeleteRange.
    DeleteRange,
}

impl TxnCommand {
    /// Returns TiKV's name for the command (`get`, `prewrite`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::BatchGet => "batch_get",
            Self::BufferBatchGet => "buffer_batch_get",
            Self::Scan => "scan",
            Self::Prewrite => "prewrite",
            Self::Flush => "flush",
            Self::AcquirePessimisticLock => "acquire_pessimistic_lock",
            Self::DeleteRange => "delete_range",
        }
    }
}

/// The command a check runs for: raw or transactional.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommandKind {
    /// A raw command.
    Raw(RawCommand),
    /// A transactional command.
    Txn(TxnCommand),
}

impl CommandKind {
    /// Returns TiKV's name for the command.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw(cmd) => cmd.as_str(),
            Self::Txn(cmd) => cmd.as_str(),
        }
    }

    fn is_raw(self) -> bool {
        matches!(self, Self::Raw(_))
    }
}

impl From<RawCommand> for CommandKind {
    fn from(cmd: RawCommand) -> Self {
        Self::Raw(cmd)
    }
}

impl From<TxnCommand> for CommandKind {
    fn from(cmd: TxnCommand) -> Self {
        Self::Txn(cmd)
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request refused by the storage checks.
///
/// `Display` gives TiKV's error text; [`AdmissionError::debug_text`] the `{:?}` spelling
/// TiKV puts in a `KeyError.abort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmissionError {
    /// The request's `Context.api_version` is not one this store serves for the command.
    ApiVersionNotMatched {
        /// The command refused.
        cmd: CommandKind,
        /// The store's API version.
        storage_api_version: ApiVersion,
        /// The request's API version as sent (may be a number prost does not know).
        req_api_version: i32,
    },
    /// In API V2, a key outside the key space of the command (`r` for raw, `x` for
    /// transactional, `t`/`m` for TiDB's V1 requests).
    InvalidKeyMode {
        /// The command refused.
        cmd: CommandKind,
        /// The store's API version.
        storage_api_version: ApiVersion,
        /// The offending key, upper-case hex.
        key: String,
    },
    /// In API V2, a range that is not inside the key space of the command.
    InvalidKeyRangeMode {
        /// The command refused.
        cmd: CommandKind,
        /// The store's API version.
        storage_api_version: ApiVersion,
        /// Start and end of the offending range, upper-case hex (`None`: unbounded).
        range: (Option<String>, Option<String>),
    },
    /// A key longer than the store's maximum key size.
    KeyTooLarge {
        /// The key's length in bytes.
        size: usize,
        /// The store's limit in bytes.
        limit: usize,
    },
}

impl AdmissionError {
    /// The error as TiKV's `{:?}` of its storage error enum prints it.
    pub fn debug_text(&self) -> String {
        match self {
            Self::ApiVersionNotMatched {
                cmd,
                storage_api_version,
                req_api_version,
            } => format!(
                "ApiVersionNotMatched {{ cmd: {cmd}, storage_api_version: {storage_api_version:?}, \
                 req_api_version: {} }}",
                api_version_name(*req_api_version)
            ),
            Self::InvalidKeyMode {
                cmd,
                storage_api_version,
                key,
            } => format!(
                "InvalidKeyMode {{ cmd: {cmd}, storage_api_version: {storage_api_version:?}, \
                 key: {key:?} }}"
            ),
            Self::InvalidKeyRangeMode {
                cmd,
                storage_api_version,
                range,
            } => format!(
                "InvalidKeyRangeMode {{ cmd: {cmd}, storage_api_version: \
                 {storage_api_version:?}, range: {range:?} }}"
            ),
            Self::KeyTooLarge { size, limit } => {
                format!("KeyTooLarge {{ size: {size}, limit: {limit} }}")
            }
        }
    }

    /// The `KeyError` TiKV answers for this error: it files storage errors under `abort`,
    /// spelled with Rust's debug formatting of its error type.
    pub fn key_error(&self) -> KeyError {
        KeyError {
            abort: format!("Error({})", self.debug_text()),
            ..KeyError::default()
        }
    }
}

impl fmt::Display for AdmissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ApiVersionNotMatched {
                cmd,
                storage_api_version,
                req_api_version,
            } => write!(
                f,
                "Api version in request does not match with TiKV storage, cmd: {cmd}, \
                 storage: {storage_api_version:?}, request: {}",
                api_version_name(*req_api_version)
            ),
            Self::InvalidKeyMode {
                cmd,
                storage_api_version,
                key,
            } => write!(
                f,
                "Key mode mismatched with the request mode, cmd: {cmd}, \
                 storage: {storage_api_version:?}, key: {key}"
            ),
            Self::InvalidKeyRangeMode {
                cmd,
                storage_api_version,
                range,
            } => write!(
                f,
                "Key mode mismatched with the request mode, cmd: {cmd}, \
                 storage: {storage_api_version:?}, range: {range:?}"
            ),
            Self::KeyTooLarge { size, limit } => {
                write!(f, "max key size exceeded, size: {size}, limit: {limit}")
            }
        }
    }
}

impl std::error::Error for AdmissionError {}

/// The key space a key belongs to under API V2 (TiKV's `ApiV2::parse_key_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyMode {
    Raw,
    Txn,
    Tidb,
    Unknown,
}

fn key_mode(key: &[u8]) -> KeyMode {
    match key.first() {
        Some(&RAW_KEY_PREFIX) => KeyMode::Raw,
        Some(&TXN_KEY_PREFIX) => KeyMode::Txn,
        Some(b'm' | b't') => KeyMode::Tidb,
        _ => KeyMode::Unknown,
    }
}

/// The key space of a range: both ends must be bounded and share the first byte, or the end
/// must be the single byte after the start's first one (a whole key space).
fn range_mode(start: &[u8], end: Option<&[u8]>) -> KeyMode {
    let (Some(&first), Some(end)) = (start.first(), end) else {
        return KeyMode::Unknown;
    };
    if end.first() == Some(&first) || end == [first.wrapping_add(1)] {
        key_mode(start)
    } else {
        KeyMode::Unknown
    }
}

/// The API version a request carries (V1 when it has no context).
fn request_version(ctx: Option<&Context>) -> i32 {
    ctx.map_or(ApiVersion::V1 as i32, |ctx| ctx.api_version)
}

/// Which key mode the keys of `cmd` must have, or `None` when any key is accepted; errors
/// when the store does not serve the request's API version for this kind of command.
fn required_mode(
    storage: ApiVersion,
    req_api_version: i32,
    cmd: CommandKind,
) -> Result<Option<KeyMode>, AdmissionError> {
    let request = ApiVersion::try_from(req_api_version);
    match (storage, request) {
        (ApiVersion::V1, Ok(ApiVersion::V1)) => Ok(None),
        // A V1TTL store serves raw requests only (clients stamp them V1).
        (ApiVersion::V1ttl, Ok(ApiVersion::V1)) if cmd.is_raw() => Ok(None),
        // A V2 store takes V1 transactional requests from TiDB, for compatibility.
        (ApiVersion::V2, Ok(ApiVersion::V1)) if !cmd.is_raw() => Ok(Some(KeyMode::Tidb)),
        (ApiVersion::V2, Ok(ApiVersion::V2)) if cmd.is_raw() => Ok(Some(KeyMode::Raw)),
        (ApiVersion::V2, Ok(ApiVersion::V2)) => Ok(Some(KeyMode::Txn)),
        _ => Err(AdmissionError::ApiVersionNotMatched {
            cmd,
            storage_api_version: storage,
            req_api_version,
        }),
    }
}

/// Checks a request's API version against the store and, in V2, the key mode of every key.
///
/// Errors with [`AdmissionError::ApiVersionNotMatched`] or
/// [`AdmissionError::InvalidKeyMode`] (naming the first offending key).
pub(crate) fn check_api_version<'k>(
    storage: ApiVersion,
    ctx: Option<&Context>,
    cmd: impl Into<CommandKind>,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<(), AdmissionError> {
    let cmd = cmd.into();
    let Some(mode) = required_mode(storage, request_version(ctx), cmd)? else {
        return Ok(());
    };
    match keys.into_iter().find(|key| key_mode(key) != mode) {
        Some(key) => Err(AdmissionError::InvalidKeyMode {
            cmd,
            storage_api_version: storage,
            key: hex_upper(key),
        }),
        None => Ok(()),
    }
}

/// Checks a request's API version and, in V2, that every range lies in the key space of the
/// command; an unbounded end (`None`) never does.
///
/// Errors with [`AdmissionError::ApiVersionNotMatched`] or
/// [`AdmissionError::InvalidKeyRangeMode`].
pub(crate) fn check_api_version_ranges<'k>(
    storage: ApiVersion,
    ctx: Option<&Context>,
    cmd: impl Into<CommandKind>,
    ranges: impl IntoIterator<Item = (&'k [u8], Option<&'k [u8]>)>,
) -> Result<(), AdmissionError> {
    let cmd = cmd.into();
    let Some(mode) = required_mode(storage, request_version(ctx), cmd)? else {
        return Ok(());
    };
    for (start, end) in ranges {
        if range_mode(start, end) != mode {
            return Err(AdmissionError::InvalidKeyRangeMode {
                cmd,
                storage_api_version: storage,
                range: (Some(hex_upper(start)), end.map(hex_upper)),
            });
        }
    }
    Ok(())
}

/// Refuses the first key longer than `limit` bytes with [`AdmissionError::KeyTooLarge`].
pub(crate) fn check_key_size<'k>(
    keys: impl IntoIterator<Item = &'k [u8]>,
    limit: usize,
) -> Result<(), AdmissionError> {
    match keys.into_iter().find(|key| key.len() > limit) {
        Some(key) => Err(AdmissionError::KeyTooLarge {
            size: key.len(),
            limit,
        }),
        None => Ok(()),
    }
}

/// Runs TiKV's storage checks on a transactional request: API version and key mode for the
/// reads, prewrites, flushes, pessimistic locks and range deletes, plus the key size for the
/// writes `Storage::sched_txn_command` admits. Returns the refusal as TiKV answers it, or
/// `None` when the request may run. Other transactional commands are not checked (TiKV does
/// not check them either).
pub(crate) fn refuse_txn_request(
    storage: ApiVersion,
    max_key_size: usize,
    cmd: &Req,
) -> Option<Resp> {
    /// The keys encoded back to back in one buffer (a fixed few allocations per request,
    /// not one per key), with the end of each.
    struct Encoded {
        buffer: Vec<u8>,
        ends: Vec<usize>,
    }
    fn keys(keys: &mut dyn Iterator<Item = &Bytes>) -> Encoded {
        let keys: Vec<&Bytes> = keys.collect();
        let total = keys.iter().map(|key| encoded_len(key.len())).sum();
        let mut encoded = Encoded {
            buffer: Vec::with_capacity(total),
            ends: Vec::with_capacity(keys.len()),
        };
        for key in keys {
            encode_bytes_into(&mut encoded.buffer, key);
            encoded.ends.push(encoded.buffer.len());
        }
        encoded
    }
    fn slices(encoded: &Encoded) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(encoded.ends.iter().copied());
        starts
            .zip(encoded.ends.iter().copied())
            .map(|(start, end)| &encoded.buffer[start..end])
    }
    // Writes: API version and key mode first, then the key size.
    let write = |ctx: Option<&Context>, cmd: TxnCommand, encoded: &Encoded| {
        check_api_version(storage, ctx, cmd, slices(encoded))
            .and_then(|()| check_key_size(slices(encoded), max_key_size))
            .err()
    };
    let one = |err: AdmissionError| Some(Box::new(err.key_error()));
    match cmd {
        Req::Get(r) => {
            let encoded = keys(&mut std::iter::once(&r.key));
            let err = check_api_version(
                storage,
                r.context.as_ref(),
                TxnCommand::Get,
                slices(&encoded),
            );
            err.err().map(|err| {
                Resp::Get(kvrpcpb::GetResponse {
                    error: one(err),
                    ..Default::default()
                })
            })
        }
        Req::BatchGet(r) => {
            let encoded = keys(&mut r.keys.iter());
            let err = check_api_version(
                storage,
                r.context.as_ref(),
                TxnCommand::BatchGet,
                slices(&encoded),
            );
            err.err().map(|err| {
                let error = err.key_error();
                // The first pair repeats the error, for older clients.
                Resp::BatchGet(kvrpcpb::BatchGetResponse {
                    pairs: vec![kvrpcpb::KvPair {
                        error: Some(Box::new(error.clone())),
                        ..Default::default()
                    }],
                    error: Some(Box::new(error)),
                    ..Default::default()
                })
            })
        }
        Req::BufferBatchGet(r) => {
            let encoded = keys(&mut r.keys.iter());
            let err = check_api_version(
                storage,
                r.context.as_ref(),
                TxnCommand::BufferBatchGet,
                slices(&encoded),
            );
            err.err().map(|err| {
                Resp::BufferBatchGet(kvrpcpb::BufferBatchGetResponse {
                    error: one(err),
                    ..Default::default()
                })
            })
        }
        Req::Scan(r) => {
            let start = encode_bytes(&r.start_key);
            // An empty end is unbounded; every other bound is checked encoded.
            let end = (!r.end_key.is_empty()).then(|| encode_bytes(&r.end_key));
            let err = check_api_version_ranges(
                storage,
                r.context.as_ref(),
                TxnCommand::Scan,
                [(&start[..], end.as_deref())],
            );
            err.err().map(|err| {
                let error = err.key_error();
                Resp::Scan(kvrpcpb::ScanResponse {
                    pairs: vec![kvrpcpb::KvPair {
                        error: Some(Box::new(error.clone())),
                        ..Default::default()
                    }],
                    error: Some(Box::new(error)),
                    ..Default::default()
                })
            })
        }
        Req::Prewrite(r) => {
            let encoded = keys(&mut r.mutations.iter().map(|m| &m.key));
            write(r.context.as_ref(), TxnCommand::Prewrite, &encoded).map(|err| {
                Resp::Prewrite(kvrpcpb::PrewriteResponse {
                    errors: vec![err.key_error()],
                    ..Default::default()
                })
            })
        }
        Req::Flush(r) => {
            let encoded = keys(&mut r.mutations.iter().map(|m| &m.key));
            write(r.context.as_ref(), TxnCommand::Flush, &encoded).map(|err| {
                Resp::Flush(kvrpcpb::FlushResponse {
                    errors: vec![err.key_error()],
                    ..Default::default()
                })
            })
        }
        Req::PessimisticLock(r) => {
            let encoded = keys(&mut r.mutations.iter().map(|m| &m.key));
            write(
                r.context.as_ref(),
                TxnCommand::AcquirePessimisticLock,
                &encoded,
            )
            .map(|err| {
                Resp::PessimisticLock(kvrpcpb::PessimisticLockResponse {
                    errors: vec![err.key_error()],
                    ..Default::default()
                })
            })
        }
        Req::DeleteRange(r) => {
            // Both ends are keys here, an empty end included.
            let (start, end) = (encode_bytes(&r.start_key), encode_bytes(&r.end_key));
            let err = check_api_version_ranges(
                storage,
                r.context.as_ref(),
                TxnCommand::DeleteRange,
                [(&start[..], Some(&end[..]))],
            );
            err.err().map(|err| {
                Resp::DeleteRange(kvrpcpb::DeleteRangeResponse {
                    error: err.to_string(),
                    ..Default::default()
                })
            })
        }
        _ => None,
    }
}

/// Spells an API version the way TiKV's debug output does (`V1`, `V1ttl`, `V2`, `V3`).
fn api_version_name(version: i32) -> String {
    match ApiVersion::try_from(version) {
        Ok(known) => format!("{known:?}"),
        Err(_) => version.to_string(),
    }
}

/// Upper-case hex of a key, as TiKV prints keys in key-mode errors.
pub(crate) fn hex_upper(key: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(key.len() * 2);
    for byte in key {
        // Writing into a String cannot fail.
        let _ = write!(out, "{byte:02X}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(version: ApiVersion) -> Option<Context> {
        Some(Context {
            api_version: version as i32,
            ..Context::default()
        })
    }

    /// Follows TiKV's `Storage::check_api_version` table: which store takes which request
    /// version, for raw and for transactional commands.
    #[test]
    fn check_api_version_accepts_tikvs_pairs_only() {
        use ApiVersion::{V1, V1ttl, V2, V3};
        let raw = CommandKind::Raw(RawCommand::Get);
        let txn = CommandKind::Txn(TxnCommand::Get);
        let raw_ok = [(V1, V1), (V1ttl, V1), (V2, V2)];
        let txn_ok = [(V1, V1), (V2, V1), (V2, V2)];
        for storage in [V1, V1ttl, V2, V3] {
            for request in [V1, V1ttl, V2, V3] {
                for (cmd, accepted) in [(raw, &raw_ok), (txn, &txn_ok)] {
                    let result = required_mode(storage, request as i32, cmd);
                    assert_eq!(
                        result.is_ok(),
                        accepted.contains(&(storage, request)),
                        "{cmd} on a {storage:?} store, {request:?} request"
                    );
                }
            }
        }
    }

    #[test]
    fn v2_key_modes_follow_the_first_byte() {
        let v2 = ctx(ApiVersion::V2);
        let txn = TxnCommand::Prewrite;
        assert!(check_api_version(ApiVersion::V2, v2.as_ref(), txn, [&b"x\0\0\0k"[..]]).is_ok());
        let err = check_api_version(ApiVersion::V2, v2.as_ref(), txn, [&b"r\0\0\0k"[..]]);
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err(
                "Key mode mismatched with the request mode, cmd: prewrite, storage: V2, \
                 key: 720000006B"
                    .to_owned()
            )
        );
        // TiDB's V1 requests to a V2 store may carry only TiDB keys.
        let v1 = ctx(ApiVersion::V1);
        assert!(check_api_version(ApiVersion::V2, v1.as_ref(), txn, [&b"t1"[..]]).is_ok());
        assert!(check_api_version(ApiVersion::V2, v1.as_ref(), txn, [&b"x1"[..]]).is_err());
        assert!(check_api_version(ApiVersion::V2, v2.as_ref(), txn, [&b""[..]]).is_err());
    }

    #[test]
    fn v2_ranges_stay_in_one_key_space() {
        let v2 = ctx(ApiVersion::V2);
        let scan = TxnCommand::Scan;
        let check = |start: &[u8], end: Option<&[u8]>| {
            check_api_version_ranges(ApiVersion::V2, v2.as_ref(), scan, [(start, end)]).is_ok()
        };
        assert!(check(b"x\0\0\0a", Some(b"x\0\0\x01")));
        assert!(check(b"x", Some(b"y")));
        assert!(!check(b"x\0\0\0a", None));
        assert!(!check(b"x\0\0\0a", Some(b"y\0")));
        assert!(!check(b"", Some(b"x")));
    }

    #[test]
    fn errors_print_tikvs_texts() {
        let err = AdmissionError::ApiVersionNotMatched {
            cmd: TxnCommand::Prewrite.into(),
            storage_api_version: ApiVersion::V1,
            req_api_version: ApiVersion::V2 as i32,
        };
        assert_eq!(
            err.to_string(),
            "Api version in request does not match with TiKV storage, cmd: prewrite, \
             storage: V1, request: V2"
        );
        assert_eq!(
            err.key_error().abort,
            "Error(ApiVersionNotMatched { cmd: prewrite, storage_api_version: V1, \
             req_api_version: V2 })"
        );
        assert_eq!(
            check_key_size([&[0u8; 9][..]], 8).map_err(|e| e.to_string()),
            Err("max key size exceeded, size: 9, limit: 8".to_owned())
        );
    }
}
