//! The transaction safe point the machine caches for snapshot reads (see
//! `ops::visibility`, which fetches it and checks reads against it).

use std::time::Duration;

use crate::error::Error;
use crate::oracle::Timestamp;
use crate::time::Time;

/// The cached transaction safe point.
#[derive(Debug, Default)]
pub(crate) struct SafePointCache {
    /// The last value and when it was fetched.
    pub(crate) value: Option<(Timestamp, Time)>,
    /// A PD call for it is out.
    pub(crate) loading: bool,
}

impl SafePointCache {
    /// The safe point, if fetched less than `trusted_for` before `now`.
    pub(crate) fn fresh(&self, now: Time, trusted_for: Duration) -> Option<Timestamp> {
        self.value
            .filter(|(_, at)| now.saturating_since(*at) < trusted_for)
            .map(|(safe_point, _)| safe_point)
    }
}

/// `Err(TxnAbortedByGc)` when `start_ts` is below `safe_point`.
pub(crate) fn check(start_ts: Timestamp, safe_point: Timestamp) -> Result<(), Error> {
    if start_ts < safe_point {
        return Err(Error::TxnAbortedByGc {
            start_ts,
            safe_point,
        });
    }
    Ok(())
}
