//! The snapshot-read suite under async-std: the client runs on async-std; the simulated
//! cluster, which needs tokio, is served from a tokio runtime on background threads.

use std::sync::OnceLock;
use std::time::Duration;

use tikv_async_std::{AsyncStdRuntime, ConnectOptions};
use tikv_core::{Client, Config};
use tikv_proto::rpc::BoxFuture;
use tikv_sim::{Sim, SimServer};
use tikv_tests::snapshot_suite::{self, Env};

struct AsyncStdEnv;

/// The tokio runtime hosting every test's cluster; it lives as long as the test binary.
fn server_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sim-server")
            .enable_all()
            .build()
            .unwrap_or_else(|err| panic!("building the server runtime: {err}"))
    })
}

impl Env for AsyncStdEnv {
    fn serve(
        &self,
        sim: Sim,
        config: Config,
        options: tikv_core::driver::Options,
    ) -> BoxFuture<'_, (SimServer, Client)> {
        Box::pin(async move {
            let server = server_runtime()
                .spawn(SimServer::serve(sim))
                .await
                .unwrap_or_else(|err| panic!("server task: {err}"))
                .unwrap_or_else(|err| panic!("serving the cluster: {err}"));
            let runtime = AsyncStdRuntime::new(ConnectOptions::default());
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
        let runtime = AsyncStdRuntime::new(ConnectOptions::default());
        Client::start(runtime, vec![pd.to_owned()], config)
            .unwrap_or_else(|err| panic!("connecting: {err}"))
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async_std::task::sleep(duration))
    }
}

macro_rules! async_std_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            async_std::task::block_on(snapshot_suite::$name(&AsyncStdEnv));
        }
    };
}

tikv_tests::for_each_snapshot_test!(async_std_test);
