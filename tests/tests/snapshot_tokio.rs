//! The snapshot-read suite under tokio: client and simulated cluster on the test's runtime.

use std::time::Duration;

use tikv_core::{Client, Config};
use tikv_proto::rpc::BoxFuture;
use tikv_sim::{Sim, SimServer};
use tikv_tests::snapshot_suite::{self, Env};
use tikv_tokio::{ConnectOptions, TokioRuntime};

struct TokioEnv;

impl Env for TokioEnv {
    fn serve(
        &self,
        sim: Sim,
        config: Config,
        options: tikv_core::driver::Options,
    ) -> BoxFuture<'_, (SimServer, Client)> {
        Box::pin(async move {
            let server = SimServer::serve(sim)
                .await
                .unwrap_or_else(|err| panic!("serving the cluster: {err}"));
            let runtime = TokioRuntime::current(ConnectOptions::default())
                .unwrap_or_else(|err| panic!("no tokio runtime: {err}"));
            let client = Client::start_with(
                runtime,
                vec![server.pd_address().to_owned()],
                config,
                options,
            )
            .unwrap_or_else(|err| panic!("connecting: {err}"));
            (server, client)
        })
    }

    fn connect(&self, pd: &str, config: Config) -> Client {
        let runtime = TokioRuntime::current(ConnectOptions::default())
            .unwrap_or_else(|err| panic!("no tokio runtime: {err}"));
        Client::start(runtime, vec![pd.to_owned()], config)
            .unwrap_or_else(|err| panic!("connecting: {err}"))
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

macro_rules! tokio_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            snapshot_suite::$name(&TokioEnv).await;
        }
    };
}

tikv_tests::for_each_snapshot_test!(tokio_test);
