//! The bound on the driver's command queue.
//!
//! Commands travel to the driver over an unbounded channel (so that cancels and close
//! requests never wait), and the [`Gate`] bounds how many commands may sit in it: a handle
//! takes a permit before it sends a command and the driver returns the permit when it takes
//! the command out. While the queue is full, callers wait in arrival order. Cloning a channel
//! sender per caller would not bound anything (a bounded futures-channel grants every sender
//! clone its own extra slot), hence this gate.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::error::Error;

/// How many commands may wait for the driver before callers wait for room. Far above what a
/// driver holds in practice (it takes every queued command at each wake-up); the bound only
/// matters when callers outpace the driver for long.
pub const COMMAND_QUEUE_CAPACITY: usize = 4096;

/// Permits for the command queue.
#[derive(Debug)]
pub(crate) struct Gate {
    capacity: usize,
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    /// Permits taken and not yet returned (commands in the queue).
    used: usize,
    /// The most permits ever taken at once.
    peak: usize,
    /// No permits are granted any more: the client is closing.
    closed: bool,
    /// Callers waiting for a permit, in arrival order.
    waiters: VecDeque<(u64, Waker)>,
    next_waiter: u64,
}

impl Gate {
    /// A gate granting at most `capacity` permits at once (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // Nothing panics while holding the lock; a poisoned lock still holds a valid state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a permit.
    ///
    /// Errors with [`Error::Closed`] once the gate is closed.
    pub(crate) fn acquire(&self) -> Acquire<'_> {
        Acquire {
            gate: self,
            waiter: None,
        }
    }

    /// Returns `count` permits (the driver took that many commands out of the queue) and
    /// wakes the first waiting caller.
    pub(crate) fn release(&self, count: usize) {
        if count == 0 {
            return;
        }
        let waker = {
            let mut state = self.lock();
            state.used = state.used.saturating_sub(count);
            state.waiters.front().map(|(_, waker)| waker.clone())
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Refuses every permit from now on; waiting callers get [`Error::Closed`].
    pub(crate) fn close(&self) {
        let waiters = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.waiters)
        };
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// The most commands that were ever queued at once.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn peak(&self) -> usize {
        self.lock().peak
    }
}

/// A caller waiting for a permit.
#[derive(Debug)]
pub(crate) struct Acquire<'a> {
    gate: &'a Gate,
    /// This caller's place in the waiting line, once it waited.
    waiter: Option<u64>,
}

impl Future for Acquire<'_> {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let gate = self.gate;
        let mut state = gate.lock();
        if state.closed {
            self.waiter = None;
            return Poll::Ready(Err(Error::Closed));
        }
        // Callers already waiting go first, so nobody waits forever behind newcomers.
        let first = match (self.waiter, state.waiters.front()) {
            (_, None) => true,
            (Some(mine), Some((front, _))) => mine == *front,
            (None, Some(_)) => false,
        };
        if first && state.used < gate.capacity {
            if self.waiter.take().is_some() {
                state.waiters.pop_front();
            }
            state.used += 1;
            state.peak = state.peak.max(state.used);
            // There may be room for the next in line too.
            let next = (state.used < gate.capacity)
                .then(|| state.waiters.front().map(|(_, waker)| waker.clone()))
                .flatten();
            drop(state);
            if let Some(waker) = next {
                waker.wake();
            }
            return Poll::Ready(Ok(()));
        }
        match self.waiter {
            Some(mine) => {
                if let Some((_, waker)) = state.waiters.iter_mut().find(|(id, _)| *id == mine) {
                    if !waker.will_wake(cx.waker()) {
                        *waker = cx.waker().clone();
                    }
                }
            }
            None => {
                let id = state.next_waiter;
                state.next_waiter += 1;
                state.waiters.push_back((id, cx.waker().clone()));
                drop(state);
                self.waiter = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(mine) = self.waiter else {
            return;
        };
        let gate = self.gate;
        let next = {
            let mut state = gate.lock();
            let was_first = state.waiters.front().is_some_and(|(id, _)| *id == mine);
            state.waiters.retain(|(id, _)| *id != mine);
            // A first-in-line caller that gives up may have been woken for a free permit:
            // pass the wake-up on.
            (was_first && state.used < gate.capacity)
                .then(|| state.waiters.front().map(|(_, waker)| waker.clone()))
                .flatten()
        };
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(acquire: &mut Acquire<'_>, count: &Arc<Count>) -> Poll<Result<(), Error>> {
        let waker = Waker::from(Arc::clone(count));
        Pin::new(acquire).poll(&mut Context::from_waker(&waker))
    }

    fn wakes(count: &Count) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn grants_up_to_capacity_then_waits_in_order() {
        let gate = Gate::new(2);
        let counts: Vec<Arc<Count>> = (0..4).map(|_| Arc::default()).collect();
        let mut callers: Vec<Acquire<'_>> = (0..4).map(|_| gate.acquire()).collect();
        assert_eq!(poll(&mut callers[0], &counts[0]), Poll::Ready(Ok(())));
        assert_eq!(poll(&mut callers[1], &counts[1]), Poll::Ready(Ok(())));
        assert!(poll(&mut callers[2], &counts[2]).is_pending());
        assert!(poll(&mut callers[3], &counts[3]).is_pending());
        assert_eq!(gate.peak(), 2);

        gate.release(1);
        assert_eq!(wakes(&counts[2]), 1, "the first in line is woken");
        assert_eq!(wakes(&counts[3]), 0);
        // A newcomer does not overtake the line.
        let newcomer = Arc::default();
        let mut late = gate.acquire();
        assert!(poll(&mut late, &newcomer).is_pending());
        assert_eq!(poll(&mut callers[2], &counts[2]), Poll::Ready(Ok(())));
        assert!(poll(&mut callers[3], &counts[3]).is_pending());

        gate.release(2);
        assert_eq!(poll(&mut callers[3], &counts[3]), Poll::Ready(Ok(())));
        assert_eq!(wakes(&newcomer), 1, "room for the next one too");
        assert_eq!(poll(&mut late, &newcomer), Poll::Ready(Ok(())));
        assert_eq!(gate.peak(), 2);
    }

    #[test]
    fn a_woken_caller_that_gives_up_passes_the_wake_up_on() {
        let gate = Gate::new(1);
        let (a, b, c) = (Arc::default(), Arc::default(), Arc::default());
        let mut first = gate.acquire();
        assert_eq!(poll(&mut first, &a), Poll::Ready(Ok(())));
        let mut second = gate.acquire();
        let mut third = gate.acquire();
        assert!(poll(&mut second, &b).is_pending());
        assert!(poll(&mut third, &c).is_pending());
        gate.release(1);
        assert_eq!(wakes(&b), 1);
        drop(second);
        assert_eq!(wakes(&c), 1, "the permit goes to the next caller");
        assert_eq!(poll(&mut third, &c), Poll::Ready(Ok(())));
    }

    #[test]
    fn closing_fails_waiting_and_later_callers() {
        let gate = Gate::new(1);
        let (a, b) = (Arc::default(), Arc::default());
        let mut first = gate.acquire();
        assert_eq!(poll(&mut first, &a), Poll::Ready(Ok(())));
        let mut second = gate.acquire();
        assert!(poll(&mut second, &b).is_pending());
        gate.close();
        assert_eq!(wakes(&b), 1);
        assert_eq!(poll(&mut second, &b), Poll::Ready(Err(Error::Closed)));
        let mut third = gate.acquire();
        assert_eq!(poll(&mut third, &a), Poll::Ready(Err(Error::Closed)));
    }
}
