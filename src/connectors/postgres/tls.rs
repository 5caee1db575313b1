//! Connecting to PostgreSQL, with TLS as libpq's `sslmode` describes it:
//! `disable`; `prefer` (the default: TLS when the server offers it); `require` (TLS,
//! certificate not checked, as in libpq); `verify-ca` / `verify-full` (TLS with the
//! server's certificate checked against `sslrootcert=FILE`, or the public web roots).

use rustls_tokio_postgres::{
    MakeRustlsConnect, config_from_ca_cert, config_no_verify, config_webpki_roots,
};

/// A connection URL split into what the driver understands and the TLS settings it
/// does not (`verify-*` modes, `sslrootcert`).
#[derive(Debug, PartialEq)]
struct TlsUrl {
    driver_url: String,
    verify: bool,
    root_cert: Option<String>,
}

fn split(url: &str) -> Result<TlsUrl, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(TlsUrl {
            driver_url: url.to_string(),
            verify: false,
            root_cert: None,
        });
    };
    let mut kept = Vec::new();
    let (mut verify, mut root_cert) = (false, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (k, v) {
            ("sslmode", "verify-ca" | "verify-full") => {
                verify = true;
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
    let config = match (tls.verify, &tls.root_cert) {
        (true, Some(path)) => {
            config_from_ca_cert(path).map_err(|e| format!("sslrootcert {path}: {e}"))?
        }
        (true, None) => config_webpki_roots(),
        (false, _) => config_no_verify(),
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
                verify: true,
                root_cert: Some("/ca.pem".into())
            }
        );
        assert_eq!(
            split("postgres://u@h/db").unwrap().driver_url,
            "postgres://u@h/db"
        );
        assert!(split("postgres://u@h/db?sslmode=sometimes").is_err());
    }
}
