//! TLS for both listeners (rustls): the certificate chain and key from PEM files, swapped in
//! by a reload without a restart (connections already open keep their session), and,
//! optionally, client certificates for agents (mutual TLS) from a CA bundle.

use std::path::Path;
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`{path}`: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The two listeners' TLS settings, built from the files; what a reload replaces.
pub struct Built {
    agent: TlsAcceptor,
    admin: TlsAcceptor,
}

fn build(files: &TlsFiles) -> Result<Built, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&files.cert, e))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert, "holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = |verifier: Option<Arc<dyn tokio_rustls::rustls::server::danger::ClientCertVerifier>>| {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("the certificate and key do not make a server identity: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok::<_, TlsError>(TlsAcceptor::from(Arc::new(config)))
    };
    let client_verifier = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))? {
                roots
                    .add(cert.map_err(|e| file_error(path, e))?)
                    .map_err(|e| file_error(path, e))?;
            }
            if roots.is_empty() {
                return Err(file_error(path, "holds no CA certificate"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| file_error(path, e))?;
            Some(verifier)
        }
        None => None,
    };
    Ok(Built {
        agent: server(client_verifier)?,
        // Operators and reviewers authenticate with their admin credentials.
        admin: server(None)?,
    })
}

/// The listeners' current TLS settings.
pub struct Tls {
    files: RwLock<TlsFiles>,
    built: RwLock<Arc<Built>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files; a start with broken TLS files fails.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        Ok(Tls {
            built: RwLock::new(Arc::new(build(files)?)),
            files: RwLock::new(files.clone()),
        })
    }

    /// Reads the files again (the same paths, or new ones from a reloaded config), without
    /// using them yet: a reload applies them with the rest of the config, or not at all.
    pub fn prepare(files: &TlsFiles) -> Result<(TlsFiles, Built), TlsError> {
        Ok((files.clone(), build(files)?))
    }

    /// Puts prepared settings in use, for new connections.
    pub fn apply(&self, (files, built): (TlsFiles, Built)) {
        *self.built.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(built);
        *self.files.write().unwrap_or_else(|p| p.into_inner()) = files;
    }

    /// The acceptor for the agent listener (with client certificates when configured).
    pub fn agent(&self) -> TlsAcceptor {
        self.built.read().unwrap_or_else(|p| p.into_inner()).agent.clone()
    }

    /// The acceptor for the admin listener.
    pub fn admin(&self) -> TlsAcceptor {
        self.built.read().unwrap_or_else(|p| p.into_inner()).admin.clone()
    }

    /// Whether agents must present a client certificate.
    pub fn mutual(&self) -> bool {
        self.files.read().unwrap_or_else(|p| p.into_inner()).client_ca.is_some()
    }
}
