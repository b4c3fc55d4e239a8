//! client-go's total backoff budgets per operation, in milliseconds.
//!
//! Unless a constant says otherwise, client-go hands it to `NewBackofferWithVars`, so the
//! effective budget is multiplied by [`BackoffVars::budget_weight`](super::BackoffVars)
//! (2 by default): build those backoffers with [`Backoffer::with_vars`](super::Backoffer).
//! The ones marked *unweighted* are passed as they are: use
//! [`Backoffer::new`](super::Backoffer::new).

/// Getting a timestamp from PD (`TsoMaxBackoff`).
pub const TSO_MAX_BACKOFF_MS: u64 = 15_000;
/// Prewriting one batch of a transaction (`PrewriteMaxBackoff`).
pub const PREWRITE_MAX_BACKOFF_MS: u64 = 40_000;
/// Committing the primary key (`CommitMaxBackoff`).
pub const COMMIT_MAX_BACKOFF_MS: u64 = 40_000;
/// Committing secondary keys in the background (`CommitSecondaryMaxBackoff`).
pub const COMMIT_SECONDARY_MAX_BACKOFF_MS: u64 = 41_000;
/// Rolling back (cleaning up) a failed transaction's keys (`cleanupMaxBackoff`).
pub const CLEANUP_MAX_BACKOFF_MS: u64 = 20_000;
/// Acquiring pessimistic locks (`pessimisticLockMaxBackoff`).
pub const PESSIMISTIC_LOCK_MAX_BACKOFF_MS: u64 = 20_000;
/// Rolling back pessimistic locks (`pessimisticRollbackMaxBackoff`).
pub const PESSIMISTIC_ROLLBACK_MAX_BACKOFF_MS: u64 = 20_000;
/// One TTL heartbeat of the primary lock (`keepAliveMaxBackoff`).
pub const KEEP_ALIVE_MAX_BACKOFF_MS: u64 = 20_000;
/// Broadcasting a pipelined transaction's state to all stores (`broadcastMaxBackoff`).
pub const BROADCAST_MAX_BACKOFF_MS: u64 = 10_000;
/// A snapshot point get (`getMaxBackoff`).
pub const GET_MAX_BACKOFF_MS: u64 = 20_000;
/// A snapshot batch get (`batchGetMaxBackoff`).
pub const BATCH_GET_MAX_BACKOFF_MS: u64 = 20_000;
/// Fetching the next batch of a snapshot scan (`scannerNextMaxBackoff`).
pub const SCANNER_NEXT_MAX_BACKOFF_MS: u64 = 20_000;
/// Every raw KV operation (`rawkvMaxBackoff`).
pub const RAWKV_MAX_BACKOFF_MS: u64 = 20_000;
/// Resolving locks during GC (`gcResolveLockMaxBackoff`).
pub const GC_RESOLVE_LOCK_MAX_BACKOFF_MS: u64 = 100_000;
/// Deleting a range within one region (`deleteRangeOneRegionMaxBackoff`).
pub const DELETE_RANGE_ONE_REGION_MAX_BACKOFF_MS: u64 = 100_000;
/// Locating a region for a range task (`locateRegionMaxBackoff`).
pub const LOCATE_REGION_MAX_BACKOFF_MS: u64 = 20_000;
/// Checking a lock's transaction status while resolving it; *unweighted*
/// (`getTxnStatusMaxBackoff`).
pub const GET_TXN_STATUS_MAX_BACKOFF_MS: u64 = 20_000;
/// Resolving the locks of an async-commit transaction in the background; *unweighted*
/// (`asyncResolveLockMaxBackoff`).
pub const ASYNC_RESOLVE_LOCK_MAX_BACKOFF_MS: u64 = 40_000;
/// Splitting regions: this much per split key, up to [`MAX_SPLIT_REGIONS_BACKOFF_MS`]
/// (`splitRegionBackoff`); see [`split_regions_max_backoff_ms`].
pub const SPLIT_REGION_BACKOFF_MS: u64 = 20_000;
/// The ceiling of a split's budget however many keys it has (`maxSplitRegionsBackoff`).
pub const MAX_SPLIT_REGIONS_BACKOFF_MS: u64 = 120_000;
/// Waiting for a scatter to finish when the caller gives no budget
/// (`waitScatterRegionFinishBackoff`).
pub const WAIT_SCATTER_REGION_FINISH_BACKOFF_MS: u64 = 120_000;
/// Refreshing the region cache's index in the background.
pub const REGION_CACHE_REFRESH_MAX_BACKOFF_MS: u64 = 20_000;

/// The budget for splitting at `split_key_count` keys: [`SPLIT_REGION_BACKOFF_MS`] per key,
/// capped at [`MAX_SPLIT_REGIONS_BACKOFF_MS`].
pub fn split_regions_max_backoff_ms(split_key_count: usize) -> u64 {
    let count = u64::try_from(split_key_count).unwrap_or(u64::MAX);
    count
        .saturating_mul(SPLIT_REGION_BACKOFF_MS)
        .min(MAX_SPLIT_REGIONS_BACKOFF_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_budget_grows_per_key_up_to_the_ceiling() {
        assert_eq!(split_regions_max_backoff_ms(0), 0);
        assert_eq!(split_regions_max_backoff_ms(1), 20_000);
        assert_eq!(split_regions_max_backoff_ms(5), 100_000);
        assert_eq!(split_regions_max_backoff_ms(6), 120_000);
        assert_eq!(split_regions_max_backoff_ms(usize::MAX), 120_000);
    }
}
