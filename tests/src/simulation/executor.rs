//! A deterministic single-threaded executor with virtual time.
//!
//! Tasks wait in a ready set; each step polls one of them, picked by a seeded PRNG, so a seed
//! fixes the interleaving and other seeds explore others. Timers are ordered by deadline (ties
//! in creation order). When no task is ready, time jumps to the earliest timer and wakes every
//! timer due then; when nothing is ready and no timer is armed, the run is stuck. Virtual time
//! only moves while [`Executor::block_on`] runs, so a test may inspect and change the world
//! between runs.
//!
//! Nothing here reads the wall clock or depends on thread scheduling: the executor runs on the
//! calling thread, and wakers only mark tasks ready.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};

use tikv_core::Time;
use tikv_core::rand::Rng;
use tikv_proto::rpc::BoxFuture;

use super::SimError;

/// The id the future given to [`Executor::block_on`] is woken under.
const MAIN: u64 = 0;

/// The executor: tasks, timers and the clock. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Executor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Executor")
            .field("now", &state.now)
            .field("tasks", &state.tasks.len())
            .field("timers", &state.timers.len())
            .field("steps", &state.steps)
            .finish()
    }
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Never held across a poll or a wake; a poisoned lock means a test already panicked.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Task {
    /// `None` while the task is being polled.
    future: Option<BoxFuture<'static, ()>>,
    waker: Waker,
}

struct State {
    now: Time,
    tasks: BTreeMap<u64, Task>,
    ready: BTreeSet<u64>,
    next_task: u64,
    timers: BTreeMap<(Time, u64), Waker>,
    next_timer: u64,
    rng: Rng,
    steps: usize,
    max_steps: usize,
    /// The last step polled the caller's future: if it is ready again at once (it woke
    /// itself), the tasks get a turn first, so a yielding caller cannot starve them.
    main_ran_last: bool,
}

struct TaskWaker {
    id: u64,
    shared: Weak<Shared>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.lock().ready.insert(self.id);
        }
    }
}

/// What one step does.
enum Next {
    Main,
    Task(u64, BoxFuture<'static, ()>, Waker),
    /// A stale wake-up of a task that has finished or is being polled.
    Nothing,
    /// Nothing is ready: move time on.
    Idle,
}

impl Executor {
    /// An executor at time zero whose task choices come from `seed`, failing a run with
    /// [`SimError::Livelock`] after `max_steps` steps in total.
    pub fn new(seed: u64, max_steps: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    now: Time::ZERO,
                    tasks: BTreeMap::new(),
                    ready: BTreeSet::new(),
                    next_task: MAIN + 1,
                    timers: BTreeMap::new(),
                    next_timer: 0,
                    rng: Rng::new(seed),
                    steps: 0,
                    max_steps,
                    main_ran_last: false,
                }),
            }),
        }
    }

    /// The virtual time now.
    pub fn now(&self) -> Time {
        self.shared.lock().now
    }

    /// 64 bits from the executor's seeded PRNG (the simulated runtime's entropy: a seeded
    /// run draws the same values).
    pub fn entropy(&self) -> u64 {
        self.shared.lock().rng.next_u64()
    }

    /// Steps taken so far (task polls and time jumps).
    pub fn steps(&self) -> usize {
        self.shared.lock().steps
    }

    /// Tasks spawned and not finished.
    pub fn tasks(&self) -> usize {
        self.shared.lock().tasks.len()
    }

    /// Adds `task`; it first runs at the next step that picks it.
    pub fn spawn(&self, task: BoxFuture<'static, ()>) {
        let mut state = self.shared.lock();
        let id = state.next_task;
        state.next_task += 1;
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            shared: Arc::downgrade(&self.shared),
        }));
        state.tasks.insert(
            id,
            Task {
                future: Some(task),
                waker,
            },
        );
        state.ready.insert(id);
    }

    /// A future that completes once virtual time reaches `deadline`.
    pub fn sleep_until(&self, deadline: Time) -> BoxFuture<'static, ()> {
        Box::pin(Sleep {
            executor: self.clone(),
            deadline,
            timer: None,
        })
    }

    /// Runs tasks, moving time on whenever none is ready, until `future` completes; returns
    /// its output. Tasks still waiting stay for the next run.
    ///
    /// Errors with [`SimError::Livelock`] past the step limit and [`SimError::Stuck`] when
    /// nothing is ready and no timer is armed while `future` still waits.
    pub fn block_on<F: Future>(&self, future: F) -> Result<F::Output, SimError> {
        let mut future = pin!(future);
        let main_waker = Waker::from(Arc::new(TaskWaker {
            id: MAIN,
            shared: Arc::downgrade(&self.shared),
        }));
        self.shared.lock().ready.insert(MAIN);
        loop {
            match self.next()? {
                Next::Main => {
                    let mut cx = Context::from_waker(&main_waker);
                    if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                        return Ok(output);
                    }
                }
                Next::Task(id, mut task, waker) => {
                    let mut cx = Context::from_waker(&waker);
                    let finished = task.as_mut().poll(&mut cx).is_ready();
                    let mut state = self.shared.lock();
                    if finished {
                        state.tasks.remove(&id);
                        state.ready.remove(&id);
                        drop(state);
                        // Dropped outside the lock: a finishing task may wake others.
                        drop(task);
                    } else if let Some(slot) = state.tasks.get_mut(&id) {
                        slot.future = Some(task);
                    }
                }
                Next::Nothing => {}
                Next::Idle => self.advance()?,
            }
        }
    }

    /// Picks what the next step polls.
    fn next(&self) -> Result<Next, SimError> {
        let mut state = self.shared.lock();
        state.steps += 1;
        if state.steps > state.max_steps {
            return Err(SimError::Livelock {
                steps: state.max_steps,
                now: state.now,
                tasks: state.tasks.len(),
            });
        }
        // The caller's future goes first (it is what the run waits for), unless it just ran
        // and other tasks are waiting.
        let others_ready = state.ready.iter().any(|id| *id != MAIN);
        let main_turn = !(state.main_ran_last && others_ready);
        state.main_ran_last = false;
        if main_turn && state.ready.remove(&MAIN) {
            state.main_ran_last = true;
            return Ok(Next::Main);
        }
        if state.ready.is_empty() {
            return Ok(Next::Idle);
        }
        let candidates: Vec<u64> = state
            .ready
            .iter()
            .copied()
            .filter(|id| *id != MAIN)
            .collect();
        let len = candidates.len() as u64;
        let pick = state.rng.below(len) as usize;
        let Some(id) = candidates.get(pick).copied() else {
            return Ok(Next::Nothing);
        };
        state.ready.remove(&id);
        Ok(match state.tasks.get_mut(&id) {
            Some(task) => match task.future.take() {
                Some(future) => Next::Task(id, future, task.waker.clone()),
                None => Next::Nothing,
            },
            None => Next::Nothing,
        })
    }

    /// Jumps to the earliest timer and wakes every timer due then.
    fn advance(&self) -> Result<(), SimError> {
        let due: Vec<Waker> = {
            let mut state = self.shared.lock();
            let Some(&(at, _)) = state.timers.keys().next() else {
                return Err(SimError::Stuck {
                    now: state.now,
                    tasks: state.tasks.len(),
                });
            };
            state.now = state.now.max(at);
            let now = state.now;
            let mut due = Vec::new();
            while let Some(entry) = state.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            due
        };
        for waker in due {
            waker.wake();
        }
        Ok(())
    }
}

/// A timer of the executor.
struct Sleep {
    executor: Executor,
    deadline: Time,
    /// Its entry in the timer table, once armed.
    timer: Option<(Time, u64)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let executor = self.executor.clone();
        let mut state = executor.shared.lock();
        if state.now >= self.deadline {
            if let Some(key) = self.timer.take() {
                state.timers.remove(&key);
            }
            return Poll::Ready(());
        }
        match self.timer {
            Some(key) => {
                // Re-armed when it fired early (it cannot: time jumps to deadlines), or a
                // wake-up came through another route; keep the entry current.
                state.timers.insert(key, cx.waker().clone());
            }
            None => {
                let key = (self.deadline, state.next_timer);
                state.next_timer += 1;
                state.timers.insert(key, cx.waker().clone());
                drop(state);
                self.timer = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.timer.take() {
            self.executor.shared.lock().timers.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_jumps_to_timers_in_order() {
        let executor = Executor::new(1, 1_000);
        let log = Arc::new(Mutex::new(Vec::new()));
        for ms in [30u64, 10, 20] {
            let (executor2, log) = (executor.clone(), Arc::clone(&log));
            executor.spawn(Box::pin(async move {
                executor2.sleep_until(Time::from_millis(ms)).await;
                log.lock().unwrap().push((ms, executor2.now()));
            }));
        }
        let executor2 = executor.clone();
        let end = executor
            .block_on(async move {
                executor2.sleep_until(Time::from_millis(40)).await;
                executor2.now()
            })
            .unwrap();
        assert_eq!(end, Time::ZERO + Duration::from_millis(40));
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            [10, 20, 30].map(|ms| (ms, Time::from_millis(ms))).to_vec()
        );
        assert_eq!(executor.tasks(), 0);
    }

    #[test]
    fn same_seed_same_interleaving() {
        let order = |seed| {
            let executor = Executor::new(seed, 10_000);
            let log = Arc::new(Mutex::new(Vec::new()));
            for i in 0..8 {
                let log = Arc::clone(&log);
                executor.spawn(Box::pin(async move {
                    log.lock().unwrap().push(i);
                }));
            }
            // Time moves only once no task is ready: every task has run by then.
            executor
                .block_on(executor.sleep_until(Time::from_millis(1)))
                .unwrap();
            assert_eq!(log.lock().unwrap().len(), 8);
            log.lock().unwrap().clone()
        };
        assert_eq!(order(3), order(3));
        assert!((4..20).any(|seed| order(seed) != order(3)));
    }

    #[test]
    fn stuck_and_livelock_are_reported() {
        let executor = Executor::new(1, 100);
        let never = executor.block_on(std::future::pending::<()>());
        assert!(matches!(never, Err(SimError::Stuck { .. })), "{never:?}");
        let busy = executor.block_on(std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        }));
        assert!(
            matches!(busy, Err(SimError::Livelock { steps: 100, .. })),
            "{busy:?}"
        );
    }
}
