//! Long-lived entities: state that outlives any one operation (a transaction with its
//! primary, its held locks and its heartbeat), with a timer each that dies with it.
//!
//! An entity does no IO of its own: when its timer fires it may start background
//! operations (a heartbeat, a rollback), which run like any other operation but report to
//! nobody.

use std::collections::BTreeMap;

use crate::op::Operation;
use crate::outbox::{Outbox, TimerKey};
use crate::time::Time;

/// Identifies one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct EntityId(u64);

/// What an entity does when its timer fires.
#[derive(Debug)]
pub(crate) struct EntityStep {
    /// When to fire next (`None`: no timer).
    pub(crate) next_timer: Option<Time>,
    /// Background operations to start.
    pub(crate) spawn: Vec<Box<dyn Operation>>,
    /// Whether the entity is finished (it is removed, its timer with it).
    pub(crate) finished: bool,
}

/// A long-lived piece of client state.
pub(crate) trait Entity: std::fmt::Debug + Send {
    /// Its timer fired at `now` (wall clock `wall_ms`).
    fn on_timer(&mut self, now: Time, wall_ms: u64) -> EntityStep;
}

#[derive(Debug)]
struct Slot {
    entity: Box<dyn Entity>,
    timer: Option<Time>,
}

/// Every live entity.
#[derive(Debug, Default)]
pub(crate) struct Entities {
    next: u64,
    live: BTreeMap<EntityId, Slot>,
}

impl Entities {
    /// Adds `entity` with its first timer at `timer`.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "first used by transactions; the machine tests exercise it"
        )
    )]
    pub(crate) fn insert(
        &mut self,
        out: &mut Outbox,
        entity: Box<dyn Entity>,
        timer: Option<Time>,
    ) -> EntityId {
        self.next += 1;
        let id = EntityId(self.next);
        if let Some(at) = timer {
            out.set_timer(TimerKey::Entity(id.0), at);
        }
        self.live.insert(id, Slot { entity, timer });
        id
    }

    /// Removes entity `id` and its timer.
    pub(crate) fn remove(&mut self, out: &mut Outbox, id: EntityId) -> Option<Box<dyn Entity>> {
        let slot = self.live.remove(&id)?;
        if let Some(at) = slot.timer {
            out.cancel_timer(TimerKey::Entity(id.0), at);
        }
        Some(slot.entity)
    }

    /// Runs the timer of entity `raw_id` (from [`TimerKey::Entity`]); returns the
    /// operations it starts. A timer of a removed entity, or one that was moved, does
    /// nothing.
    pub(crate) fn on_timer(
        &mut self,
        out: &mut Outbox,
        raw_id: u64,
        wall_ms: u64,
    ) -> Vec<Box<dyn Operation>> {
        let id = EntityId(raw_id);
        let now = out.now();
        let Some(slot) = self.live.get_mut(&id) else {
            return Vec::new();
        };
        if slot.timer.is_none_or(|at| at > now) {
            return Vec::new();
        }
        let step = slot.entity.on_timer(now, wall_ms);
        slot.timer = step.next_timer;
        if let Some(at) = step.next_timer {
            out.set_timer(TimerKey::Entity(raw_id), at);
        }
        if step.finished {
            self.remove(out, id);
        }
        step.spawn
    }

    /// How many entities live.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Beats every second until it has beaten `left` times.
    #[derive(Debug)]
    struct Beat {
        left: u32,
    }

    impl Entity for Beat {
        fn on_timer(&mut self, now: Time, _wall_ms: u64) -> EntityStep {
            self.left -= 1;
            EntityStep {
                next_timer: (self.left > 0).then(|| now + Duration::from_secs(1)),
                spawn: Vec::new(),
                finished: self.left == 0,
            }
        }
    }

    #[test]
    fn timers_rearm_and_die_with_the_entity() {
        let mut out = Outbox::new(Time::ZERO);
        let mut entities = Entities::default();
        let beat = Box::new(Beat { left: 2 });
        let first = Time::from_millis(1_000);
        entities.insert(&mut out, beat, Some(first));
        let other = entities.insert(
            &mut out,
            Box::new(Beat { left: 5 }),
            Some(Time::from_millis(500)),
        );
        assert_eq!(entities.len(), 2);
        // Removing an entity removes its timer.
        assert!(entities.remove(&mut out, other).is_some());
        assert_eq!(out.next_timeout(), Some(first));

        out.advance(first);
        for expired in out.take_due() {
            if let crate::outbox::Expired::Entity(raw) = expired {
                assert!(entities.on_timer(&mut out, raw, 7).is_empty());
            }
        }
        assert_eq!(out.next_timeout(), Some(Time::from_millis(2_000)));
        out.advance(Time::from_millis(2_000));
        for expired in out.take_due() {
            if let crate::outbox::Expired::Entity(raw) = expired {
                entities.on_timer(&mut out, raw, 8);
            }
        }
        assert_eq!(entities.len(), 0, "finished after its last beat");
        assert_eq!(out.next_timeout(), None, "no timer outlives it");
    }

    #[test]
    fn early_or_stale_timers_do_nothing() {
        let mut out = Outbox::new(Time::ZERO);
        let mut entities = Entities::default();
        entities.insert(
            &mut out,
            Box::new(Beat { left: 1 }),
            Some(Time::from_millis(10)),
        );
        // Fired before its time (or for an id that no longer lives): nothing happens.
        assert!(entities.on_timer(&mut out, 1, 0).is_empty());
        assert!(entities.on_timer(&mut out, 99, 0).is_empty());
        assert_eq!(entities.len(), 1);
    }
}
