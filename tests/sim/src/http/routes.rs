//! The HTTP endpoints of the simulated cluster, as pure functions of [`Sim`].
//!
//! PD (`/pd/api/v1/...`): the field names and shapes follow PD's `response.RegionInfo`,
//! `response.StoreInfo` and the health handler, with Go's encoding rules: protobuf fields
//! tagged `omitempty` are left out when zero (a voter peer has no `role`, an Up store no
//! `state`), keys are upper-case hex. Traffic and size statistics are not modelled and read
//! zero. A store's status port answers `/config` with the one setting clients read from it,
//! `storage.api-version` (and `enable-ttl`, which is how TiKV spells API V1TTL).

use tikv_proto::kvrpcpb::ApiVersion;
use tikv_proto::metapb::PeerRole;

use super::{HttpRequest, HttpResponse, Json};
use crate::cluster::{Peer, Region, Store, StoreState};
use crate::sim::Sim;

/// The prefix of every PD API path.
const PD_API: &str = "/pd/api/v1";

impl Sim {
    /// Answers one request to PD's HTTP API; `pd_url` is the answering member's client URL
    /// (reported by `/health` for members whose URL was never set). Serves `GET`/`HEAD` of
    /// `/pd/api/v1/health`, `/regions`, `/region/id/{id}`, `/stores`, `/store/{id}`,
    /// `/config/replicate`, `/min-resolved-ts` (with PD's optional `scope` query) and
    /// `/min-resolved-ts/{store_id}`; other methods on those paths get 405, other paths 404.
    /// The min resolved ts is what the stores last reported (see [`crate::replica`]).
    pub fn handle_pd_http(&self, request: &HttpRequest, pd_url: &str) -> HttpResponse {
        let Some(route) = request.path().strip_prefix(PD_API) else {
            return HttpResponse::not_found();
        };
        let route = route.trim_end_matches('/');
        let answer = match route.split('/').collect::<Vec<_>>()[..] {
            ["", "health"] => Some(self.pd_health(pd_url)),
            ["", "regions"] => Some(self.pd_regions_json()),
            ["", "region", "id", id] => Some(self.pd_region_by_id(id)),
            ["", "stores"] => Some(self.pd_stores()),
            ["", "store", id] => Some(self.pd_store(id)),
            ["", "config", "replicate"] => Some(self.pd_replication_config()),
            ["", "min-resolved-ts"] => {
                Some(self.pd_min_resolved_ts(query_param(&request.target, "scope")))
            }
            ["", "min-resolved-ts", id] => Some(self.pd_store_min_resolved_ts_json(id)),
            _ => None,
        };
        match answer {
            None => HttpResponse::not_found(),
            Some(_) if !is_read(request) => HttpResponse::method_not_allowed("GET, HEAD"),
            Some(response) => response,
        }
    }

    /// Answers one request to store `store_id`'s status port: `GET /config` (the storage
    /// API version) and `GET /status` (empty 200); 404 otherwise, 503 while the store is
    /// stopped.
    pub fn handle_status_http(&self, store_id: u64, request: &HttpRequest) -> HttpResponse {
        let known = matches!(request.path(), "/config" | "/status");
        if !known {
            return HttpResponse::not_found();
        }
        if !is_read(request) {
            return HttpResponse::method_not_allowed("GET, HEAD");
        }
        if !self.cluster.store(store_id).is_some_and(|s| s.running) {
            return HttpResponse::text(503, "store is not running\n");
        }
        match request.path() {
            "/config" => HttpResponse::json(200, &api_version_config(self.api_version())),
            _ => HttpResponse::text(200, ""),
        }
    }

    /// Every PD member and whether it runs; `pd_url` stands in for members whose URL was
    /// never set.
    fn pd_health(&self, pd_url: &str) -> HttpResponse {
        let members = self
            .cluster
            .pd_members()
            .iter()
            .map(|member| {
                let url = if member.client_url.is_empty() {
                    pd_url
                } else {
                    member.client_url.as_str()
                };
                Json::object([
                    ("name", Json::str(member.name.clone())),
                    ("member_id", Json::UInt(member.id)),
                    ("client_urls", Json::Array(vec![Json::str(url)])),
                    ("health", Json::Bool(member.running)),
                ])
            })
            .collect();
        HttpResponse::json(200, &Json::Array(members))
    }

    /// PD's replication config (`config.ReplicationConfig`'s JSON): the voter count and the
    /// location labels (one comma-joined string, as PD's `StringSlice` encodes them);
    /// placement rules on and strict label matching off, PD's defaults.
    fn pd_replication_config(&self) -> HttpResponse {
        let config = self.cluster.config();
        HttpResponse::json(
            200,
            &Json::object([
                ("max-replicas", Json::UInt(u64::from(config.replica_count))),
                (
                    "location-labels",
                    Json::str(config.location_labels.join(",")),
                ),
                ("strictly-match-label", Json::str("false")),
                ("enable-placement-rules", Json::str("true")),
                ("enable-placement-rules-cache", Json::str("false")),
                ("isolation-level", Json::str("")),
            ]),
        )
    }

    /// PD's `GetMinResolvedTS` handler: the cluster's min resolved ts; with `scope=cluster`
    /// also every store's, with `scope=1,2` the minimum over those stores and each one's.
    fn pd_min_resolved_ts(&self, scope: Option<String>) -> HttpResponse {
        let cluster_value = self.replicas().pd_min_resolved_ts();
        let (value, stores) = match scope.as_deref() {
            None | Some("") => (cluster_value, None),
            Some("cluster") => {
                let ids: Vec<u64> = self.cluster.stores().map(|store| store.id).collect();
                (cluster_value, Some(self.stores_min_resolved_ts(&ids).1))
            }
            Some(list) => {
                let mut ids = Vec::new();
                for id in list.split(',') {
                    match id.parse::<u64>() {
                        Ok(id) => ids.push(id),
                        Err(_) => return HttpResponse::json(400, &Json::str(parse_uint_error(id))),
                    }
                }
                let (min, stores) = self.stores_min_resolved_ts(&ids);
                (min, Some(stores))
            }
        };
        HttpResponse::json(200, &min_resolved_ts_json(value, stores))
    }

    /// PD's `GetStoreMinResolvedTS` handler for one store.
    fn pd_store_min_resolved_ts_json(&self, id: &str) -> HttpResponse {
        let Ok(id) = id.parse::<u64>() else {
            return HttpResponse::json(400, &Json::str(parse_uint_error(id)));
        };
        HttpResponse::json(
            200,
            &min_resolved_ts_json(self.pd_store_min_resolved_ts(id), None),
        )
    }

    /// PD's `GetStoreMinResolvedTS`: what the store last reported, or `u64::MAX` for a store
    /// PD does not count (unknown, removed, or leading no region).
    pub fn pd_store_min_resolved_ts(&self, store_id: u64) -> u64 {
        let counted = self
            .cluster
            .store(store_id)
            .is_some_and(|store| !store.is_tombstone())
            && self
                .cluster
                .regions()
                .any(|region| region.leader().is_some_and(|l| l.store_id == store_id));
        if counted {
            self.replicas().reported_min_resolved_ts(store_id)
        } else {
            u64::MAX
        }
    }

    /// PD's `GetMinResolvedTSByStoreIDs`: the minimum over `ids` and each one's value.
    fn stores_min_resolved_ts(&self, ids: &[u64]) -> (u64, Vec<(u64, u64)>) {
        let stores: Vec<(u64, u64)> = ids
            .iter()
            .map(|id| (*id, self.pd_store_min_resolved_ts(*id)))
            .collect();
        let min = stores.iter().map(|(_, ts)| *ts).min().unwrap_or(u64::MAX);
        (min, stores)
    }

    fn pd_regions_json(&self) -> HttpResponse {
        let regions: Vec<Json> = self.cluster.pd_regions().map(region_json).collect();
        HttpResponse::json(
            200,
            &Json::object([
                ("count", Json::UInt(regions.len() as u64)),
                ("regions", Json::Array(regions)),
            ]),
        )
    }

    fn pd_region_by_id(&self, id: &str) -> HttpResponse {
        let Ok(id) = id.parse::<u64>() else {
            return HttpResponse::json(400, &Json::str(format!("invalid region id {id:?}")));
        };
        match self.cluster.pd_regions().find(|region| region.id == id) {
            Some(region) => HttpResponse::json(200, &region_json(region)),
            None => HttpResponse::json(404, &Json::str(format!("region {id} not found"))),
        }
    }

    fn pd_stores(&self) -> HttpResponse {
        // PD leaves tombstones out unless asked for them.
        let stores: Vec<Json> = self
            .cluster
            .stores()
            .filter(|store| !store.is_tombstone())
            .map(|store| self.store_json(store))
            .collect();
        HttpResponse::json(
            200,
            &Json::object([
                ("count", Json::UInt(stores.len() as u64)),
                ("stores", Json::Array(stores)),
            ]),
        )
    }

    fn pd_store(&self, id: &str) -> HttpResponse {
        let Ok(id) = id.parse::<u64>() else {
            return HttpResponse::json(400, &Json::str(format!("invalid store id {id:?}")));
        };
        match self.cluster.store(id) {
            Some(store) => HttpResponse::json(200, &self.store_json(store)),
            None => HttpResponse::json(404, &Json::str(format!("store {id} not found"))),
        }
    }

    fn store_json(&self, store: &Store) -> Json {
        let proto = store.to_proto();
        let mut meta: Vec<(&str, Json)> = vec![
            ("id", Json::UInt(proto.id)),
            ("address", Json::str(proto.address)),
        ];
        if proto.state != 0 {
            meta.push(("state", Json::Int(i64::from(proto.state))));
        }
        if !proto.labels.is_empty() {
            let labels = proto
                .labels
                .into_iter()
                .map(|label| {
                    Json::object([
                        ("key", Json::str(label.key)),
                        ("value", Json::str(label.value)),
                    ])
                })
                .collect();
            meta.push(("labels", Json::Array(labels)));
        }
        meta.extend([
            ("version", Json::str(proto.version)),
            ("peer_address", Json::str(proto.peer_address)),
            ("status_address", Json::str(proto.status_address)),
        ]);
        if proto.node_state != 0 {
            meta.push(("node_state", Json::Int(i64::from(proto.node_state))));
        }
        let state_name = match store.state {
            StoreState::Up if !store.running => "Disconnected",
            StoreState::Up => "Up",
            StoreState::Offline => "Offline",
            StoreState::Tombstone => "Tombstone",
        };
        meta.push(("state_name", Json::str(state_name)));
        let regions: Vec<&Region> = self
            .cluster
            .regions()
            .filter(|region| region.peer_on(store.id).is_some())
            .collect();
        let leaders = regions
            .iter()
            .filter(|region| region.leader().is_some_and(|l| l.store_id == store.id))
            .count() as u64;
        let region_count = regions.len() as u64;
        // Scores with unit weights and no sizes: what PD's count-based policies compute.
        let status = Json::object([
            ("capacity", Json::str("0B")),
            ("available", Json::str("0B")),
            ("used_size", Json::str("0B")),
            ("leader_count", Json::UInt(leaders)),
            ("leader_weight", Json::UInt(1)),
            ("leader_score", Json::UInt(leaders)),
            ("leader_size", Json::UInt(0)),
            ("region_count", Json::UInt(region_count)),
            ("region_weight", Json::UInt(1)),
            ("region_score", Json::UInt(region_count)),
            ("region_size", Json::UInt(0)),
        ]);
        Json::object([("store", Json::object(meta)), ("status", status)])
    }
}

/// What a TiKV status server's `/config` reports for the storage API version:
/// `{"storage":{"api-version":N,"enable-ttl":B}}` (V1TTL is version 1 with TTL on).
pub fn api_version_config(api_version: ApiVersion) -> Json {
    let (version, ttl) = match api_version {
        ApiVersion::V1 => (1, false),
        ApiVersion::V1ttl => (1, true),
        ApiVersion::V2 => (2, true),
        ApiVersion::V3 => (3, true),
    };
    Json::object([(
        "storage",
        Json::object([
            ("api-version", Json::UInt(version)),
            ("enable-ttl", Json::Bool(ttl)),
        ]),
    )])
}

/// PD's `MinResolvedTS` answer: `is_real_time` (persistence is on, every second),
/// `min_resolved_ts`, `persist_interval`, and the per-store map (`null` without a scope;
/// keys sorted as strings, as Go's encoder sorts a map's keys).
fn min_resolved_ts_json(value: u64, stores: Option<Vec<(u64, u64)>>) -> Json {
    let stores = match stores {
        None => Json::Null,
        Some(mut stores) => {
            stores.sort_by_key(|(id, _)| id.to_string());
            stores.dedup_by_key(|(id, _)| *id);
            Json::object(
                stores
                    .into_iter()
                    .map(|(id, ts)| (id.to_string(), Json::UInt(ts))),
            )
        }
    };
    Json::object([
        ("is_real_time", Json::Bool(true)),
        ("min_resolved_ts", Json::UInt(value)),
        ("persist_interval", Json::str("1s")),
        ("stores_min_resolved_ts", stores),
    ])
}

/// Go's `strconv.ParseUint` error text, which PD answers a bad store id with.
fn parse_uint_error(text: &str) -> String {
    format!("strconv.ParseUint: parsing {text:?}: invalid syntax")
}

/// The (percent-decoded) value of query parameter `name` in a request target.
fn query_param(target: &str, name: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match (byte, hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits make one byte (at most 0xFF).
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
                continue;
            }
            (b'+', ..) => out.push(b' '),
            (other, ..) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_read(request: &HttpRequest) -> bool {
    matches!(request.method.as_str(), "GET" | "HEAD")
}

fn hex_upper(key: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(key.len() * 2);
    for byte in key {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xF)]));
    }
    out
}

fn peer_json(peer: Option<&Peer>) -> Json {
    let Some(peer) = peer else {
        // PD fills a missing leader with an empty peer.
        return Json::object([("role_name", Json::str(""))]);
    };
    let mut fields: Vec<(&str, Json)> = vec![
        ("id", Json::UInt(peer.id)),
        ("store_id", Json::UInt(peer.store_id)),
    ];
    if peer.role != PeerRole::Voter {
        fields.push(("role", Json::Int(peer.role as i64)));
    }
    fields.push(("role_name", Json::str(peer.role.as_str_name())));
    if peer.role == PeerRole::Learner {
        fields.push(("is_learner", Json::Bool(true)));
    }
    Json::object(fields)
}

fn region_json(region: &Region) -> Json {
    let mut fields: Vec<(&str, Json)> = vec![
        ("id", Json::UInt(region.id)),
        ("start_key", Json::str(hex_upper(&region.start_key))),
        ("end_key", Json::str(hex_upper(&region.end_key))),
        (
            "epoch",
            Json::object([
                ("conf_ver", Json::UInt(region.epoch.conf_ver)),
                ("version", Json::UInt(region.epoch.version)),
            ]),
        ),
    ];
    if !region.peers.is_empty() {
        let peers = region.peers.iter().map(|p| peer_json(Some(p))).collect();
        fields.push(("peers", Json::Array(peers)));
    }
    fields.push(("leader", peer_json(region.leader())));
    for name in [
        "cpu_usage",
        "written_bytes",
        "read_bytes",
        "written_keys",
        "read_keys",
        "approximate_size",
        "approximate_keys",
        "approximate_kv_size",
        "approximate_columnar_kv_size",
    ] {
        fields.push((name, Json::UInt(0)));
    }
    Json::object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;
    use bytes::Bytes;

    fn get(path: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".to_owned(),
            target: path.to_owned(),
            minor_version: 1,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn body(response: &HttpResponse) -> &str {
        std::str::from_utf8(&response.body).unwrap()
    }

    #[test]
    fn regions_list_pd_view_in_key_order() {
        let mut sim = Sim::new(SimConfig::default()).unwrap();
        sim.cluster
            .split_keys(&[Bytes::from_static(b"\x01\xab")])
            .unwrap();
        let response = sim.handle_pd_http(&get("/pd/api/v1/regions"), "http://pd");
        assert_eq!(response.status, 200);
        assert_eq!(
            body(&response),
            "{\"count\":2,\"regions\":[\
             {\"id\":8,\"start_key\":\"\",\"end_key\":\"01AB\",\
             \"epoch\":{\"conf_ver\":1,\"version\":2},\
             \"peers\":[{\"id\":9,\"store_id\":1,\"role_name\":\"Voter\"},\
             {\"id\":10,\"store_id\":2,\"role_name\":\"Voter\"},\
             {\"id\":11,\"store_id\":3,\"role_name\":\"Voter\"}],\
             \"leader\":{\"id\":9,\"store_id\":1,\"role_name\":\"Voter\"},\
             \"cpu_usage\":0,\"written_bytes\":0,\"read_bytes\":0,\"written_keys\":0,\
             \"read_keys\":0,\"approximate_size\":0,\"approximate_keys\":0,\
             \"approximate_kv_size\":0,\"approximate_columnar_kv_size\":0},\
             {\"id\":4,\"start_key\":\"01AB\",\"end_key\":\"\",\
             \"epoch\":{\"conf_ver\":1,\"version\":2},\
             \"peers\":[{\"id\":5,\"store_id\":1,\"role_name\":\"Voter\"},\
             {\"id\":6,\"store_id\":2,\"role_name\":\"Voter\"},\
             {\"id\":7,\"store_id\":3,\"role_name\":\"Voter\"}],\
             \"leader\":{\"id\":5,\"store_id\":1,\"role_name\":\"Voter\"},\
             \"cpu_usage\":0,\"written_bytes\":0,\"read_bytes\":0,\"written_keys\":0,\
             \"read_keys\":0,\"approximate_size\":0,\"approximate_keys\":0,\
             \"approximate_kv_size\":0,\"approximate_columnar_kv_size\":0}]}"
        );
        // Hidden regions are not in PD's view.
        sim.cluster.hide_region_from_pd(8).unwrap();
        let response = sim.handle_pd_http(&get("/pd/api/v1/regions/"), "http://pd");
        assert!(body(&response).starts_with("{\"count\":1,"));
        let response = sim.handle_pd_http(&get("/pd/api/v1/region/id/8"), "http://pd");
        assert_eq!(response.status, 404);
        let response = sim.handle_pd_http(&get("/pd/api/v1/region/id/4"), "http://pd");
        assert!(body(&response).starts_with("{\"id\":4,"));
        let response = sim.handle_pd_http(&get("/pd/api/v1/region/id/x"), "http://pd");
        assert_eq!(response.status, 400);
    }

    #[test]
    fn learners_and_leaderless_regions_follow_pd_encoding() {
        let learner = Peer {
            id: 7,
            store_id: 2,
            role: PeerRole::Learner,
        };
        assert_eq!(
            peer_json(Some(&learner)).to_text(),
            r#"{"id":7,"store_id":2,"role":1,"role_name":"Learner","is_learner":true}"#
        );
        assert_eq!(peer_json(None).to_text(), r#"{"role_name":""}"#);
    }

    #[test]
    fn stores_health_and_status() {
        let mut sim = Sim::new(SimConfig::default()).unwrap();
        sim.cluster
            .set_store_labels(1, vec![("zone".to_owned(), "z1".to_owned())])
            .unwrap();
        sim.cluster.stop_store(2).unwrap();
        let response = sim.handle_pd_http(&get("/pd/api/v1/stores"), "http://pd");
        let text = body(&response);
        assert!(text.starts_with("{\"count\":3,\"stores\":[{\"store\":{\"id\":1,"));
        assert!(text.contains("\"labels\":[{\"key\":\"zone\",\"value\":\"z1\"}]"));
        assert!(text.contains("\"node_state\":1,\"state_name\":\"Up\""));
        assert!(text.contains("\"state_name\":\"Disconnected\""));
        assert!(text.contains("\"leader_count\":1,"));
        let response = sim.handle_pd_http(&get("/pd/api/v1/store/3"), "http://pd");
        assert!(body(&response).starts_with("{\"store\":{\"id\":3,"));
        assert_eq!(
            sim.handle_pd_http(&get("/pd/api/v1/store/99"), "http://pd")
                .status,
            404
        );
        let response = sim.handle_pd_http(&get("/pd/api/v1/health"), "http://pd:1");
        assert_eq!(
            body(&response),
            r#"[{"name":"pd-sim","member_id":1,"client_urls":["http://pd:1"],"health":true}]"#
        );
        assert_eq!(sim.handle_pd_http(&get("/pd/api/v1/nope"), "").status, 404);
        assert_eq!(sim.handle_pd_http(&get("/other"), "").status, 404);
        let mut post = get("/pd/api/v1/regions");
        post.method = "POST".to_owned();
        assert_eq!(sim.handle_pd_http(&post, "").status, 405);

        let config = sim.handle_status_http(1, &get("/config"));
        assert_eq!(
            body(&config),
            r#"{"storage":{"api-version":1,"enable-ttl":false}}"#
        );
        assert_eq!(sim.handle_status_http(2, &get("/config")).status, 503);
        assert_eq!(sim.handle_status_http(1, &get("/status")).status, 200);
        assert_eq!(sim.handle_status_http(1, &get("/metrics")).status, 404);
        assert_eq!(sim.handle_status_http(1, &post).status, 404);
    }

    /// Follows PD's `GetReplicationConfig` handler and `ReplicationConfig` JSON tags.
    #[test]
    fn replication_config_reports_replicas_and_location_labels_as_pd() {
        let sim = Sim::new(SimConfig {
            cluster: crate::cluster::ClusterConfig {
                replica_count: 2,
                location_labels: vec!["zone".to_owned(), "host".to_owned()],
                ..crate::cluster::ClusterConfig::default()
            },
            ..SimConfig::default()
        })
        .unwrap();
        let response = sim.handle_pd_http(&get("/pd/api/v1/config/replicate"), "");
        assert_eq!(response.status, 200);
        assert_eq!(
            body(&response),
            r#"{"max-replicas":2,"location-labels":"zone,host","strictly-match-label":"false","enable-placement-rules":"true","enable-placement-rules-cache":"false","isolation-level":""}"#
        );
    }

    #[test]
    fn api_version_configs() {
        assert_eq!(
            api_version_config(ApiVersion::V1ttl).to_text(),
            r#"{"storage":{"api-version":1,"enable-ttl":true}}"#
        );
        assert_eq!(
            api_version_config(ApiVersion::V2).to_text(),
            r#"{"storage":{"api-version":2,"enable-ttl":true}}"#
        );
    }

    #[test]
    fn hex_is_upper_case() {
        assert_eq!(hex_upper(b"\x00\x7f\xff"), "007FFF");
        assert_eq!(hex_upper(b""), "");
    }
}
