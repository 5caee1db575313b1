//! TLS for MySQL and MariaDB, named as MySQL's own clients name it, in the URL's query:
//! `ssl-mode` = `DISABLED` (the default), `REQUIRED` (TLS, the certificate is not
//! checked), `VERIFY_CA` (the certificate is checked against `ssl-ca=FILE`, or the
//! public web roots) or `VERIFY_IDENTITY` (and it must name the host). `ssl-ca` alone
//! means `VERIFY_CA`. There is no `PREFERRED`: a connection either insists on TLS or
//! does not use it, never silently falls back.

use mysql::SslOpts;
use std::path::PathBuf;

/// A connection URL split into what the driver parses and the TLS settings.
#[derive(Debug)]
pub(super) struct TlsUrl {
    pub driver_url: String,
    pub ssl: Option<SslOpts>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Disabled,
    Required,
    VerifyCa,
    VerifyIdentity,
}

pub(super) fn split(url: &str) -> Result<TlsUrl, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut mode, mut ca) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k.replace('_', "-").to_ascii_lowercase().as_str() {
            "ssl-mode" | "sslmode" => {
                mode = Some(match v.to_ascii_uppercase().replace('-', "_").as_str() {
                    "DISABLED" => Mode::Disabled,
                    "REQUIRED" => Mode::Required,
                    "VERIFY_CA" => Mode::VerifyCa,
                    "VERIFY_IDENTITY" => Mode::VerifyIdentity,
                    "PREFERRED" => {
                        return Err("ssl-mode PREFERRED is not supported: a connection that may fall back to plain text is not one syncline makes; use REQUIRED (or a VERIFY_ mode) or DISABLED".into());
                    }
                    _ => {
                        return Err(format!(
                            "ssl-mode `{v}` is not DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"
                        ));
                    }
                });
            }
            "ssl-ca" => ca = Some(PathBuf::from(v)),
            _ => kept.push(pair),
        }
    }
    let mode = mode.unwrap_or(if ca.is_some() {
        Mode::VerifyCa
    } else {
        Mode::Disabled
    });
    if let Some(path) = &ca
        && !path.is_file()
    {
        return Err(format!(
            "ssl-ca `{}` is not a readable file",
            path.display()
        ));
    }
    let ssl = match mode {
        Mode::Disabled => None,
        Mode::Required => Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        Mode::VerifyCa | Mode::VerifyIdentity => Some(
            SslOpts::default()
                .with_root_cert_path(ca)
                .with_danger_skip_domain_validation(mode == Mode::VerifyCa),
        ),
    };
    let driver_url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(TlsUrl { driver_url, ssl })
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn ssl_mode_and_ca_are_taken_out_of_the_url_and_other_options_stay() {
        let t = split("mysql://u:p@h/db").unwrap();
        assert_eq!(t.driver_url, "mysql://u:p@h/db");
        assert!(t.ssl.is_none());

        let t = split("mysql://u:p@h/db?ssl-mode=REQUIRED&tcp_nodelay=true").unwrap();
        assert_eq!(t.driver_url, "mysql://u:p@h/db?tcp_nodelay=true");
        let ssl = t.ssl.unwrap();
        assert!(ssl.accept_invalid_certs() && ssl.skip_domain_validation());

        let t = split("mysql://u:p@h/db?ssl_mode=verify_identity").unwrap();
        let ssl = t.ssl.unwrap();
        assert!(!ssl.accept_invalid_certs() && !ssl.skip_domain_validation());

        let t = split("mysql://u:p@h/db?ssl-mode=DISABLED").unwrap();
        assert!(t.ssl.is_none());
    }

    #[test]
    fn a_ca_file_alone_means_verify_ca_and_must_exist() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let t = split(&format!("mysql://h/db?ssl-ca={}", ca.path().display())).unwrap();
        let ssl = t.ssl.unwrap();
        assert!(!ssl.accept_invalid_certs() && ssl.skip_domain_validation());
        assert_eq!(ssl.root_cert_path(), Some(ca.path()));

        let err = split("mysql://h/db?ssl-ca=/nonexistent/ca.pem").unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn preferred_and_unknown_modes_are_refused_with_the_choices() {
        assert!(
            split("mysql://h/db?ssl-mode=PREFERRED")
                .unwrap_err()
                .contains("REQUIRED")
        );
        let err = split("mysql://h/db?ssl-mode=maybe").unwrap_err();
        assert!(
            err.contains("maybe") && err.contains("VERIFY_IDENTITY"),
            "{err}"
        );
    }
}
