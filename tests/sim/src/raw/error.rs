//! Why a raw command was refused, worded as TiKV words it.

use std::fmt;

use tikv_proto::kvrpcpb::KeyError;

use crate::admission::AdmissionError;

/// The raw command being served, named as TiKV's `CommandKind` names it in error texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RawCommand {
    /// `RawBatchDelete` without `for_cas`.
    BatchDelete,
    /// `RawBatchGet`.
    BatchGet,
    /// `RawBatchPut` without `for_cas`.
    BatchPut,
    /// `RawBatchScan`.
    BatchScan,
    /// `RawPut`, `RawBatchPut`, `RawDelete` or `RawBatchDelete` with `for_cas` set.
    AtomicStore,
    /// `RawChecksum`.
    Checksum,
    /// `RawCompareAndSwap`.
    CompareAndSwap,
    /// `RawDelete` without `for_cas`.
    Delete,
    /// `RawDeleteRange`.
    DeleteRange,
    /// `RawGet`.
    Get,
    /// `RawGetKeyTTL`.
    GetKeyTtl,
    /// `RawPut` without `for_cas`.
    Put,
    /// `RawScan`.
    Scan,
}

impl RawCommand {
    /// Returns TiKV's name for the command (`raw_get`, `raw_atomic_store`, ...)
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtomicStore => "raw_atomic_store",
            Self::BatchDelete => "raw_batch_delete",
            Self::BatchGet => "raw_batch_get",
            Self::BatchPut => "raw_batch_put",
            Self::BatchScan => "raw_batch_scan",
            Self::Checksum => "raw_checksum",
            Self::CompareAndSwap => "raw_compare_and_swap",
            Self::Delete => "raw_delete",
            Self::DeleteRange => "raw_delete_range",
            Self::Get => "raw_get",
            Self::GetKeyTtl => "raw_get_key_ttl",
            Self::Put => "raw_put",
            Self::Scan => "raw_scan",
        }
    }
}

impl fmt::Display for RawCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A raw command refused before or while touching the data.
///
/// `Display` gives the text TiKV puts in a response's `error` string; [`RawError::key_error`]
/// gives the `KeyError` TiKV attaches to the single pair of a failed scan or batch get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawError {
    /// Refused by the checks raw and transactional commands share (API version, key mode,
    /// key size).
    Admission(AdmissionError),
    /// A column family other than `default`, `lock` or `write` (API V1 / V1TTL).
    InvalidCf(String),
    /// Any explicit column family in API V2, where raw requests may not name one.
    CfDeprecated(String),
    /// A non-zero TTL on a store without TTL support (API V1).
    TtlNotEnabled,
    /// A batch put whose `ttls` count is neither 0, 1 nor the number of pairs.
    TtlLenNotEqualsToPairs,
    /// `RawGetKeyTTL` on a store without TTL support (TiKV itself panics here).
    TtlNotSupported,
    /// A batch scan whose ranges are empty or point the wrong way.
    InvalidKeyRanges,
    /// A delete range whose start is not below its (non-empty) end.
    InvalidDeleteRange {
        /// The range start.
        start_key: Vec<u8>,
        /// The range end.
        end_key: Vec<u8>,
    },
    /// A checksum algorithm other than `Crc64Xor`.
    UnknownChecksumAlgorithm(i32),
}

impl RawError {
    /// Returns the `KeyError` TiKV answers for this error inside a scan or batch-get pair
    ///
    /// TiKV files storage errors under `abort`, spelled with Rust's debug formatting of its
    /// error type; this mimics that spelling.
    pub fn key_error(&self) -> KeyError {
        KeyError {
            abort: format!("Error({})", self.debug_text()),
            ..KeyError::default()
        }
    }

    /// The error as TiKV's `{:?}` of its error enum prints it.
    fn debug_text(&self) -> String {
        match self {
            Self::Admission(err) => err.debug_text(),
            Self::InvalidCf(cf) => format!("InvalidCf({cf:?})"),
            Self::CfDeprecated(cf) => format!("CfDeprecated({cf:?})"),
            Self::TtlNotEnabled => "TtlNotEnabled".to_owned(),
            Self::TtlLenNotEqualsToPairs => "TtlLenNotEqualsToPairs".to_owned(),
            // The rest are boxed string errors in TiKV, which debug-print as quoted text.
            Self::TtlNotSupported
            | Self::InvalidKeyRanges
            | Self::InvalidDeleteRange { .. }
            | Self::UnknownChecksumAlgorithm(_) => format!("Other({:?})", self.to_string()),
        }
    }
}

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admission(err) => err.fmt(f),
            Self::InvalidCf(cf) => write!(f, "invalid cf name: {cf}"),
            Self::CfDeprecated(cf) => write!(f, "cf is deprecated in API V2, cf name: {cf}"),
            Self::TtlNotEnabled => f.write_str("ttl is not enabled, but get put request with ttl"),
            Self::TtlLenNotEqualsToPairs => {
                f.write_str("The length of ttls does not equal to the length of pairs")
            }
            Self::TtlNotSupported => f.write_str("get ttl on non-ttl store"),
            Self::InvalidKeyRanges => f.write_str("Invalid KeyRanges"),
            Self::InvalidDeleteRange { start_key, end_key } => write!(
                f,
                "invalid delete range command, start_key: {start_key:?}, end_key: {end_key:?}"
            ),
            Self::UnknownChecksumAlgorithm(algorithm) => {
                write!(f, "unknown checksum algorithm {algorithm}")
            }
        }
    }
}

impl std::error::Error for RawError {}

impl From<AdmissionError> for RawError {
    fn from(err: AdmissionError) -> Self {
        Self::Admission(err)
    }
}
