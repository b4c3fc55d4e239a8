//! The `tikv-sim` binary: prints its endpoints, serves, exits when its stdin closes, refuses
//! bad arguments with exit code 2, and runs the cluster its flags or config file describe.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use support::grpc_channel;
use tikv_proto::codec::encode_bytes;
use tikv_proto::rpc::{CallOptions, call};
use tikv_proto::transport::client::H2Channel;
use tikv_proto::{keyspacepb, kvrpcpb, pdpb, tikvpb};
use tikv_sim::serve::ServerExecutor;

const BINARY: &str = env!("CARGO_BIN_EXE_tikv-sim");

#[test]
fn serves_until_stdin_closes() {
    let mut child = Command::new(BINARY)
        .args([
            "--stores",
            "2",
            "--api-version",
            "2",
            "--split-keys",
            "m",
            "--exit-on-stdin-eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pd_line = lines.next().unwrap().unwrap();
    let pd = pd_line.strip_prefix("PD_ENDPOINTS=").unwrap().to_owned();
    let stores: Vec<String> = (0..2).map(|_| lines.next().unwrap().unwrap()).collect();
    assert!(stores[0].starts_with("STORE_1=127.0.0.1:"), "{stores:?}");
    assert!(stores[1].starts_with("STORE_2=127.0.0.1:"), "{stores:?}");

    let mut stream = TcpStream::connect(&pd).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /pd/api/v1/regions HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    // API V2: the DEFAULT keyspace's raw and txn ranges are regions of their own (PD's
    // keyspace manager splits them at bootstrap), and "m" splits each of them once more:
    // "", then r0, r0+m, r1, x0, x0+m, x1.
    assert!(reply.contains("{\"count\":7,"), "{reply}");

    let store = stores[0].split_once('=').unwrap().1;
    let mut stream = TcpStream::connect(store).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"GET /config HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(
        reply.ends_with("{\"storage\":{\"api-version\":2,\"enable-ttl\":true}}"),
        "{reply}"
    );

    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_arguments_exit_with_usage() {
    for args in [
        &["--stores", "zero"][..],
        &["--api-version", "9"],
        &["--what"],
    ] {
        let output = Command::new(BINARY).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("usage: tikv-sim"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
    let help = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: tikv-sim"));
}

/// A `tikv-sim` process started with `args` (plus `--exit-on-stdin-eof`), its endpoints read
/// from its standard output; it stops when dropped (its standard input closes).
struct Running {
    child: std::process::Child,
    pd: String,
    stores: BTreeMap<u64, String>,
}

impl Running {
    fn start(args: &[&str], store_count: usize) -> Self {
        let mut child = Command::new(BINARY)
            .args(args)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("spawning tikv-sim: {err}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("no stdout pipe"));
        let mut lines = BufReader::new(stdout).lines();
        let mut next = || {
            lines
                .next()
                .and_then(Result::ok)
                .unwrap_or_else(|| panic!("tikv-sim ended before printing its endpoints"))
        };
        let pd_line = next();
        let pd = pd_line
            .strip_prefix("PD_ENDPOINTS=")
            .unwrap_or_else(|| panic!("unexpected first line {pd_line:?}"))
            .to_owned();
        let stores = (0..store_count)
            .map(|_| {
                let line = next();
                let (name, address) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"));
                let id = name
                    .strip_prefix("STORE_")
                    .and_then(|id| id.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"));
                (id, address.to_owned())
            })
            .collect();
        Self { child, pd, stores }
    }

    /// GET `path` from PD's HTTP API; the body.
    fn pd_get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(&self.pd).unwrap_or_else(|err| panic!("{err}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap_or_else(|err| panic!("{err}"));
        write!(stream, "GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap_or_else(|err| panic!("{err}"));
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        reply
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    /// PD's region count, as client-rust's tests read it (`/pd/api/v1/regions`).
    fn region_count(&self) -> u64 {
        let body = self.pd_get("/pd/api/v1/regions");
        support::json::parse(&body).unwrap_or_else(|err| panic!("{err}: {body}"))["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("no count in {body}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A minimal transactional writer over raw gRPC: timestamps from PD, regions from PD,
/// prewrite and commit to each region's leader, re-routed on region errors (the regions
/// split under it).
struct TxnWriter {
    pd: H2Channel<ServerExecutor>,
    stores: BTreeMap<u64, H2Channel<ServerExecutor>>,
    cluster_id: u64,
}

const RPC_TIMEOUT: Duration = Duration::from_secs(5);

impl TxnWriter {
    async fn connect(running: &Running) -> Self {
        let pd = grpc_channel(&running.pd).await;
        let mut stores = BTreeMap::new();
        for (id, address) in &running.stores {
            stores.insert(*id, grpc_channel(address).await);
        }
        let members = call(
            &pd,
            pdpb::pd::GET_MEMBERS,
            &pdpb::GetMembersRequest::default(),
            CallOptions::with_timeout(RPC_TIMEOUT),
            usize::MAX,
        )
        .await
        .unwrap_or_else(|err| panic!("GetMembers: {err}"));
        let cluster_id = members.header.map_or(0, |header| header.cluster_id);
        Self {
            pd,
            stores,
            cluster_id,
        }
    }

    fn header(&self) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader {
            cluster_id: self.cluster_id,
            ..Default::default()
        })
    }

    async fn timestamp(&self) -> u64 {
        let response = call(
            &self.pd,
            pdpb::pd::GET_MIN_TS,
            &pdpb::GetMinTsRequest {
                header: self.header(),
            },
            CallOptions::with_timeout(RPC_TIMEOUT),
            usize::MAX,
        )
        .await
        .unwrap_or_else(|err| panic!("GetMinTS: {err}"));
        let ts = response.timestamp.unwrap_or_default();
        ((ts.physical as u64) << 18) + ts.logical as u64
    }

    /// The region holding user key `key` (TxnKV, API V1) and a context for its leader.
    async fn locate(&self, key: &[u8]) -> (u64, kvrpcpb::Context, Vec<u8>) {
        let response = call(
            &self.pd,
            pdpb::pd::GET_REGION,
            &pdpb::GetRegionRequest {
                header: self.header(),
                region_key: Bytes::from(encode_bytes(key)),
                ..Default::default()
            },
            CallOptions::with_timeout(RPC_TIMEOUT),
            usize::MAX,
        )
        .await
        .unwrap_or_else(|err| panic!("GetRegion: {err}"));
        let region = response.region.unwrap_or_default();
        let leader = response.leader.unwrap_or_default();
        let context = kvrpcpb::Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: Some(leader),
            ..Default::default()
        };
        (leader.store_id, context, region.end_key.to_vec())
    }

    /// Sends one request per region for `keys` (sorted), built by `make` from the region's
    /// context and its keys; re-locates and retries the keys of a region that answered with
    /// a region error. `answer` returns the region error of a response and checks the rest.
    async fn per_region<Req, Resp>(
        &self,
        keys: &[Bytes],
        method: tikv_proto::method::Method<Req, Resp>,
        make: impl Fn(kvrpcpb::Context, Vec<Bytes>) -> Req,
        answer: impl Fn(&Resp) -> bool,
    ) where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let mut rest = keys;
        let mut retries = 0;
        while let Some(first) = rest.first() {
            let (store, context, end) = self.locate(first).await;
            let count = rest
                .iter()
                .take_while(|key| end.is_empty() || encode_bytes(key) < end)
                .count();
            let channel = &self.stores[&store];
            let response = call(
                channel,
                method,
                &make(context, rest[..count].to_vec()),
                CallOptions::with_timeout(RPC_TIMEOUT),
                usize::MAX,
            )
            .await
            .unwrap_or_else(|err| panic!("{}: {err}", method.path()));
            if answer(&response) {
                rest = &rest[count..];
            } else {
                retries += 1;
                assert!(retries < 100, "region errors do not stop");
            }
        }
    }

    /// Writes `keys` (sorted) in one transaction: prewrite everything, then commit (the
    /// primary's region first, as its keys come first).
    async fn write(&self, keys: &[Bytes]) {
        let start_ts = self.timestamp().await;
        let primary = keys[0].clone();
        self.per_region(
            keys,
            tikvpb::tikv::KV_PREWRITE,
            |context, keys| kvrpcpb::PrewriteRequest {
                context: Some(context),
                mutations: keys
                    .into_iter()
                    .map(|key| kvrpcpb::Mutation {
                        op: kvrpcpb::Op::Put as i32,
                        value: key.clone(),
                        key,
                        ..Default::default()
                    })
                    .collect(),
                primary_lock: primary.clone(),
                start_version: start_ts,
                lock_ttl: 3_000,
                ..Default::default()
            },
            |response: &kvrpcpb::PrewriteResponse| {
                assert!(response.errors.is_empty(), "{response:?}");
                response.region_error.is_none()
            },
        )
        .await;
        let commit_ts = self.timestamp().await;
        self.per_region(
            keys,
            tikvpb::tikv::KV_COMMIT,
            |context, keys| kvrpcpb::CommitRequest {
                context: Some(context),
                keys,
                start_version: start_ts,
                commit_version: commit_ts,
                ..Default::default()
            },
            |response: &kvrpcpb::CommitResponse| {
                assert!(response.error.is_none(), "{response:?}");
                response.region_error.is_none()
            },
        )
        .await;
    }

    /// Reads `key` at a fresh timestamp from the region that holds it now.
    async fn read(&self, key: &Bytes) -> Option<Bytes> {
        let version = self.timestamp().await;
        let (store, context, _) = self.locate(key).await;
        let response = call(
            &self.stores[&store],
            tikvpb::tikv::KV_GET,
            &kvrpcpb::GetRequest {
                context: Some(context),
                key: key.clone(),
                version,
                ..Default::default()
            },
            CallOptions::with_timeout(RPC_TIMEOUT),
            usize::MAX,
        )
        .await
        .unwrap_or_else(|err| panic!("KvGet: {err}"));
        assert!(
            response.region_error.is_none() && response.error.is_none(),
            "{response:?}"
        );
        (!response.not_found).then_some(response.value)
    }
}

/// Writes `count` transactional keys (`key00000`...) in transactions of 100, in key order.
async fn write_keys(writer: &TxnWriter, count: usize) -> Vec<Bytes> {
    let keys: Vec<Bytes> = (0..count)
        .map(|i| Bytes::from(format!("key{i:05}")))
        .collect();
    for batch in keys.chunks(100) {
        writer.write(batch).await;
    }
    keys
}

/// What the issue asks a user can do: start `tikv-sim --stores 3 --region-split-keys 10`,
/// write a few thousand transactional keys with a client, and see regions split (TiKV's
/// split checker cuts pieces of 10 committed versions once a region holds 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_split_keys_flag_splits_regions_under_a_txn_load() {
    let running = Running::start(&["--stores", "3", "--region-split-keys", "10"], 3);
    assert_eq!(running.region_count(), 1);
    let writer = TxnWriter::connect(&running).await;
    let keys = write_keys(&writer, 3000).await;
    // Keys written in order leave pieces of exactly 10 keys: 300 regions.
    assert_eq!(running.region_count(), 300);
    for key in [&keys[0], &keys[1499], &keys[2999]] {
        assert_eq!(writer.read(key).await.as_ref(), Some(key), "{key:?}");
    }
}

/// The same through a TOML file with TiKV's and PD's key names, and the rest of the file's
/// settings visible to clients: store labels in PD's store metadata, location labels and
/// replicas in PD's replication config, a pre-allocated keyspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_config_file_configures_splits_labels_and_keyspaces() {
    let path = std::env::temp_dir().join(format!("tikv-sim-binary-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        r#"
        [sim]
        stores = 3
        store-labels = [{ zone = "z1", host = "h1" }, { zone = "z2", host = "h2" }, { zone = "z3", host = "h3" }]

        [coprocessor]
        region-split-keys = 10

        [pessimistic-txn]
        wait-for-lock-timeout = "500ms"

        [replication]
        max-replicas = 3
        location-labels = ["zone", "host"]

        [keyspace]
        pre-alloc = ["tenant1"]
        "#,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let running = Running::start(&["--config", path.to_str().unwrap_or_default()], 3);
    let _ = std::fs::remove_file(&path);
    // The keyspace's raw and txn bounds (ids 1 and 2) are region boundaries: 5 regions.
    assert_eq!(running.region_count(), 5);
    let writer = TxnWriter::connect(&running).await;
    write_keys(&writer, 600).await;
    assert!(running.region_count() >= 5 + 600 / 15);

    let stores = call(
        &writer.pd,
        pdpb::pd::GET_ALL_STORES,
        &pdpb::GetAllStoresRequest {
            header: writer.header(),
            ..Default::default()
        },
        CallOptions::with_timeout(RPC_TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap_or_else(|err| panic!("GetAllStores: {err}"));
    let zones: Vec<(u64, String, String)> = stores
        .stores
        .iter()
        .map(|store| {
            let label = |key: &str| {
                store
                    .labels
                    .iter()
                    .find(|label| label.key == key)
                    .map(|label| label.value.clone())
                    .unwrap_or_default()
            };
            (store.id, label("zone"), label("host"))
        })
        .collect();
    assert_eq!(
        zones,
        vec![
            (1, "z1".to_owned(), "h1".to_owned()),
            (2, "z2".to_owned(), "h2".to_owned()),
            (3, "z3".to_owned(), "h3".to_owned()),
        ]
    );
    let replication = running.pd_get("/pd/api/v1/config/replicate");
    assert!(
        replication.starts_with(r#"{"max-replicas":3,"location-labels":"zone,host","#),
        "{replication}"
    );
    let keyspace = call(
        &writer.pd,
        keyspacepb::keyspace::LOAD_KEYSPACE,
        &keyspacepb::LoadKeyspaceRequest {
            header: writer.header(),
            name: "tenant1".to_owned(),
            ..Default::default()
        },
        CallOptions::with_timeout(RPC_TIMEOUT),
        usize::MAX,
    )
    .await
    .unwrap_or_else(|err| panic!("LoadKeyspace: {err}"));
    assert_eq!(
        keyspace.keyspace.map(|meta| meta.name),
        Some("tenant1".to_owned())
    );
}
