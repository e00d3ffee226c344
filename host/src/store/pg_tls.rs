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
//!
//! `sslcert` and `sslkey` (PEM, both or neither) give the node a client certificate, for a
//! server that authenticates nodes by certificate (`hostssl … cert` in `pg_hba.conf`).

use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::StoreError;

/// Where to connect and how.
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    /// `None`: a plain connection.
    pub tls: Option<MakeRustlsConnect>,
}

/// Reads a database URL (`postgres://…`, or libpq's `key=value` form without TLS settings).
pub(crate) fn target(url: &str) -> Result<Target, StoreError> {
    let (rest, asked) = take_tls_parameters(url)?;
    let TlsParameters { mode, root, cert, key } = asked;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| StoreError::Url(format!("{e}")))?;
    // TLS asked for where this module does not look (libpq's `key=value` form): refused,
    // never quietly plain.
    if mode.is_none() && config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(StoreError::Url(
            "TLS settings (`sslmode`, `sslrootcert`) go in the postgres:// URL form".into(),
        ));
    }
    let tls = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") if cert.is_some() || key.is_some() => {
            return Err(StoreError::Url(
                "`sslcert` and `sslkey` need a TLS `sslmode` (require, verify-ca or verify-full)".into(),
            ));
        }
        None | Some("disable" | "allow" | "prefer") => None,
        Some("require" | "verify-ca" | "verify-full") => {
            let Some(root) = root else {
                return Err(StoreError::Url(
                    "a TLS `sslmode` needs `sslrootcert=<PEM file>`: the CA the server's certificate must chain to"
                        .into(),
                ));
            };
            let identity = match (cert, key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => return Err(StoreError::Url("`sslcert` and `sslkey` go together".into())),
            };
            Some(MakeRustlsConnect::new(client_config(&root, identity)?))
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

/// rustls (ring, as the listeners use) trusting only the CAs in `root`, presenting the
/// certificate chain and key in `identity` (PEM files) when the server asks for one.
fn client_config(root: &str, identity: Option<(String, String)>) -> Result<rustls::ClientConfig, StoreError> {
    let bad = |e: &dyn std::fmt::Display| StoreError::Url(format!("sslrootcert `{root}`: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots);
    let Some((cert, key)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let bad_file = |name: &str, path: &str, e: &dyn std::fmt::Display| StoreError::Url(format!("{name} `{path}`: {e}"));
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| bad_file("sslcert", &cert, &e))?;
    if chain.is_empty() {
        return Err(bad_file("sslcert", &cert, &"holds no certificate"));
    }
    let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| bad_file("sslkey", &key, &e))?;
    builder
        .with_client_auth_cert(chain, private)
        .map_err(|e| bad_file("sslkey", &key, &e))
}

/// The TLS parameters of a URL, as given.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParameters {
    mode: Option<String>,
    root: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// The URL without its TLS parameters, and their values. Only the URL form carries them;
/// in the `key=value` form tokio-postgres reads (and refuses) them itself.
fn take_tls_parameters(url: &str) -> Result<(String, TlsParameters), StoreError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_string(), TlsParameters::default()));
    };
    let (mut asked, mut kept) = (TlsParameters::default(), Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match percent_decoded(key)?.as_str() {
            "sslmode" => &mut asked.mode,
            "sslrootcert" => &mut asked.root,
            "sslcert" => &mut asked.cert,
            "sslkey" => &mut asked.key,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        *slot = Some(percent_decoded(value)?);
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, asked))
}

fn percent_decoded(value: &str) -> Result<String, StoreError> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| StoreError::Url(format!("`{value}` is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url_and_the_rest_is_kept() {
        let (rest, asked) = take_tls_parameters(
            "postgres://u@db:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem&sslcert=n.pem&sslkey=n.key",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@db:5432/app?application_name=x");
        let given = |v: &str| Some(v.to_string());
        assert_eq!(
            asked,
            TlsParameters {
                mode: given("verify-full"),
                root: given("/etc/ca.pem"),
                cert: given("n.pem"),
                key: given("n.key"),
            }
        );
        let (rest, asked) = take_tls_parameters("postgres://u@db/app").unwrap();
        assert_eq!(
            (rest.as_str(), asked),
            ("postgres://u@db/app", TlsParameters::default())
        );
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
        assert!(refused("postgres://u@db/app?sslcert=n.pem&sslkey=n.key").contains("need a TLS"));
        assert!(refused("postgres://u@db/app?ssl%6Dode=require").contains("sslrootcert"));
        assert!(target("postgres://u@db/app?sslmode=prefer").unwrap().tls.is_none());
        assert!(target("postgres://u@db/app").unwrap().tls.is_none());
    }
}
