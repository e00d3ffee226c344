//! TLS on both listeners, from PEM files: served, renewed by a reload without a restart, and
//! with client certificates required of agents when a CA bundle is configured.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::support::TestGateway;

/// A CA that issues the server's and clients' certificates.
struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA");
        Ca { key, cert }
    }

    /// A leaf certificate for `names`, and its key.
    fn issue(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>()).expect("params");
        let key = KeyPair::generate().expect("key");
        (params.signed_by(&key, &self.cert, &self.key).expect("leaf"), key)
    }
}

fn write_pair(dir: &Path, name: &str, cert: &rcgen::Certificate, key: &KeyPair) {
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("cert");
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("key");
}

/// One HTTPS `GET` over a fresh connection: the status line, and the certificate the
/// server presented. `Err` when the handshake fails.
fn get(
    addr: std::net::SocketAddr,
    path: &str,
    ca: &Ca,
    client: Option<(&rcgen::Certificate, &KeyPair)>,
) -> Result<(String, Vec<u8>), String> {
    get_with(addr, path, ca, client, None)
}

/// As [`get`], with a bearer token.
fn get_with(
    addr: std::net::SocketAddr,
    path: &str,
    ca: &Ca,
    client: Option<(&rcgen::Certificate, &KeyPair)>,
    token: Option<&str>,
) -> Result<(String, Vec<u8>), String> {
    crate::support::block_on(async {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.der().clone()).expect("root");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::try_from(key.serialize_der()).expect("key"),
                )
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let presented: Vec<u8> = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c: &CertificateDer<'_>| c.to_vec())
            .unwrap_or_default();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        tls.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response);
        Ok((text.lines().next().unwrap_or_default().to_string(), presented))
    })
}

#[test]
fn both_listeners_serve_tls_from_files_and_a_reload_renews_the_certificate() {
    let certs = tempfile::tempdir().expect("dir");
    let ca = Ca::new("OpenPort test CA");
    let (first, first_key) = ca.issue(&["localhost"]);
    write_pair(certs.path(), "server", &first, &first_key);
    let line = format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        certs.path().join("server.pem"),
        certs.path().join("server.key")
    );
    let gw = TestGateway::builder().server_config(&line).start();
    let (agent, admin) = (gw.server.agent_addr, gw.server.admin_addr);

    let (status, presented) = get(agent, "/healthz", &ca, None).expect("the agent listener speaks TLS");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(presented, first.der().to_vec());
    let (status, _) = get(admin, "/healthz", &ca, None).expect("the admin listener speaks TLS");
    assert_eq!(status, "HTTP/1.1 200 OK");

    // The CLI reaches the admin plane over TLS, trusting the operator's CA.
    std::fs::write(certs.path().join("ca.pem"), ca.cert.pem()).expect("CA");
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_openport"))
        .args([
            "app",
            "list",
            "--admin-url",
            &format!("https://localhost:{}", admin.port()),
            "--admin-ca",
        ])
        .arg(certs.path().join("ca.pem"))
        .env("OPENPORT_ADMIN_TOKEN", gw.admin_token("operator"))
        .output()
        .expect("run");
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("Demo Integration"));

    // Plain HTTP on a TLS listener gets no answer.
    let plain = ureq::get(&format!("http://{agent}/healthz")).call();
    assert!(plain.is_err(), "plain HTTP must not be served");

    // A renewed certificate is picked up by a reload, without a restart.
    let (second, second_key) = ca.issue(&["localhost"]);
    write_pair(certs.path(), "server", &second, &second_key);
    crate::support::block_on(gw.server.gateway.reload("test")).expect("the reload takes the new files");
    let (_, presented) = get(agent, "/healthz", &ca, None).expect("TLS after the reload");
    assert_eq!(
        presented,
        second.der().to_vec(),
        "new connections get the renewed certificate"
    );

    // A broken file refuses the reload, and the certificate in use stays.
    std::fs::write(certs.path().join("server.key"), "not a key").expect("write");
    let refused = crate::support::block_on(gw.server.gateway.reload("test"));
    assert!(refused.is_err(), "a broken key is refused");
    let (_, presented) = get(agent, "/healthz", &ca, None).expect("TLS still served");
    assert_eq!(presented, second.der().to_vec());
}

#[test]
fn agents_must_present_a_client_certificate_from_the_configured_ca() {
    let certs = tempfile::tempdir().expect("dir");
    let ca = Ca::new("OpenPort test CA");
    let (server, server_key) = ca.issue(&["localhost"]);
    write_pair(certs.path(), "server", &server, &server_key);
    let clients = Ca::new("Agents CA");
    std::fs::write(certs.path().join("clients.pem"), clients.cert.pem()).expect("CA");
    let line = format!(
        "tls = {{ cert = {:?}, key = {:?}, client_ca = {:?} }}",
        certs.path().join("server.pem"),
        certs.path().join("server.key"),
        certs.path().join("clients.pem")
    );
    let gw = TestGateway::builder().server_config(&line).start();

    let (agent_cert, agent_key) = clients.issue(&["agent-1"]);
    let (status, _) = get(gw.server.agent_addr, "/healthz", &ca, Some((&agent_cert, &agent_key)))
        .expect("an agent with a certificate from the CA is served");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        get(gw.server.agent_addr, "/healthz", &ca, None).is_err(),
        "an agent without a certificate is refused at the handshake"
    );
    let (stranger, stranger_key) = ca.issue(&["stranger"]);
    assert!(
        get(gw.server.agent_addr, "/healthz", &ca, Some((&stranger, &stranger_key))).is_err(),
        "a certificate from another CA is refused"
    );
    // Bound to one certificate, the app is served only over a connection presenting it:
    // its token alone, or with another agent's certificate, is refused.
    std::fs::write(certs.path().join("ca.pem"), ca.cert.pem()).expect("CA");
    let fingerprint = openport::hashing::sha256_hex(agent_cert.der());
    let app = gw.app_id("Demo Integration");
    let bind = std::process::Command::new(env!("CARGO_BIN_EXE_openport"))
        .args(["app", "policy", &app])
        .arg(format!(
            r#"{{"network": {{"client_certificates": ["{fingerprint}"]}}}}"#
        ))
        .args([
            "--admin-url",
            &format!("https://localhost:{}", gw.server.admin_addr.port()),
            "--admin-ca",
        ])
        .arg(certs.path().join("ca.pem"))
        .env("OPENPORT_ADMIN_TOKEN", gw.admin_token("operator"))
        .output()
        .expect("run");
    assert!(bind.status.success(), "{}", String::from_utf8_lossy(&bind.stderr));
    let token = gw.full();
    let ledgers = |client: (&rcgen::Certificate, &KeyPair)| {
        get_with(
            gw.server.agent_addr,
            "/api/agent/v1/ledgers",
            &ca,
            Some(client),
            Some(&token),
        )
        .expect("TLS")
        .0
    };
    assert_eq!(ledgers((&agent_cert, &agent_key)), "HTTP/1.1 200 OK");
    let (other, other_key) = clients.issue(&["agent-2"]);
    assert_eq!(ledgers((&other, &other_key)), "HTTP/1.1 403 Forbidden");
    let refusal = gw
        .audit()
        .into_iter()
        .rev()
        .find(|e| e.code == "agent.policy_denied")
        .expect("the refusal is audited");
    assert_eq!(refusal.details["reason"], "client_certificate");

    // Operators and reviewers authenticate with admin credentials, not certificates.
    let (status, _) = get(gw.server.admin_addr, "/healthz", &ca, None).expect("admin TLS without a client certificate");
    assert_eq!(status, "HTTP/1.1 200 OK");
}
