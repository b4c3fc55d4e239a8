//! The transport conformance suite under tokio.

use std::sync::Arc;

use tikv_proto::rpc::BoxFuture;
use tikv_proto::transport::ConnectOptions;
use tikv_proto::transport::server::{Handler, ServeOptions, ServerHandle};
use tikv_tests::transport_suite::{self, Env};
use tikv_tokio::TokioRuntime;

struct TokioEnv;

impl Env for TokioEnv {
    type Runtime = TokioRuntime;

    fn runtime(&self, options: ConnectOptions) -> TokioRuntime {
        TokioRuntime::current(options).unwrap_or_else(|err| panic!("{err}"))
    }

    fn serve(
        &self,
        handler: Arc<dyn Handler>,
        options: ServeOptions,
    ) -> BoxFuture<'_, ServerHandle> {
        Box::pin(async move {
            tikv_sim::serve::serve_loopback(handler, options)
                .await
                .unwrap_or_else(|err| panic!("serving: {err}"))
        })
    }
}

macro_rules! tokio_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            transport_suite::$name(&TokioEnv).await;
        }
    };
}

tikv_tests::for_each_transport_test!(tokio_test);
