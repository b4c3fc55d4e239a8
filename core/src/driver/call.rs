//! One call from a handle to the driver: the slot its result arrives in, and how a caller that
//! stops waiting tells the driver to cancel the operation.
//!
//! A call is shared by two ends. The driver holds a [`Reply`]: it marks the call started with
//! the machine's operation id, then fills in the result. The caller holds a [`Pending`]
//! future. When the caller drops the future before the result came, the call is abandoned:
//! a call the driver has not started yet is simply skipped when the driver reaches it, and a
//! started one sends the driver [`Message::Cancel`](super::Message::Cancel) with its
//! operation id, so the driver cancels exactly that operation without ever scanning its
//! waiters. The lock serialises the two ends, so either the caller sees the operation id (and
//! sends the cancel) or the driver sees the call abandoned (and cancels at once).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_channel::mpsc;

use super::Message;
use crate::error::Error;
use crate::machine::OpId;

/// What both ends of one call share.
#[derive(Debug)]
struct Call<T> {
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    /// The operation the driver started for this call.
    op: Option<OpId>,
    /// The result, until the caller takes it.
    result: Option<T>,
    /// The caller to wake when the result comes or the driver goes away.
    waker: Option<Waker>,
    /// The driver dropped its end without a result (it stopped).
    driver_gone: bool,
    /// The caller dropped its end before the result came.
    abandoned: bool,
}

impl<T> Call<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; a poisoned lock still holds a valid state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Creates the two ends of a call.
pub(crate) fn call<T>(messages: &mpsc::UnboundedSender<Message>) -> (Reply<T>, Pending<'_, T>) {
    let shared = Arc::new(Call {
        state: Mutex::new(State {
            op: None,
            result: None,
            waker: None,
            driver_gone: false,
            abandoned: false,
        }),
    });
    let reply = Reply {
        call: Arc::clone(&shared),
        answered: false,
    };
    let pending = Pending {
        call: shared,
        messages,
        finished: false,
    };
    (reply, pending)
}

/// The driver's end of a call.
#[derive(Debug)]
pub(crate) struct Reply<T> {
    call: Arc<Call<T>>,
    answered: bool,
}

impl<T> Reply<T> {
    /// Whether the caller stopped waiting (the driver then does not start the operation).
    pub(crate) fn is_abandoned(&self) -> bool {
        self.call.lock().abandoned
    }

    /// Records the operation started for this call; false when the caller stopped waiting in
    /// the meantime, so the driver cancels the operation at once.
    pub(crate) fn started(&self, op: OpId) -> bool {
        let mut state = self.call.lock();
        state.op = Some(op);
        !state.abandoned
    }

    /// Hands the caller its result.
    pub(crate) fn send(mut self, result: T) {
        self.answered = true;
        let waker = {
            let mut state = self.call.lock();
            state.result = Some(result);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        // The driver stopped (or refused the call): the caller gets `Error::Closed`.
        let waker = {
            let mut state = self.call.lock();
            state.driver_gone = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The caller's end of a call: resolves to the result, or [`Error::Closed`] when the driver
/// stopped first. Dropping it before then cancels the operation.
#[derive(Debug)]
pub(crate) struct Pending<'a, T> {
    call: Arc<Call<T>>,
    messages: &'a mpsc::UnboundedSender<Message>,
    finished: bool,
}

impl<T> Future for Pending<'_, T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = {
            let mut state = self.call.lock();
            if let Some(result) = state.result.take() {
                Some(Ok(result))
            } else if state.driver_gone {
                Some(Err(Error::Closed))
            } else {
                if !state
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    state.waker = Some(cx.waker().clone());
                }
                None
            }
        };
        match outcome {
            Some(outcome) => {
                self.finished = true;
                Poll::Ready(outcome)
            }
            None => Poll::Pending,
        }
    }
}

impl<T> Drop for Pending<'_, T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let op = {
            let mut state = self.call.lock();
            if state.result.is_some() || state.driver_gone {
                // Finished, just not collected: nothing to cancel.
                return;
            }
            state.abandoned = true;
            state.op
        };
        if let Some(op) = op {
            // Unbounded, so a drop never waits; fails only when the driver is gone.
            let _ = self.messages.unbounded_send(Message::Cancel(op));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll<T>(pending: &mut Pending<'_, T>, flag: &Arc<Flag>) -> Poll<Result<T, Error>> {
        let waker = Waker::from(Arc::clone(flag));
        Pin::new(pending).poll(&mut Context::from_waker(&waker))
    }

    fn flag() -> Arc<Flag> {
        Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)))
    }

    fn woken(flag: &Flag) -> bool {
        flag.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn result_wakes_and_reaches_the_caller() {
        let (tx, mut rx) = mpsc::unbounded();
        let (reply, mut pending) = call::<u32>(&tx);
        let flag = flag();
        assert!(poll(&mut pending, &flag).is_pending());
        assert!(reply.started(OpId(1)));
        reply.send(7);
        assert!(woken(&flag));
        assert_eq!(poll(&mut pending, &flag), Poll::Ready(Ok(7)));
        drop(pending);
        assert!(rx.try_recv().is_err(), "a finished call cancels nothing");
    }

    #[test]
    fn dropped_driver_end_is_closed() {
        let (tx, _rx) = mpsc::unbounded();
        let (reply, mut pending) = call::<u32>(&tx);
        let flag = flag();
        assert!(poll(&mut pending, &flag).is_pending());
        drop(reply);
        assert!(woken(&flag));
        assert_eq!(poll(&mut pending, &flag), Poll::Ready(Err(Error::Closed)));
    }

    #[test]
    fn abandoning_a_started_call_sends_its_cancel() {
        let (tx, mut rx) = mpsc::unbounded();
        let (reply, pending) = call::<u32>(&tx);
        assert!(reply.started(OpId(9)));
        drop(pending);
        assert!(matches!(rx.try_recv(), Ok(Message::Cancel(OpId(9)))));
        assert!(reply.is_abandoned());
    }

    #[test]
    fn abandoning_before_the_start_sends_nothing_and_the_start_says_so() {
        let (tx, mut rx) = mpsc::unbounded();
        let (reply, pending) = call::<u32>(&tx);
        drop(pending);
        assert!(rx.try_recv().is_err());
        assert!(reply.is_abandoned());
        assert!(!reply.started(OpId(3)), "the driver cancels at once");
    }

    #[test]
    fn a_result_not_yet_collected_is_not_cancelled() {
        let (tx, mut rx) = mpsc::unbounded();
        let (reply, pending) = call::<u32>(&tx);
        assert!(reply.started(OpId(4)));
        reply.send(1);
        drop(pending);
        assert!(rx.try_recv().is_err());
    }
}
