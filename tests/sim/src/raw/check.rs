//! The raw-only admission checks: column families and TTL support. API version, key mode
//! and key size checks are shared with transactional commands ([`crate::admission`]).

use tikv_proto::kvrpcpb::ApiVersion;

use super::error::RawError;

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
