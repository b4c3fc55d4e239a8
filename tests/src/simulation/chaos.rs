//! The chaos schedule: random cluster faults at random intervals, drawn from the run's seed.

use std::time::Duration;

use bytes::Bytes;
use tikv_core::rand::Rng;
use tikv_proto::{errorpb, metapb};
use tikv_sim::Sim;
use tikv_sim::cluster::Cluster;
use tikv_sim::faults::{FaultAction, FaultRule};

use super::ClusterFault;

/// What the chaos schedule may do, and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chaos {
    /// Shortest time between two faults.
    pub min_interval: Duration,
    /// Longest time between two faults.
    pub max_interval: Duration,
    /// Keys regions may be split at.
    pub split_keys: Vec<Bytes>,
    /// Whether stores are stopped (and restarted later).
    pub stop_stores: bool,
    /// How long a stopped store stays down, at most (at least a tenth of it).
    pub max_downtime: Duration,
    /// How many faults the schedule injects before it stops by itself: retries back off for
    /// seconds, so an endless schedule would starve every operation.
    pub max_faults: usize,
    /// Whether PD is faulted too: its leader stopped (and restarted later) or made to
    /// resign, an election held open for a while, Tso streams broken.
    pub pd_faults: bool,
}

impl Default for Chaos {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_millis(1),
            max_interval: Duration::from_millis(20),
            split_keys: Vec::new(),
            stop_stores: true,
            max_downtime: Duration::from_millis(200),
            max_faults: 60,
            pd_faults: false,
        }
    }
}

/// Moves the leadership of every region led from a stopped `store_id` to a peer on a running
/// store; returns what moved.
pub(super) fn elect_away(cluster: &mut Cluster, store_id: u64) -> String {
    if cluster.store(store_id).is_none_or(|store| store.running) {
        return "store is running".to_owned();
    }
    let moves: Vec<(u64, u64)> = cluster
        .regions()
        .filter(|region| region.leader().is_some_and(|l| l.store_id == store_id))
        .filter_map(|region| {
            region
                .peers
                .iter()
                .map(|peer| peer.store_id)
                .find(|store| {
                    *store != store_id && cluster.store(*store).is_some_and(|s| s.running)
                })
                .map(|target| (region.id, target))
        })
        .collect();
    let mut moved = Vec::new();
    for (region_id, target) in moves {
        if cluster.transfer_leader(region_id, target).is_ok() {
            moved.push(format!("{region_id}->{target}"));
        }
    }
    format!("moved [{}]", moved.join(","))
}

/// Picks one random fault for a chaos tick. Returns it, and the faults it implies later
/// (after how long): a stopped store's leaders move away after an election timeout, and the
/// store restarts after its downtime.
pub(super) fn pick_fault(
    rng: &mut Rng,
    sim: &Sim,
    chaos: &Chaos,
) -> (ClusterFault, Vec<(Duration, ClusterFault)>) {
    let regions: Vec<(Bytes, Vec<u64>)> = sim
        .cluster
        .regions()
        .map(|region| {
            let stores = region.peers.iter().map(|peer| peer.store_id).collect();
            (region.start_key.clone(), stores)
        })
        .collect();
    let running: Vec<u64> = sim
        .cluster
        .stores()
        .filter(|store| store.running && !store.is_tombstone())
        .map(|store| store.id)
        .collect();
    let all_running = running.len() == sim.cluster.stores().count();
    let pick = |rng: &mut Rng, len: usize| rng.below(len as u64) as usize;
    // Drawn only when PD faults are on, so that other schedules replay as before.
    if chaos.pd_faults && rng.below(4) == 0 {
        return pick_pd_fault(rng, sim, chaos);
    }
    let fault = match rng.below(100) {
        0..=24 if !chaos.split_keys.is_empty() => {
            let key = chaos.split_keys[pick(rng, chaos.split_keys.len())].clone();
            ClusterFault::Split(key)
        }
        25..=39 if regions.len() > 1 => {
            // Any region but the last has a right neighbour.
            let (start, _) = regions[pick(rng, regions.len() - 1)].clone();
            ClusterFault::MergeRight(start)
        }
        40..=59 => {
            let (start, stores) = regions[pick(rng, regions.len())].clone();
            let candidates: Vec<u64> = stores
                .into_iter()
                .filter(|store| running.contains(store))
                .collect();
            match candidates.is_empty() {
                true => ClusterFault::Split(start),
                false => ClusterFault::TransferLeader {
                    key: start,
                    store_id: candidates[pick(rng, candidates.len())],
                },
            }
        }
        60..=69 if chaos.stop_stores && all_running && running.len() > 1 => {
            let store_id = running[pick(rng, running.len())];
            let max_down = chaos.max_downtime.as_micros() as u64;
            let election = Duration::from_micros(rng.between(500, 10_000));
            let down = Duration::from_micros(rng.between(max_down / 10, max_down));
            let later = vec![
                (election, ClusterFault::ElectAway(store_id)),
                (down, ClusterFault::RestartStore(store_id)),
            ];
            return (ClusterFault::StopStore(store_id), later);
        }
        _ if sim.faults.active() > 0 || running.is_empty() => {
            // An injected error is still armed: move a leader instead of piling up rules.
            let key = regions[pick(rng, regions.len())].0.clone();
            match running.get(pick(rng, running.len())) {
                Some(store_id) => ClusterFault::TransferLeader {
                    key,
                    store_id: *store_id,
                },
                None => ClusterFault::Split(key),
            }
        }
        _ => {
            let times = rng.between(1, 3) as u32;
            let (err, region_id) = match rng.below(5) {
                0 => (
                    errorpb::Error {
                        server_is_busy: Some(Default::default()),
                        ..error("server is busy")
                    },
                    None,
                ),
                1 => (
                    errorpb::Error {
                        stale_command: Some(Default::default()),
                        ..error("stale command")
                    },
                    None,
                ),
                2 => (
                    errorpb::Error {
                        epoch_not_match: Some(Default::default()),
                        ..error("epoch not match")
                    },
                    None,
                ),
                3 => (
                    errorpb::Error {
                        region_not_found: Some(Default::default()),
                        ..error("region not found")
                    },
                    None,
                ),
                _ => {
                    // NotLeader naming the real leader of a random region.
                    let (start, _) = regions[pick(rng, regions.len())].clone();
                    let region = sim.cluster.region_by_key(&start);
                    let region_id = region.map_or(0, |r| r.id);
                    let leader = region.and_then(|r| r.leader()).map(|peer| metapb::Peer {
                        id: peer.id,
                        store_id: peer.store_id,
                        ..Default::default()
                    });
                    (
                        errorpb::Error {
                            not_leader: Some(errorpb::NotLeader { region_id, leader }),
                            ..error("not leader")
                        },
                        Some(region_id),
                    )
                }
            };
            ClusterFault::Inject(FaultRule {
                store_id: None,
                command: None,
                region_id,
                action: FaultAction::RegionError(Box::new(err)),
                remaining: times,
            })
        }
    };
    (fault, Vec::new())
}

/// One PD fault: the leader stopped (an election after a while, a restart after its
/// downtime), the leader resigning (an election after a while), or every Tso stream broken.
/// The elections matter when the cluster holds elections open (automatic elections off);
/// otherwise a new leader is there at once and they change nothing.
fn pick_pd_fault(
    rng: &mut Rng,
    sim: &Sim,
    chaos: &Chaos,
) -> (ClusterFault, Vec<(Duration, ClusterFault)>) {
    let cluster = &sim.cluster;
    let Some(leader) = cluster.pd_leader().map(|m| m.id) else {
        return (ClusterFault::ElectPdLeader, Vec::new());
    };
    let members = cluster.pd_members().len();
    let running = cluster.pd_members().iter().filter(|m| m.running).count();
    let election = Duration::from_micros(rng.between(1_000, 300_000));
    match rng.below(3) {
        // Keep a quorum: stop the leader only while a majority would still run.
        0 if (running - 1) * 2 > members => {
            let max_down = chaos.max_downtime.as_micros() as u64;
            let down = Duration::from_micros(rng.between(max_down / 10, max_down));
            let later = vec![
                (election, ClusterFault::ElectPdLeader),
                (election + down, ClusterFault::RestartPdMember(leader)),
            ];
            (ClusterFault::StopPdLeader, later)
        }
        1 if running > 1 => (
            ClusterFault::MovePdLeader(None),
            vec![(election, ClusterFault::ElectPdLeader)],
        ),
        _ => (ClusterFault::BreakTsoStreams, Vec::new()),
    }
}

fn error(message: &str) -> errorpb::Error {
    errorpb::Error {
        message: message.to_owned(),
        ..Default::default()
    }
}
