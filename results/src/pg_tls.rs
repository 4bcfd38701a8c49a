//! TLS to PostgreSQL, by rustls, chosen by the URL's `sslmode` as libpq reads it:
//!
//! | `sslmode` | encrypted | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers TLS | not checked |
//! | `require` | always | not checked (checked against `sslrootcert` when one is given, as libpq does) |
//! | `verify-ca` | always | signed by a trusted CA |
//! | `verify-full` | always | signed by a trusted CA and naming the host connected to |
//!
//! `sslrootcert=PATH` names the CA bundle (PEM) to trust; without it (or with
//! `sslrootcert=system`) the system's roots are trusted. Both parameters are taken
//! out of the URL before tokio-postgres reads the rest (it knows neither
//! `verify-ca` nor `verify-full`).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// What a PostgreSQL URL asks for: tokio-postgres's config and the TLS connector.
pub struct PgConnect {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub mode: SslMode,
}

fn bad(message: impl Into<String>) -> StoreError {
    StoreError::BadUrl(message.into())
}

/// Reads `url` (`postgres://…?sslmode=…&sslrootcert=…`).
pub fn parse(url: &str) -> Result<PgConnect, StoreError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut root_cert, mut rest) = (None, None, Vec::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "sslmode" => {
                let m = SslMode::parse(&value)
                    .ok_or_else(|| bad(format!("sslmode `{value}`: use disable, prefer, require, verify-ca or verify-full")))?;
                mode = Some(m);
            }
            "sslrootcert" => root_cert = Some(value.into_owned()),
            _ => rest.push((key.into_owned(), value.into_owned())),
        }
    }
    let mut url = base.to_string();
    if !rest.is_empty() {
        url.push('?');
        url.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(rest).finish());
    }
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
    let mode = mode.unwrap_or(SslMode::Prefer);
    config.ssl_mode(match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    let tls = MakeRustlsConnect::new(client_config(mode, root_cert.as_deref())?);
    Ok(PgConnect { config, tls, mode })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(root_cert: Option<&str>) -> Result<RootCertStore, StoreError> {
    let file = root_cert.filter(|p| *p != "system").map(std::path::Path::new);
    visionq_contract::tls::roots(file).map_err(|e| match file {
        Some(_) => bad(format!("sslrootcert {e}")),
        None => bad(format!("no CA certificate to verify the server with (the system's roots): {e}")),
    })
}

fn client_config(mode: SslMode, root_cert: Option<&str>) -> Result<ClientConfig, StoreError> {
    let provider = provider();
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(|e| bad(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => Arc::new(NoVerification(provider)),
        (SslMode::Require | SslMode::VerifyCa, _) => Arc::new(ChainOnly(webpki(root_cert, provider)?)),
        (SslMode::VerifyFull, _) => webpki(root_cert, provider)?,
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

fn webpki(root_cert: Option<&str>, provider: Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root_cert)?), provider).build().map_err(|e| bad(e.to_string()))
}

/// `verify-ca`: the chain must lead to a trusted CA; the name in the certificate is
/// not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the chain is good.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` (as libpq): encrypted, the certificate taken as it is. The
/// handshake's signatures are still checked, so the session is with the holder of
/// the certificate's key.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let c = parse("postgres://u:p@db.example:6432/visionq?sslmode=verify-ca&application_name=vq&sslrootcert=system");
        // System roots may be missing on a bare machine: then the URL is still read right.
        match c {
            Ok(c) => {
                assert_eq!(c.mode, SslMode::VerifyCa);
                assert_eq!(c.config.get_ssl_mode(), PgSslMode::Require);
                assert_eq!(c.config.get_application_name(), Some("vq"));
                assert_eq!(c.config.get_dbname(), Some("visionq"));
            }
            Err(e) => assert!(e.to_string().contains("no CA certificate"), "{e}"),
        }
        let c = parse("postgres://u@h/db").unwrap();
        assert_eq!((c.mode, c.config.get_ssl_mode()), (SslMode::Prefer, PgSslMode::Prefer));
        let c = parse("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(c.config.get_ssl_mode(), PgSslMode::Disable);
        let e = parse("postgres://u@h/db?sslmode=verify").err().unwrap();
        assert!(e.to_string().contains("sslmode `verify`"), "{e}");
        let e = parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").err().unwrap();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
