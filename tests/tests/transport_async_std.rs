//! The transport conformance suite under async-std: client, server and timers all on
//! async-std, with its futures-io sockets seen through the shared transport's adapter.

use std::sync::Arc;

use tikv_async_std::{AsyncStdExecutor, AsyncStdRuntime};
use tikv_proto::rpc::BoxFuture;
use tikv_proto::transport::ConnectOptions;
use tikv_proto::transport::io::FuturesIo;
use tikv_proto::transport::server::{Handler, ServeOptions, ServerHandle, spawn_server};
use tikv_tests::transport_suite::{self, Env};

struct AsyncStdEnv;

impl Env for AsyncStdEnv {
    type Runtime = AsyncStdRuntime;

    fn runtime(&self, options: ConnectOptions) -> AsyncStdRuntime {
        AsyncStdRuntime::new(options)
    }

    fn serve(
        &self,
        handler: Arc<dyn Handler>,
        options: ServeOptions,
    ) -> BoxFuture<'_, ServerHandle> {
        Box::pin(async move {
            let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|err| panic!("binding: {err}"));
            let address = listener
                .local_addr()
                .unwrap_or_else(|err| panic!("local address: {err}"))
                .to_string();
            let incoming = futures_util::stream::unfold(listener, |listener| async move {
                let next = listener.accept().await.map(|(stream, _)| FuturesIo(stream));
                Some((next, listener))
            });
            spawn_server(AsyncStdExecutor::new(), address, incoming, handler, options)
        })
    }
}

macro_rules! async_std_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            async_std::task::block_on(transport_suite::$name(&AsyncStdEnv));
        }
    };
}

tikv_tests::for_each_transport_test!(async_std_test);
