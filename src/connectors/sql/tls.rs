//! Connecting to PostgreSQL, with TLS as libpq's `sslmode` describes it:
//! `disable`; `prefer` (the default: TLS when the server offers it); `require` (TLS,
//! certificate not checked, as in libpq); `verify-ca` (the certificate must chain to
//! `sslrootcert=FILE`, or the public web roots); `verify-full` (and name the host).

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_tokio_postgres::{MakeRustlsConnect, config_no_verify};
use std::sync::Arc;

/// What a verifying mode checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verify {
    /// `verify-ca`: it chains to a trusted root.
    Chain,
    /// `verify-full`: that, and it names the host connected to.
    ChainAndName,
}

/// A connection URL split into what the driver understands and the TLS settings it
/// does not (`verify-*` modes, `sslrootcert`).
#[derive(Debug, PartialEq)]
struct TlsUrl {
    driver_url: String,
    verify: Option<Verify>,
    root_cert: Option<String>,
}

fn split(url: &str) -> Result<TlsUrl, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(TlsUrl {
            driver_url: url.to_string(),
            verify: None,
            root_cert: None,
        });
    };
    let mut kept = Vec::new();
    let (mut verify, mut root_cert) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (k, v) {
            ("sslmode", mode @ ("verify-ca" | "verify-full")) => {
                verify = Some(if mode == "verify-ca" {
                    Verify::Chain
                } else {
                    Verify::ChainAndName
                });
                kept.push("sslmode=require".to_string());
            }
            ("sslmode", "disable" | "allow" | "prefer" | "require") => kept.push(pair.to_string()),
            ("sslmode", other) => {
                return Err(format!(
                    "sslmode `{other}` is not disable, prefer, require, verify-ca or verify-full"
                ));
            }
            ("sslrootcert", path) => root_cert = Some(path.to_string()),
            _ => kept.push(pair.to_string()),
        }
    }
    let driver_url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(TlsUrl {
        driver_url,
        verify,
        root_cert,
    })
}

/// Connects. Errors never contain the URL (it may hold a password).
///
/// # Errors
/// A malformed URL or TLS setting, an unreadable CA file, or the server's refusal.
pub fn connect(url: &str) -> Result<postgres::Client, String> {
    let tls = split(url)?;
    let config = match tls.verify {
        Some(verify) => verifying_config(tls.root_cert.as_deref(), verify)?,
        None => config_no_verify(),
    };
    let parsed: postgres::Config = tls
        .driver_url
        .parse()
        .map_err(|_| "the url is not a valid postgres:// URL".to_string())?;
    parsed
        .connect(MakeRustlsConnect::new(config))
        .map_err(|e| match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => with_causes(&e),
        })
}

/// A TLS configuration that checks the server's certificate against `root_cert` (a PEM
/// file) or the public web roots, as `verify` says.
fn verifying_config(root_cert: Option<&str>, verify: Verify) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let bad = |e: &dyn std::fmt::Display| format!("sslrootcert {path}: {e}");
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no certificate in the file"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::ChainAndName => webpki,
        Verify::Chain => Arc::new(ChainOnly(webpki)),
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `verify-ca`: the full check, except that the certificate need not name the host. The
/// name is checked only after the chain verified, so a name mismatch is all it forgives.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
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

/// The error and its causes, each once ("TLS handshake: invalid peer certificate: …").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_and_root_certs_are_ours_to_handle() {
        assert_eq!(
            split("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x")
                .unwrap(),
            TlsUrl {
                driver_url: "postgres://u@h/db?sslmode=require&application_name=x".into(),
                verify: Some(Verify::ChainAndName),
                root_cert: Some("/ca.pem".into())
            }
        );
        assert_eq!(
            split("postgres://u@h/db").unwrap().driver_url,
            "postgres://u@h/db"
        );
        assert_eq!(
            split("postgres://u@h/db?sslmode=verify-ca").unwrap().verify,
            Some(Verify::Chain)
        );
        assert!(split("postgres://u@h/db?sslmode=sometimes").is_err());
    }
}
