//! `Config::tls` is honoured by every way of starting a client: the runtime crates' `connect`
//! functions and `Client::start` with a runtime built by hand, on tokio and on async-std. The
//! cluster is a stub PD serving over mutual TLS; a client that reaches it learns the cluster
//! id.

use std::sync::Arc;
use std::time::Duration;

use tikv_async_std::AsyncStdRuntime;
use tikv_core::config::TlsConfig;
use tikv_core::{Client, Config, Error};
use tikv_proto::transport::server::ServeOptions;
use tikv_proto::transport::{ConnectOptions, tls};
use tikv_sim::serve::serve_loopback;
use tikv_sim::stub::StubPd;
use tikv_tests::certs::{self, TestIdentity};
use tikv_tokio::TokioRuntime;

const CLUSTER_ID: u64 = 7;

struct Pd {
    _server: tikv_proto::transport::server::ServerHandle,
    address: String,
    server_id: TestIdentity,
    client_id: TestIdentity,
}

/// A stub PD on loopback that only speaks mutual TLS.
async fn tls_pd() -> Pd {
    let server_id = certs::identity(&["127.0.0.1", "localhost"]);
    let client_id = certs::identity(&["client"]);
    let server_tls = tls::server_config(
        server_id.cert_pem.as_bytes(),
        server_id.key_pem.as_bytes(),
        Some(client_id.cert_pem.as_bytes()),
    )
    .unwrap_or_else(|err| panic!("server tls: {err}"));
    let stub = StubPd::new(CLUSTER_ID);
    let server = serve_loopback(
        Arc::clone(&stub),
        ServeOptions {
            tls: Some(server_tls),
            ..ServeOptions::default()
        },
    )
    .await
    .unwrap_or_else(|err| panic!("serving: {err}"));
    let address = server.address().to_owned();
    stub.set_address(&address);
    Pd {
        _server: server,
        address,
        server_id,
        client_id,
    }
}

impl Pd {
    /// A configuration trusting this PD and presenting the client certificate it asks for.
    fn tls_config(&self) -> Config {
        Config::default().with_tls(TlsConfig {
            ca_pem: self.server_id.cert_pem.clone().into_bytes(),
            identity: Some((
                self.client_id.cert_pem.clone().into_bytes(),
                self.client_id.key_pem.clone().into_bytes(),
            )),
        })
    }

    /// Connect options that would reach this PD over TLS, for runtimes built by hand.
    fn tls_options(&self) -> ConnectOptions {
        let client_tls = tls::client_config(
            self.server_id.cert_pem.as_bytes(),
            Some((
                self.client_id.cert_pem.as_bytes(),
                self.client_id.key_pem.as_bytes(),
            )),
        )
        .unwrap_or_else(|err| panic!("client tls: {err}"));
        ConnectOptions {
            tls: Some(client_tls),
            ..ConnectOptions::default()
        }
    }
}

async fn cluster_id(client: &Client) -> Result<u64, Error> {
    client.cluster_id().await
}

/// A client that must not reach the TLS-only PD: it gets no cluster id (an error, or nothing
/// within two seconds).
async fn cannot_reach(client: &Client) {
    let reached = tokio::time::timeout(Duration::from_secs(2), client.cluster_id()).await;
    assert!(!matches!(reached, Ok(Ok(_))), "{reached:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_connect_uses_the_config_tls() {
    let pd = tls_pd().await;
    let client = tikv_tokio::connect([pd.address.clone()], pd.tls_config())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(cluster_id(&client).await, Ok(CLUSTER_ID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_start_on_a_tokio_runtime_uses_the_config_tls() {
    let pd = tls_pd().await;
    // A runtime built without TLS: the configuration's TLS applies.
    let runtime =
        TokioRuntime::current(ConnectOptions::default()).unwrap_or_else(|err| panic!("{err}"));
    let client = Client::start(runtime, vec![pd.address.clone()], pd.tls_config())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(cluster_id(&client).await, Ok(CLUSTER_ID));

    // A runtime built with TLS but a configuration without: plaintext, as configured.
    let runtime = TokioRuntime::current(pd.tls_options()).unwrap_or_else(|err| panic!("{err}"));
    let plain = Client::start(runtime, vec![pd.address.clone()], Config::default())
        .unwrap_or_else(|err| panic!("{err}"));
    cannot_reach(&plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_std_connect_and_start_use_the_config_tls() {
    let pd = tls_pd().await;
    let client = tikv_async_std::connect([pd.address.clone()], pd.tls_config())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(cluster_id(&client).await, Ok(CLUSTER_ID));

    let runtime = AsyncStdRuntime::new(ConnectOptions::default());
    let client = Client::start(runtime, vec![pd.address.clone()], pd.tls_config())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(cluster_id(&client).await, Ok(CLUSTER_ID));

    let runtime = AsyncStdRuntime::new(pd.tls_options());
    let plain = Client::start(runtime, vec![pd.address.clone()], Config::default())
        .unwrap_or_else(|err| panic!("{err}"));
    cannot_reach(&plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_material_that_does_not_parse_is_refused_at_start() {
    let pd = tls_pd().await;
    let bad = Config::default().with_tls(TlsConfig {
        ca_pem: b"not a pem".to_vec(),
        identity: None,
    });
    let runtime =
        TokioRuntime::current(ConnectOptions::default()).unwrap_or_else(|err| panic!("{err}"));
    let started = Client::start(runtime, vec![pd.address.clone()], bad.clone());
    assert!(
        matches!(started, Err(Error::InvalidArgument(_))),
        "{started:?}"
    );
    let connected = tikv_tokio::connect([pd.address.clone()], bad);
    assert!(
        matches!(connected, Err(Error::InvalidArgument(_))),
        "{connected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_config_does_not_reach_a_tls_cluster() {
    let pd = tls_pd().await;
    let plain = tikv_tokio::connect([pd.address.clone()], Config::default())
        .unwrap_or_else(|err| panic!("{err}"));
    cannot_reach(&plain).await;
}
