//! The PD group suite under async-std: the client runs on async-std; the simulated cluster,
//! which needs tokio, is served from a tokio runtime on background threads.

use std::sync::OnceLock;
use std::time::Duration;

use tikv_core::{Client, Config};
use tikv_proto::rpc::BoxFuture;
use tikv_sim::{SimConfig, SimServer};
use tikv_tests::pd_suite::{self, Env};

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
    fn start(&self, sim: SimConfig, config: Config) -> BoxFuture<'_, (SimServer, Client)> {
        Box::pin(async move {
            let server = server_runtime()
                .spawn(SimServer::start(sim))
                .await
                .unwrap_or_else(|err| panic!("server task: {err}"))
                .unwrap_or_else(|err| panic!("starting the cluster: {err}"));
            let client = tikv_async_std::connect(server.pd_addresses(), config)
                .unwrap_or_else(|err| panic!("connecting: {err}"));
            (server, client)
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async_std::task::sleep(duration))
    }
}

macro_rules! async_std_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            async_std::task::block_on(pd_suite::$name(&AsyncStdEnv));
        }
    };
}

tikv_tests::for_each_pd_test!(async_std_test);
