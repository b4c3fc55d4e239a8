//! Keepalive of the client channel over an in-memory connection: a peer that stops answering
//! PINGs is detected and its calls fail; a live peer is left alone.

#![cfg(feature = "transport")]

use std::time::Duration;

use tikv_proto::frame::Framed;
use tikv_proto::rpc::{BoxFuture, CallOptions, Channel, RpcError};
use tikv_proto::transport::client::{H2Channel, Scheme};
use tikv_proto::transport::{ChannelConfig, Executor};

#[derive(Clone)]
struct TestExecutor;

impl Executor for TestExecutor {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        drop(tokio::spawn(future));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

fn fast_keepalive() -> ChannelConfig {
    ChannelConfig {
        keepalive_interval: Some(Duration::from_millis(100)),
        keepalive_timeout: Duration::from_millis(100),
        ..ChannelConfig::default()
    }
}

#[tokio::test]
async fn unanswered_ping_closes_the_connection_and_fails_calls() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    // The server completes the handshake, then is never polled again: it reads nothing and
    // acknowledges no PING, like a peer behind a dead network path.
    let server = tokio::spawn(async move { h2::server::handshake(server_io).await });
    let channel = H2Channel::handshake(
        client_io,
        TestExecutor,
        "frozen:1",
        Scheme::Http,
        fast_keepalive(),
    )
    .await;
    let channel = match channel {
        Ok(channel) => channel,
        Err(err) => panic!("handshake: {err}"),
    };
    let _frozen = server.await;

    let call = channel.unary(
        "/tikvpb.Tikv/RawGet",
        Framed::from_payload(b"", 16).unwrap_or_else(|err| panic!("{err}")),
        CallOptions::default(),
    );
    let outcome = tokio::time::timeout(Duration::from_secs(5), call).await;
    match outcome {
        Ok(Err(RpcError::ConnectionLost(reason))) => {
            assert!(
                reason.contains("keepalive") || reason.contains("closed"),
                "{reason}"
            );
        }
        other => panic!("expected the call to fail with a lost connection, got {other:?}"),
    }
    assert!(channel.is_closed());
}

#[tokio::test]
async fn answered_pings_keep_the_connection_open() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    // A live server: its connection is polled, so PINGs are acknowledged.
    tokio::spawn(async move {
        if let Ok(mut connection) = h2::server::handshake(server_io).await {
            while let Some(Ok(_)) = connection.accept().await {}
        }
    });
    let channel = H2Channel::handshake(
        client_io,
        TestExecutor,
        "live:1",
        Scheme::Http,
        fast_keepalive(),
    )
    .await
    .unwrap_or_else(|err| panic!("handshake: {err}"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!channel.is_closed(), "{channel:?}");
}
