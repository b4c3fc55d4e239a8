//! Loading the configured keyspace (API V2) once, while every operation waits for it.

use super::{PdCx, PdService, Purpose};
use crate::error::Error;
use crate::outbox::Reply;
use crate::rpc::PdRequest;
use crate::wait::{WaitKey, Waiter};

/// The keyspace API V2 clients use when none is named.
pub(super) const DEFAULT_KEYSPACE: &str = "DEFAULT";

/// Where loading the configured keyspace stands.
#[derive(Debug)]
pub(super) enum KeyspaceState {
    /// No keyspace is needed (API V1/V1TTL).
    NotNeeded,
    /// Not asked for yet.
    Unloaded,
    /// Asked for; operations wait on [`WaitKey::Keyspace`].
    Loading,
    /// Loaded with this id.
    Loaded(u32),
    /// PD said no (or could not be reached within the budget).
    Failed(Error),
}

/// Whether an operation may start.
#[derive(Debug)]
pub(crate) enum Readiness {
    /// Go ahead.
    Ready,
    /// Parked until the keyspace is loaded; the answer comes as [`Reply::Ready`].
    Parked,
    /// The keyspace cannot be used.
    Failed(Error),
}

impl PdService {
    /// The keyspace id in use (API V2), once loaded.
    pub(crate) fn keyspace_id(&self) -> Option<u32> {
        match self.keyspace {
            KeyspaceState::Loaded(id) => Some(id),
            _ => None,
        }
    }

    /// Checks that the configured keyspace is loaded, parking `waiter` while it loads.
    pub(crate) fn ensure_keyspace(&mut self, cx: &mut PdCx<'_>, waiter: Waiter) -> Readiness {
        match &self.keyspace {
            KeyspaceState::NotNeeded | KeyspaceState::Loaded(_) => Readiness::Ready,
            KeyspaceState::Failed(err) => Readiness::Failed(err.clone()),
            KeyspaceState::Loading => {
                cx.waits.park(WaitKey::Keyspace, waiter);
                Readiness::Parked
            }
            KeyspaceState::Unloaded => {
                self.keyspace = KeyspaceState::Loading;
                cx.waits.park(WaitKey::Keyspace, waiter);
                let name = self.settings.keyspace_name.clone();
                self.send(
                    cx,
                    Purpose::Keyspace,
                    PdRequest::LoadKeyspace(tikv_proto::keyspacepb::LoadKeyspaceRequest {
                        name,
                        ..Default::default()
                    }),
                );
                Readiness::Parked
            }
        }
    }

    pub(super) fn on_keyspace(
        &mut self,
        cx: &mut PdCx<'_>,
        response: tikv_proto::keyspacepb::LoadKeyspaceResponse,
    ) {
        use tikv_proto::keyspacepb::{KeyspaceState as State, keyspace_meta::Keyspace};
        let not_found = || Error::KeyspaceNotFound(self.settings.keyspace_name.clone());
        let state = match response.keyspace {
            Some(meta) if meta.state == State::Enabled as i32 => match meta.keyspace {
                Some(Keyspace::Id(id)) => KeyspaceState::Loaded(id),
                // API V3 identities are not supported by this client (nor by client-go).
                _ => KeyspaceState::Failed(not_found()),
            },
            _ => KeyspaceState::Failed(not_found()),
        };
        self.finish_keyspace(cx, state);
    }

    pub(super) fn finish_keyspace(&mut self, cx: &mut PdCx<'_>, state: KeyspaceState) {
        let result = match &state {
            KeyspaceState::Failed(err) => Err(err.clone()),
            _ => Ok(()),
        };
        self.keyspace = state;
        for waiter in cx.waits.take(&WaitKey::Keyspace) {
            cx.out
                .deliver(waiter.op, waiter.call, Reply::Ready(result.clone()));
        }
    }
}
