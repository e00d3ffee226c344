//! How a node reaches PostgreSQL: the URL, and TLS when the URL asks for it.
//!
//! TLS is chosen with libpq's own URL parameters, `sslmode` and `sslrootcert`, taken out of
//! the URL here (tokio-postgres knows neither `sslrootcert` nor the `verify-*` modes):
//!
//! | `sslmode` | connection |
//! |---|---|
//! | absent, `disable`, `allow`, `prefer` | plain |
//! | `require`, `verify-ca`, `verify-full` | TLS; the server's certificate must chain to `sslrootcert` (PEM) and name the host |
//!
//! Stricter than libpq on purpose: TLS whose certificate is not checked stops no one who
//! can sit between a node and its database, so every TLS mode checks it as `verify-full`
//! does, and a TLS mode without `sslrootcert` is refused.

use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use super::StoreError;

/// Where to connect and how.
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    /// `None`: a plain connection.
    pub tls: Option<MakeRustlsConnect>,
}

/// Reads a database URL (`postgres://…`, or libpq's `key=value` form without TLS settings).
pub(crate) fn target(url: &str) -> Result<Target, StoreError> {
    let (rest, mode, root) = take_tls_parameters(url)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| StoreError::Url(format!("{e}")))?;
    // TLS asked for where this module does not look (libpq's `key=value` form): refused,
    // never quietly plain.
    if mode.is_none() && config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(StoreError::Url(
            "TLS settings (`sslmode`, `sslrootcert`) go in the postgres:// URL form".into(),
        ));
    }
    let tls = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => None,
        Some("require" | "verify-ca" | "verify-full") => {
            let Some(root) = root else {
                return Err(StoreError::Url(
                    "a TLS `sslmode` needs `sslrootcert=<PEM file>`: the CA the server's certificate must chain to"
                        .into(),
                ));
            };
            Some(MakeRustlsConnect::new(client_config(&root)?))
        }
        Some(other) => {
            return Err(StoreError::Url(format!(
                "`sslmode={other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    config.ssl_mode(match tls {
        Some(_) => tokio_postgres::config::SslMode::Require,
        None => tokio_postgres::config::SslMode::Disable,
    });
    Ok(Target { config, tls })
}

/// rustls (ring, as the listeners use) trusting only the CAs in `root`.
fn client_config(root: &str) -> Result<rustls::ClientConfig, StoreError> {
    let bad = |e: &dyn std::fmt::Display| StoreError::Url(format!("sslrootcert `{root}`: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The URL without `sslmode` and `sslrootcert`, and their values. Only the URL form carries
/// them; in the `key=value` form tokio-postgres reads (and refuses) them itself.
fn take_tls_parameters(url: &str) -> Result<(String, Option<String>, Option<String>), StoreError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_string(), None, None));
    };
    let (mut mode, mut root, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decoded(key)?.as_str() {
            "sslmode" => mode = Some(percent_decoded(value)?),
            "sslrootcert" => root = Some(percent_decoded(value)?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root))
}

fn percent_decoded(value: &str) -> Result<String, StoreError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StoreError::Url(format!("bad percent-encoding in `{value}`")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| StoreError::Url(format!("`{value}` is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url_and_the_rest_is_kept() {
        let (rest, mode, root) = take_tls_parameters(
            "postgres://u@db:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@db:5432/app?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) = take_tls_parameters("postgres://u@db/app").unwrap();
        assert_eq!((rest.as_str(), mode, root), ("postgres://u@db/app", None, None));
    }

    #[test]
    fn a_tls_mode_without_a_ca_or_with_an_unknown_mode_is_refused() {
        let refused = |url: &str| match target(url) {
            Err(StoreError::Url(message)) => message,
            Err(other) => panic!("{url}: {other}"),
            Ok(_) => panic!("{url} was accepted"),
        };
        assert!(refused("postgres://u@db/app?sslmode=require").contains("sslrootcert"));
        assert!(refused("postgres://u@db/app?sslmode=sometimes").contains("is not one of"));
        assert!(
            refused("postgres://u@db/app?sslmode=require&sslrootcert=/nonexistent/ca.pem")
                .contains("/nonexistent/ca.pem")
        );
        assert!(refused("host=db user=u sslmode=require").contains("URL form"));
        assert!(refused("postgres://u@db/app?ssl%6Dode=require").contains("sslrootcert"));
        assert!(target("postgres://u@db/app?sslmode=prefer").unwrap().tls.is_none());
        assert!(target("postgres://u@db/app").unwrap().tls.is_none());
    }
}
