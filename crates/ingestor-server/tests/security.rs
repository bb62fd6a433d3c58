//! Who may write and read: bearer tokens and basic auth, separately for writes and reads;
//! HTTPS with a certificate made in the test, reloaded when its files change.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use ingestor_server::{Credentials, TlsFiles};

fn tokens(t: &[&str]) -> Credentials {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, t.join("\n") + "\n# a comment\n").unwrap();
    let mut c = Credentials::default();
    c.add_token_file(&file).unwrap();
    c
}

#[test]
fn writes_and_reads_need_their_own_credentials_and_health_stays_open() {
    let mut c = config();
    c.auth.write = Some(tokens(&["w-token"]));
    let dir = tempfile::tempdir().unwrap();
    let basic = dir.path().join("users");
    std::fs::write(&basic, "reader:pa ss:word\n").unwrap();
    let mut read = Credentials::default();
    read.add_basic_file(&basic).unwrap();
    c.auth.read = Some(read);
    let srv = start(c);

    let a = post(srv.addr, "/write", "m v=1");
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"ingestor\""));
    let a = request(srv.addr, "POST", "/write", &[("Authorization", "Bearer wrong")], b"m v=1");
    assert_eq!(a.status, 403);
    let a = request(srv.addr, "POST", "/write", &[("Authorization", "Bearer w-token")], b"m v=1");
    assert_eq!(a.status, 204);

    // The write token does not read; the reader's basic credentials do, and do not write.
    let a = request(srv.addr, "GET", "/metrics", &[("Authorization", "Bearer w-token")], b"");
    assert_eq!(a.status, 403);
    let a = get(srv.addr, "/api/v1/query?query=m_v");
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").unwrap().starts_with("Basic realm="));
    let good =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("reader:pa ss:word"));
    let a = request(srv.addr, "GET", "/api/v1/query?query=m_v", &[("Authorization", &good)], b"");
    assert_eq!(a.status, 200);
    assert!(a.body.contains("\"1\""), "{}", a.body);
    let a = request(srv.addr, "POST", "/write", &[("Authorization", &good)], b"m v=2");
    assert_eq!(a.status, 403);

    assert_eq!(get(srv.addr, "/-/healthy").status, 200);
    assert_eq!(get(srv.addr, "/-/ready").status, 200);
}

#[test]
fn credential_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "# nothing\n\n").unwrap();
    let mut c = Credentials::default();
    assert!(c.add_token_file(&empty).unwrap_err().contains("no token"));
    assert!(c.add_basic_file(&empty).unwrap_err().contains("no user:password"));
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "user-without-password\n").unwrap();
    assert!(c.add_basic_file(&bad).unwrap_err().contains("line 1"));
    assert!(c.add_token_file(&dir.path().join("missing")).is_err());
    let mut config = config();
    config.auth.write = Some(Credentials::default());
    assert!(config.validate().unwrap_err().contains("write auth"));
    assert!(!format!("{:?}", tokens(&["secret-value"])).contains("secret-value"));
}

/// A self-signed certificate for `localhost`, written to `dir`; returns its DER.
fn make_cert(dir: &std::path::Path) -> (TlsFiles, Vec<u8>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    // Write to temporary names and rename, as a certificate manager does.
    std::fs::write(dir.join("cert.tmp"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("key.tmp"), made.key_pair.serialize_pem()).unwrap();
    std::fs::rename(dir.join("cert.tmp"), &files.cert).unwrap();
    std::fs::rename(dir.join("key.tmp"), &files.key).unwrap();
    (files, made.cert.der().to_vec())
}

/// One HTTPS request trusting only `root`.
fn https_get(addr: std::net::SocketAddr, root: &[u8], path: &str) -> Result<Answer, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(root.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    read_answer(&mut tls).map_err(|e| e.to_string())
}

#[test]
fn https_serves_with_the_given_certificate_and_reloads_it_when_the_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let (files, first) = make_cert(dir.path());
    let mut c = config();
    c.tls = Some(files);
    let srv = start_tls(c);
    let a = https_get(srv.addr, &first, "/-/ready").unwrap();
    assert_eq!(a.status, 200);
    // Plain HTTP on the TLS port gets nowhere.
    let mut plain = TcpStream::connect(srv.addr).unwrap();
    send(&mut plain, "GET", "/-/ready", &[], b"");
    assert!(read_answer(&mut plain).is_err());

    std::thread::sleep(Duration::from_millis(1_100)); // a new modification time
    let (_, second) = make_cert(dir.path());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if https_get(srv.addr, &second, "/-/ready").is_ok_and(|a| a.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was never served");
        std::thread::sleep(Duration::from_millis(200));
    }
    let old = https_get(srv.addr, &first, "/-/ready");
    assert!(old.is_err(), "the old certificate is still served");
}

#[test]
fn unreadable_tls_files_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.tls = Some(TlsFiles { cert: dir.path().join("none.pem"), key: dir.path().join("k.pem") });
    let err = ingestor_server::Server::start(c, || Err("never opened".into())).unwrap_err();
    assert!(err.contains("none.pem"), "{err}");
}

/// Starts a TLS server and waits for it over HTTPS-less readiness (the opener is quick).
fn start_tls(config: ingestor_server::ServerConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let server = ingestor_server::Server::start(config, move || {
        ingestor::Ingestor::open(&path, ingestor::Config::default())
            .map(|(db, _)| db)
            .map_err(|e| e.to_string())
    })
    .unwrap();
    let addr = server.http_addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.is_ready() {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Running { server: Some(server), addr, _dir: Some(dir) }
}
