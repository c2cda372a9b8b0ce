//! Sending: messages between members and notices from the operator, both through one Lua script
//! that checks the team and roster, the sender's rate and the inboxes' room, and appends to the
//! inboxes atomically.
//!
//! The rate limit is a token bucket per (team, sender) kept in Redis by that same script, not in
//! the gateway: the gateway runs several replicas behind one Service and restarts freely, so a
//! bucket in its memory would allow as many times the rate as there are replicas and refill on
//! every restart; in the script it is one bucket, checked and spent atomically with the send.

use std::time::Duration;

use super::Bus;
use super::NOTICE_RESERVE;
use super::error::{BusError, InboxLimit};
use super::keys::{INBOX_GROUP, TeamKey};
use super::message::{Delivered, MessageKind, OutgoingMessage, Recipient};
use super::scripts::SEND;
use super::wake::WAKE_CHANNEL;

/// Sender name of operator notices.
pub const OPERATOR_SENDER: &str = "team-operator";
/// Prefix of a person's sender name (`user:alice`); no member name has a `:`.
pub const PERSON_SENDER_PREFIX: &str = "user:";

/// How long a message id is remembered for deduplication. Retries come within seconds; an hour
/// leaves room for a gateway that retries across a Redis failover.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(60 * 60);

/// The routing of one append to the inboxes.
struct Draft<'a> {
    from: &'a str,
    /// `None` broadcasts.
    to: Option<&'a str>,
    kind: MessageKind,
    /// An operator notice: allowed on a disbanded team, no sender check.
    notice: bool,
    /// The sender's authenticated identity, recorded with the message.
    sent_by: Option<&'a str>,
}

impl Bus {
    /// Sends a message to one member or broadcasts it to every member that has not finished,
    /// except the sender. Returns one [`Delivered`] per inbox written (a broadcast to a team of
    /// one returns none). A retry with the same `id` returns the first result and writes nothing;
    /// without an `id` the message gets a new one and nothing is remembered for it (a send that
    /// Redis applied but whose reply was lost to a restart may then be delivered twice).
    ///
    /// Refused with [`BusError::RateLimited`] past the sender's rate and with
    /// [`BusError::InboxFull`] when a recipient's inbox or the team is at its limit (a broadcast
    /// is written to all recipients or to none). What was written is also recorded once in the
    /// team's transcript ([`Bus::transcript`]), notices too, with `sent_by` and the trace context
    /// of the current span.
    pub async fn send(&self, team: &TeamKey, msg: OutgoingMessage) -> Result<Vec<Delivered>, BusError> {
        let to = match msg.to {
            Recipient::Member(name) if name.is_empty() => {
                return Err(BusError::InvalidArgument("recipient name is empty".into()));
            }
            Recipient::Member(name) => Some(name),
            Recipient::Broadcast => None,
        };
        let draft = Draft { from: &msg.from, to: to.as_deref(), kind: msg.kind, notice: false, sent_by: msg.sent_by.as_deref() };
        Ok(self.append(team, draft, msg.body, msg.id).await?.1)
    }

    /// Writes an operator notice (`[AGENT FAILURE] @<name> …`, a disband notice) to a queued or
    /// active member. Still allowed after [`Bus::mark_disbanded`], so waiting members learn why
    /// the team went away. A retried notice with the same `idempotency_key` is written once.
    /// Notices are not rate limited and may go [`NOTICE_RESERVE`] entries past a full inbox.
    /// Whether this call wrote it (false: a notice of that key was written before).
    pub async fn system_notice(&self, team: &TeamKey, to: &str, body: String, idempotency_key: String) -> Result<bool, BusError> {
        if to.is_empty() {
            return Err(BusError::InvalidArgument("recipient name is empty".into()));
        }
        let draft = Draft { from: OPERATOR_SENDER, to: Some(to), kind: MessageKind::System, notice: true, sent_by: None };
        Ok(self.append(team, draft, body, Some(idempotency_key)).await?.0)
    }

    /// Appends; whether it was written now (not a repeat of an id sent before), and the copies.
    async fn append(&self, team: &TeamKey, draft: Draft<'_>, body: String, id: Option<String>) -> Result<(bool, Vec<Delivered>), BusError> {
        let Draft { from, to, kind, notice, sent_by } = draft;
        if body.trim().is_empty() {
            return Err(BusError::EmptyBody);
        }
        let max = self.cfg.max_body_bytes;
        if body.len() > max {
            return Err(BusError::TooLarge { size: body.len(), max });
        }
        // Only an id the caller gave is remembered: a retry can only repeat an id it was given.
        // Remembering generated ones cost two writes per message and an hour of memory each.
        let remember = if id.is_some() { "1" } else { "0" };
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        // send.lua's sender class: an operator notice (skips the limits), a person, a member.
        let sender_class = if notice {
            "1"
        } else if from.starts_with(PERSON_SENDER_PREFIX) {
            "2"
        } else {
            "0"
        };
        let mut invocation = SEND.prepare_invoke();
        for key in team.message_keys() {
            invocation.key(key);
        }
        invocation
            .arg(team.inbox_prefix())
            .arg(from)
            .arg(to.unwrap_or(""))
            .arg(kind.as_str())
            .arg(body)
            .arg(&id)
            .arg(IDEMPOTENCY_TTL.as_millis() as u64)
            .arg(sender_class);
        let limits = self.cfg.limits;
        invocation
            .arg(limits.inbox_max_entries)
            .arg(limits.inbox_max_bytes)
            .arg(limits.team_max_bytes)
            .arg(NOTICE_RESERVE)
            .arg(limits.send_burst)
            .arg(limits.send_rate_per_second)
            .arg(INBOX_GROUP)
            .arg(sent_by.unwrap_or(""))
            // The sender's trace context goes with the message, so its receive joins the trace.
            .arg(crate::telemetry::propagation::current_traceparent().unwrap_or_default())
            .arg(WAKE_CHANNEL)
            .arg(remember);
        let (outcome, detail): (String, String) = self.run_script(&invocation).await?;
        let team_name = || team.to_string();
        match outcome.as_str() {
            "ok" | "dup" => {
                let copies: Vec<(String, String)> =
                    serde_json::from_str(&detail).map_err(|e| BusError::Protocol(format!("send reply {detail:?}: {e}")))?;
                let copies = copies.into_iter().map(|(to, stream_id)| Delivered { to, id: id.clone(), stream_id }).collect();
                Ok((outcome == "ok", copies))
            }
            "team_not_found" => Err(BusError::TeamNotFound { team: team_name() }),
            "team_disbanded" => Err(BusError::TeamDisbanded { team: team_name() }),
            "sender_not_in_team" => Err(BusError::SenderNotInTeam { team: team_name(), member: detail }),
            "unknown_recipient" => Err(BusError::UnknownRecipient { team: team_name(), member: detail }),
            "recipient_finished" => Err(BusError::RecipientFinished { team: team_name(), member: detail }),
            "inbox_full" => Err(inbox_full(team_name(), &detail)?),
            "rate_limited" => Err(BusError::RateLimited {
                team: team_name(),
                member: from.to_owned(),
                per_second: limits.send_rate_per_second,
                burst: limits.send_burst,
                retry_after_ms: detail.parse().map_err(|_| BusError::Protocol(format!("rate_limited detail {detail:?}")))?,
            }),
            other => Err(BusError::Protocol(format!("send replied {other:?}"))),
        }
    }
}

/// The refusal the script's `inbox_full` detail (`<member> <rule> <limit>`) stands for.
fn inbox_full(team: String, detail: &str) -> Result<BusError, BusError> {
    let bad = || BusError::Protocol(format!("inbox_full detail {detail:?}"));
    let mut words = detail.rsplitn(3, ' ');
    let (max, rule, member) = (words.next().ok_or_else(bad)?, words.next().ok_or_else(bad)?, words.next().ok_or_else(bad)?);
    let max: u64 = max.parse().map_err(|_| bad())?;
    let rule = match rule {
        "entries" => InboxLimit::Entries { max },
        "bytes" => InboxLimit::Bytes { max },
        "team_bytes" => InboxLimit::TeamBytes { max },
        _ => return Err(bad()),
    };
    Ok(BusError::InboxFull { team, member: member.to_owned(), rule })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_full_details_parse() {
        let e = inbox_full("ns/t".into(), "dev-2 bytes 16777216").expect("valid");
        assert!(
            matches!(&e, BusError::InboxFull { member, rule: InboxLimit::Bytes { max: 16_777_216 }, .. } if member == "dev-2"),
            "{e:?}"
        );
        assert_eq!(e.code(), "inbox_full");
        let e = inbox_full("ns/t".into(), "* team_bytes 5").expect("valid");
        assert!(e.to_string().contains("team_max_bytes"), "{e}");
        assert!(matches!(inbox_full("ns/t".into(), "x nonsense 1"), Err(BusError::Protocol(_))));
        assert!(matches!(inbox_full("ns/t".into(), "x entries many"), Err(BusError::Protocol(_))));
    }
}
