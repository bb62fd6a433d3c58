//! HTTPS: the certificate and key from PEM files, reloaded on SIGHUP or when a file changes,
//! without dropping a connection. A reload that fails keeps the certificate in use.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// The certificate in use, swapped whole on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
}

/// The server's TLS side: an acceptor and the files it reloads from.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    files: TlsFiles,
}

/// Reads the chain and key and pairs them, checking that the key signs for the chain.
fn load(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("TLS certificate {}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("TLS certificate {}: {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("TLS certificate {}: no certificate in it", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("TLS key {}: {e}", files.key.display()))?;
    let signer =
        any_supported_type(&key).map_err(|e| format!("TLS key {}: {e}", files.key.display()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        format!("TLS key {} and certificate {}: {e}", files.key.display(), files.cert.display())
    })?;
    Ok(certified)
}

fn modified(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

impl Tls {
    /// Loads the files once.
    pub(crate) fn new(files: &TlsFiles) -> Result<Tls, String> {
        let current = Arc::new(Current(RwLock::new(Arc::new(load(files)?))));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), current, files: files.clone() })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Loads the files again; on failure the certificate in use stays.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let fresh = load(&self.files)?;
        *self.current.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(fresh);
        Ok(())
    }

    /// Reloads on SIGHUP and whenever either file's modification time changes (checked every
    /// `poll`), until the task is dropped.
    pub(crate) async fn watch(self, poll: Duration) {
        let mut seen = modified(&self.files);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hup_fired = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup_fired = std::future::pending::<()>();
            let why = tokio::select! {
                () = hup_fired => "SIGHUP",
                () = tokio::time::sleep(poll) => {
                    let now = modified(&self.files);
                    if now == seen { continue; }
                    seen = now;
                    "a changed file"
                }
            };
            match self.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded ({why})"),
                Err(e) => tracing::error!(
                    "TLS reload ({why}) failed, keeping the certificate in use: {e}"
                ),
            }
        }
    }
}
