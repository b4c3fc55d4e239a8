//! TLS for both runtimes: rustls configurations from PEM, and the client and server handshakes
//! (ALPN `h2`) over any IO type.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::rpc::RpcError;

pub use crate::PemIdentity;

/// A TLS stream on top of some IO type.
pub type ClientStream<IO> = tokio_rustls::client::TlsStream<IO>;
/// A server-side TLS stream on top of some IO type.
pub type ServerStream<IO> = tokio_rustls::server::TlsStream<IO>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, RpcError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| RpcError::Tls(format!("{what}: {err}")))?;
    if certs.is_empty() {
        return Err(RpcError::Tls(format!("{what}: no certificate in PEM")));
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, RpcError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| RpcError::Tls(format!("private key: {err}")))
}

fn root_store(ca_pem: &[u8]) -> Result<rustls::RootCertStore, RpcError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca_pem, "CA")? {
        roots
            .add(cert)
            .map_err(|err| RpcError::Tls(format!("CA: {err}")))?;
    }
    Ok(roots)
}

/// Builds a client configuration that trusts `ca_pem` and, when given, presents the client
/// certificate chain and key (mutual TLS, as TiKV clusters with `cert-allowed-cn` require).
///
/// Errors with [`RpcError::Tls`] when a PEM input holds no usable certificate or key.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<PemIdentity<'_>>,
) -> Result<Arc<rustls::ClientConfig>, RpcError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| RpcError::Tls(err.to_string()))?
        .with_root_certificates(root_store(ca_pem)?);
    let mut config = match identity {
        Some((cert_pem, key_pem)) => builder
            .with_client_auth_cert(
                certificates(cert_pem, "client certificate")?,
                private_key(key_pem)?,
            )
            .map_err(|err| RpcError::Tls(err.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Builds a server configuration presenting `cert_pem`/`key_pem`; with `client_ca_pem` it also
/// requires client certificates signed by that CA.
///
/// Errors with [`RpcError::Tls`] when a PEM input holds no usable certificate or key.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ServerConfig>, RpcError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| RpcError::Tls(err.to_string()))?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(root_store(ca)?),
                provider(),
            )
            .build()
            .map_err(|err| RpcError::Tls(err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(
            certificates(cert_pem, "server certificate")?,
            private_key(key_pem)?,
        )
        .map_err(|err| RpcError::Tls(err.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Runs the client handshake over `io`, verifying the server as `server_name` (a DNS name or
/// an IP address, typically the host part of the dialled address).
///
/// Errors with [`RpcError::Connect`] when the handshake fails.
pub async fn connect<IO>(
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    io: IO,
) -> Result<ClientStream<IO>, RpcError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|err| RpcError::Tls(format!("server name {server_name:?}: {err}")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
        .map_err(|err| RpcError::Connect {
            address: server_name.to_owned(),
            reason: format!("tls handshake: {err}"),
        })
}

/// Runs the server handshake over `io`.
///
/// Errors with [`RpcError::Connect`] when the handshake fails.
pub async fn accept<IO>(
    config: Arc<rustls::ServerConfig>,
    io: IO,
) -> Result<ServerStream<IO>, RpcError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tokio_rustls::TlsAcceptor::from(config)
        .accept(io)
        .await
        .map_err(|err| RpcError::Connect {
            address: "incoming".to_owned(),
            reason: format!("tls handshake: {err}"),
        })
}
