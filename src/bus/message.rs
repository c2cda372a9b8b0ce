//! Message types and their encoding as stream entries.
//!
//! An inbox entry has the fields `id`, `from`, `to`, `kind`, `body` and `ts` (milliseconds since
//! the epoch, taken from the Redis clock inside the send script so all senders agree), and when
//! known `by` (the authenticated identity that sent it) and `traceparent` (the W3C trace context
//! of the send). Transcript entries have the same fields.

use chrono::{DateTime, Utc};
use redis::Value;
use serde::{Deserialize, Serialize};

use super::error::BusError;

/// Who a message goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// One member, by its team-unique name.
    Member(String),
    /// Every member that has not finished, except the sender.
    Broadcast,
}

/// What a message is: from an agent, or a notice from the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    Message,
    System,
}

impl MessageKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MessageKind::Message => "message",
            MessageKind::System => "system",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "message" => Some(MessageKind::Message),
            "system" => Some(MessageKind::System),
            _ => None,
        }
    }
}

/// A message to send.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    pub from: String,
    pub to: Recipient,
    pub body: String,
    /// The gateway always sends [`MessageKind::Message`]; operator notices go through
    /// [`super::Bus::system_notice`].
    pub kind: MessageKind,
    /// Idempotency key: a retried send with the same id (from the same sender) is delivered once.
    /// A random UUID when `None`.
    pub id: Option<String>,
    /// Who sent it as Kubernetes authenticated them (`alice`, `system:serviceaccount:ns:sa`),
    /// recorded with the message; `from` is the name it is routed by.
    pub sent_by: Option<String>,
}

/// A message as read from an inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The id returned to the sender (shared by all copies of a broadcast).
    pub id: String,
    /// The entry id in this inbox; what [`super::Bus::ack`] takes.
    pub stream_id: String,
    pub from: String,
    pub to: String,
    pub kind: MessageKind,
    pub body: String,
    pub sent_at: DateTime<Utc>,
    /// The authenticated identity of the sender, when the gateway knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_by: Option<String>,
    /// W3C trace context of the send, when it was traced: a receive joins the sender's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// One copy of a sent message: the recipient, the message id and the entry id in its inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub to: String,
    pub id: String,
    pub stream_id: String,
}

/// How much is waiting in an inbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxCounts {
    /// Delivered by a wait but not acknowledged yet; the next wait returns them again.
    pub pending: u64,
    /// Not delivered to any wait yet.
    pub undelivered: u64,
}

/// The messages of a blocking `XREADGROUP` reply (RESP2 arrays or RESP3 maps); nil means the
/// block timed out.
pub(crate) fn parse_read_reply(reply: Value) -> Result<Vec<Message>, BusError> {
    let streams: Vec<Value> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(protocol("XREADGROUP reply", &other)),
    };
    let mut messages = Vec::new();
    for entries in streams {
        messages.extend(parse_entries(entries)?);
    }
    Ok(messages)
}

/// The entries of one stream, `[[id, [field, value, …]], …]`, as messages. Every entry has its
/// fields: new entries always do, and the wait script acks pending ones that lost theirs.
pub(crate) fn parse_entries(entries: Value) -> Result<Vec<Message>, BusError> {
    let Value::Array(entries) = entries else {
        return Err(protocol("stream entries", &entries));
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(mut pair) = entry else {
                return Err(protocol("stream entry", &entry));
            };
            let fields = pair.pop().unwrap_or(Value::Nil);
            let stream_id = match pair.pop() {
                Some(v) => text(v).ok_or_else(|| BusError::Protocol("entry without id".into()))?,
                None => return Err(BusError::Protocol("empty stream entry".into())),
            };
            decode(stream_id, fields)
        })
        .collect()
}

/// Builds a [`Message`] from the field list of an entry.
fn decode(stream_id: String, fields: Value) -> Result<Message, BusError> {
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        other => return Err(protocol("entry fields", &other)),
    };
    let (mut id, mut from, mut to, mut kind, mut body, mut ts) = (None, None, None, None, None, None);
    let (mut sent_by, mut traceparent) = (None, None);
    for (k, v) in pairs {
        let (Some(k), Some(v)) = (text(k), text(v)) else {
            continue;
        };
        match k.as_str() {
            "id" => id = Some(v),
            "from" => from = Some(v),
            "to" => to = Some(v),
            "kind" => kind = MessageKind::parse(&v),
            "body" => body = Some(v),
            "ts" => ts = v.parse::<i64>().ok().and_then(DateTime::<Utc>::from_timestamp_millis),
            "by" => sent_by = Some(v),
            "traceparent" => traceparent = Some(v),
            _ => {}
        }
    }
    let missing = || BusError::Protocol(format!("inbox entry {stream_id} lacks a field"));
    Ok(Message {
        id: id.ok_or_else(missing)?,
        from: from.ok_or_else(missing)?,
        to: to.ok_or_else(missing)?,
        kind: kind.ok_or_else(missing)?,
        body: body.ok_or_else(missing)?,
        sent_at: ts.ok_or_else(missing)?,
        sent_by,
        traceparent,
        stream_id,
    })
}

/// The text of a string reply; bodies were valid UTF-8 when sent, so lossless in practice.
pub(crate) fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn protocol(what: &str, got: &Value) -> BusError {
    BusError::Protocol(format!("{what}: unexpected {got:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_entries() {
        let fields = ["id", "m1", "from", "lead", "to", "dev", "kind", "system", "body", "hé", "ts", "1700000000123"];
        let entries = Value::Array(vec![Value::Array(vec![bulk("1-0"), Value::Array(fields.iter().map(|f| bulk(f)).collect())])]);
        let reply = Value::Array(vec![Value::Array(vec![bulk("inbox"), entries.clone()])]);
        let messages = parse_read_reply(reply).expect("valid reply");
        assert_eq!(messages, parse_entries(entries).expect("valid entries"));
        let m = &messages[0];
        assert_eq!((m.id.as_str(), m.stream_id.as_str(), m.body.as_str()), ("m1", "1-0", "hé"));
        assert_eq!(m.kind, MessageKind::System);
        assert_eq!(m.sent_at.timestamp_millis(), 1_700_000_000_123);
        assert_eq!((m.sent_by.as_deref(), m.traceparent.as_deref()), (None, None));
    }

    #[test]
    fn sender_identity_and_trace_context_are_read_when_present() {
        let fields =
            ["id", "m", "from", "lead", "to", "*", "kind", "message", "body", "b", "ts", "1", "by", "alice", "traceparent", "00-x"];
        let entries = Value::Array(vec![Value::Array(vec![bulk("1-0"), Value::Array(fields.iter().map(|f| bulk(f)).collect())])]);
        let m = &parse_entries(entries).expect("valid")[0];
        assert_eq!((m.sent_by.as_deref(), m.traceparent.as_deref()), (Some("alice"), Some("00-x")));
        let json = serde_json::to_value(m).expect("json");
        assert_eq!((json["sent_by"].as_str(), json["traceparent"].as_str()), (Some("alice"), Some("00-x")));
    }

    #[test]
    fn an_entry_without_fields_is_refused() {
        let entries = Value::Array(vec![Value::Array(vec![bulk("2-0"), Value::Nil])]);
        assert!(matches!(parse_entries(entries), Err(BusError::Protocol(_))));
    }

    #[test]
    fn nil_reply_is_a_timeout() {
        let messages = parse_read_reply(Value::Nil).expect("nil is valid");
        assert!(messages.is_empty());
    }

    #[test]
    fn kind_serializes_lowercase() {
        assert_eq!(serde_json::to_string(&MessageKind::System).ok().as_deref(), Some("\"system\""));
    }
}
