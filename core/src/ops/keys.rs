//! The client's key spaces: what users pass, what requests carry, and what region boundaries
//! are compared against.
//!
//! - API V1/V1TTL raw: all three are the user's key.
//! - API V1 transactional: requests carry the user's key; region boundaries are its
//!   memcomparable encoding (TiKV encodes transactional keys before storing them).
//! - API V2: requests carry the keyspace prefix (`'r'` raw or `'x'` transactional, then the
//!   3-byte keyspace id) in front of the user key, and PD's region boundaries are
//!   memcomparable-encoded request keys.

use bytes::{Bytes, BytesMut};

use crate::config::ApiVersion;
use crate::error::Error;
use tikv_proto::codec;

/// Converts keys between the user's, the wire's and the region cache's spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeySpace {
    /// Keys travel as the user wrote them.
    Plain,
    /// API V1 transactional keys: requests carry the user's key, region boundaries its
    /// memcomparable encoding.
    Encoded,
    /// API V2: keys carry a keyspace prefix; region boundaries are memcomparable-encoded.
    Keyspace {
        /// The 4-byte prefix.
        prefix: [u8; 4],
        /// First request key after the keyspace (prefix + 1).
        end: [u8; 4],
    },
}

impl KeySpace {
    /// The key space of raw requests for `api_version` and keyspace `keyspace_id`.
    pub(crate) fn raw(api_version: ApiVersion, keyspace_id: Option<u32>) -> Result<Self, Error> {
        match api_version {
            ApiVersion::V1 | ApiVersion::V1Ttl => Ok(Self::Plain),
            ApiVersion::V2 => Self::in_keyspace(codec::KeyMode::Raw, keyspace_id),
        }
    }

    /// The key space of transactional requests for `api_version` and keyspace `keyspace_id`.
    pub(crate) fn txn(api_version: ApiVersion, keyspace_id: Option<u32>) -> Result<Self, Error> {
        match api_version {
            ApiVersion::V1 | ApiVersion::V1Ttl => Ok(Self::Encoded),
            ApiVersion::V2 => Self::in_keyspace(codec::KeyMode::Txn, keyspace_id),
        }
    }

    /// API V2's key space of `mode` in keyspace `keyspace_id` (the default one when `None`).
    fn in_keyspace(mode: codec::KeyMode, keyspace_id: Option<u32>) -> Result<Self, Error> {
        let (prefix, end) = codec::range(mode, keyspace_id.unwrap_or(0))
            .map_err(|err| Error::InvalidArgument(err.to_string()))?;
        Ok(Self::Keyspace { prefix, end })
    }

    /// Whether requests carry exactly the user's keys (raw V1), which TiKV must not encode.
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Self::Plain)
    }

    /// The request key for a user key (the same buffer, shared, when no prefix is added).
    pub(crate) fn request_key(&self, user_key: &Bytes) -> Bytes {
        match self {
            Self::Plain | Self::Encoded => user_key.clone(),
            Self::Keyspace { prefix, .. } => {
                let mut key = BytesMut::with_capacity(4 + user_key.len());
                key.extend_from_slice(prefix);
                key.extend_from_slice(user_key);
                key.freeze()
            }
        }
    }

    /// The request key for the end of a user range; an empty end means "no bound", which in
    /// a keyspace is the keyspace's end.
    pub(crate) fn request_end(&self, user_end: &Bytes) -> Bytes {
        match self {
            Self::Plain | Self::Encoded => user_end.clone(),
            Self::Keyspace { end, .. } if user_end.is_empty() => Bytes::copy_from_slice(end),
            Self::Keyspace { .. } => self.request_key(user_end),
        }
    }

    /// The region-cache key of a request key (the same buffer, shared, for raw V1).
    pub(crate) fn routing_key(&self, request_key: &Bytes) -> Bytes {
        match self {
            Self::Plain => request_key.clone(),
            Self::Encoded | Self::Keyspace { .. } => Bytes::from(codec::encode_bytes(request_key)),
        }
    }

    /// The region-cache keys of many request keys, as [`KeySpace::routing_key`] each, but
    /// encoded into one shared buffer: two allocations for the lot instead of two per key.
    pub(crate) fn routing_keys<C: FromIterator<Bytes>>(&self, request_keys: &[Bytes]) -> C {
        match self {
            Self::Plain => request_keys.iter().cloned().collect(),
            Self::Encoded | Self::Keyspace { .. } => {
                let total = request_keys
                    .iter()
                    .map(|key| codec::encoded_len(key.len()))
                    .sum();
                let mut buffer = Vec::with_capacity(total);
                let mut ends = smallvec::SmallVec::<[usize; 16]>::new();
                for key in request_keys {
                    codec::encode_bytes_into(&mut buffer, key);
                    ends.push(buffer.len());
                }
                let buffer = Bytes::from(buffer);
                let mut start = 0;
                ends.into_iter()
                    .map(|end| {
                        let key = buffer.slice(start..end);
                        start = end;
                        key
                    })
                    .collect()
            }
        }
    }

    /// The request key at a region boundary, clamped to the key space; `None` for the
    /// unbounded end ("") of the key space.
    pub(crate) fn boundary_to_request(&self, boundary: &[u8]) -> Option<Bytes> {
        if boundary.is_empty() {
            return None;
        }
        match self {
            Self::Plain => Some(Bytes::copy_from_slice(boundary)),
            Self::Encoded => Some(Bytes::from(
                codec::decode_bytes(boundary)
                    .map(|(key, _)| key)
                    .unwrap_or_else(|_| boundary.to_vec()),
            )),
            Self::Keyspace { prefix, end } => {
                // A boundary that does not decode lies outside any keyspace's keys: compare it
                // raw, which places it correctly relative to the prefix.
                let key = codec::decode_bytes(boundary)
                    .map(|(key, _)| key)
                    .unwrap_or_else(|_| boundary.to_vec());
                if key.as_slice() >= &end[..] {
                    Some(Bytes::copy_from_slice(end))
                } else if key.as_slice() <= &prefix[..] {
                    Some(Bytes::copy_from_slice(prefix))
                } else {
                    Some(Bytes::from(key))
                }
            }
        }
    }

    /// A region boundary as a user key: the key space's own start and end (and anything
    /// beyond them) are the empty key, which means "unbounded" in a user's range.
    pub(crate) fn user_boundary(&self, boundary: &[u8]) -> Bytes {
        match self {
            Self::Plain => Bytes::copy_from_slice(boundary),
            Self::Encoded => self.boundary_to_request(boundary).unwrap_or_default(),
            Self::Keyspace { prefix, end } => match self.boundary_to_request(boundary) {
                Some(key) if key.as_ref() != prefix && key.as_ref() != end => key.slice(4..),
                _ => Bytes::new(),
            },
        }
    }

    /// The user key of a request key from a response.
    ///
    /// Errors when the key lies outside the keyspace (a server bug or a crossed wire).
    pub(crate) fn user_key(&self, request_key: Bytes) -> Result<Bytes, Error> {
        match self {
            Self::Plain | Self::Encoded => Ok(request_key),
            Self::Keyspace { prefix, .. } => {
                if request_key.starts_with(prefix) {
                    Ok(request_key.slice(4..))
                } else {
                    Err(Error::UnexpectedResponse(format!(
                        "key {request_key:?} outside the keyspace"
                    )))
                }
            }
        }
    }

    /// Whether a request key is the start of the key space (nothing lies before it).
    pub(crate) fn is_start(&self, request_key: &[u8]) -> bool {
        match self {
            Self::Plain | Self::Encoded => request_key.is_empty(),
            Self::Keyspace { prefix, .. } => request_key <= &prefix[..],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_pass_through() {
        let space = KeySpace::Plain;
        assert_eq!(
            space.request_key(&Bytes::from_static(b"k")),
            Bytes::from_static(b"k")
        );
        assert_eq!(space.request_end(&Bytes::from_static(b"")), Bytes::new());
        assert_eq!(
            space.routing_key(&Bytes::from_static(b"k")),
            Bytes::from_static(b"k")
        );
        assert_eq!(space.boundary_to_request(b""), None);
        assert_eq!(
            space.boundary_to_request(b"m"),
            Some(Bytes::from_static(b"m"))
        );
        assert!(space.is_start(b""));
        assert_eq!(
            space.user_key(Bytes::from_static(b"x")),
            Ok(Bytes::from_static(b"x"))
        );
    }

    #[test]
    fn transactional_keys_route_by_their_encoding() {
        let space = KeySpace::txn(ApiVersion::V1, None).unwrap_or(KeySpace::Plain);
        assert_eq!(space, KeySpace::Encoded);
        assert!(!space.is_plain());
        assert_eq!(
            space.request_key(&Bytes::from_static(b"k")),
            Bytes::from_static(b"k")
        );
        assert_eq!(
            space.routing_key(&Bytes::from_static(b"k")),
            Bytes::from(codec::encode_bytes(b"k"))
        );
        assert_eq!(
            space.boundary_to_request(&codec::encode_bytes(b"m")),
            Some(Bytes::from_static(b"m"))
        );
        assert_eq!(space.boundary_to_request(b""), None);
        assert_eq!(
            space.user_boundary(&codec::encode_bytes(b"m")),
            Bytes::from_static(b"m")
        );
        assert_eq!(space.user_boundary(b""), Bytes::new());
        assert!(space.is_start(b""));
        // V2 transactional keys carry the 'x' prefix.
        let v2 = KeySpace::txn(ApiVersion::V2, Some(1)).unwrap_or(KeySpace::Plain);
        assert_eq!(
            v2.request_key(&Bytes::from_static(b"k")),
            Bytes::from_static(b"x\x00\x00\x01k")
        );
        assert_eq!(
            v2.user_boundary(&codec::encode_bytes(b"x\x00\x00\x01m")),
            Bytes::from_static(b"m")
        );
    }

    #[test]
    fn keyspace_keys_are_prefixed_and_encoded() {
        let space = KeySpace::raw(ApiVersion::V2, Some(1)).unwrap_or(KeySpace::Plain);
        assert_eq!(
            space.request_key(&Bytes::from_static(b"k")),
            Bytes::from_static(b"r\x00\x00\x01k")
        );
        assert_eq!(
            space.request_end(&Bytes::from_static(b"")),
            Bytes::from_static(b"r\x00\x00\x02")
        );
        let routing = space.routing_key(&Bytes::from_static(b"r\x00\x00\x01k"));
        assert_eq!(
            codec::decode_bytes(&routing).map(|(k, _)| k),
            Ok(b"r\x00\x00\x01k".to_vec())
        );
        assert_eq!(
            space.boundary_to_request(&codec::encode_bytes(b"r\x00\x00\x01m")),
            Some(Bytes::from_static(b"r\x00\x00\x01m"))
        );
        // Boundaries past the keyspace clamp to its end.
        assert_eq!(
            space.boundary_to_request(&codec::encode_bytes(b"x")),
            Some(Bytes::from_static(b"r\x00\x00\x02"))
        );
        assert_eq!(
            space.user_key(Bytes::from_static(b"r\x00\x00\x01abc")),
            Ok(Bytes::from_static(b"abc"))
        );
        assert!(
            space
                .user_key(Bytes::from_static(b"r\x00\x00\x02abc"))
                .is_err()
        );
        assert!(space.is_start(b"r\x00\x00\x01"));
        // Boundaries as user keys: inside the keyspace without the prefix, the keyspace's
        // edges (and beyond) as the empty key.
        assert_eq!(
            space.user_boundary(&codec::encode_bytes(b"r\x00\x00\x01m")),
            Bytes::from_static(b"m")
        );
        assert_eq!(
            space.user_boundary(&codec::encode_bytes(b"r\x00\x00\x01")),
            Bytes::new()
        );
        assert_eq!(
            space.user_boundary(&codec::encode_bytes(b"x")),
            Bytes::new()
        );
        assert_eq!(space.user_boundary(b""), Bytes::new());
        assert_eq!(
            KeySpace::Plain.user_boundary(b"m"),
            Bytes::from_static(b"m")
        );
    }

    /// The shared-buffer encoding gives each key what `routing_key` gives it alone, in
    /// every key space.
    #[test]
    fn routing_keys_equal_routing_key_one_by_one() {
        fn property(keys: Vec<Vec<u8>>) -> bool {
            let keys: Vec<Bytes> = keys.into_iter().map(Bytes::from).collect();
            let spaces = [
                KeySpace::Plain,
                KeySpace::Encoded,
                KeySpace::raw(ApiVersion::V2, Some(7)).unwrap_or(KeySpace::Plain),
            ];
            spaces.iter().all(|space| {
                let batch: Vec<Bytes> = space.routing_keys(&keys);
                let single: Vec<Bytes> = keys.iter().map(|key| space.routing_key(key)).collect();
                batch == single
            })
        }
        quickcheck::quickcheck(property as fn(Vec<Vec<u8>>) -> bool);
    }
}
