//! The TLS listener of the gateway's aggregated API: what the API server's front proxy dials.
//!
//! The serving certificate is the one the APIService's `caBundle` vouches for (the chart
//! generates both, see the README's "Install with Helm"). Client certificates are optional: a
//! client without one is served like one on the plain port (bearer tokens); one that presents a
//! certificate must chain to the requestheader CA, and the connection is the front proxy's only
//! if the certificate's common name is also allowed ([`super::front_proxy`]). The CA, the names
//! and the header names come from the `extension-apiserver-authentication` ConfigMap, watched, so
//! a rotated front-proxy CA is taken without a restart; until it has been read once, connections
//! are closed at once (the API server retries, and the APIService reads unavailable meanwhile).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::front_proxy::{AUTHENTICATION_CONFIGMAP, Peer, RequestHeaderConfig};

/// Longest a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway's serving certificate chain and key.
pub struct ServingCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ServingCert {
    /// Parses PEM text: the certificate (then its intermediates) and the private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Self> {
        let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().context("reading the certificate PEM")?;
        anyhow::ensure!(!chain.is_empty(), "the certificate PEM holds no certificate");
        let key = PrivateKeyDer::from_pem_slice(key_pem).context("reading the private key PEM")?;
        Ok(ServingCert { chain, key })
    }

    /// Reads the two PEM files, naming the one that is wrong.
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Self> {
        let c = std::fs::read(cert).with_context(|| format!("reading the TLS certificate {}", cert.display()))?;
        let k = std::fs::read(key).with_context(|| format!("reading the TLS key {}", key.display()))?;
        Self::from_pem(&c, &k).with_context(|| format!("TLS certificate {} / key {}", cert.display(), key.display()))
    }
}

/// An acceptor and the requestheader settings its client verifier was built from.
#[derive(Clone)]
struct Trust {
    acceptor: TlsAcceptor,
    request_header: Arc<RequestHeaderConfig>,
}

fn trust(cert: &ServingCert, request_header: RequestHeaderConfig) -> anyhow::Result<Trust> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(request_header.client_ca_pem.as_bytes()) {
        roots.add(ca.context("requestheader-client-ca-file")?).context("requestheader-client-ca-file")?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .context("the serving certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Trust { acceptor: TlsAcceptor::from(Arc::new(config)), request_header: Arc::new(request_header) })
}

/// Serves `app` over TLS on `listener` until `shutdown` completes; then lets in-flight requests
/// finish (up to 30 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    client: kube::Client,
    cert: ServingCert,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(None);
    let trust_watch = tokio::spawn(watch_trust(client, cert, tx));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "aggregated API: accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(trust) = rx.borrow().clone() else {
            tracing::warn!(%addr, "aggregated API: the requestheader settings are not read yet; closing the connection");
            continue;
        };
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, trust.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%addr, error = %e, "aggregated API: TLS handshake failed"),
                Err(_) => return tracing::debug!(%addr, "aggregated API: TLS handshake timed out"),
            };
            // The verifier let through only certificates that chain to the requestheader CA.
            let peer = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                Some(leaf) => Peer::verified(trust.request_header.clone(), common_name(leaf).as_deref()),
                None => Peer::default(),
            };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer.clone());
                app.clone().oneshot(req)
            });
            let builder = Builder::new(TokioExecutor::new());
            if let Err(e) = watcher.watch(builder.serve_connection(TokioIo::new(tls), service)).await {
                tracing::debug!(%addr, error = %e, "aggregated API: connection ended with an error");
            }
        });
    }
    trust_watch.abort();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("aggregated API: connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

/// The subject common name of a DER certificate.
fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    cert.subject().iter_common_name().next()?.as_str().ok().map(str::to_owned)
}

/// Keeps `tx` on the acceptor for the current requestheader settings.
async fn watch_trust(client: kube::Client, cert: ServingCert, tx: watch::Sender<Option<Trust>>) {
    let (ns, name) = AUTHENTICATION_CONFIGMAP;
    let api: Api<ConfigMap> = Api::namespaced(client, ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = pin!(watcher(api, config).default_backoff().applied_objects());
    let mut current: Option<RequestHeaderConfig> = None;
    while let Some(event) = events.next().await {
        let cm = match event {
            Ok(cm) => cm,
            Err(e) => {
                tracing::warn!(error = %e, "aggregated API: watching ConfigMap {ns}/{name} failed; retrying");
                continue;
            }
        };
        let loaded = RequestHeaderConfig::from_configmap(&cm.data.unwrap_or_default())
            .map_err(anyhow::Error::msg)
            .and_then(|rh| Ok((rh.clone(), trust(&cert, rh)?)));
        match loaded {
            Ok((rh, _)) if current.as_ref() == Some(&rh) => {}
            Ok((rh, t)) => {
                tracing::info!(allowed_names = ?rh.allowed_names, "aggregated API: front-proxy trust loaded from ConfigMap {ns}/{name}");
                current = Some(rh);
                tx.send_replace(Some(t));
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "aggregated API: ConfigMap {ns}/{name} is unusable; keeping the previous trust")
            }
        }
    }
}
