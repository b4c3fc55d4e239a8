//! The admission checks TiKV runs on a raw request before it reads or writes anything.

use tikv_proto::kvrpcpb::{ApiVersion, Context};

use super::error::{RawCommand, RawError, hex_upper};

/// First byte of every raw key in API V2 (the keyspace prefix is this plus 3 id bytes).
pub(crate) const RAW_KEY_PREFIX: u8 = b'r';

/// One of the three column families a raw request may name (API V1 / V1TTL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ColumnFamily {
    /// `default`, also what an empty name means.
    Default,
    /// `lock`.
    Lock,
    /// `write`.
    Write,
}

impl ColumnFamily {
    /// Position of the family in the store's array of key spaces.
    pub(crate) fn index(self) -> usize {
        match self {
            Self::Default => 0,
            Self::Lock => 1,
            Self::Write => 2,
        }
    }
}

/// Whether the store accepts raw requests stamped with this API version at all.
///
/// Mirrors TiKV: a V1 store takes V1 requests, a V1TTL store takes V1 requests (clients do not
/// stamp V1TTL), a V2 store takes V2 requests; every other pairing (including anything on a
/// V3 store) is refused.
fn request_version_accepted(storage: ApiVersion, request: i32) -> bool {
    matches!(
        (storage, ApiVersion::try_from(request)),
        (ApiVersion::V1 | ApiVersion::V1ttl, Ok(ApiVersion::V1))
            | (ApiVersion::V2, Ok(ApiVersion::V2))
    )
}

/// The API version a request carries (V1 when it has no context).
fn request_version(ctx: Option<&Context>) -> i32 {
    ctx.map_or(ApiVersion::V1 as i32, |ctx| ctx.api_version)
}

/// Checks a request's API version against the store and, in V2, that every key is a raw key
///
/// Errors with [`RawError::ApiVersionNotMatched`] or [`RawError::InvalidKeyMode`].
pub(crate) fn check_api_version<'k>(
    storage: ApiVersion,
    ctx: Option<&Context>,
    cmd: RawCommand,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<(), RawError> {
    let req_api_version = request_version(ctx);
    if !request_version_accepted(storage, req_api_version) {
        return Err(RawError::ApiVersionNotMatched {
            cmd,
            storage_api_version: storage,
            req_api_version,
        });
    }
    if storage == ApiVersion::V2 {
        // TiKV judges the key mode by the first byte alone.
        if let Some(key) = keys
            .into_iter()
            .find(|key| key.first() != Some(&RAW_KEY_PREFIX))
        {
            return Err(RawError::InvalidKeyMode {
                cmd,
                storage_api_version: storage,
                key: hex_upper(key),
            });
        }
    }
    Ok(())
}

/// Checks a request's API version and, in V2, that every range lies in the raw key space
///
/// A V2 raw range needs a non-empty start beginning with `'r'` and a non-empty end that
/// either also begins with `'r'` or is exactly `"s"` (the end of the whole raw space); an
/// unbounded end (`None`) is refused. Errors with [`RawError::ApiVersionNotMatched`] or
/// [`RawError::InvalidKeyRangeMode`].
pub(crate) fn check_api_version_ranges<'k>(
    storage: ApiVersion,
    ctx: Option<&Context>,
    cmd: RawCommand,
    ranges: impl IntoIterator<Item = (&'k [u8], Option<&'k [u8]>)>,
) -> Result<(), RawError> {
    let req_api_version = request_version(ctx);
    if !request_version_accepted(storage, req_api_version) {
        return Err(RawError::ApiVersionNotMatched {
            cmd,
            storage_api_version: storage,
            req_api_version,
        });
    }
    if storage == ApiVersion::V2 {
        for (start, end) in ranges {
            if !is_raw_range(start, end) {
                return Err(RawError::InvalidKeyRangeMode {
                    cmd,
                    storage_api_version: storage,
                    range: (Some(hex_upper(start)), end.map(hex_upper)),
                });
            }
        }
    }
    Ok(())
}

/// Whether `[start, end)` stays inside API V2's raw key space.
fn is_raw_range(start: &[u8], end: Option<&[u8]>) -> bool {
    let (Some(&first), Some(end)) = (start.first(), end) else {
        return false;
    };
    let same_mode = end.first() == Some(&first) || end == [first.wrapping_add(1)];
    same_mode && first == RAW_KEY_PREFIX
}

/// Resolves the column family a raw request names
///
/// Empty means `default`. V1 and V1TTL accept `default`, `lock` and `write`; V2 accepts only
/// the empty name. Errors with [`RawError::InvalidCf`] or [`RawError::CfDeprecated`].
pub(crate) fn resolve_cf(cf: &str, storage: ApiVersion) -> Result<ColumnFamily, RawError> {
    match storage {
        _ if cf.is_empty() => Ok(ColumnFamily::Default),
        ApiVersion::V1 | ApiVersion::V1ttl => match cf {
            "default" => Ok(ColumnFamily::Default),
            "lock" => Ok(ColumnFamily::Lock),
            "write" => Ok(ColumnFamily::Write),
            _ => Err(RawError::InvalidCf(cf.to_owned())),
        },
        // A V3 store never gets here: the API version check refuses every request first.
        ApiVersion::V2 | ApiVersion::V3 => Err(RawError::CfDeprecated(cf.to_owned())),
    }
}

/// Whether the store keeps TTLs (V1TTL and V2 do).
pub(crate) fn ttl_enabled(storage: ApiVersion) -> bool {
    matches!(storage, ApiVersion::V1ttl | ApiVersion::V2)
}

/// Refuses the first key longer than `limit` bytes with [`RawError::KeyTooLarge`].
pub(crate) fn check_key_size<'k>(
    keys: impl IntoIterator<Item = &'k [u8]>,
    limit: usize,
) -> Result<(), RawError> {
    match keys.into_iter().find(|key| key.len() > limit) {
        Some(key) => Err(RawError::KeyTooLarge {
            size: key.len(),
            limit,
        }),
        None => Ok(()),
    }
}
