//! PD's HTTP API and the stores' status API over real TCP connections, on the same ports
//! as their gRPC services.

mod support;

use std::time::Duration;

use support::json::{self, Value};
use support::{grpc_channel, pd_header};
use tikv_proto::kvrpcpb::ApiVersion;
use tikv_proto::pdpb;
use tikv_proto::rpc::{CallOptions, call};
use tikv_sim::{SimConfig, SimServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One parsed HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        json::parse(std::str::from_utf8(&self.body).expect("utf-8 body"))
            .unwrap_or_else(|err| panic!("invalid JSON ({err}): {:?}", self.body))
    }
}

/// Reads one response from `stream` (`buf` carries bytes left from a previous response);
/// `head_only` for answers to HEAD.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Response {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_ascii_lowercase(), v.to_owned())
        })
        .collect();
    buf.drain(..head_end);
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .expect("content-length");
    let length = if head_only { 0 } else { length };
    while buf.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..length).collect();
    Response {
        status,
        headers,
        body,
    }
}

/// Sends `request` on a new connection and reads one response.
async fn request(address: &str, request: &str) -> Response {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    read_response(&mut stream, &mut Vec::new(), request.starts_with("HEAD")).await
}

async fn get(address: &str, path: &str) -> Response {
    request(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Reads until the peer closes; returns what came.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("server closes the connection")
        .expect("read");
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_serves_http_and_grpc_on_one_port() {
    let server = SimServer::start_with_splits(SimConfig::default(), &["a", "b"])
        .await
        .unwrap();
    let pd = server.pd_address().to_owned();

    let regions = get(&pd, "/pd/api/v1/regions").await;
    assert_eq!(regions.status, 200);
    assert_eq!(
        regions.header("content-type"),
        Some("application/json; charset=UTF-8")
    );
    assert!(regions.header("date").is_some_and(|d| d.ends_with(" GMT")));
    let regions = regions.json();
    // "a" and "b", each in its plain (RawKV v1) and memcomparable (TxnKV) form.
    assert_eq!(regions["count"].as_u64(), Some(5));
    let list = regions["regions"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0]["start_key"].as_str(), Some(""));
    assert_eq!(list[0]["end_key"].as_str(), Some("61"));
    assert_eq!(list[1]["end_key"].as_str(), Some("6100000000000000F8"));
    assert_eq!(list[4]["end_key"].as_str(), Some(""));
    for pair in list.windows(2) {
        assert_eq!(pair[0]["end_key"], pair[1]["start_key"]);
    }
    for region in list {
        let leader = &region["leader"];
        assert!(region["peers"].as_array().unwrap().contains(leader));
        assert_eq!(region["epoch"]["version"].as_u64(), Some(5));
        assert_eq!(region["epoch"]["conf_ver"].as_u64(), Some(1));
    }

    let health = get(&pd, "/pd/api/v1/health").await.json();
    let member = &health.as_array().unwrap()[0];
    assert_eq!(member["health"], Value::Bool(true));
    let pd_url = server.pd_url();
    assert_eq!(member["client_urls"][0].as_str(), Some(pd_url.as_str()));

    // The same port still speaks gRPC.
    let channel = grpc_channel(&pd).await;
    let members = call(
        &channel,
        pdpb::pd::GET_MEMBERS,
        &pdpb::GetMembersRequest {
            header: pd_header(&server),
        },
        CallOptions::with_timeout(Duration::from_secs(5)),
        usize::MAX,
    )
    .await
    .unwrap();
    assert_eq!(members.leader.unwrap().client_urls, vec![pd_url]);

    assert_eq!(get(&pd, "/pd/api/v1/nothing").await.status, 404);
    assert_eq!(get(&pd, "/").await.status, 404);
    let post = request(
        &pd,
        "POST /pd/api/v1/regions HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_and_regions_agree_with_grpc() {
    let server = SimServer::start(SimConfig::default()).await.unwrap();
    let pd = server.pd_address().to_owned();
    server.with(|sim| sim.cluster.stop_store(3)).unwrap();

    let stores = get(&pd, "/pd/api/v1/stores").await.json();
    assert_eq!(stores["count"].as_u64(), Some(3));
    let channel = grpc_channel(&pd).await;
    let all = call(
        &channel,
        pdpb::pd::GET_ALL_STORES,
        &pdpb::GetAllStoresRequest {
            header: pd_header(&server),
            exclude_tombstone_stores: true,
        },
        CallOptions::default(),
        usize::MAX,
    )
    .await
    .unwrap();
    for (json, proto) in stores["stores"].as_array().unwrap().iter().zip(&all.stores) {
        let meta = &json["store"];
        assert_eq!(meta["id"].as_u64(), Some(proto.id));
        assert_eq!(meta["address"].as_str(), Some(proto.address.as_str()));
        assert_eq!(
            meta["status_address"].as_str(),
            Some(proto.status_address.as_str())
        );
        let expected = if proto.id == 3 { "Disconnected" } else { "Up" };
        assert_eq!(meta["state_name"].as_str(), Some(expected));
    }
    let store = get(&pd, "/pd/api/v1/store/1").await.json();
    assert_eq!(store["status"]["leader_count"].as_u64(), Some(1));
    assert_eq!(store["status"]["region_count"].as_u64(), Some(1));
    assert_eq!(get(&pd, "/pd/api/v1/store/42").await.status, 404);

    let region_id = server.with(|sim| sim.cluster.regions().next().unwrap().id);
    let region = get(&pd, &format!("/pd/api/v1/region/id/{region_id}")).await;
    assert_eq!(region.status, 200);
    assert_eq!(region.json()["id"].as_u64(), Some(region_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_status_addresses_report_the_api_version() {
    for (api_version, number, ttl) in [
        (ApiVersion::V1, 1, false),
        (ApiVersion::V1ttl, 1, true),
        (ApiVersion::V2, 2, true),
    ] {
        let server = SimServer::start(SimConfig {
            api_version,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let stores = get(server.pd_address(), "/pd/api/v1/stores").await.json();
        for store in stores["stores"].as_array().unwrap() {
            let status_address = store["store"]["status_address"].as_str().unwrap();
            let config = get(status_address, "/config").await;
            assert_eq!(config.status, 200);
            let config = config.json();
            assert_eq!(config["storage"]["api-version"].as_u64(), Some(number));
            assert_eq!(config["storage"]["enable-ttl"], Value::Bool(ttl));
            assert_eq!(get(status_address, "/nothing").await.status, 404);
        }
        // The status port is the store's gRPC port: gRPC still works there.
        let (_, address) = server.store_addresses()[0].clone();
        let channel = grpc_channel(&address).await;
        let health = call(
            &channel,
            tikv_proto::grpc::health::v1::health::CHECK,
            &Default::default(),
            CallOptions::default(),
            usize::MAX,
        )
        .await
        .unwrap();
        assert_eq!(health.status, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_persist_pipeline_and_close_on_request() {
    let server = SimServer::start(SimConfig::default()).await.unwrap();
    let pd = server.pd_address().to_owned();
    let mut stream = TcpStream::connect(&pd).await.unwrap();
    // Two pipelined requests in one write, then a HEAD, then one asking to close.
    stream
        .write_all(
            b"GET /pd/api/v1/health HTTP/1.1\r\nHost: pd\r\n\r\n\
              GET /pd/api/v1/regions HTTP/1.1\r\nHost: pd\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    let first = read_response(&mut stream, &mut buf, false).await;
    let second = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(first.status, 200);
    assert!(first.json().as_array().is_some());
    assert_eq!(second.json()["count"].as_u64(), Some(1));
    assert_eq!(first.header("connection"), None);

    stream
        .write_all(b"HEAD /pd/api/v1/regions HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut stream, &mut buf, true).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length").map(str::to_owned),
        Some(second.body.len().to_string())
    );

    // A body sent in pieces with Expect: 100-continue.
    stream
        .write_all(b"POST /pd/api/v1/nothing HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let interim = read_response_status_line(&mut stream, &mut buf).await;
    assert_eq!(interim, "HTTP/1.1 100 Continue");
    stream.write_all(b"ab").await.unwrap();
    stream.write_all(b"cd").await.unwrap();
    assert_eq!(
        read_response(&mut stream, &mut buf, false).await.status,
        404
    );

    stream
        .write_all(b"GET /pd/api/v1/health HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let last = read_response(&mut stream, &mut buf, false).await;
    assert_eq!(last.header("connection"), Some("close"));
    assert!(buf.is_empty());
    assert!(read_to_close(&mut stream).await.is_empty());

    // HTTP/1.0 closes by default.
    let mut stream = TcpStream::connect(&pd).await.unwrap();
    stream
        .write_all(b"GET /pd/api/v1/health HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let reply = read_to_close(&mut stream).await;
    assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

/// Reads one interim status line (`100 Continue`) and the empty line after it.
async fn read_response_status_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let line = String::from_utf8(buf[..pos].to_vec()).unwrap();
            buf.drain(..pos + 4);
            return line;
        }
        let mut chunk = [0u8; 256];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_gets_400_and_the_port_keeps_serving() {
    let server = SimServer::start(SimConfig::default()).await.unwrap();
    let pd = server.pd_address().to_owned();
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(&pd).await.unwrap();
        stream.write_all(garbage).await.unwrap();
        let reply = read_to_close(&mut stream).await;
        assert!(
            reply.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
            "{garbage:?}: {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    // Close to the HTTP/2 preface, but not it: an HTTP/1 request with an unknown version.
    let mut stream = TcpStream::connect(&pd).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut stream)
            .await
            .starts_with(b"HTTP/1.1 505 ")
    );
    // Chunked uploads are refused, not misread.
    let mut stream = TcpStream::connect(&pd).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut stream)
            .await
            .starts_with(b"HTTP/1.1 501 ")
    );
    // A client that connects and leaves costs nothing.
    drop(TcpStream::connect(&pd).await.unwrap());

    assert_eq!(get(&pd, "/pd/api/v1/health").await.status, 200);
    let channel = grpc_channel(&pd).await;
    let info = call(
        &channel,
        pdpb::pd::GET_MEMBERS,
        &pdpb::GetMembersRequest {
            header: pd_header(&server),
        },
        CallOptions::default(),
        usize::MAX,
    )
    .await;
    assert!(info.is_ok(), "{info:?}");
}

#[test]
fn json_reader_reads_and_rejects() {
    let value = json::parse(r#" {"a":[1,-2.5e3,"x\"\u00e9"],"b":{"c":null,"d":true}} "#).unwrap();
    assert_eq!(value["a"][0].as_u64(), Some(1));
    assert_eq!(value["a"][2].as_str(), Some("x\"é"));
    assert_eq!(value["b"]["d"], Value::Bool(true));
    assert_eq!(value["missing"], Value::Null);
    for bad in [
        "",
        "{",
        "[1,]",
        "{\"a\"}",
        "01",
        "\"\u{1}\"",
        "[1] x",
        "{\"a\":1,\"a\":2}",
    ] {
        assert!(json::parse(bad).is_err(), "{bad:?}");
    }
}

/// Follows PD's `GetMinResolvedTS` handler (`/pd/api/v1/min-resolved-ts`) and TiKV's
/// `get_store_safe_ts` over the wire: once the stores' resolved-ts workers have run and
/// reported, PD's port answers the cluster's min resolved ts in PD's JSON shape and a
/// store's gRPC port answers its safe ts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_resolved_ts_and_store_safe_ts_are_served() {
    use tikv_proto::kvrpcpb;
    use tikv_proto::tikvpb;
    use tikv_sim::replica::ReplicaConfig;

    let server = SimServer::start(SimConfig {
        replicas: ReplicaConfig {
            advance_ts_interval_ms: 100,
            ..ReplicaConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    // The workers start with the clock; a second and a half later the stores have reported.
    let (expected, store_1) = server.with(|sim| {
        sim.handle_timeout(wall_ms);
        sim.handle_timeout(wall_ms + 1_500);
        let region = sim.cluster.regions().next().map(|r| r.id).unwrap_or(0);
        (
            sim.replicas().pd_min_resolved_ts(),
            sim.replicas().peer(region, 1).safe_ts,
        )
    });
    assert!(expected > 0);

    let pd = server.pd_address().to_owned();
    let answer = get(&pd, "/pd/api/v1/min-resolved-ts").await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["min_resolved_ts"].as_u64(), Some(expected));
    assert_eq!(body["is_real_time"], Value::Bool(true));
    assert_eq!(body["persist_interval"].as_str(), Some("1s"));

    let (_, address) = server.store_addresses()[0].clone();
    let channel = grpc_channel(&address).await;
    let resp = call(
        &channel,
        tikvpb::tikv::GET_STORE_SAFE_TS,
        &kvrpcpb::StoreSafeTsRequest::default(),
        CallOptions::with_timeout(Duration::from_secs(5)),
        usize::MAX,
    )
    .await
    .expect("served");
    assert!(resp.safe_ts >= store_1 && store_1 > 0, "{resp:?}");
}
