//! Reading the transcript a disbanded team left behind: the messages sent in it (one entry per
//! send, broadcasts with `to` = `*`), kept for the Team's `spec.retention` under its uid (see the
//! key layout in the module docs; the send script writes it, teardown renames it and sets it to
//! expire). Read-only, and through the shared connection: nothing here blocks.

use chrono::{DateTime, Utc};
use redis::Value;
use serde::{Deserialize, Serialize};

use super::Bus;
use super::conn::retrying;
use super::error::BusError;
use super::keys::TeamKey;
use super::message::{Message, parse_entries};

/// The retained transcript of one disbanded incarnation of a team.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    /// The uid the Team had.
    pub uid: String,
    /// When it was torn down.
    pub disbanded_at: Option<DateTime<Utc>>,
    /// When Redis removes it.
    pub expires_at: Option<DateTime<Utc>>,
    /// The newest messages asked for, oldest first.
    pub messages: Vec<Message>,
}

impl Bus {
    /// The newest `n` messages of the transcript kept for the Team with `uid`, or, without a uid,
    /// of the most recently disbanded team of that name whose transcript has not expired. None
    /// when there is none (never kept, expired, or a retention of 0).
    pub async fn transcript(&self, team: &TeamKey, uid: Option<&str>, n: usize) -> Result<Option<Transcript>, BusError> {
        let index: Vec<(String, f64)> =
            self.query(redis::cmd("ZREVRANGE").arg(team.transcripts()).arg(0).arg(-1).arg("WITHSCORES")).await?;
        for (candidate, disbanded_ms) in index {
            if uid.is_some_and(|u| u != candidate) {
                continue;
            }
            let key = team.retained_transcript(&candidate);
            let ttl_ms: i64 = self.query(redis::cmd("PTTL").arg(&key)).await?;
            if ttl_ms <= 0 {
                // Expired (or lost its expiry, which teardown always sets): not kept any more.
                self.query::<i64>(redis::cmd("ZREM").arg(team.transcripts()).arg(&candidate)).await?;
                continue;
            }
            let reply: Value = self.query(redis::cmd("XREVRANGE").arg(&key).arg("+").arg("-").arg("COUNT").arg(n)).await?;
            let mut messages = parse_entries(reply)?;
            messages.reverse();
            let now = Utc::now();
            return Ok(Some(Transcript {
                uid: candidate,
                disbanded_at: DateTime::from_timestamp_millis(disbanded_ms as i64),
                expires_at: Some(now + chrono::Duration::milliseconds(ttl_ms)),
                messages,
            }));
        }
        Ok(None)
    }

    /// One idempotent command on the shared connection, again while Redis is briefly away.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BusError> {
        retrying(|| {
            let mut conn = self.conn();
            let cmd = cmd.clone();
            async move { Ok(cmd.query_async(&mut conn).await?) }
        })
        .await
    }
}
