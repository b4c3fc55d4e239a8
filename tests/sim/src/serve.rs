//! Hosting gRPC handlers on loopback ports with tokio.

use std::sync::Arc;
use std::time::Duration;

use tikv_proto::rpc::BoxFuture;
use tikv_proto::transport::Executor;
use tikv_proto::transport::server::{Handler, ServeOptions, ServerHandle, spawn_server};

/// The tokio [`Executor`] servers run on.
#[derive(Clone, Debug)]
pub struct ServerExecutor(tokio::runtime::Handle);

impl ServerExecutor {
    /// The executor of the tokio runtime behind `handle`.
    pub fn new(handle: tokio::runtime::Handle) -> Self {
        Self(handle)
    }
}

impl Executor for ServerExecutor {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        drop(self.0.spawn(future));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let _guard = self.0.enter();
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Binds `127.0.0.1:0` and serves `handler` there on the current tokio runtime until the
/// returned handle is dropped.
///
/// Errors when the port cannot be bound or when called outside a tokio runtime.
pub async fn serve_loopback<H: Handler + ?Sized>(
    handler: Arc<H>,
    options: ServeOptions,
) -> std::io::Result<ServerHandle> {
    let handle = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let incoming = futures_util::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((next, listener))
    });
    Ok(spawn_server(
        ServerExecutor::new(handle),
        address,
        incoming,
        handler,
        options,
    ))
}
