//! The newest messages of a team, read-only: what the gateway's `get messages` answers (and
//! `teamctl watch` shows). `XREVRANGE` on each inbox the roster names; nothing is delivered or
//! acknowledged, so the members still get every message.

use redis::Value;

use super::Bus;
use super::conn::retrying;
use super::error::BusError;
use super::keys::TeamKey;
use super::message::{Message, parse_entries};

impl Bus {
    /// The newest `n` messages across the inboxes of `team` (or of `member`'s alone), oldest
    /// first. Only unacknowledged entries are kept in an inbox, and a team Redis no longer holds
    /// (disbanded and torn down) has none.
    pub async fn latest(&self, team: &TeamKey, member: Option<&str>, n: usize) -> Result<Vec<Message>, BusError> {
        let names: Vec<String> = match member {
            Some(m) => vec![m.to_owned()],
            None => {
                retrying(|| {
                    let mut conn = self.conn();
                    let cmd = redis::cmd("HKEYS").arg(team.roster()).to_owned();
                    async move { Ok(cmd.query_async(&mut conn).await?) }
                })
                .await?
            }
        };
        let mut all = Vec::new();
        for name in names {
            let reply: Value = retrying(|| {
                let mut conn = self.conn();
                let cmd = redis::cmd("XREVRANGE").arg(team.inbox(&name)).arg("+").arg("-").arg("COUNT").arg(n).to_owned();
                async move { Ok(cmd.query_async(&mut conn).await?) }
            })
            .await?;
            all.extend(parse_entries(reply)?);
        }
        Ok(newest(all, n))
    }
}

/// The newest `n` of messages from several inboxes, oldest first, ordered by stream entry id
/// (`<ms>-<seq>`), which Redis makes increase across the keys of one server.
fn newest(mut all: Vec<Message>, n: usize) -> Vec<Message> {
    let key = |m: &Message| {
        let (ms, seq) = m.stream_id.split_once('-').unwrap_or((&m.stream_id, "0"));
        (ms.parse::<u64>().unwrap_or(0), seq.parse::<u64>().unwrap_or(0))
    };
    all.sort_by_key(key);
    let skip = all.len().saturating_sub(n);
    all.split_off(skip)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::bus::MessageKind;

    fn m(stream_id: &str) -> Message {
        Message {
            id: stream_id.into(),
            stream_id: stream_id.into(),
            from: "a".into(),
            to: "b".into(),
            kind: MessageKind::Message,
            body: String::new(),
            sent_at: Utc::now(),
            sent_by: None,
            traceparent: None,
        }
    }

    #[test]
    fn the_newest_are_kept_in_order_across_inboxes() {
        let all = vec![m("20-0"), m("3-1"), m("100-0"), m("3-0"), m("9-0")];
        let ids: Vec<String> = newest(all.clone(), 3).into_iter().map(|m| m.stream_id).collect();
        assert_eq!(ids, ["9-0", "20-0", "100-0"]);
        assert_eq!(newest(all, 10).len(), 5);
    }
}
