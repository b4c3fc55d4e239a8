//! The background tasks of one client (connection tasks, stream receivers, unary calls): a
//! stop signal they all race against, and a count the driver waits on until every one ended.
//!
//! When the client shuts down, nobody waits for their answers any more; the driver stops
//! them all at once instead of letting each find out on its own (a stream whose store never
//! answers would otherwise keep its connection open forever), then waits until they have
//! dropped their connections.

use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::runtime::Runtime;

#[derive(Debug, Default)]
struct Shared {
    /// Tasks spawned and not yet ended.
    live: AtomicUsize,
    stopped: AtomicBool,
    wakers: Mutex<Wakers>,
}

#[derive(Debug, Default)]
struct Wakers {
    /// Tasks waiting for the stop signal, by listener id.
    listeners: BTreeMap<u64, Waker>,
    next: u64,
    /// The driver, waiting for the last task to end.
    driver: Option<Waker>,
}

impl Shared {
    fn wakers(&self) -> MutexGuard<'_, Wakers> {
        // Nothing panics while holding the lock; a poisoned lock still holds valid wakers.
        self.wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The driver's view of the client's background tasks.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tasks {
    shared: Arc<Shared>,
}

impl Tasks {
    /// Runs `task` on `runtime` until it completes or the tasks are stopped.
    pub(crate) fn spawn<R: Runtime>(
        &self,
        runtime: &R,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let guard = Guard {
            shared: Arc::clone(&self.shared),
        };
        guard.shared.live.fetch_add(1, Ordering::SeqCst);
        runtime.spawn(Box::pin(async move {
            let mut task = pin!(task);
            let mut stop = pin!(guard.stopped());
            poll_fn(|cx| {
                if task.as_mut().poll(cx).is_ready() || stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                Poll::Pending
            })
            .await;
        }));
    }

    /// Stops every task: each ends at its next poll, dropping what it holds.
    pub(crate) fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let listeners = std::mem::take(&mut self.shared.wakers().listeners);
        for waker in listeners.into_values() {
            waker.wake();
        }
    }

    /// Resolves once every task has ended.
    pub(crate) async fn ended(&self) {
        poll_fn(|cx| {
            if self.shared.live.load(Ordering::SeqCst) == 0 {
                return Poll::Ready(());
            }
            self.shared.wakers().driver = Some(cx.waker().clone());
            // A task may have ended between the check and the registration.
            if self.shared.live.load(Ordering::SeqCst) == 0 {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }
}

/// Held by a running task; its drop counts the task as ended.
struct Guard {
    shared: Arc<Shared>,
}

impl Guard {
    fn stopped(&self) -> Stopped<'_> {
        Stopped {
            shared: &self.shared,
            listener: None,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.shared.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(driver) = self.shared.wakers().driver.take() {
                driver.wake();
            }
        }
    }
}

/// Resolves once the tasks are stopped.
struct Stopped<'a> {
    shared: &'a Shared,
    listener: Option<u64>,
}

impl Future for Stopped<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.stopped.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        let shared = self.shared;
        let mut wakers = shared.wakers();
        match self.listener {
            Some(id) => {
                if let Some(waker) = wakers.listeners.get_mut(&id) {
                    if !waker.will_wake(cx.waker()) {
                        *waker = cx.waker().clone();
                    }
                }
            }
            None => {
                let id = wakers.next;
                wakers.next += 1;
                wakers.listeners.insert(id, cx.waker().clone());
                drop(wakers);
                self.listener = Some(id);
            }
        }
        // The stop may have come between the check and the registration.
        if shared.stopped.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.listener {
            self.shared.wakers().listeners.remove(&id);
        }
    }
}
