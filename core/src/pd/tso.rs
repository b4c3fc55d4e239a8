//! TSO batching: every operation that asked for a timestamp since the last TSO request is
//! served by the next one (`count = n`), one request in flight at a time.

use smallvec::SmallVec;
use tikv_proto::pdpb;

use super::{PdCx, PdService, Purpose};
use crate::error::Error;
use crate::oracle::Timestamp;
use crate::outbox::Reply;
use crate::rpc::PdRequest;
use crate::time::Time;
use crate::wait::{WaitKey, Waiter};

impl PdService {
    /// The newest timestamp seen and when it arrived.
    pub(crate) fn last_timestamp(&self) -> Option<(Timestamp, Time)> {
        self.last_ts
    }

    /// The newest timestamp seen, if it arrived no earlier than `oldest` (client-go's
    /// low-resolution timestamp).
    pub(crate) fn recent_timestamp(&self, oldest: Time) -> Option<Timestamp> {
        self.last_ts
            .filter(|(_, seen_at)| *seen_at >= oldest)
            .map(|(ts, _)| ts)
    }

    /// Parks `waiter` until it has a timestamp ([`Reply::Timestamp`]). The request goes out
    /// when the machine's transmits drain ([`flush_tso`](Self::flush_tso)).
    pub(crate) fn request_timestamp(&mut self, cx: &mut PdCx<'_>, waiter: Waiter) {
        cx.waits.park(WaitKey::Timestamp, waiter);
    }

    /// Sends one TSO request for the operations waiting, unless one is already in flight
    /// (waiters arriving meanwhile go with the next one).
    pub(crate) fn flush_tso(&mut self, cx: &mut PdCx<'_>) {
        if self.tso_inflight.is_some() || !cx.waits.is_waited(&WaitKey::Timestamp) {
            return;
        }
        let max = self.settings.tso_max_batch as usize;
        let waiters: SmallVec<[Waiter; 2]> = cx.waits.take_first(&WaitKey::Timestamp, max);
        let count = u32::try_from(waiters.len()).unwrap_or(u32::MAX);
        // The in-flight marker is set before sending so that re-entrant flushes do nothing.
        self.tso_inflight = Some((count, waiters));
        self.send(
            cx,
            Purpose::Tso,
            PdRequest::Tso(pdpb::TsoRequest {
                count,
                ..Default::default()
            }),
        );
    }

    pub(super) fn on_tso(&mut self, cx: &mut PdCx<'_>, tso: pdpb::TsoResponse) {
        let (asked, waiters) = self.tso_inflight.take().unwrap_or_default();
        let count = u64::from(asked);
        let result = match tso.timestamp {
            Some(ts) if tso.count == asked && ts.physical >= 0 && ts.logical >= 0 => {
                // PD returns the last timestamp of the batch; hand them out in order.
                let last =
                    Timestamp::compose(ts.physical.unsigned_abs(), ts.logical.unsigned_abs());
                last.version()
                    .checked_sub(count.saturating_sub(1))
                    .map(Timestamp::from_version)
                    .ok_or_else(|| Error::UnexpectedResponse("TSO underflow".into()))
                    .map(|first| (first, last))
            }
            _ => Err(Error::UnexpectedResponse(format!(
                "TSO answered count {} for {count} waiters",
                tso.count
            ))),
        };
        if let Ok((_, last)) = &result {
            let now = cx.out.now();
            if self.last_ts.is_none_or(|(seen, _)| seen < *last) {
                self.last_ts = Some((*last, now));
            }
        }
        for (i, waiter) in waiters.into_iter().enumerate() {
            let value = result
                .clone()
                .map(|(first, _)| first.saturating_add(u64::try_from(i).unwrap_or(0)));
            cx.out
                .deliver(waiter.op, waiter.call, Reply::Timestamp(value));
        }
        // Anyone who asked while this request was in flight goes now.
        self.flush_tso(cx);
    }
}
