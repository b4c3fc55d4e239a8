//! Hosting gRPC handlers on loopback ports with tokio, alone or sharing a port with an
//! HTTP/1.1 server.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tikv_proto::rpc::BoxFuture;
use tikv_proto::transport::Executor;
use tikv_proto::transport::server::{Handler, ServeOptions, ServerHandle, spawn_server};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::http::HttpHandler;

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

/// The first bytes of every HTTP/2 connection (RFC 9113 3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a new connection may take to send enough bytes to tell its protocol.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// What protocol a connection speaks, told from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: the HTTP/2 client preface (or, on a TLS server, a TLS handshake record).
    Grpc,
    /// Anything else: HTTP/1.1.
    Http1,
}

/// Tells the protocol from the first bytes of a connection; `None` while `prefix` could still
/// become the HTTP/2 preface. `tls` says the gRPC side expects TLS, whose first record is a
/// handshake (`0x16`).
pub fn classify(prefix: &[u8], tls: bool) -> Option<Protocol> {
    if tls && prefix.first() == Some(&0x16) {
        return Some(Protocol::Grpc);
    }
    if !HTTP2_PREFACE.starts_with(&prefix[..prefix.len().min(HTTP2_PREFACE.len())]) {
        return Some(Protocol::Http1);
    }
    (prefix.len() >= HTTP2_PREFACE.len()).then_some(Protocol::Grpc)
}

/// A gRPC server that also answers HTTP/1.1 on the same port, as PD serves its gRPC service
/// and its HTTP API together. Stops serving when dropped: the port closes and every
/// connection on it is dropped.
#[derive(Debug)]
pub struct DualServer {
    grpc: ServerHandle,
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<ConnectionCounts>,
}

impl DualServer {
    /// The `host:port` the server listens on.
    pub fn address(&self) -> &str {
        self.grpc.address()
    }

    /// gRPC connections accepted so far.
    pub fn grpc_connections_accepted(&self) -> usize {
        self.connections.accepted.load(Ordering::Acquire)
    }

    /// gRPC connections open now (a connection counts until the server drops its socket).
    pub fn grpc_connections_open(&self) -> usize {
        self.connections.open.load(Ordering::Acquire)
    }
}

impl Drop for DualServer {
    fn drop(&mut self) {
        // The accept task owns every HTTP connection task (in a JoinSet), so aborting it
        // closes them too; dropping `grpc` closes the gRPC connections.
        self.accept.abort();
    }
}

/// Counts of a server's gRPC connections.
#[derive(Debug, Default)]
struct ConnectionCounts {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// A connection that counts itself open until dropped.
#[derive(Debug)]
pub struct Counted<IO> {
    inner: IO,
    counts: Arc<ConnectionCounts>,
}

impl<IO> Counted<IO> {
    fn new(inner: IO, counts: &Arc<ConnectionCounts>) -> Self {
        counts.accepted.fetch_add(1, Ordering::AcqRel);
        counts.open.fetch_add(1, Ordering::AcqRel);
        Self {
            inner,
            counts: Arc::clone(counts),
        }
    }
}

impl<IO> Drop for Counted<IO> {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Binds `127.0.0.1:0` and serves gRPC calls with `handler` and HTTP/1.1 requests with
/// `http` on that one port, telling connections apart by their first bytes (see
/// [`classify`]), on the current tokio runtime until the returned server is dropped.
///
/// With TLS in `options`, only gRPC is served over TLS; plaintext connections still reach
/// the HTTP side. Errors when the port cannot be bound or when called outside a tokio runtime.
pub async fn serve_loopback_dual<H, W>(
    handler: Arc<H>,
    http: Arc<W>,
    options: ServeOptions,
) -> std::io::Result<DualServer>
where
    H: Handler + ?Sized,
    W: HttpHandler + ?Sized,
{
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    serve_dual_at("127.0.0.1:0", &runtime, handler, http, options)
}

/// Like [`serve_loopback_dual`], on `address` (`host:port`; port 0 picks a free one) and on
/// the tokio runtime behind `runtime`; callable from any thread, so a stopped server can be
/// brought back on its old port from outside the runtime.
///
/// Errors when the address cannot be bound.
pub fn serve_dual_at<H, W>(
    address: &str,
    runtime: &tokio::runtime::Handle,
    handler: Arc<H>,
    http: Arc<W>,
    options: ServeOptions,
) -> std::io::Result<DualServer>
where
    H: Handler + ?Sized,
    W: HttpHandler + ?Sized,
{
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let address = listener.local_addr()?.to_string();
    let tls = options.tls.is_some();
    let connections = Arc::new(ConnectionCounts::default());
    let (grpc_tx, grpc_rx) =
        tokio::sync::mpsc::channel::<std::io::Result<Counted<Rewind<TcpStream>>>>(16);
    let incoming = futures_util::stream::unfold(grpc_rx, |mut rx| async move {
        rx.recv().await.map(|next| (next, rx))
    });
    let grpc = spawn_server(
        ServerExecutor::new(runtime.clone()),
        address,
        incoming,
        handler,
        options,
    );
    let counts = Arc::clone(&connections);
    let accept = runtime.spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            while connections.try_join_next().is_some() {}
            let _ = stream.set_nodelay(true);
            let grpc_tx = grpc_tx.clone();
            let http = Arc::clone(&http);
            let counts = Arc::clone(&counts);
            connections.spawn(async move {
                let Ok(Ok((protocol, stream))) =
                    tokio::time::timeout(SNIFF_TIMEOUT, sniff(stream, tls)).await
                else {
                    return;
                };
                match protocol {
                    Protocol::Grpc => {
                        let _ = grpc_tx.send(Ok(Counted::new(stream, &counts))).await;
                    }
                    Protocol::Http1 => {
                        let Rewind { prefix, inner, .. } = stream;
                        let _ = crate::http::serve_connection(inner, &prefix, http).await;
                    }
                }
            });
        }
    });
    Ok(DualServer {
        grpc,
        accept,
        connections,
    })
}

/// Reads until the protocol is known; returns it and the stream with the bytes read put back.
///
/// Errors when reading fails or the peer closes before the protocol is known.
pub async fn sniff<IO: AsyncRead + Unpin>(
    mut io: IO,
    tls: bool,
) -> std::io::Result<(Protocol, Rewind<IO>)> {
    let mut prefix = Vec::with_capacity(HTTP2_PREFACE.len());
    loop {
        if let Some(protocol) = classify(&prefix, tls) {
            return Ok((protocol, Rewind::new(prefix, io)));
        }
        let mut chunk = [0u8; 24];
        let wanted = HTTP2_PREFACE.len() - prefix.len();
        let n = io.read(&mut chunk[..wanted]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        prefix.extend_from_slice(&chunk[..n]);
    }
}

/// A stream that first yields bytes already read from it, then reads on.
#[derive(Debug)]
pub struct Rewind<IO> {
    prefix: Vec<u8>,
    position: usize,
    inner: IO,
}

impl<IO> Rewind<IO> {
    /// `inner`, with `prefix` to be read again before it.
    pub fn new(prefix: Vec<u8>, inner: IO) -> Self {
        Self {
            prefix,
            position: 0,
            inner,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.position < this.prefix.len() {
            let rest = &this.prefix[this.position..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.position += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_first_bytes() {
        assert_eq!(classify(b"", false), None);
        assert_eq!(classify(b"PRI * HTTP/2", false), None);
        assert_eq!(classify(HTTP2_PREFACE, false), Some(Protocol::Grpc));
        assert_eq!(classify(b"GET /", false), Some(Protocol::Http1));
        assert_eq!(classify(b"PRI / HTTP/1.1", false), Some(Protocol::Http1));
        assert_eq!(classify(b"\x16\x03\x01", true), Some(Protocol::Grpc));
        assert_eq!(classify(b"\x16\x03\x01", false), Some(Protocol::Http1));
        let mut long = HTTP2_PREFACE.to_vec();
        long.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(classify(&long, false), Some(Protocol::Grpc));
    }

    #[tokio::test]
    async fn sniffing_puts_the_bytes_back() {
        let mut input = HTTP2_PREFACE.to_vec();
        input.extend_from_slice(b"frames");
        let (protocol, mut stream) = sniff(&input[..], false).await.unwrap();
        assert_eq!(protocol, Protocol::Grpc);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, input);

        let (protocol, mut stream) = sniff(&b"GET / HTTP/1.1\r\n\r\n"[..], false).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n\r\n");

        assert!(sniff(&b"PRI"[..], false).await.is_err());
    }
}
