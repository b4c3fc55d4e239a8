//! Key ranges as TiKV takes them: `[start_key, end_key)` with an empty end for "no bound",
//! made from any Rust range of keys.

use std::ops::{Bound, RangeBounds};

use bytes::Bytes;

/// A key range handed to a task handler: `[start_key, end_key)`, `end_key` empty meaning the
/// end of the key space (the form TiKV's requests carry).
///
/// It is a [`RangeBounds<[u8]>`](RangeBounds), so a handler can pass it straight to
/// [`RawClient::scan`](crate::RawClient::scan), [`delete_range`](crate::RawClient::delete_range)
/// and the like.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyRange {
    /// First key (empty: from the start of the key space).
    pub start_key: Bytes,
    /// First key after the range (empty: no bound).
    pub end_key: Bytes,
}

impl KeyRange {
    /// `range` in `[start_key, end_key)` form, or `None` when it holds no key (so callers
    /// skip the request). An excluded start or an included end becomes the key followed by
    /// a zero byte, the next key in byte order; an unbounded side becomes the empty key.
    pub(crate) fn from_bounds<K: AsRef<[u8]> + ?Sized>(
        range: &impl RangeBounds<K>,
    ) -> Option<Self> {
        let start_key = match range.start_bound() {
            Bound::Included(key) => Bytes::copy_from_slice(key.as_ref()),
            Bound::Excluded(key) => successor(key.as_ref()),
            Bound::Unbounded => Bytes::new(),
        };
        let end_key = match range.end_bound() {
            // No key sorts below the empty key; an empty `end_key` would read as unbounded.
            Bound::Excluded(key) if key.as_ref().is_empty() => return None,
            Bound::Excluded(key) => Bytes::copy_from_slice(key.as_ref()),
            Bound::Included(key) => successor(key.as_ref()),
            Bound::Unbounded => Bytes::new(),
        };
        let empty = !end_key.is_empty() && start_key >= end_key;
        (!empty).then_some(Self { start_key, end_key })
    }
}

/// The first key after `key` in byte order.
fn successor(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next.into()
}

impl RangeBounds<[u8]> for KeyRange {
    fn start_bound(&self) -> Bound<&[u8]> {
        Bound::Included(&self.start_key)
    }

    fn end_bound(&self) -> Bound<&[u8]> {
        if self.end_key.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(&self.end_key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: &'static str, end: &'static str) -> Option<KeyRange> {
        Some(KeyRange {
            start_key: Bytes::from_static(start.as_bytes()),
            end_key: Bytes::from_static(end.as_bytes()),
        })
    }

    #[test]
    fn rust_ranges_become_half_open_ranges_with_an_empty_end_for_no_bound() {
        assert_eq!(KeyRange::from_bounds(&("a".."k")), range("a", "k"));
        assert_eq!(KeyRange::from_bounds(&("a"..="k")), range("a", "k\0"));
        assert_eq!(KeyRange::from_bounds(&("a"..)), range("a", ""));
        assert_eq!(KeyRange::from_bounds(&(.."k")), range("", "k"));
        assert_eq!(KeyRange::from_bounds(&(..="k")), range("", "k\0"));
        assert_eq!(KeyRange::from_bounds::<[u8]>(&..), range("", ""));
        let excluded_start = (Bound::Excluded("a"), Bound::Included("k"));
        assert_eq!(
            KeyRange::from_bounds::<str>(&excluded_start),
            range("a\0", "k\0")
        );
        let from_empty = (Bound::Excluded(""), Bound::Unbounded);
        assert_eq!(KeyRange::from_bounds::<str>(&from_empty), range("\0", ""));
        // Owned and byte keys work the same way.
        let owned = String::from("a")..String::from("k");
        assert_eq!(KeyRange::from_bounds(&owned), range("a", "k"));
        let bytes = Bytes::from_static(b"a")..=Bytes::from_static(b"k");
        assert_eq!(KeyRange::from_bounds(&bytes), range("a", "k\0"));
    }

    #[test]
    fn ranges_holding_no_key_are_none() {
        assert_eq!(KeyRange::from_bounds(&("k".."a")), None);
        assert_eq!(KeyRange::from_bounds(&("a".."a")), None);
        assert_eq!(
            KeyRange::from_bounds(&(.."")),
            None,
            "nothing sorts below the empty key"
        );
        assert_eq!(KeyRange::from_bounds(&("a"..)), range("a", ""));
        let excluded_both = (Bound::Excluded("a"), Bound::Excluded("a\0"));
        assert_eq!(KeyRange::from_bounds::<str>(&excluded_both), None);
        assert_eq!(KeyRange::from_bounds(&("a"..="a")), range("a", "a\0"));
        // The empty key itself is a key: `..=""` holds it.
        assert_eq!(KeyRange::from_bounds(&(..="")), range("", "\0"));
    }

    #[test]
    fn a_key_range_reads_back_as_the_same_range() {
        for original in [
            range("a", "k"),
            range("a", ""),
            range("", "k"),
            range("", ""),
        ] {
            let original = original.unwrap_or_default();
            assert_eq!(KeyRange::from_bounds(&original), Some(original.clone()));
        }
        let unbounded = range("a", "").unwrap_or_default();
        assert_eq!(unbounded.end_bound(), Bound::Unbounded);
        assert!(unbounded.contains(&b"zzz"[..]));
        let bounded = range("a", "k").unwrap_or_default();
        assert!(bounded.contains(&b"a"[..]) && !bounded.contains(&b"k"[..]));
    }
}
