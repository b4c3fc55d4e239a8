//! client-go's `KVStore.UnsafeDestroyRange`: every store that holds data drops a key range
//! straight from its storage, bypassing Raft. The store list is fetched from PD each time
//! (so a recently added store is not missed); tombstones and TiFlash stores are skipped.
//! Every store is asked at once; the operation fails if any of them failed, naming each.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::{kvrpcpb, metapb, pdpb};

use crate::command::Output;
use crate::error::Error;
use crate::op::Cx;
use crate::outbox::{Reply, RequestId};
use crate::rpc::{PdRequest, PdResponse, Request, Response, StoreRequest, StoreResponse};
use crate::sender::dispatch::DispatchInput;

/// How long each store may take (client-go `unsafeDestroyRangeTimeout`).
const UNSAFE_DESTROY_RANGE_TIMEOUT: Duration = Duration::from_secs(300);

/// A running unsafe destroy range.
#[derive(Debug)]
pub(crate) struct DestroyRangeOp {
    start: Bytes,
    end: Bytes,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Not started.
    Start,
    /// Waiting for PD's store list (the call's id).
    Listing(RequestId),
    /// Waiting for these stores (request id → store id); failures so far.
    Destroying {
        waiting: BTreeMap<RequestId, u64>,
        failures: Vec<String>,
    },
}

impl DestroyRangeOp {
    /// Destroys request-key range `[start, end)`.
    pub(crate) fn new(start: Bytes, end: Bytes) -> Self {
        Self {
            start,
            end,
            state: State::Start,
        }
    }

    /// Advances the operation; `Some` when it finished.
    pub(crate) fn drive(
        &mut self,
        cx: &mut Cx<'_>,
        input: DispatchInput,
    ) -> Option<Result<Output, Error>> {
        match &mut self.state {
            State::Start => {
                let call = cx.pd_call(PdRequest::GetAllStores(pdpb::GetAllStoresRequest {
                    exclude_tombstone_stores: true,
                    ..Default::default()
                }));
                self.state = State::Listing(call);
                None
            }
            State::Listing(call) => {
                let result = match input {
                    DispatchInput::Reply(id, Reply::Pd(result)) if id == *call => {
                        result.map(|response| *response)
                    }
                    _ => return None,
                };
                let stores = match result {
                    Ok(PdResponse::GetAllStores(response)) => {
                        if let Some(err) = crate::pd::pd_error(response.header.as_ref()) {
                            return Some(Err(err));
                        }
                        response.stores
                    }
                    Ok(other) => {
                        return Some(Err(Error::UnexpectedResponse(format!("{other:?}"))));
                    }
                    Err(err) => return Some(Err(err)),
                };
                let request = kvrpcpb::UnsafeDestroyRangeRequest {
                    start_key: self.start.clone(),
                    end_key: self.end.clone(),
                    ..Default::default()
                };
                let mut waiting = BTreeMap::new();
                for store in stores.iter().filter(|store| holds_tikv_data(store)) {
                    let id = cx.send(
                        std::sync::Arc::from(store.address.as_str()),
                        Request::Store(Box::new(StoreRequest::UnsafeDestroyRange(request.clone()))),
                        UNSAFE_DESTROY_RANGE_TIMEOUT,
                    );
                    waiting.insert(id, store.id);
                }
                if waiting.is_empty() {
                    return Some(Ok(Output::Unit));
                }
                self.state = State::Destroying {
                    waiting,
                    failures: Vec::new(),
                };
                None
            }
            State::Destroying { waiting, failures } => {
                if let DispatchInput::Reply(id, Reply::Rpc(reply)) = input {
                    if let Some(store_id) = waiting.remove(&id) {
                        if let Some(failure) = failure(store_id, reply) {
                            failures.push(failure);
                        }
                    }
                }
                if !waiting.is_empty() {
                    return None;
                }
                if failures.is_empty() {
                    Some(Ok(Output::Unit))
                } else {
                    Some(Err(Error::Server(format!(
                        "unsafe destroy range failed: {}",
                        failures.join("; ")
                    ))))
                }
            }
        }
    }
}

super::driven_operation!(DestroyRangeOp);

/// Whether a store from PD's list holds TiKV data (not a tombstone, not TiFlash).
fn holds_tikv_data(store: &metapb::Store) -> bool {
    store.state != metapb::StoreState::Tombstone as i32
        && !crate::region::Store::tiflash_related(&store.labels)
}

/// What went wrong on one store, if anything.
fn failure(store_id: u64, reply: Result<Response, tikv_proto::rpc::RpcError>) -> Option<String> {
    match reply {
        Ok(Response::Store(response)) => match *response {
            StoreResponse::UnsafeDestroyRange(r) => match (&r.region_error, r.error.is_empty()) {
                (None, true) => None,
                (Some(region_error), _) => {
                    Some(format!("store {store_id}: {}", region_error.message))
                }
                (None, false) => Some(format!("store {store_id}: {}", r.error)),
            },
            other => Some(format!("store {store_id}: unexpected answer {other:?}")),
        },
        Ok(other) => Some(format!("store {store_id}: unexpected answer {other:?}")),
        Err(err) => Some(format!("store {store_id}: {err}")),
    }
}
