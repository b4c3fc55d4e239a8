//! Scripted drivers for the machine: run it against made-up answers, with virtual time.
//!
//! Used by the machine's own tests, property tests and fuzz targets. [`Responder`] answers
//! PD's discovery, region and store lookups with a one-store, one-region cluster, and every
//! store request with an empty response of the right type; a script of [`Fault`]s replaces
//! answers with transport errors, region errors or silence. [`run`] drives a machine until
//! every operation has finished, failing when it does not within a bound.

use std::collections::BTreeMap;

use tikv_proto::rpc::RpcError;
use tikv_proto::{errorpb, metapb, pdpb};

use super::{Core, Event, OpId, Output, RequestId, Transmit};
use crate::error::Error;
use crate::rpc::{PdRequest, PdResponse, Request, Response, StoreRequest, StoreResponse};
use crate::time::Time;

/// What to do with one request instead of answering it normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Fail it in the transport (connection lost).
    Transport,
    /// Never answer (the machine's deadline must fire).
    Drop,
    /// Answer a store request with this region error kind.
    Region(RegionFault),
}

/// A region error to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionFault {
    /// NotLeader naming the same peer again.
    NotLeader,
    /// NotLeader without a leader.
    NoLeader,
    /// EpochNotMatch without current regions.
    EpochNotMatch,
    /// ServerIsBusy.
    ServerIsBusy,
    /// RegionNotFound.
    RegionNotFound,
    /// StaleCommand.
    StaleCommand,
    /// EpochNotMatch reporting the request's region at an epoch older than the request's by
    /// this much (the store lags behind what the client knows: client-go's "region epoch is
    /// ahead of TiKV"). The reported region carries only its id and epoch.
    EpochBehind {
        /// How many versions (splits, merges) the store is behind.
        version: u64,
        /// How many conf versions (peer changes) the store is behind.
        conf_ver: u64,
    },
}

/// Answers requests for a one-store, one-region cluster.
#[derive(Debug)]
pub struct Responder {
    /// The cluster id PD reports.
    pub cluster_id: u64,
    /// The one store's address.
    pub store_address: String,
    next_ts: u64,
    external_ts: u64,
    /// The transaction safe point PD reports.
    pub txn_safe_point: u64,
}

impl Default for Responder {
    fn default() -> Self {
        Self {
            cluster_id: 1,
            store_address: "store-1:20160".to_owned(),
            next_ts: 1 << 18,
            external_ts: 0,
            txn_safe_point: 0,
        }
    }
}

fn region() -> metapb::Region {
    metapb::Region {
        id: 2,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![metapb::Peer {
            id: 3,
            store_id: 1,
            ..Default::default()
        }],
        ..Default::default()
    }
}

impl Responder {
    /// The normal answer to `transmit`.
    pub fn answer(&mut self, transmit: &Transmit) -> Result<Response, RpcError> {
        let header = Some(pdpb::ResponseHeader {
            cluster_id: self.cluster_id,
            ..Default::default()
        });
        let response = match &transmit.request {
            Request::Store(request) => Response::Store(Box::new(StoreResponse::empty_for(request))),
            Request::Health(_) => {
                Response::Health(tikv_proto::grpc::health::v1::HealthCheckResponse {
                    status:
                        tikv_proto::grpc::health::v1::health_check_response::ServingStatus::Serving
                            as i32,
                })
            }
            Request::Pd(pd) => Response::Pd(Box::new(self.answer_pd(pd, header))),
        };
        Ok(response)
    }

    fn answer_pd(&mut self, pd: &PdRequest, header: Option<pdpb::ResponseHeader>) -> PdResponse {
        match pd {
            PdRequest::GetMembers(_) => {
                let member = pdpb::Member {
                    name: "pd".into(),
                    client_urls: vec!["http://pd:2379".into()],
                    ..Default::default()
                };
                PdResponse::GetMembers(pdpb::GetMembersResponse {
                    header,
                    members: vec![member.clone()],
                    leader: Some(member),
                    ..Default::default()
                })
            }
            PdRequest::Tso(tso) => {
                self.next_ts += u64::from(tso.count);
                let last = self.next_ts - 1;
                PdResponse::Tso(pdpb::TsoResponse {
                    header,
                    count: tso.count,
                    timestamp: Some(pdpb::Timestamp {
                        physical: i64::try_from(last >> 18).unwrap_or(0),
                        logical: i64::try_from(last & ((1 << 18) - 1)).unwrap_or(0),
                        ..Default::default()
                    }),
                })
            }
            PdRequest::GetRegion(_) | PdRequest::GetPrevRegion(_) | PdRequest::GetRegionById(_) => {
                let region = region();
                let response = pdpb::GetRegionResponse {
                    header,
                    leader: region.peers.first().copied(),
                    region: Some(region),
                    ..Default::default()
                };
                match pd {
                    PdRequest::GetPrevRegion(_) => PdResponse::GetPrevRegion(response),
                    PdRequest::GetRegionById(_) => PdResponse::GetRegionById(response),
                    _ => PdResponse::GetRegion(response),
                }
            }
            PdRequest::GetStore(request) => PdResponse::GetStore(pdpb::GetStoreResponse {
                header,
                store: Some(metapb::Store {
                    id: request.store_id,
                    address: self.store_address.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            PdRequest::BatchScanRegions(_) => {
                let region = region();
                PdResponse::BatchScanRegions(pdpb::BatchScanRegionsResponse {
                    header,
                    regions: vec![pdpb::Region {
                        leader: region.peers.first().copied(),
                        region: Some(region),
                        ..Default::default()
                    }],
                })
            }
            PdRequest::LoadKeyspace(request) => {
                PdResponse::LoadKeyspace(tikv_proto::keyspacepb::LoadKeyspaceResponse {
                    header,
                    keyspace: Some(tikv_proto::keyspacepb::KeyspaceMeta {
                        keyspace: Some(tikv_proto::keyspacepb::keyspace_meta::Keyspace::Id(
                            u32::from(request.name != "DEFAULT"),
                        )),
                        name: request.name.clone(),
                        ..Default::default()
                    }),
                })
            }
            PdRequest::ScatterRegion(_) => PdResponse::ScatterRegion(pdpb::ScatterRegionResponse {
                header,
                finished_percentage: 100,
                ..Default::default()
            }),
            PdRequest::GetOperator(request) => PdResponse::GetOperator(pdpb::GetOperatorResponse {
                header,
                region_id: request.region_id,
                desc: bytes::Bytes::from_static(b"scatter-region"),
                status: pdpb::OperatorStatus::Success as i32,
                ..Default::default()
            }),
            PdRequest::SetExternalTimestamp(request) => {
                self.external_ts = request.timestamp;
                PdResponse::SetExternalTimestamp(pdpb::SetExternalTimestampResponse { header })
            }
            PdRequest::GetExternalTimestamp(_) => {
                PdResponse::GetExternalTimestamp(pdpb::GetExternalTimestampResponse {
                    header,
                    timestamp: self.external_ts,
                })
            }
            PdRequest::GetGcState(request) => PdResponse::GetGcState(pdpb::GetGcStateResponse {
                header,
                gc_state: Some(pdpb::GcState {
                    keyspace_scope: request.keyspace_scope,
                    txn_safe_point: self.txn_safe_point,
                    gc_safe_point: self.txn_safe_point,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            PdRequest::GetAllStores(_) => PdResponse::GetAllStores(pdpb::GetAllStoresResponse {
                header,
                stores: vec![metapb::Store {
                    id: 1,
                    address: self.store_address.clone(),
                    ..Default::default()
                }],
            }),
        }
    }

    /// The answer to `transmit` with `fault` applied; `None` means no answer at all.
    pub fn answer_with(
        &mut self,
        transmit: &Transmit,
        fault: &Fault,
    ) -> Option<Result<Response, RpcError>> {
        match fault {
            Fault::None => Some(self.answer(transmit)),
            Fault::Drop => None,
            Fault::Transport => Some(Err(RpcError::ConnectionLost("injected".into()))),
            Fault::Region(kind) => {
                let Request::Store(request) = &transmit.request else {
                    return Some(self.answer(transmit));
                };
                let mut response = StoreResponse::empty_for(request);
                set_region_error(&mut response, region_error(*kind, request.context()));
                Some(Ok(Response::Store(Box::new(response))))
            }
        }
    }
}

/// The region error `kind` stands for, for a request with `context`.
fn region_error(
    kind: RegionFault,
    context: Option<&tikv_proto::kvrpcpb::Context>,
) -> errorpb::Error {
    let mut err = errorpb::Error {
        message: format!("{kind:?}"),
        ..Default::default()
    };
    match kind {
        RegionFault::NotLeader => {
            err.not_leader = Some(errorpb::NotLeader {
                region_id: 2,
                leader: region().peers.first().copied(),
            });
        }
        RegionFault::NoLeader => {
            err.not_leader = Some(errorpb::NotLeader {
                region_id: 2,
                leader: None,
            });
        }
        RegionFault::EpochNotMatch => err.epoch_not_match = Some(Default::default()),
        RegionFault::ServerIsBusy => err.server_is_busy = Some(Default::default()),
        RegionFault::RegionNotFound => err.region_not_found = Some(Default::default()),
        RegionFault::StaleCommand => err.stale_command = Some(Default::default()),
        RegionFault::EpochBehind { version, conf_ver } => {
            let sent = context.cloned().unwrap_or_default();
            let epoch = sent.region_epoch.unwrap_or_default();
            err.epoch_not_match = Some(errorpb::EpochNotMatch {
                current_regions: vec![metapb::Region {
                    id: sent.region_id,
                    region_epoch: Some(metapb::RegionEpoch {
                        conf_ver: epoch.conf_ver.saturating_sub(conf_ver),
                        version: epoch.version.saturating_sub(version),
                    }),
                    ..Default::default()
                }],
            });
        }
    }
    err
}

fn set_region_error(response: &mut StoreResponse, err: errorpb::Error) {
    response.set_region_error(err);
}

/// What [`run`] observed.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// Each operation's result.
    pub results: BTreeMap<OpId, Result<Output, Error>>,
    /// One line per request sent, reply fed, timeout handled and operation finished, with
    /// virtual times: stable across runs, so tests snapshot it.
    pub trace: Vec<String>,
}

/// A short, stable description of a request.
pub fn describe(request: &Request) -> String {
    match request {
        Request::Store(store) => {
            let region = store.context().map_or(0, |c| c.region_id);
            format!("{} region={region}", store.name())
        }
        Request::Health(_) => "health.Check".to_owned(),
        Request::Pd(pd) => match pd.as_ref() {
            PdRequest::GetMembers(_) => "pd.GetMembers".to_owned(),
            PdRequest::Tso(r) => format!("pd.Tso count={}", r.count),
            PdRequest::GetRegion(r) => format!(
                "pd.GetRegion key={:?}",
                String::from_utf8_lossy(&r.region_key)
            ),
            PdRequest::GetPrevRegion(r) => {
                format!(
                    "pd.GetPrevRegion key={:?}",
                    String::from_utf8_lossy(&r.region_key)
                )
            }
            PdRequest::GetRegionById(r) => format!("pd.GetRegionById id={}", r.region_id),
            PdRequest::BatchScanRegions(_) => "pd.BatchScanRegions".to_owned(),
            PdRequest::GetStore(r) => format!("pd.GetStore id={}", r.store_id),
            PdRequest::GetAllStores(_) => "pd.GetAllStores".to_owned(),
            PdRequest::LoadKeyspace(r) => format!("pd.LoadKeyspace name={}", r.name),
            PdRequest::ScatterRegion(r) => format!("pd.ScatterRegion regions={:?}", r.regions_id),
            PdRequest::GetOperator(r) => format!("pd.GetOperator region={}", r.region_id),
            PdRequest::SetExternalTimestamp(r) => {
                format!("pd.SetExternalTimestamp ts={}", r.timestamp)
            }
            PdRequest::GetExternalTimestamp(_) => "pd.GetExternalTimestamp".to_owned(),
            PdRequest::GetGcState(_) => "pd.GetGcState".to_owned(),
        },
    }
}

fn describe_reply(reply: &Result<Response, RpcError>) -> String {
    match reply {
        Ok(Response::Store(response)) => match response.region_error() {
            Some(err) => format!("region error: {}", err.message),
            None => "ok".to_owned(),
        },
        Ok(Response::Pd(_) | Response::Health(_)) => "ok".to_owned(),
        Err(err) => format!("error: {err}"),
    }
}

/// Lets everything the machine still has out finish once no operation is in flight: answers
/// every request normally and fires every timer, in virtual time from `now`, until nothing is
/// sent and no timer is armed. Returns the time it ended at.
///
/// Errors when that takes more than `max_steps` inputs: something keeps re-arming itself (the
/// periodic store refresh does: turn it off for machines that must settle).
pub fn settle(
    core: &mut Core,
    responder: &mut Responder,
    mut now: Time,
    max_steps: usize,
) -> Result<Time, String> {
    let mut queue = std::collections::VecDeque::new();
    for _ in 0..max_steps {
        while let Some(transmit) = core.poll_transmit() {
            queue.push_back((transmit.id, responder.answer(&transmit)));
        }
        while core.poll_event().is_some() {}
        if let Some((id, reply)) = queue.pop_front() {
            core.handle_reply(now, id, reply);
            continue;
        }
        match core.poll_timeout() {
            Some(at) => {
                now = now.max(at);
                core.handle_timeout(now);
            }
            None => return Ok(now),
        }
    }
    Err(format!("still busy after {max_steps} steps"))
}

/// Drives `core` with `responder`, applying `faults` to requests in the order they are sent
/// (then answering normally), until no operation is in flight.
///
/// Errors when more than `max_steps` inputs are needed: a livelock, or an operation that
/// never finishes.
pub fn run(
    core: &mut Core,
    responder: &mut Responder,
    faults: &[Fault],
    mut now: Time,
    max_steps: usize,
) -> Result<RunOutcome, String> {
    let mut outcome = RunOutcome::default();
    let mut next_fault = 0usize;
    let mut queue: std::collections::VecDeque<(RequestId, Result<Response, RpcError>)> =
        std::collections::VecDeque::new();
    for _ in 0..max_steps {
        while let Some(transmit) = core.poll_transmit() {
            let fault = faults.get(next_fault).cloned().unwrap_or(Fault::None);
            next_fault += 1;
            outcome.trace.push(format!(
                "{now} -> #{} {} {}{}",
                transmit.id.0,
                transmit.address,
                describe(&transmit.request),
                if fault == Fault::None {
                    String::new()
                } else {
                    format!(" [{fault:?}]")
                }
            ));
            if let Some(reply) = responder.answer_with(&transmit, &fault) {
                queue.push_back((transmit.id, reply));
            }
        }
        while let Some(Event::Done(op, result)) = core.poll_event() {
            outcome
                .trace
                .push(format!("{now} done op{} {result:?}", op.0));
            outcome.results.insert(op, result);
        }
        if core.ops_in_flight() == 0 && queue.is_empty() {
            return Ok(outcome);
        }
        if let Some((id, reply)) = queue.pop_front() {
            outcome
                .trace
                .push(format!("{now} <- #{} {}", id.0, describe_reply(&reply)));
            core.handle_reply(now, id, reply);
            continue;
        }
        match core.poll_timeout() {
            Some(at) => {
                now = now.max(at);
                outcome.trace.push(format!("{now} timeout"));
                core.handle_timeout(now);
            }
            None => return Err("operations in flight but nothing to wait for".to_owned()),
        }
    }
    Err(format!("not finished after {max_steps} steps"))
}

/// A store's scripted answer to one request: `None` answers as [`Responder`] does (an empty
/// success of the right type).
pub type StoreScript<'a> = dyn FnMut(&StoreRequest) -> Option<Result<StoreResponse, RpcError>> + 'a;

/// What [`drive_store_script`] saw.
#[derive(Debug, Default)]
pub struct ScriptedRun {
    /// Every store request, in the order sent.
    pub requests: Vec<StoreRequest>,
    /// Every user event, in order.
    pub events: Vec<Event>,
    /// Whether every operation finished within the bound.
    pub finished: bool,
}

/// Drives `core` for at most `max_rounds` rounds (each sends everything queued and answers
/// it): PD and TSO answered by a [`Responder`], store requests by `store`, timers fired in
/// virtual time (answers arrive at the latest timer's time).
///
/// # Panics
///
/// When operations are in flight with nothing sent and no timer armed (a stuck machine).
pub fn drive_store_script(
    core: &mut Core,
    store: &mut StoreScript<'_>,
    max_rounds: usize,
) -> ScriptedRun {
    let mut responder = Responder::default();
    let mut run = ScriptedRun::default();
    let mut now = Time::ZERO;
    for _ in 0..max_rounds {
        let mut replies = Vec::new();
        while let Some(transmit) = core.poll_transmit() {
            let reply = match &transmit.request {
                Request::Store(request) => {
                    run.requests.push((**request).clone());
                    match store(request) {
                        Some(reply) => reply.map(|r| Response::Store(Box::new(r))),
                        None => responder.answer(&transmit),
                    }
                }
                _ => responder.answer(&transmit),
            };
            replies.push((transmit.id, reply));
        }
        while let Some(event) = core.poll_event() {
            run.events.push(event);
        }
        if replies.is_empty() {
            if core.ops_in_flight() == 0 {
                run.finished = true;
                return run;
            }
            match core.poll_timeout() {
                Some(at) => {
                    now = now.max(at);
                    core.handle_timeout(now);
                }
                None => panic!("stuck: {:?}", core.leftovers()),
            }
        }
        for (id, reply) in replies {
            core.handle_reply(now, id, reply);
        }
    }
    run
}
