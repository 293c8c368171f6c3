//! How vdar trusts a vSphere server: the system's roots (the default), a pinned SHA-256
//! thumbprint of the server's certificate (what ESXi hosts with self-signed certificates need,
//! and what `govc`'s `GOVC_TLS_KNOWN_HOSTS` and PowerCLI's thumbprint options offer), or, on
//! explicit request only, nothing at all.
//!
//! ureq verifies against roots or not at all; a thumbprint needs a verifier of our own, so
//! `PinnedTls` is a connector in ureq's chain (after TCP) that wraps the socket in rustls
//! with `PinnedVerifier`. The pin is checked on every connection, not once up front, so no
//! later connection of the pool can reach another server.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// A SHA-256 certificate thumbprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Thumbprint(pub [u8; 32]);

impl Thumbprint {
    /// Parses 64 hex digits, with or without `:` between the bytes (vSphere prints
    /// `AA:BB:...`, `openssl x509 -fingerprint -sha256` too; `sha256sum` prints none).
    pub fn parse(s: &str) -> Option<Thumbprint> {
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Thumbprint(out))
    }

    /// The thumbprint of a DER certificate.
    pub fn of(der: &[u8]) -> Thumbprint {
        use sha2::Digest;
        Thumbprint(sha2::Sha256::digest(der).into())
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

/// Which certificates to accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsTrust {
    /// Chains to the system's roots, for the server's name.
    #[default]
    System,
    /// Exactly the certificate with this SHA-256 thumbprint (name and dates are not checked:
    /// the pin says more than either).
    Pinned(Thumbprint),
    /// Any certificate. The caller warns.
    Insecure,
}

/// Accepts only the pinned leaf certificate; the handshake signatures are still verified,
/// so the peer must hold that certificate's key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Thumbprint,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Thumbprint::of(end_entity);
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate thumbprint {got} is not the pinned {}",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The connector that wraps HTTPS connections in rustls with a [`PinnedVerifier`].
pub(crate) struct PinnedTls {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for PinnedTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinnedTls")
    }
}

impl PinnedTls {
    pub(crate) fn new(pin: Thumbprint) -> PinnedTls {
        // ring, the provider ureq's own rustls uses here: aws-lc-rs (the post-quantum one)
        // needs cmake and nasm to build. vSphere offers no post-quantum key exchange anyway.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("invariant: ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier { pin, provider }))
            .with_no_client_auth();
        PinnedTls {
            config: Arc::new(config),
        }
    }
}

impl<In: Transport> Connector<In> for PinnedTls {
    type Out = Either<In, PinnedTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        // The name only selects SNI; the verifier ignores it. An IP address is a valid name.
        let host = details
            .uri
            .host()
            .ok_or(ureq::Error::Tls("no host to connect to"))?;
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|_| ureq::Error::Tls("host is not a valid TLS server name"))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        Ok(Some(Either::B(PinnedTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// A TLS connection made by [`PinnedTls`].
pub(crate) struct PinnedTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for PinnedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinnedTransport")
    }
}

impl Transport for PinnedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let n = self.stream.read(input)?;
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_with_and_without_colons() {
        let colons = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";
        let t = Thumbprint::parse(colons).unwrap();
        assert_eq!(t.to_string(), colons);
        assert_eq!(
            Thumbprint::parse(&colons.replace(':', "").to_lowercase()),
            Some(t)
        );
        assert_eq!(Thumbprint::parse("AA:BB"), None);
        assert_eq!(Thumbprint::parse(&"zz".repeat(32)), None);
    }
}
