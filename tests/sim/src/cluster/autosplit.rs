//! Size-based automatic splits: the hook the storage layer calls after writes.
//!
//! TiKV's split checker splits a region once its approximate size or key count passes a
//! threshold, at a key near the middle of its data. Here the storage layer, which knows the
//! data, reports a region's approximate size and key count and proposes the split key
//! (typically its middle key, mapped into boundary space with
//! [`KeyMode::to_boundary`](super::KeyMode::to_boundary)); the cluster decides with its
//! [`SplitPolicy`] and splits. Small thresholds make client-rust's `MULTI_REGION` test mode,
//! which waits for a write load to produce many regions, work in seconds.

use super::{Cluster, ClusterError};

/// When a region is too big and splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPolicy {
    /// Split once the approximate size exceeds this (TiKV's `region-max-size`, 144 MiB).
    pub region_max_size_bytes: u64,
    /// Split once the key count exceeds this (TiKV's `region-max-keys`, 1,440,000).
    pub region_max_keys: u64,
}

impl Default for SplitPolicy {
    fn default() -> Self {
        Self {
            region_max_size_bytes: 144 * 1024 * 1024,
            region_max_keys: 1_440_000,
        }
    }
}

impl SplitPolicy {
    /// A policy that splits regions holding more than `max_keys` keys (size ignored).
    pub fn by_keys(max_keys: u64) -> Self {
        Self {
            region_max_size_bytes: u64::MAX,
            region_max_keys: max_keys,
        }
    }

    /// Whether a region this big should split.
    pub fn should_split(&self, size_bytes: u64, keys: u64) -> bool {
        size_bytes > self.region_max_size_bytes || keys > self.region_max_keys
    }
}

impl Cluster {
    /// Splits `region_id` at `split_key` (boundary space) if the policy says a region of
    /// `size_bytes` and `keys` is too big; returns the new (left) region's id. Answers
    /// `Ok(None)` when no split is due or `split_key` is not strictly inside the region.
    pub fn maybe_split_by_size(
        &mut self,
        region_id: u64,
        size_bytes: u64,
        keys: u64,
        split_key: &[u8],
    ) -> Result<Option<u64>, ClusterError> {
        let region = self
            .region(region_id)
            .ok_or(ClusterError::RegionNotFound { region_id })?;
        if !self.config.split_policy.should_split(size_bytes, keys) {
            return Ok(None);
        }
        let inside = split_key > &region.start_key[..]
            && (region.end_key.is_empty() || split_key < &region.end_key[..]);
        if !inside {
            return Ok(None);
        }
        let new_ids = self.split_region(region_id, &[bytes::Bytes::copy_from_slice(split_key)])?;
        Ok(new_ids.first().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterConfig;

    #[test]
    fn splits_only_past_the_threshold_and_inside_the_region() {
        let mut cluster = Cluster::new(ClusterConfig {
            split_policy: SplitPolicy::by_keys(100),
            ..ClusterConfig::default()
        })
        .unwrap();
        let id = cluster.regions().next().unwrap().id;
        assert_eq!(
            cluster.maybe_split_by_size(id, 1 << 40, 100, b"m").unwrap(),
            None
        );
        let new = cluster
            .maybe_split_by_size(id, 0, 101, b"m")
            .unwrap()
            .unwrap();
        assert_eq!(cluster.region(new).unwrap().end_key.as_ref(), b"m");
        // The right part now starts at "m": a proposal outside it does nothing.
        assert_eq!(cluster.maybe_split_by_size(id, 0, 500, b"a").unwrap(), None);
        assert_eq!(cluster.maybe_split_by_size(id, 0, 500, b"m").unwrap(), None);
        assert_eq!(
            cluster.maybe_split_by_size(999, 0, 500, b"q"),
            Err(ClusterError::RegionNotFound { region_id: 999 })
        );
    }

    #[test]
    fn default_policy_uses_tikv_thresholds() {
        let policy = SplitPolicy::default();
        assert!(!policy.should_split(144 * 1024 * 1024, 1_440_000));
        assert!(policy.should_split(144 * 1024 * 1024 + 1, 0));
        assert!(policy.should_split(0, 1_440_001));
    }
}
