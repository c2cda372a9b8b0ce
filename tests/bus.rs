//! Message bus against a real redis-server (TEAM_OPERATOR_REDIS_URL, default
//! redis://127.0.0.1:16379). Every test uses its own random namespace, so they run in parallel.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use team_operator::bus::{
    Bus, BusConfig, BusError, BusLimits, Delivered, InboxCounts, InboxLimit, Message, MessageKind, OPERATOR_SENDER, OutgoingMessage,
    POOLED_WAITS, Recipient, RosterState, TeamKey,
};

use RosterState::{Active, Finished, Queued};

const LONG: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(200);

mod support;

use support::bus_config as config;

async fn bus() -> Bus {
    Bus::connect(config()).await.expect("connect to redis")
}

fn unique_team() -> TeamKey {
    let id = uuid::Uuid::new_v4().simple().to_string();
    TeamKey::new(format!("ns-{}", &id[..12]), "team")
}

/// A synced team with the given roster.
async fn team(bus: &Bus, roster: &[(&str, RosterState)]) -> TeamKey {
    let team = unique_team();
    let roster: Vec<(String, RosterState)> = roster.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    bus.sync_roster(&team, &roster).await.expect("sync roster");
    team
}

fn msg(from: &str, to: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        from: from.into(),
        to: Recipient::Member(to.into()),
        body: body.into(),
        kind: MessageKind::Message,
        id: None,
        sent_by: None,
    }
}

fn broadcast(from: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage { to: Recipient::Broadcast, ..msg(from, "", body) }
}

/// Until `n` waits of `bus` are blocked (found nothing: in their blocking read, or parked for a
/// wake-up past the pooled ones): the moment a test means by "while a wait is blocked".
async fn until_blocked(bus: &Bus, n: usize) {
    let deadline = Instant::now() + LONG;
    while bus.blocked_waits() < n {
        assert!(Instant::now() < deadline, "{} of {n} waits blocked", bus.blocked_waits());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A spawned wait: its result, and when it returned.
type WaitTask = tokio::task::JoinHandle<(Result<Vec<Message>, BusError>, Instant)>;

/// Spawns a wait of `timeout` per member.
fn spawn_waits(bus: &Bus, team: &TeamKey, members: &[String], timeout: Duration) -> Vec<WaitTask> {
    members
        .iter()
        .map(|name| {
            let (bus, team, name) = (bus.clone(), team.clone(), name.clone());
            tokio::spawn(async move { (bus.wait(&team, &name, timeout).await, Instant::now()) })
        })
        .collect()
}

fn bodies(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

/// Every key of the team, straight from Redis (KEYS goes to every primary in cluster mode).
async fn team_keys(team: &TeamKey) -> Vec<String> {
    let pattern = format!("team-operator:{{{}/{}}}:*", team.namespace, team.team);
    let mut keys = redis::cmd("KEYS");
    keys.arg(pattern);
    let mut found: Vec<String> = support::raw_redis(&keys).await;
    found.sort();
    found
}

#[tokio::test]
async fn message_sent_just_before_and_during_a_wait_are_both_received() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active), ("dev", Active)]).await;

    bus.send(&team, msg("lead", "dev", "before")).await.expect("send before");
    let first = bus.wait(&team, "dev", LONG).await.expect("first wait");
    assert_eq!(bodies(&first), ["before"]);
    let first_ids: Vec<String> = first.iter().map(|m| m.stream_id.clone()).collect();
    bus.ack(&team, "dev", &first_ids).await.expect("ack");

    let waiter = tokio::spawn({
        let (bus, team) = (bus.clone(), team.clone());
        async move {
            let started = Instant::now();
            (bus.wait(&team, "dev", LONG).await, started.elapsed())
        }
    });
    until_blocked(&bus, 1).await;
    bus.send(&team, msg("lead", "dev", "during")).await.expect("send during");
    let (during, elapsed) = waiter.await.expect("waiter task");
    let during = during.expect("second wait");
    assert_eq!(bodies(&during), ["during"]);
    assert!(elapsed < LONG, "the wait returned on the message, not the timeout");
    let m = &during[0];
    assert_eq!((m.from.as_str(), m.to.as_str(), m.kind), ("lead", "dev", MessageKind::Message));
}

#[tokio::test]
async fn a_wait_times_out_empty() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active)]).await;
    let started = Instant::now();
    let got = bus.wait(&team, "lead", SHORT).await.expect("wait");
    assert!(got.is_empty());
    assert!(started.elapsed() >= SHORT);
}

#[tokio::test]
async fn unacked_messages_are_redelivered_until_acked() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active), ("dev", Active)]).await;
    let sent = bus.send(&team, msg("lead", "dev", "do it")).await.expect("send");
    assert_eq!(bus.inbox_counts(&team, "dev").await.expect("counts"), InboxCounts { pending: 0, undelivered: 1 });

    let read = bus.wait(&team, "dev", LONG).await.expect("wait");
    assert_eq!(read.len(), 1);
    assert_eq!((read[0].id.as_str(), read[0].stream_id.as_str()), (sent[0].id.as_str(), sent[0].stream_id.as_str()));
    assert_eq!(bus.inbox_counts(&team, "dev").await.expect("counts"), InboxCounts { pending: 1, undelivered: 0 });

    // The consumer dies before acking; its replacement (a new connection) gets it again.
    drop(bus);
    let bus = self::bus().await;
    let again = bus.wait(&team, "dev", LONG).await.expect("wait after restart");
    assert_eq!(again, read);

    let ids = vec![again[0].stream_id.clone()];
    let twice = vec![ids[0].clone(), ids[0].clone()];
    assert_eq!(bus.ack(&team, "dev", &twice).await.expect("ack"), 1, "an id given twice in one ack counts once");
    assert_eq!(bus.ack(&team, "dev", &ids).await.expect("second ack"), 0);
    assert_eq!(bus.inbox_counts(&team, "dev").await.expect("counts"), InboxCounts::default());
    assert!(bus.wait(&team, "dev", SHORT).await.expect("wait after ack").is_empty());
}

/// An agent's loop hands back what it handled and asks for more in one call; a bad id refuses
/// the whole call and delivers nothing.
#[tokio::test]
async fn ack_and_wait_acks_then_delivers_the_next() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active), ("dev", Active)]).await;
    bus.send(&team, msg("lead", "dev", "one")).await.expect("send");
    let first = bus.wait(&team, "dev", LONG).await.expect("wait");
    let handled: Vec<String> = first.iter().map(|m| m.stream_id.clone()).collect();
    bus.send(&team, msg("lead", "dev", "two")).await.expect("send");

    // The valid id before the bad one is not acked either.
    let bad = bus.ack_and_wait(&team, "dev", &[handled[0].clone(), "not-an-id".into()], SHORT).await;
    assert!(matches!(bad, Err(BusError::InvalidArgument(_))), "{bad:?}");
    assert_eq!(bus.inbox_counts(&team, "dev").await.expect("counts"), InboxCounts { pending: 1, undelivered: 1 });

    let (acked, next) = bus.ack_and_wait(&team, "dev", &handled, LONG).await.expect("ack and wait");
    assert_eq!((acked, bodies(&next)), (1, vec!["two"]));
    assert_eq!(bus.inbox_counts(&team, "dev").await.expect("counts"), InboxCounts { pending: 1, undelivered: 0 });
}

#[tokio::test]
async fn a_retried_send_with_the_same_id_is_delivered_once() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active), ("dev", Active), ("qa", Active)]).await;
    let once = OutgoingMessage { id: Some("req-1".into()), ..msg("lead", "dev", "hello") };
    let first = bus.send(&team, once.clone()).await.expect("send");
    let retry = bus.send(&team, once).await.expect("retry");
    assert_eq!(first, retry);

    let all = OutgoingMessage { id: Some("req-2".into()), ..broadcast("lead", "all") };
    let first = bus.send(&team, all.clone()).await.expect("broadcast");
    assert_eq!(bus.send(&team, all).await.expect("broadcast retry"), first);

    assert_eq!(bodies(&bus.wait(&team, "dev", LONG).await.expect("wait")), ["hello", "all"]);
    assert_eq!(bodies(&bus.wait(&team, "qa", LONG).await.expect("wait")), ["all"]);
}

/// Only a sender's own id can come back in a retry, so only those are remembered: a send without
/// one leaves no marker in the team's `sent` hash.
#[tokio::test]
async fn only_ids_the_sender_gave_are_remembered() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active), ("dev", Active)]).await;
    let sent_hash = format!("team-operator:{{{}/{}}}:sent", team.namespace, team.team);
    let markers = || {
        let mut cmd = redis::cmd("HKEYS");
        cmd.arg(&sent_hash);
        async move { support::raw_redis::<Vec<String>>(&cmd).await }
    };
    bus.send(&team, msg("lead", "dev", "no id")).await.expect("send");
    bus.send(&team, msg("lead", "dev", "no id")).await.expect("the same again is a new message");
    assert_eq!(markers().await, Vec::<String>::new());
    let with_id = OutgoingMessage { id: Some("req-9".into()), ..msg("lead", "dev", "with id") };
    let first = bus.send(&team, with_id.clone()).await.expect("send");
    assert_eq!(markers().await, ["lead\nreq-9"]);
    // A later send without an id keeps the marker (it prunes only markers past their hour), so
    // a retry of the given id is still answered as the first send, and written once.
    bus.send(&team, msg("lead", "dev", "no id again")).await.expect("send");
    assert_eq!(markers().await, ["lead\nreq-9"]);
    assert_eq!(bus.send(&team, with_id).await.expect("retry"), first);
    assert_eq!(bodies(&bus.wait(&team, "dev", LONG).await.expect("wait")), ["no id", "no id", "with id", "no id again"]);
}

/// The team's budget counts what its inboxes hold now, kept as a running total (a send costs the
/// same in a team of any size): acks give room back, and a team whose total is missing (its meta
/// written before the total was kept) has it summed from its inboxes at the next send.
#[tokio::test]
async fn the_team_budget_follows_acks_and_a_missing_total_is_summed() {
    let limits = BusLimits { team_max_bytes: 2_000, send_rate_per_second: 0, ..BusLimits::default() };
    let bus = Bus::connect(BusConfig { limits, ..config() }).await.expect("connect");
    let team = team(&bus, &[("lead", Active), ("a", Active), ("b", Active)]).await;
    let body = "x".repeat(300);
    let over_budget =
        |r: &Result<Vec<Delivered>, BusError>| matches!(r, Err(BusError::InboxFull { rule: InboxLimit::TeamBytes { .. }, .. }));
    let mut sent = 0;
    loop {
        let to = if sent % 2 == 0 { "a" } else { "b" };
        let result = bus.send(&team, msg("lead", to, &body)).await;
        if over_budget(&result) {
            break;
        }
        result.expect("under the team budget");
        sent += 1;
        assert!(sent < 10, "2,000 bytes never filled");
    }
    assert!(sent >= 2, "both inboxes hold some of the budget");

    let meta = format!("team-operator:{{{}/{}}}:meta", team.namespace, team.team);
    let _: i64 = support::raw_redis(redis::cmd("HDEL").arg(&meta).arg("bytes")).await;
    assert!(over_budget(&bus.send(&team, msg("lead", "a", &body)).await), "the summed total is still over the budget");

    let got = bus.wait(&team, "a", LONG).await.expect("wait");
    let ids: Vec<String> = got.iter().map(|m| m.stream_id.clone()).collect();
    bus.ack(&team, "a", &ids).await.expect("ack");
    bus.send(&team, msg("lead", "b", &body)).await.expect("a's acks gave the team room");
}

#[tokio::test]
async fn broadcast_reaches_unfinished_members_but_not_the_sender() {
    let bus = bus().await;
    let roster = [("lead", Active), ("a", Active), ("b", Active), ("q", Queued), ("done", Finished)];
    let team = team(&bus, &roster).await;
    let delivered = bus.send(&team, broadcast("lead", "standup")).await.expect("broadcast");
    let mut to: Vec<&str> = delivered.iter().map(|d: &Delivered| d.to.as_str()).collect();
    to.sort();
    assert_eq!(to, ["a", "b", "q"]);
    assert!(delivered.iter().all(|d| d.id == delivered[0].id), "one message id for all copies");
    for member in ["a", "b", "q"] {
        let got = bus.wait(&team, member, LONG).await.expect("wait");
        assert_eq!(bodies(&got), ["standup"], "{member}");
        assert_eq!(got[0].to, member);
    }
    for member in ["lead", "done"] {
        assert_eq!(bus.inbox_counts(&team, member).await.expect("counts"), InboxCounts::default(), "{member}");
    }
}

#[tokio::test]
async fn sends_are_refused_with_typed_errors() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active), ("done", Finished)]).await;

    let missing = bus.send(&unique_team(), msg("lead", "dev", "x")).await;
    assert!(matches!(missing, Err(BusError::TeamNotFound { .. })), "{missing:?}");
    let outsider = bus.send(&team, msg("mallory", "lead", "x")).await;
    assert!(matches!(outsider, Err(BusError::SenderNotInTeam { .. })), "{outsider:?}");
    let unknown = bus.send(&team, msg("lead", "ghost", "x")).await;
    assert!(matches!(&unknown, Err(BusError::UnknownRecipient { member, .. }) if member == "ghost"), "{unknown:?}");
    let finished = bus.send(&team, msg("lead", "done", "x")).await;
    assert!(matches!(&finished, Err(BusError::RecipientFinished { member, .. }) if member == "done"), "{finished:?}");
    for empty in ["", " \n\t"] {
        let refused = bus.send(&team, msg("lead", "lead", empty)).await;
        assert!(matches!(refused, Err(BusError::EmptyBody)), "{refused:?}");
    }
    let big = "x".repeat(65_537);
    let refused = bus.send(&team, msg("lead", "lead", &big)).await;
    assert!(matches!(refused, Err(BusError::TooLarge { size: 65_537, max: 65_536 })), "{refused:?}");
    bus.send(&team, msg("lead", "lead", &big[1..])).await.expect("a body of exactly the cap is fine");

    bus.mark_disbanded(&team).await.expect("disband");
    let disbanded = bus.send(&team, msg("lead", "lead", "x")).await;
    assert!(matches!(disbanded, Err(BusError::TeamDisbanded { .. })), "{disbanded:?}");
    let codes: Vec<&str> =
        [missing, outsider, unknown, finished, refused, disbanded].iter().filter_map(|r| r.as_ref().err().map(BusError::code)).collect();
    assert_eq!(codes, ["not_found", "forbidden", "unknown_recipient", "recipient_finished", "too_large", "team_disbanded"]);
}

#[tokio::test]
async fn inbox_calls_for_strangers_are_refused() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active)]).await;
    let wait = bus.wait(&team, "mallory", SHORT).await;
    assert!(matches!(wait, Err(BusError::MemberNotInTeam { .. })), "{wait:?}");
    let counts = bus.inbox_counts(&team, "mallory").await;
    assert!(matches!(counts, Err(BusError::MemberNotInTeam { .. })), "{counts:?}");
    let ack = bus.ack(&unique_team(), "lead", &["1-0".into()]).await;
    assert!(matches!(ack, Err(BusError::TeamNotFound { .. })), "{ack:?}");
    let bad = bus.ack(&team, "lead", &["not-an-id".into()]).await;
    assert!(matches!(bad, Err(BusError::InvalidArgument(_))), "{bad:?}");
}

#[tokio::test]
async fn system_notices_reach_unfinished_members_once() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active), ("q", Queued), ("done", Finished)]).await;
    for to in ["lead", "q"] {
        for _ in 0..2 {
            bus.system_notice(&team, to, "[AGENT FAILURE] @dev exited 1".into(), format!("fail-dev-{to}")).await.expect("notice");
        }
        let got = bus.wait(&team, to, LONG).await.expect("wait");
        assert_eq!(bodies(&got), ["[AGENT FAILURE] @dev exited 1"], "written once to {to}");
        assert_eq!((got[0].kind, got[0].from.as_str()), (MessageKind::System, OPERATOR_SENDER));
    }
    let finished = bus.system_notice(&team, "done", "x".into(), "k1".into()).await;
    assert!(matches!(finished, Err(BusError::RecipientFinished { .. })), "{finished:?}");
    let unknown = bus.system_notice(&team, "ghost", "x".into(), "k2".into()).await;
    assert!(matches!(unknown, Err(BusError::UnknownRecipient { .. })), "{unknown:?}");
    let missing = bus.system_notice(&unique_team(), "lead", "x".into(), "k3".into()).await;
    assert!(matches!(missing, Err(BusError::TeamNotFound { .. })), "{missing:?}");
}

#[tokio::test]
async fn disbanding_wakes_a_waiting_member_and_teardown_ends_its_waits() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active), ("dev", Active)]).await;
    let waiter = tokio::spawn({
        let (bus, team) = (bus.clone(), team.clone());
        async move { bus.wait(&team, "dev", LONG).await }
    });
    until_blocked(&bus, 1).await;
    bus.mark_disbanded(&team).await.expect("disband");
    bus.system_notice(&team, "dev", "team disbanded".into(), "disband".into()).await.expect("notice");
    let woken = waiter.await.expect("waiter task").expect("wait");
    assert_eq!(bodies(&woken), ["team disbanded"]);

    let ids: Vec<String> = woken.iter().map(|m| m.stream_id.clone()).collect();
    bus.ack(&team, "dev", &ids).await.expect("ack");
    let drained = bus.wait(&team, "dev", LONG).await;
    assert!(matches!(drained, Err(BusError::TeamDisbanded { .. })), "{drained:?}");
    let revived = bus.sync_roster(&team, &[("dev".into(), Active)]).await;
    assert!(matches!(revived, Err(BusError::TeamDisbanded { .. })), "{revived:?}");

    bus.teardown(&team).await.expect("teardown");
    assert!(team_keys(&team).await.is_empty());
    let gone = bus.wait(&team, "dev", LONG).await;
    assert!(matches!(gone, Err(BusError::TeamNotFound { .. })), "{gone:?}");
    bus.mark_disbanded(&team).await.expect("disband again is a no-op");
    bus.teardown(&team).await.expect("teardown again is a no-op");
    assert!(team_keys(&team).await.is_empty());
}

#[tokio::test]
async fn a_wait_blocked_during_teardown_returns_promptly() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active)]).await;
    let waiter = tokio::spawn({
        let (bus, team) = (bus.clone(), team.clone());
        async move {
            let started = Instant::now();
            (bus.wait(&team, "lead", LONG).await, started.elapsed())
        }
    });
    until_blocked(&bus, 1).await;
    bus.teardown(&team).await.expect("teardown");
    let (result, elapsed) = waiter.await.expect("waiter task");
    assert!(matches!(result, Err(BusError::TeamNotFound { .. })), "{result:?}");
    assert!(elapsed < LONG, "returned on teardown, not the timeout");
}

#[tokio::test]
async fn a_roster_update_changes_only_the_members_it_names() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active), ("dev", Active)]).await;
    // A new member gets an inbox; the members not named stay as they are.
    bus.update_roster(&team, &[("qa".into(), Queued)]).await.expect("update");
    bus.send(&team, msg("lead", "qa", "for later")).await.expect("a queued member can be sent to");
    bus.send(&team, msg("lead", "dev", "still here")).await.expect("dev was not named and stays active");
    // A member that finished is refused; a member first seen finished gets no inbox.
    bus.update_roster(&team, &[("dev".into(), Finished), ("old".into(), Finished)]).await.expect("update");
    let refused = bus.send(&team, msg("lead", "dev", "hi")).await;
    assert!(matches!(refused, Err(BusError::RecipientFinished { .. })), "{refused:?}");
    let base = format!("team-operator:{{{}/{}}}:", team.namespace, team.team);
    assert!(!team_keys(&team).await.contains(&format!("{base}inbox:old")), "no inbox for a member first seen finished");
    let got = bus.wait(&team, "qa", Duration::from_secs(1)).await.expect("wait");
    assert_eq!(bodies(&got), ["for later"]);
    // Disbanded is final for updates too.
    bus.mark_disbanded(&team).await.expect("disband");
    let revived = bus.update_roster(&team, &[("qa".into(), Active)]).await;
    assert!(matches!(revived, Err(BusError::TeamDisbanded { .. })), "{revived:?}");
    bus.teardown(&team).await.expect("teardown");
}

#[tokio::test]
async fn a_roster_without_a_member_keeps_its_unread_messages_and_teardown_removes_every_key() {
    let bus = bus().await;
    let team = team(&bus, &[("lead", Active), ("dev", Active), ("qa", Queued)]).await;
    bus.send(&team, msg("lead", "dev", "unread")).await.expect("send");
    // A roster from a cache that has not listed dev (yet): dev reads as finished, its inbox stays.
    bus.sync_roster(&team, &[("lead".into(), Active), ("qa".into(), Active)]).await.expect("resync");
    let refused = bus.send(&team, msg("lead", "dev", "hi")).await;
    assert!(matches!(refused, Err(BusError::RecipientFinished { .. })), "{refused:?}");

    let base = format!("team-operator:{{{}/{}}}:", team.namespace, team.team);
    let expected: Vec<String> =
        ["inbox:dev", "inbox:lead", "inbox:qa", "meta", "roster", "transcript"].iter().map(|k| format!("{base}{k}")).collect();
    assert_eq!(team_keys(&team).await, expected, "dev's inbox is kept");
    // The next roster that lists dev again delivers what was waiting.
    bus.sync_roster(&team, &[("lead".into(), Active), ("dev".into(), Active), ("qa".into(), Active)]).await.expect("resync");
    let got = bus.wait(&team, "dev", Duration::from_secs(1)).await.expect("wait");
    assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["unread"]);
    bus.teardown(&team).await.expect("teardown");
    assert!(team_keys(&team).await.is_empty());
}

/// A redis-server of this test's own, so it can be killed and restarted.
struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let dir = std::env::temp_dir().join(format!("bus-test-redis-{port}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data dir");
        let child = Self::spawn(port, &dir);
        PrivateRedis { port, dir, child }
    }

    /// Append-only file with fsync on every write, so the data survives a kill -9.
    fn spawn(port: u16, dir: &PathBuf) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH")
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_for_ping(&self) {
        let deadline = Instant::now() + LONG;
        loop {
            let pong = async {
                let client = redis::Client::open(self.url())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            if pong.await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis on port {} did not answer PING", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn restart(&mut self) {
        self.child.kill().expect("kill redis");
        self.child.wait().expect("reap redis");
        self.child = Self::spawn(self.port, &self.dir);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A wait on a pooled connection and one parked past the pool (the seats all taken) both keep
/// waiting through a Redis restart and get what is sent after it.
#[tokio::test]
async fn waits_blocked_or_parked_while_redis_restarts_complete_and_the_next_send_works() {
    let mut redis = PrivateRedis::start();
    redis.wait_for_ping().await;
    let bus = Bus::connect(BusConfig::from_url(redis.url())).await.expect("connect");
    let team = TeamKey::new("restart", "team");
    let fillers: Vec<String> = (1..POOLED_WAITS).map(|i| format!("p{i}")).collect();
    let roster: Vec<(String, RosterState)> =
        ["lead", "dev", "late"].iter().map(|n| n.to_string()).chain(fillers.iter().cloned()).map(|n| (n, Active)).collect();
    bus.sync_roster(&team, &roster).await.expect("sync");

    let dev = spawn_waits(&bus, &team, &["dev".into()], LONG).remove(0);
    let _fillers = spawn_waits(&bus, &team, &fillers, LONG);
    until_blocked(&bus, POOLED_WAITS).await;
    let late = spawn_waits(&bus, &team, &["late".into()], LONG).remove(0);
    until_blocked(&bus, POOLED_WAITS + 1).await;
    assert_eq!(bus.parked_waits(), 1, "the wait past the pooled ones parks");
    redis.restart();
    redis.wait_for_ping().await;

    bus.send(&team, msg("lead", "dev", "after restart")).await.expect("send after restart");
    bus.send(&team, msg("lead", "late", "to the parked one")).await.expect("send after restart");
    // The waits reconnected (resubscribed) and kept waiting, so they see what was sent after it.
    let (got, _) = dev.await.expect("dev's wait task");
    assert_eq!(bodies(&got.expect("dev's wait completes")), ["after restart"]);
    let (got, _) = late.await.expect("late's wait task");
    assert_eq!(bodies(&got.expect("late's wait completes")), ["to the parked one"]);
    let next = bus.wait(&team, "dev", LONG).await.expect("next wait");
    assert_eq!(bodies(&next), ["after restart"], "unacked, so delivered again");
}

/// Client connections a Redis server counts now, the one asking included.
async fn redis_connections(url: &str) -> usize {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connection for CLIENT LIST");
    let list: String = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("normal").query_async(&mut conn).await.expect("CLIENT LIST");
    let pubsub: String = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query_async(&mut conn).await.expect("CLIENT LIST");
    list.lines().count() + pubsub.lines().count()
}

/// Thousands of idle waits hold the pool's connections and one subscription, not one each: the
/// first [`POOLED_WAITS`] block on pooled connections, the rest park; a send wakes only the wait
/// of its inbox on either path, and teardown ends the rest. On a Redis of its own, so its count
/// of connections is this bus's alone.
#[tokio::test]
async fn many_waits_hold_the_pool_and_one_subscription_and_a_send_wakes_its_own() {
    const WAITS: usize = 2_000;
    let redis = PrivateRedis::start();
    redis.wait_for_ping().await;
    let bus = Bus::connect(BusConfig::from_url(redis.url())).await.expect("connect");
    let names: Vec<String> = (0..WAITS).map(|i| format!("m{i}")).collect();
    let roster: Vec<(String, RosterState)> =
        std::iter::once("lead".to_string()).chain(names.iter().cloned()).map(|n| (n, Active)).collect();
    let team = TeamKey::new("many", "team");
    bus.sync_roster(&team, &roster).await.expect("sync");
    // The pooled ones first, so which member waits on which path is known.
    let mut waits = spawn_waits(&bus, &team, &names[..POOLED_WAITS], Duration::from_secs(60));
    until_blocked(&bus, POOLED_WAITS).await;
    waits.extend(spawn_waits(&bus, &team, &names[POOLED_WAITS..], Duration::from_secs(60)));
    until_blocked(&bus, WAITS).await;
    assert_eq!(bus.parked_waits(), WAITS - POOLED_WAITS, "the waits past the pooled ones park");
    // The shared connection, the pooled ones, the subscription, and the one counting.
    let held = redis_connections(&redis.url()).await - 1;
    assert!(held <= POOLED_WAITS + 2, "{WAITS} waits hold {held} Redis connections");

    for (i, path) in [(1, "pooled"), (1234, "parked")] {
        let sent_at = Instant::now();
        bus.send(&team, msg("lead", &format!("m{i}"), "wake up")).await.expect("send");
        let (got, at) = tokio::time::timeout(LONG, &mut waits[i]).await.expect("the wait returned").expect("wait task");
        assert_eq!(bodies(&got.expect("wait")), ["wake up"], "{path} wait");
        assert!(at.duration_since(sent_at) < Duration::from_secs(1), "{path} wait woken {:?} after the send", at.duration_since(sent_at));
    }
    assert_eq!(bus.blocked_waits(), WAITS - 2, "only the waits of the inboxes sent to returned");
    assert_eq!(bus.parked_waits(), WAITS - POOLED_WAITS - 1);

    let torn_down_at = Instant::now();
    bus.teardown(&team).await.expect("teardown");
    for (i, wait) in waits.into_iter().enumerate().filter(|(i, _)| ![1, 1234].contains(i)) {
        let (result, _) = tokio::time::timeout(LONG, wait).await.expect("every other wait returned on teardown").expect("wait task");
        assert!(matches!(result, Err(BusError::TeamNotFound { .. })), "m{i}: {result:?}");
    }
    assert!(torn_down_at.elapsed() < LONG);
}
