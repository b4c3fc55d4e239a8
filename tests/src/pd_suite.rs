//! The client against PD as a group over real gRPC, written once and run under every runtime
//! (see `tests/pd_tokio.rs` and `tests/pd_async_std.rs`): leader failover in the middle of a
//! write workload, a Tso stream the server breaks, an idle PD connection closed and dialled
//! again.
//!
//! Each test serves its own simulated cluster ([`SimServer`]) with several PD members on
//! loopback ports and connects a [`Client`] given every member's address. Faults are applied
//! when the workload reaches a number of acknowledged writes, not at times, and every wait is
//! for an observable condition with a generous bound: the outcome does not depend on how fast
//! the machine runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tikv_core::{Client, Config};
use tikv_proto::kvrpcpb::ApiVersion;
use tikv_proto::rpc::BoxFuture;
use tikv_proto::status::{Code, Status};
use tikv_sim::cluster::ClusterConfig;
use tikv_sim::{SimConfig, SimServer, split_points};

/// What a runtime provides to the suite.
pub trait Env: Sync {
    /// Serves a fresh simulated cluster built from `sim` and connects a client to every PD
    /// member's address with `config`, on this runtime.
    fn start(&self, sim: SimConfig, config: Config) -> BoxFuture<'_, (SimServer, Client)>;

    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// How long any wait for a condition may take before the test fails: far above what each
/// step needs, so only a client that stopped making progress reaches it.
const PATIENCE: Duration = Duration::from_secs(60);
/// How often conditions are looked at.
const POLL: Duration = Duration::from_millis(5);

/// A cluster of three PD members and three stores.
fn three_pd_members() -> SimConfig {
    SimConfig {
        cluster: ClusterConfig {
            pd_members: 3,
            ..ClusterConfig::default()
        },
        ..SimConfig::default()
    }
}

/// Waits until `condition` holds, looking every [`POLL`].
///
/// Panics with `what` after [`PATIENCE`].
async fn wait_until(env: &dyn Env, what: &str, mut condition: impl FnMut() -> bool) {
    let mut waited = Duration::ZERO;
    while !condition() {
        assert!(waited < PATIENCE, "gave up waiting for {what}");
        env.sleep(POLL).await;
        waited += POLL;
    }
}

fn leader(server: &SimServer) -> u64 {
    server
        .pd_leader()
        .unwrap_or_else(|| panic!("the PD group has no leader"))
}

/// Splits the cluster at `keys` (raw V1 keys), so cached regions go stale and the client must
/// ask PD again.
fn split(server: &SimServer, keys: &[&str]) {
    let points = split_points(ApiVersion::V1, keys);
    server
        .with(|sim| sim.cluster.split_keys(&points))
        .unwrap_or_else(|err| panic!("split: {err}"));
}

/// PD leader failover in the middle of a workload: writers put keys while the PD leader
/// stops (with an election held open for a while), the lease moves to another member, Tso
/// streams break and regions split (so region lookups need PD); a reader takes timestamps all
/// along. Every write is acknowledged, every acknowledged key reads back, and timestamps
/// only go up. Follows PD's election (`member.CampaignLeader`), `ResignLeader`, and
/// `GrpcServer::Tso` ending streams with an error.
pub async fn pd_leader_failover_mid_workload(env: &dyn Env) {
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 80;
    let (server, client) = env.start(three_pd_members(), Config::default()).await;
    let raw = client.raw();
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let progress = Arc::new(AtomicUsize::new(0));
    let writers_done = Arc::new(AtomicBool::new(false));

    let writers = futures_util::future::join_all((0..WRITERS).map(|writer| {
        let (raw, acked, progress) = (raw.clone(), Arc::clone(&acked), Arc::clone(&progress));
        async move {
            for i in 0..PER_WRITER {
                let key = format!("w{writer}-{i:04}");
                let value = format!("v{writer}-{i}");
                match raw.put(key.clone(), value.clone()).await {
                    Ok(()) => {
                        acked
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((key, value));
                        progress.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(err) => panic!("put {key} failed during PD failover: {err}"),
                }
            }
        }
    }));
    let writers = async {
        writers.await;
        writers_done.store(true, Ordering::Release);
    };

    let timestamps = async {
        let mut last = 0;
        let mut taken = 0usize;
        while !writers_done.load(Ordering::Acquire) {
            let ts = client
                .current_timestamp()
                .await
                .unwrap_or_else(|err| panic!("timestamp failed during PD failover: {err}"));
            assert!(
                ts.version() > last,
                "timestamp went back: {ts:?} after {last}"
            );
            last = ts.version();
            taken += 1;
            env.sleep(Duration::from_millis(2)).await;
        }
        taken
    };

    let faults = async {
        let at = |count: usize| {
            let progress = Arc::clone(&progress);
            let done = Arc::clone(&writers_done);
            move || progress.load(Ordering::Acquire) >= count || done.load(Ordering::Acquire)
        };
        // The leader stops; the group stays leaderless until the election ends.
        wait_until(env, "the first writes", at(40)).await;
        let first = leader(&server);
        server.with(|sim| sim.cluster.set_pd_auto_elect(false));
        server
            .with(|sim| sim.cluster.stop_pd_member(first))
            .unwrap_or_else(|err| panic!("{err}"));
        split(&server, &["w1", "w2", "w3"]);
        env.sleep(Duration::from_millis(300)).await;
        let second = server
            .with(|sim| sim.cluster.elect_pd_leader())
            .unwrap_or_else(|err| panic!("{err}"));
        assert_ne!(first, second);
        server.with(|sim| sim.cluster.set_pd_auto_elect(true));
        // The lease moves to the remaining follower.
        wait_until(env, "writes after the election", at(120)).await;
        let third = server.with(|sim| {
            sim.cluster
                .pd_members()
                .iter()
                .find(|m| m.running && m.id != second)
                .map(|m| m.id)
        });
        let third = third.unwrap_or_else(|| panic!("no other running member"));
        server
            .with(|sim| sim.cluster.transfer_pd_leader(third))
            .unwrap_or_else(|err| panic!("{err}"));
        split(&server, &["w0-0040", "w1-0040", "w2-0040", "w3-0040"]);
        // Tso streams break; the stopped member comes back as a follower.
        wait_until(env, "writes after the leader moved", at(200)).await;
        server.with(|sim| {
            sim.cluster.break_tso_streams(Status::new(
                Code::Unavailable,
                "injected: tso stream broken",
            ));
        });
        server
            .with(|sim| sim.cluster.restart_pd_member(first))
            .unwrap_or_else(|err| panic!("{err}"));
        split(&server, &["w0-0060", "w3-0070"]);
    };

    let ((), taken, ()) = futures_util::future::join3(writers, timestamps, faults).await;
    assert!(taken > 0);

    let acked = std::mem::take(
        &mut *acked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    assert_eq!(acked.len(), WRITERS * PER_WRITER);
    for (key, value) in acked {
        let read = raw
            .get(key.clone())
            .await
            .unwrap_or_else(|err| panic!("reading {key}: {err}"));
        assert_eq!(
            read,
            Some(Bytes::from(value)),
            "acknowledged write of {key} lost"
        );
    }
    let view = client.pd_view().await.unwrap_or_else(|err| panic!("{err}"));
    let leader_address = server.pd_member_address(leader(&server));
    assert_eq!(view.leader, leader_address);
    client.close().await;
}

/// PD's `GrpcServer::Tso` ends a stream with an error status (here injected): timestamps
/// keep coming, each call on a new stream the client opens, and never go back.
pub async fn tso_stream_broken_and_reestablished(env: &dyn Env) {
    let (server, client) = env.start(three_pd_members(), Config::default()).await;
    let mut last = client
        .current_timestamp()
        .await
        .unwrap_or_else(|err| panic!("{err}"))
        .version();
    assert_eq!(server.tso_streams_opened(), 1);
    for round in 0..5 {
        server.with(|sim| {
            sim.cluster.break_tso_streams(Status::new(
                Code::Unavailable,
                "injected: tso stream broken",
            ));
        });
        // A call right after the break, and several at once.
        let ts = client
            .current_timestamp()
            .await
            .unwrap_or_else(|err| panic!("round {round}: {err}"));
        assert!(ts.version() > last);
        last = ts.version();
        let many = futures_util::future::join_all((0..4).map(|_| client.current_timestamp())).await;
        for ts in many {
            let ts = ts.unwrap_or_else(|err| panic!("round {round}: {err}"));
            assert!(ts.version() > last);
        }
        assert_eq!(server.tso_streams_opened(), round + 2);
        last = client
            .current_timestamp()
            .await
            .unwrap_or_else(|err| panic!("{err}"))
            .version();
    }
    client.close().await;
}

/// An idle PD connection is closed by the client (the driver's PD task ends after
/// `connection_idle_timeout` without calls, as gRPC channels of the PD client go idle) and
/// the next PD call dials again. Observed through the connections the PD leader's port
/// accepts and holds open.
pub async fn idle_pd_connection_closed_and_redialled(env: &dyn Env) {
    let config = Config::default()
        .with_connection_idle_timeout(Duration::from_millis(200))
        .with_store_refresh_interval(Duration::ZERO)
        .with_pd_member_refresh_interval(Duration::ZERO);
    let (server, client) = env.start(three_pd_members(), config).await;
    let leader = leader(&server);
    client
        .current_timestamp()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(server.pd_connections(leader), (1, 1));
    // Idle: the client closes its connection.
    wait_until(env, "the idle PD connection to close", || {
        server.pd_connections(leader).1 == 0
    })
    .await;
    assert_eq!(server.pd_connections(leader).0, 1);
    // The next call dials again, and works.
    client
        .current_timestamp()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(server.pd_connections(leader), (2, 1));
    assert_eq!(server.tso_streams_opened(), 2);
    client.close().await;
}

/// Calls `$m!(name)` for every test of the suite, so each runtime's test file lists them
/// once.
#[macro_export]
macro_rules! for_each_pd_test {
    ($m:ident) => {
        $m!(pd_leader_failover_mid_workload);
        $m!(tso_stream_broken_and_reestablished);
        $m!(idle_pd_connection_closed_and_redialled);
    };
}
