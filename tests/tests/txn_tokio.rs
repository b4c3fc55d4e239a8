//! The transaction suite under tokio: client and simulated cluster on the test's runtime.

use std::time::Duration;

use tikv_core::driver::Options;
use tikv_core::{Client, Config};
use tikv_proto::rpc::BoxFuture;
use tikv_sim::{SimConfig, SimServer};
use tikv_tests::txn_suite::{self, Env};
use tikv_tokio::{ConnectOptions, TokioRuntime};

struct TokioEnv;

impl Env for TokioEnv {
    fn serve(&self, sim: SimConfig) -> BoxFuture<'_, SimServer> {
        Box::pin(async move {
            SimServer::start(sim)
                .await
                .unwrap_or_else(|err| panic!("starting the cluster: {err}"))
        })
    }

    fn connect(&self, pd: &str, config: Config, options: Options) -> Client {
        let runtime = TokioRuntime::current(ConnectOptions::default())
            .unwrap_or_else(|err| panic!("not in a tokio runtime: {err}"));
        Client::start_with(runtime, vec![pd.to_owned()], config, options)
            .unwrap_or_else(|err| panic!("connecting: {err}"))
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

macro_rules! tokio_test {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            txn_suite::$name(&TokioEnv).await;
        }
    };
}

tikv_tests::for_each_txn_test!(tokio_test);
