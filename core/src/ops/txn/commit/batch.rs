//! Cutting a region's mutations into requests by size (client-go's
//! `appendBatchMutationsBySize`).

use std::ops::Range;

/// Consecutive runs of `count` items, each run closed as soon as its size reaches `limit`
/// (so a run is at most one item over the limit, and an item larger than the limit goes
/// alone). `size_of(i)` is item `i`'s size. Every item is in exactly one run, in order.
pub(crate) fn by_size(
    count: usize,
    limit: usize,
    mut size_of: impl FnMut(usize) -> usize,
) -> smallvec::SmallVec<[Range<usize>; 1]> {
    let mut runs = smallvec::SmallVec::new();
    let mut start = 0;
    while start < count {
        let mut end = start;
        let mut size = 0usize;
        while end < count && size < limit {
            size = size.saturating_add(size_of(end));
            end += 1;
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn a_run_closes_once_it_reaches_the_limit() {
        let sizes = [4, 4, 4, 10, 1, 1];
        let runs = by_size(sizes.len(), 8, |i| sizes[i]);
        assert_eq!(runs.to_vec(), vec![0..2, 2..4, 4..6]);
    }

    #[test]
    fn an_oversized_item_goes_alone() {
        let sizes = [100, 1];
        assert_eq!(by_size(2, 8, |i| sizes[i]).to_vec(), vec![0..1, 1..2]);
    }

    #[test]
    fn nothing_gives_no_runs() {
        assert!(by_size(0, 8, |_| 1).is_empty());
    }

    quickcheck! {
        fn runs_cover_every_item_once_and_respect_the_limit(sizes: Vec<u8>, limit: u8) -> bool {
            let limit = usize::from(limit).max(1);
            let runs = by_size(sizes.len(), limit, |i| usize::from(sizes[i]));
            let mut next = 0;
            for run in &runs {
                if run.start != next || run.is_empty() {
                    return false;
                }
                // Without its last item, a run is still under the limit.
                let before_last: usize = sizes[run.start..run.end - 1]
                    .iter()
                    .map(|&s| usize::from(s))
                    .sum();
                if before_last >= limit {
                    return false;
                }
                next = run.end;
            }
            next == sizes.len()
        }
    }
}
