//! The PD group suite under tokio: client and simulated cluster on the test's runtime.

use std::time::Duration;

use tikv_core::{Client, Config};
use tikv_proto::rpc::BoxFuture;
use tikv_sim::{SimConfig, SimServer};
use tikv_tests::pd_suite::{self, Env};

struct TokioEnv;

impl Env for TokioEnv {
    fn start(&self, sim: SimConfig, config: Config) -> BoxFuture<'_, (SimServer, Client)> {
        Box::pin(async move {
            let server = SimServer::start(sim)
                .await
                .unwrap_or_else(|err| panic!("starting the cluster: {err}"));
            let client = tikv_tokio::connect(server.pd_addresses(), config)
                .unwrap_or_else(|err| panic!("connecting: {err}"));
            (server, client)
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

macro_rules! tokio_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            pd_suite::$name(&TokioEnv).await;
        }
    };
}

tikv_tests::for_each_pd_test!(tokio_test);
