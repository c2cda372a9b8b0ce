//! Team identity and the Redis key names of a team (see the layout in the `bus` module docs).
//!
//! Every key of one team embeds the same hash tag `{<namespace>/<team>}`, so a Lua script that
//! touches several of them stays in one Redis Cluster slot.

use std::fmt;

/// Prefix of every key this operator writes, so an operator can share a Redis with other users.
const PREFIX: &str = "team-operator";

/// A team: its namespace and name. All of its keys share one hash tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TeamKey {
    pub namespace: String,
    pub team: String,
}

impl TeamKey {
    pub fn new(namespace: impl Into<String>, team: impl Into<String>) -> Self {
        TeamKey { namespace: namespace.into(), team: team.into() }
    }

    /// `team-operator:{<ns>/<team>}:`, the start of every key of the team.
    fn base(&self) -> String {
        format!("{PREFIX}:{{{}/{}}}:", self.namespace, self.team)
    }

    /// Hash `state` → `active` | `disbanded`; its absence means "no such team".
    pub(crate) fn meta(&self) -> String {
        self.base() + "meta"
    }

    /// Hash member name → `queued` | `active` | `finished`.
    pub(crate) fn roster(&self) -> String {
        self.base() + "roster"
    }

    /// Hash `<sender>\n<message id>` → the reply of the first send with that id.
    pub(crate) fn sent(&self) -> String {
        self.base() + "sent"
    }

    /// Sorted set of the same fields scored by send time, so old idempotency markers expire.
    pub(crate) fn sent_at(&self) -> String {
        self.base() + "sent-at"
    }

    /// Prefix of the inbox streams; scripts append the member name to it.
    pub(crate) fn inbox_prefix(&self) -> String {
        self.base() + "inbox:"
    }

    /// The inbox stream of one member.
    pub(crate) fn inbox(&self, member: &str) -> String {
        self.inbox_prefix() + member
    }

    /// Stream of every message sent in the team while it runs (one entry per send), capped.
    pub(crate) fn transcript(&self) -> String {
        self.base() + "transcript"
    }

    /// The keys every message of the team may touch, in the order send.lua and teardown.lua take
    /// them as their first five KEYS: one list, so a key added to a send is torn down too.
    pub(crate) fn message_keys(&self) -> [String; 5] {
        [self.meta(), self.roster(), self.sent(), self.sent_at(), self.transcript()]
    }

    /// The transcript of one disbanded incarnation of the team, by the Team's uid, kept until it
    /// expires: a team re-created with the same name has another uid and starts clean.
    pub(crate) fn retained_transcript(&self, uid: &str) -> String {
        self.base() + "transcript:" + uid
    }

    /// Sorted set of the uids with a retained transcript, scored by disband time (ms).
    pub(crate) fn transcripts(&self) -> String {
        self.base() + "transcripts"
    }
}

impl fmt::Display for TeamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.team)
    }
}

/// The consumer group of every inbox; the consumer inside it is the member's name, so a restarted
/// member picks up what its previous pod read but did not ack.
pub(crate) const INBOX_GROUP: &str = "inbox";

/// The memory of one agent type in one project: `team-operator:memory:{<ns>/<project>}:<agent>`.
pub(crate) fn memory(namespace: &str, project: &str, agent: &str) -> String {
    format!("{PREFIX}:memory:{{{namespace}/{project}}}:{agent}")
}

/// The hash tag Redis Cluster hashes for a key: the text between the first `{` and the next `}`,
/// when non-empty; otherwise the whole key.
#[cfg(test)]
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}').filter(|&close| close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_documented_one() {
        let t = TeamKey::new("ns", "alpha");
        assert_eq!(t.meta(), "team-operator:{ns/alpha}:meta");
        assert_eq!(t.roster(), "team-operator:{ns/alpha}:roster");
        assert_eq!(t.sent(), "team-operator:{ns/alpha}:sent");
        assert_eq!(t.sent_at(), "team-operator:{ns/alpha}:sent-at");
        assert_eq!(t.inbox("general-2"), "team-operator:{ns/alpha}:inbox:general-2");
        assert_eq!(t.transcript(), "team-operator:{ns/alpha}:transcript");
        assert_eq!(t.retained_transcript("u-1"), "team-operator:{ns/alpha}:transcript:u-1");
        assert_eq!(t.transcripts(), "team-operator:{ns/alpha}:transcripts");
        assert_eq!(memory("ns", "proj", "coder"), "team-operator:memory:{ns/proj}:coder");
    }

    #[test]
    fn all_team_keys_share_one_hash_tag() {
        let t = TeamKey::new("team-ns", "beta");
        for key in [
            t.meta(),
            t.roster(),
            t.sent(),
            t.sent_at(),
            t.inbox("lead"),
            t.inbox("x:{y}"),
            t.transcript(),
            t.retained_transcript("u"),
            t.transcripts(),
        ] {
            assert_eq!(hash_tag(&key), "team-ns/beta", "{key}");
        }
    }

    #[test]
    fn teams_do_not_share_keys() {
        assert_ne!(TeamKey::new("a", "b").meta(), TeamKey::new("a", "c").meta());
        assert_ne!(TeamKey::new("a", "b").meta(), TeamKey::new("b", "b").meta());
    }
}
