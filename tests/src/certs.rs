//! Throwaway self-signed certificates for TLS tests.

/// A certificate and its private key, both PEM-encoded.
#[derive(Clone, Debug)]
pub struct TestIdentity {
    /// The certificate; self-signed, so it is also the CA that verifies itself.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

/// A fresh self-signed identity valid for `names` (DNS names or IP addresses).
///
/// # Panics
/// Panics if key generation fails, which only a broken crypto backend does.
pub fn identity(names: &[&str]) -> TestIdentity {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    match rcgen::generate_simple_self_signed(names) {
        Ok(certified) => TestIdentity {
            cert_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
        },
        Err(err) => panic!("generating a test certificate: {err}"),
    }
}
