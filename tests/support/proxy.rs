//! A proxy on the stack's own addresses that refuses everything and records what was asked of it:
//! runtimes under test get `HTTP_PROXY`/`HTTPS_PROXY` pointing here (and `NO_PROXY` for loopback
//! and the proxy's own host, where the stack's servers are), so any attempt to reach the outside
//! (update checks, telemetry, model catalogs, package fetches) shows up in
//! [`RefusingProxy::requests`] instead of leaving the machine. (Member pods have no route off the
//! node's bridge either: hack/node.sh drops it.)
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proxy; stops when dropped.
pub struct RefusingProxy {
    /// `http://HOST:PORT`.
    pub url: String,
    host: String,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RefusingProxy {
    /// On 127.0.0.1, for local processes.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1").await
    }

    /// On `host` (the real node's address, for member pods).
    pub async fn start_on(host: &str) -> Self {
        let listener = tokio::net::TcpListener::bind((host, 0)).await.unwrap_or_else(|e| panic!("proxy: bind {host}: {e}"));
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf)).await.ok().and_then(Result::ok);
                    let first = n.map(|n| String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned());
                    if let Ok(mut l) = log.lock() {
                        l.push(first.unwrap_or_else(|| "(connection without a request line)".into()));
                    }
                    let _ = sock.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                });
            }
        });
        RefusingProxy { url, host: host.to_owned(), seen, task }
    }

    /// The request lines received (`CONNECT host:443 HTTP/1.1`, `GET http://… HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The environment that points a process at this proxy, loopback and the proxy's host
    /// excepted.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let no = format!("127.0.0.1,localhost,::1,{}", self.host);
        vec![
            ("HTTP_PROXY", self.url.clone()),
            ("HTTPS_PROXY", self.url.clone()),
            ("http_proxy", self.url.clone()),
            ("https_proxy", self.url.clone()),
            ("ALL_PROXY", self.url.clone()),
            ("NO_PROXY", no.clone()),
            ("no_proxy", no),
        ]
    }
}
