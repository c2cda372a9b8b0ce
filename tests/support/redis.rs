//! A redis-server of a test's own on a free loopback port, started with the flags the test gives
//! (e.g. `--maxmemory 256mb --maxmemory-policy noeviction`), killed and its directory removed on
//! drop. Include it with `#[path = "support/redis.rs"] mod private_redis;`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running private redis-server.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl PrivateRedis {
    /// Starts redis-server on 127.0.0.1 without persistence, with `extra` flags, and waits until
    /// it answers PING.
    pub async fn start(extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let dir = std::env::temp_dir().join(format!("private-redis-{port}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let redis = PrivateRedis { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.ping().await.is_err() {
            assert!(Instant::now() < deadline, "redis on port {port} did not answer PING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A fresh connection's PING.
    pub async fn ping(&self) -> redis::RedisResult<String> {
        let mut conn = self.conn().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    }

    pub async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?.get_multiplexed_async_connection().await
    }

    /// One section of INFO, as text.
    pub async fn info(&self, section: &str) -> String {
        let mut conn = self.conn().await.expect("connect to private redis");
        redis::cmd("INFO").arg(section).query_async(&mut conn).await.expect("INFO")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
