//! Determinism: two simulated clusters built from the same config and fed the same request
//! bytes answer with byte-identical responses and end in the same state.

use bytes::Bytes;
use prost::Message;
use tikv_proto::kvrpcpb::{self, ApiVersion};
use tikv_proto::{pdpb, tikvpb};
use tikv_sim::cluster::{ClusterConfig, KeyMode};
use tikv_sim::tikv::{Execution, TikvRequest};
use tikv_sim::{Sim, SimConfig};

/// SplitMix64: a tiny seeded generator, so the request sequence replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Where one encoded request goes.
enum Target {
    Store(u64, &'static str),
    Pd(&'static str),
    Tso,
}

/// Builds request `step` of a run: a raw, transactional, split or PD request with a context
/// aimed (mostly) at the right leader, encoded to bytes.
struct Workload {
    rng: Rng,
    api_version: ApiVersion,
    next_ts: u64,
    /// Prewritten, uncommitted transactions: (start_ts, keys).
    open: Vec<(u64, Vec<Bytes>)>,
}

impl Workload {
    fn key(&mut self, txn: bool) -> Bytes {
        let user = format!("k{}", self.rng.below(12));
        let prefix: &[u8] = match (self.api_version, txn) {
            (ApiVersion::V2, false) => b"r\0\0\0",
            (ApiVersion::V2, true) => b"x\0\0\0",
            _ => b"",
        };
        Bytes::from([prefix, user.as_bytes()].concat())
    }

    /// A context for the leader of `key`'s region; now and then a stale or misdirected one.
    fn context(&mut self, sim: &Sim, key: &[u8], txn: bool) -> (u64, Option<kvrpcpb::Context>) {
        let mode = KeyMode::for_request(self.api_version as i32, txn);
        let region = sim.cluster.region_by_key(&mode.to_boundary(key)).unwrap();
        let leader = region.leader().unwrap();
        let mut store_id = leader.store_id;
        let mut epoch = region.epoch.to_proto();
        match self.rng.below(20) {
            0 => epoch.version = epoch.version.saturating_sub(1),
            1 => store_id = 1 + self.rng.below(3),
            2 => return (store_id, None),
            _ => {}
        }
        let context = kvrpcpb::Context {
            region_id: region.id,
            region_epoch: Some(epoch),
            peer: Some(leader.to_proto()),
            api_version: self.api_version as i32,
            ..Default::default()
        };
        (store_id, Some(context))
    }

    fn next_request(&mut self, sim: &Sim) -> (Target, Bytes) {
        use tikvpb::tikv;
        let value = Bytes::from(format!("v{}", self.rng.below(1000)));
        match self.rng.below(11) {
            0 => {
                let key = self.key(false);
                let (store, context) = self.context(sim, &key, false);
                let ttl = if self.api_version == ApiVersion::V1 {
                    0
                } else {
                    self.rng.below(3)
                };
                let request = kvrpcpb::RawPutRequest {
                    context,
                    key,
                    value,
                    ttl,
                    ..Default::default()
                };
                (Target::Store(store, tikv::RAW_PUT.path()), encode(&request))
            }
            1 => {
                let key = self.key(false);
                let (store, context) = self.context(sim, &key, false);
                let request = kvrpcpb::RawGetRequest {
                    context,
                    key,
                    ..Default::default()
                };
                (Target::Store(store, tikv::RAW_GET.path()), encode(&request))
            }
            2 => {
                let start_key = self.key(false);
                let (store, context) = self.context(sim, &start_key, false);
                let request = kvrpcpb::RawScanRequest {
                    context,
                    start_key,
                    limit: 1 + self.rng.below(5) as u32,
                    ..Default::default()
                };
                (
                    Target::Store(store, tikv::RAW_SCAN.path()),
                    encode(&request),
                )
            }
            3 | 4 => {
                let key = self.key(true);
                let (store, context) = self.context(sim, &key, true);
                let start_ts = self.ts();
                self.open.push((start_ts, vec![key.clone()]));
                let request = kvrpcpb::PrewriteRequest {
                    context,
                    mutations: vec![kvrpcpb::Mutation {
                        op: kvrpcpb::Op::Put as i32,
                        key: key.clone(),
                        value,
                        ..Default::default()
                    }],
                    primary_lock: key,
                    start_version: start_ts,
                    lock_ttl: 3000,
                    ..Default::default()
                };
                (
                    Target::Store(store, tikv::KV_PREWRITE.path()),
                    encode(&request),
                )
            }
            5 if !self.open.is_empty() => {
                let index = self.rng.below(self.open.len() as u64) as usize;
                let (start_ts, keys) = self.open.swap_remove(index);
                let (store, context) = self.context(sim, &keys[0], true);
                let request = kvrpcpb::CommitRequest {
                    context,
                    start_version: start_ts,
                    keys,
                    commit_version: self.ts(),
                    ..Default::default()
                };
                (
                    Target::Store(store, tikv::KV_COMMIT.path()),
                    encode(&request),
                )
            }
            6 => {
                let key = self.key(true);
                let (store, context) = self.context(sim, &key, true);
                let request = kvrpcpb::GetRequest {
                    context,
                    key,
                    version: self.ts(),
                    ..Default::default()
                };
                (Target::Store(store, tikv::KV_GET.path()), encode(&request))
            }
            7 => {
                let txn = self.rng.below(2) == 0;
                let key = self.key(txn);
                let (store, context) = self.context(sim, &key, txn);
                let request = kvrpcpb::SplitRegionRequest {
                    context,
                    split_keys: vec![key],
                    is_raw_kv: !txn,
                    ..Default::default()
                };
                (
                    Target::Store(store, tikv::SPLIT_REGION.path()),
                    encode(&request),
                )
            }
            8 => {
                let request = pdpb::TsoRequest {
                    header: header(sim),
                    count: 1 + self.rng.below(10) as u32,
                    ..Default::default()
                };
                (Target::Tso, encode(&request))
            }
            9 => {
                let txn = self.rng.below(2) == 0;
                let key = self.key(txn);
                let request = pdpb::GetRegionRequest {
                    header: header(sim),
                    region_key: Bytes::from(tikv_proto::codec::encode_bytes(&key)),
                    ..Default::default()
                };
                (Target::Pd(pdpb::pd::GET_REGION.path()), encode(&request))
            }
            _ => {
                let request = pdpb::ScanRegionsRequest {
                    header: header(sim),
                    limit: 10,
                    ..Default::default()
                };
                (Target::Pd(pdpb::pd::SCAN_REGIONS.path()), encode(&request))
            }
        }
    }

    fn ts(&mut self) -> u64 {
        self.next_ts += 1 + self.rng.below(3);
        self.next_ts << 18
    }
}

fn encode<M: Message>(message: &M) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

fn header(sim: &Sim) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: sim.cluster.cluster_id(),
        ..Default::default()
    })
}

/// Feeds `payload` to `sim`; appends everything it answered to `transcript`.
fn feed(sim: &mut Sim, target: &Target, payload: &Bytes, now_ms: u64, transcript: &mut Vec<u8>) {
    let mut record = |tag: u8, bytes: &[u8]| {
        transcript.push(tag);
        transcript.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        transcript.extend_from_slice(bytes);
    };
    let answer = match target {
        Target::Store(store_id, path) => match TikvRequest::decode(path, payload.clone()) {
            Ok(request) => match sim.execute(*store_id, request, now_ms) {
                Execution::Done(response) => response.encode(),
                Execution::Failed(status) => Err(status),
                Execution::Parked(id) => {
                    record(b'P', &id.to_be_bytes());
                    return;
                }
                Execution::Dropped => {
                    record(b'D', b"");
                    return;
                }
                Execution::Delayed { delay_ms, .. } => {
                    record(b'W', &delay_ms.to_be_bytes());
                    return;
                }
            },
            Err(status) => Err(status),
        },
        Target::Pd(path) => sim.handle_pd_unary(path, payload.clone(), "http://pd", now_ms),
        Target::Tso => sim.handle_tso(payload.clone(), now_ms),
    };
    match answer {
        Ok(framed) => record(b'R', framed.as_bytes()),
        Err(status) => record(b'E', format!("{status:?}").as_bytes()),
    }
    sim.handle_timeout(now_ms);
    while let Some((id, response)) = sim.poll_ready() {
        record(b'W', &id.to_be_bytes());
        if let Ok(framed) = response.encode() {
            record(b'R', framed.as_bytes());
        }
    }
}

/// Runs `steps` requests from `seed` against two fresh clusters; returns both transcripts
/// and the number of successful answers.
fn run_pair(seed: u64, api_version: ApiVersion, steps: usize) -> (Vec<u8>, Vec<u8>, usize) {
    let config = SimConfig {
        cluster: ClusterConfig::default(),
        api_version,
        ..SimConfig::default()
    };
    let mut first = Sim::new(config.clone()).unwrap();
    let mut second = Sim::new(config).unwrap();
    let mut workload = Workload {
        rng: Rng(seed),
        api_version,
        next_ts: 1_000,
        open: Vec::new(),
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut now_ms = 1_700_000_000_000u64;
    let mut answered = 0;
    for _ in 0..steps {
        now_ms += workload.rng.below(50);
        let (target, payload) = workload.next_request(&first);
        let before = a.len();
        feed(&mut first, &target, &payload, now_ms, &mut a);
        feed(&mut second, &target, &payload, now_ms, &mut b);
        if a.get(before) == Some(&b'R') {
            answered += 1;
        }
    }
    assert_eq!(first.cluster, second.cluster, "cluster state diverged");
    assert_eq!(format!("{:?}", first.mvcc), format!("{:?}", second.mvcc));
    assert_eq!(format!("{:?}", first.raw), format!("{:?}", second.raw));
    (a, b, answered)
}

#[test]
fn same_config_and_bytes_give_identical_responses() {
    for api_version in [ApiVersion::V1, ApiVersion::V1ttl, ApiVersion::V2] {
        for seed in [1, 2, 0xC0FFEE] {
            let (a, b, answered) = run_pair(seed, api_version, 400);
            assert!(a == b, "{api_version:?} seed {seed}: transcripts differ");
            // The run did real work, not only error paths.
            assert!(
                answered > 200,
                "{api_version:?} seed {seed}: {answered} answers"
            );
        }
    }
}

#[test]
fn different_seeds_give_different_transcripts() {
    let (one, _, _) = run_pair(1, ApiVersion::V1, 200);
    let (two, _, _) = run_pair(2, ApiVersion::V1, 200);
    assert_ne!(one, two);
}

#[test]
fn splits_happen_during_the_run() {
    let config = SimConfig::default();
    let mut sim = Sim::new(config).unwrap();
    let mut workload = Workload {
        rng: Rng(7),
        api_version: ApiVersion::V1,
        next_ts: 1_000,
        open: Vec::new(),
    };
    let mut transcript = Vec::new();
    for step in 0..300 {
        let (target, payload) = workload.next_request(&sim);
        feed(
            &mut sim,
            &target,
            &payload,
            1_700_000_000_000 + step,
            &mut transcript,
        );
    }
    // The workload's SplitRegion requests reshaped the cluster, so later requests exercised
    // routing across several regions (and the stale-epoch ones got EpochNotMatch).
    assert!(
        sim.cluster.region_count() > 5,
        "{}",
        sim.cluster.region_count()
    );
}
