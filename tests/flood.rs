//! One member cannot take down the bus: inbox and team limits and a per-sender rate refuse a
//! flood with typed errors (429 at the gateway) instead of trimming unread messages or filling
//! Redis, other teams keep working, and every message accepted is delivered.
//!
//! The flood runs against a redis-server of the test's own with `--maxmemory 256mb` and
//! `noeviction`; the smaller checks use the stack's Redis like tests/bus.rs.
#[path = "fixtures/gateway.rs"]
mod fixture;
#[path = "support/redis.rs"]
mod private_redis;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use private_redis::PrivateRedis;
use serde_json::json;
use team_operator::bus::{
    Bus, BusConfig, BusError, BusLimits, InboxCounts, InboxLimit, MessageKind, OutgoingMessage, Recipient, RosterState, TeamKey,
};

const LONG: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(200);
/// The flood: this many sends of this many bytes, four at a time, for at most this long.
const FLOOD_SENDS: usize = 12_000;
const FLOOD_BODY: usize = 64 * 1024;
const FLOOD_TIME: Duration = Duration::from_secs(240);

fn msg(from: &str, to: &str, body: String) -> OutgoingMessage {
    OutgoingMessage { from: from.into(), to: Recipient::Member(to.into()), body, kind: MessageKind::Message, id: None, sent_by: None }
}

fn unique_team(name: &str) -> TeamKey {
    let id = uuid::Uuid::new_v4().simple().to_string();
    TeamKey::new(format!("ns-{}", &id[..12]), name)
}

async fn team(bus: &Bus, name: &str, members: &[&str]) -> TeamKey {
    let team = unique_team(name);
    let roster: Vec<(String, RosterState)> = members.iter().map(|m| (m.to_string(), RosterState::Active)).collect();
    bus.sync_roster(&team, &roster).await.expect("sync roster");
    team
}

/// Reads and acks everything in `member`'s inbox: (stream id, body) of each message.
async fn drain(bus: &Bus, team: &TeamKey, member: &str) -> Vec<(String, String)> {
    let mut got = Vec::new();
    for _ in 0..1_000 {
        let batch = bus.wait(team, member, SHORT).await.expect("drain wait");
        if batch.is_empty() {
            return got;
        }
        let ids: Vec<String> = batch.iter().map(|m| m.stream_id.clone()).collect();
        assert_eq!(bus.ack(team, member, &ids).await.expect("drain ack"), ids.len());
        got.extend(batch.into_iter().map(|m| (m.stream_id, m.body)));
    }
    panic!("the inbox of {member} did not drain in 1,000 waits");
}

/// The bytes the bus counts for an inbox (`bytes:<member>` of the team's meta hash).
async fn counted_bytes(redis: &mut redis::aio::MultiplexedConnection, team: &TeamKey, member: &str) -> u64 {
    let key = format!("team-operator:{{{}/{}}}:meta", team.namespace, team.team);
    let held: Option<u64> = redis::cmd("HGET").arg(key).arg(format!("bytes:{member}")).query_async(redis).await.expect("HGET");
    held.unwrap_or(0)
}

#[tokio::test]
async fn a_flooding_member_gets_429s_while_other_teams_work_and_nothing_stored_is_lost() {
    let redis = PrivateRedis::start(&["--maxmemory", "256mb", "--maxmemory-policy", "noeviction"]).await;
    // A burst big enough to reach both byte limits (the lead's inbox at about 255 messages, the
    // team at about 1,020), then a rate far below the flood's: the rest is rate_limited.
    let limits = BusLimits { send_burst: 2_000, send_rate_per_second: 200, ..BusLimits::default() };
    let bus = Bus::connect(BusConfig { limits, ..BusConfig::from_url(redis.url()) }).await.expect("connect");
    let flooded = team(&bus, "flooded", &["flood", "lead", "a", "b", "c", "d"]).await;
    let other = team(&bus, "other", &["lead", "dev"]).await;

    // The other team's lead and member talk throughout, at a member's pace.
    let done = Arc::new(AtomicBool::new(false));
    let talk = tokio::spawn({
        let (bus, team, done) = (bus.clone(), other.clone(), done.clone());
        async move {
            let started = Instant::now();
            let mut pace = tokio::time::interval(Duration::from_millis(100));
            let mut rounds = 0;
            while !done.load(Ordering::Relaxed) && rounds < 3_000 && started.elapsed() < FLOOD_TIME {
                pace.tick().await;
                let body = format!("ping {rounds}");
                bus.send(&team, msg("lead", "dev", body.clone())).await.unwrap_or_else(|e| panic!("other team's send {rounds}: {e}"));
                let got = bus.wait(&team, "dev", LONG).await.unwrap_or_else(|e| panic!("other team's wait {rounds}: {e}"));
                assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), [body.as_str()], "round {rounds}");
                bus.ack(&team, "dev", &[got[0].stream_id.clone()]).await.unwrap_or_else(|e| panic!("other team's ack {rounds}: {e}"));
                rounds += 1;
            }
            rounds
        }
    });

    // The flood: every other message to the lead, the rest spread over a..d.
    let started = Instant::now();
    let sends = futures::stream::iter(0..FLOOD_SENDS)
        .take_while(|_| futures::future::ready(started.elapsed() < FLOOD_TIME))
        .map(|i| {
            let bus = bus.clone();
            let team = flooded.clone();
            async move {
                let to = if i % 2 == 0 { "lead" } else { ["a", "b", "c", "d"][(i / 2) % 4] };
                let mut body = format!("{i:08}");
                body.push_str(&"x".repeat(FLOOD_BODY - body.len()));
                (to, bus.send(&team, msg("flood", to, body)).await)
            }
        })
        .buffer_unordered(4);
    let results: Vec<_> = sends.collect().await;
    done.store(true, Ordering::Relaxed);
    assert_eq!(results.len(), FLOOD_SENDS, "the flood did not finish in {FLOOD_TIME:?}");

    let mut accepted: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let (mut full, mut limited, mut rules) = (0, 0, BTreeSet::new());
    for (to, result) in &results {
        match result {
            Ok(delivered) => {
                assert_eq!(delivered.len(), 1);
                accepted.entry(to).or_default().insert(delivered[0].stream_id.clone());
            }
            Err(BusError::InboxFull { rule, .. }) => {
                full += 1;
                rules.insert(match rule {
                    InboxLimit::Entries { .. } => "entries",
                    InboxLimit::Bytes { .. } => "bytes",
                    InboxLimit::TeamBytes { .. } => "team_bytes",
                });
            }
            Err(BusError::RateLimited { retry_after_ms, .. }) => {
                assert!(*retry_after_ms <= 1_000, "retry after {retry_after_ms} ms at 200 a second");
                limited += 1;
            }
            Err(other) => panic!("a flood send failed with something other than a 429: {other} ({})", other.code()),
        }
    }
    let stored: usize = accepted.values().map(BTreeSet::len).sum();
    assert!(full > 0 && limited > 0, "the flood got {full} inbox_full and {limited} rate_limited refusals");
    assert!(rules.contains("bytes") && rules.contains("team_bytes"), "limits hit: {rules:?}");
    assert!(stored >= 256, "only {stored} of the flood's messages were accepted");
    assert!(stored as u64 * FLOOD_BODY as u64 <= limits.team_max_bytes, "{stored} messages are over the team budget");

    let rounds = talk.await.expect("the other team's talk did not panic");
    assert!(rounds >= 5, "the other team talked only {rounds} times during the flood");

    // Redis stayed up and never refused a write for memory.
    assert_eq!(redis.ping().await.expect("PING after the flood"), "PONG");
    let errors = redis.info("errorstats").await;
    assert!(!errors.contains("errorstat_OOM"), "redis refused writes for memory:\n{errors}");
    let memory = redis.info("memory").await;
    let used: u64 = memory.lines().find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok()).expect("used_memory");
    assert!(used < 256 << 20, "redis uses {used} bytes, at its maxmemory");

    // Every message accepted is delivered, once; acks take the bytes off the count again.
    let mut conn = redis.conn().await.expect("raw connection");
    for member in ["lead", "a", "b", "c", "d"] {
        assert!(counted_bytes(&mut conn, &flooded, member).await > 0 || !accepted.contains_key(member));
        let got = drain(&bus, &flooded, member).await;
        let ids: BTreeSet<String> = got.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids.len(), got.len(), "{member} got a message twice");
        assert_eq!(ids, accepted.remove(member).unwrap_or_default(), "{member} got other messages than were accepted");
        assert!(got.iter().all(|(_, body)| body.len() == FLOOD_BODY), "{member} got a cut body");
        assert_eq!(counted_bytes(&mut conn, &flooded, member).await, 0, "{member}'s inbox is drained but still counted");
        assert_eq!(bus.inbox_counts(&flooded, member).await.expect("counts"), InboxCounts::default());
        let len: u64 = redis::cmd("XLEN")
            .arg(format!("team-operator:{{{}/{}}}:inbox:{member}", flooded.namespace, flooded.team))
            .query_async(&mut conn)
            .await
            .expect("XLEN");
        assert_eq!(len, 0, "acked entries of {member} are still stored");
    }
    // With the inboxes read, the team has room again.
    bus.send(&flooded, msg("a", "lead", "room again".into())).await.expect("a send after the inboxes were read");
}

/// The limits one by one, small enough to reach with a few sends: each refusal names its rule,
/// nothing is written by a refused send, notices still get through, and acks make room.
#[tokio::test]
async fn each_limit_refuses_with_its_rule_and_acks_make_room() {
    let connect =
        |limits: BusLimits| async move { Bus::connect(BusConfig { limits, ..support::bus_config() }).await.expect("connect to redis") };
    let loose = BusLimits { send_burst: 1_000, send_rate_per_second: 1_000, ..BusLimits::default() };
    let body = || "y".repeat(1_000);

    // Entries: four fit; the fifth is refused; a notice still gets in; an ack makes room.
    let bus = connect(BusLimits { inbox_max_entries: 4, ..loose }).await;
    let t = team(&bus, "entries", &["lead", "dev", "qa"]).await;
    for i in 0..4 {
        bus.send(&t, msg("lead", "dev", format!("m{i}"))).await.expect("under the entry cap");
    }
    let refused = bus.send(&t, msg("lead", "dev", "m4".into())).await;
    assert!(
        matches!(&refused, Err(BusError::InboxFull { member, rule: InboxLimit::Entries { max: 4 }, .. }) if member == "dev"),
        "{refused:?}"
    );
    let everyone = OutgoingMessage { to: Recipient::Broadcast, ..msg("lead", "", "all".into()) };
    let refused = bus.send(&t, everyone).await;
    assert!(matches!(&refused, Err(BusError::InboxFull { member, .. }) if member == "dev"), "{refused:?}");
    assert_eq!(bus.inbox_counts(&t, "qa").await.expect("counts"), InboxCounts::default(), "a refused broadcast wrote nothing");
    bus.system_notice(&t, "dev", "[AGENT FAILURE] @qa exited 1".into(), "fail-qa".into()).await.expect("a notice past the cap");
    let got = bus.wait(&t, "dev", LONG).await.expect("wait");
    assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["m0", "m1", "m2", "m3", "[AGENT FAILURE] @qa exited 1"]);
    let refused = bus.send(&t, msg("lead", "dev", "m4".into())).await;
    assert!(matches!(refused, Err(BusError::InboxFull { .. })), "delivered but not acked still counts: {refused:?}");
    bus.ack(&t, "dev", &[got[0].stream_id.clone(), got[1].stream_id.clone()]).await.expect("ack");
    bus.send(&t, msg("lead", "dev", "m4".into())).await.expect("room after the ack");

    // Bytes of one inbox: three 1,000-byte messages fit in 3,500, the fourth does not; the count
    // goes back to zero once they are acked (through ack_and_wait this time).
    let bus = connect(BusLimits { inbox_max_bytes: 3_500, ..loose }).await;
    let t = team(&bus, "bytes", &["lead", "dev"]).await;
    for _ in 0..3 {
        bus.send(&t, msg("lead", "dev", body())).await.expect("under the byte cap");
    }
    let refused = bus.send(&t, msg("lead", "dev", body())).await;
    assert!(matches!(refused, Err(BusError::InboxFull { rule: InboxLimit::Bytes { max: 3_500 }, .. })), "{refused:?}");
    let got = bus.wait(&t, "dev", LONG).await.expect("wait");
    let ids: Vec<String> = got.iter().map(|m| m.stream_id.clone()).collect();
    let (acked, rest) = bus.ack_and_wait(&t, "dev", &ids, SHORT).await.expect("ack and wait");
    assert_eq!((acked, rest.len()), (3, 0));
    let meta = format!("team-operator:{{{}/{}}}:meta", t.namespace, t.team);
    let held: Option<u64> = support::raw_redis(redis::cmd("HGET").arg(meta).arg("bytes:dev")).await;
    assert_eq!(held.unwrap_or(0), 0, "acked bytes still counted");
    bus.send(&t, msg("lead", "dev", body())).await.expect("room after the acks");

    // The team's budget over all its inboxes.
    let bus = connect(BusLimits { team_max_bytes: 5_000, ..loose }).await;
    let t = team(&bus, "budget", &["lead", "a", "b"]).await;
    for to in ["a", "b", "a", "b"] {
        bus.send(&t, msg("lead", to, body())).await.expect("under the team budget");
    }
    let refused = bus.send(&t, msg("lead", "a", body())).await;
    assert!(matches!(refused, Err(BusError::InboxFull { rule: InboxLimit::TeamBytes { max: 5_000 }, .. })), "{refused:?}");
    assert_eq!(refused.as_ref().err().map(BusError::code), Some("inbox_full"));

    // Rate: a burst of three, then one a second; another sender is not held back.
    let bus = connect(BusLimits { send_burst: 3, send_rate_per_second: 1, ..BusLimits::default() }).await;
    let t = team(&bus, "rate", &["lead", "dev"]).await;
    for i in 0..3 {
        bus.send(&t, msg("dev", "lead", format!("r{i}"))).await.expect("within the burst");
    }
    let refused = bus.send(&t, msg("dev", "lead", "r3".into())).await;
    assert!(
        matches!(&refused, Err(BusError::RateLimited { member, retry_after_ms, .. }) if member == "dev" && *retry_after_ms <= 1_000),
        "{refused:?}"
    );
    assert_eq!(refused.as_ref().err().map(BusError::code), Some("rate_limited"));
    bus.send(&t, msg("lead", "dev", "mine".into())).await.expect("another sender has its own bucket");
    assert_eq!(bus.inbox_counts(&t, "lead").await.expect("counts").undelivered, 3, "the refused send wrote nothing");
}

/// Through the gateway: the same refusals are HTTP 429 with their codes.
#[tokio::test]
async fn the_gateway_answers_429_inbox_full_and_rate_limited() {
    let s = support::stack().await;
    support::install_crds(&s.client).await;
    let ns = support::TestNamespace::new(&s.client, "gw-flood").await;
    let limits = BusLimits { inbox_max_entries: 3, send_burst: 4, send_rate_per_second: 1, ..BusLimits::default() };
    let bus = Bus::connect(BusConfig { limits, ..s.bus_config() }).await.expect("redis");
    let client = support::identity::impersonating(&support::identity::chart_user("gateway")).await;
    let settings = team_operator::gateway::GatewaySettings::default();
    let state = Arc::new(team_operator::gateway::GatewayState::new(client, bus.clone(), Arc::default(), settings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let serving = tokio::spawn(team_operator::gateway::serve(listener, state));

    let team = fixture::team_with_members(&s, &ns, &bus, "flood", &["general"]).await;
    let token = team.token("general");
    for i in 0..3 {
        fixture::ok(fixture::call(&url, Some(token), "send_message", json!({ "to": "lead", "body": format!("m{i}") })).await);
    }
    let full = fixture::call(&url, Some(token), "send_message", json!({ "to": "lead", "body": "m3" })).await;
    fixture::assert_error(&full, 429, "inbox_full", "inbox_max_entries");
    // The burst of four is spent; at one a second, one of the next few calls is refused for rate,
    // with a Retry-After header.
    let mut limited = None;
    for _ in 0..5 {
        let response = reqwest::Client::new()
            .post(format!("{url}/v1/tools/send_message"))
            .bearer_auth(token)
            .json(&json!({ "to": "lead", "body": "m4" }))
            .send()
            .await
            .expect("gateway reachable");
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let answer = (response.status().as_u16(), response.json::<serde_json::Value>().await.expect("a JSON answer"));
        if answer.1["error"]["code"] == "rate_limited" {
            limited = Some((answer, retry_after));
            break;
        }
        fixture::assert_error(&answer, 429, "inbox_full", "inbox_max_entries");
        assert_eq!(retry_after, None, "inbox_full says no time: it depends on the reader");
    }
    let (answer, retry_after) = limited.expect("a rate_limited answer");
    fixture::assert_error(&answer, 429, "rate_limited", "retry in");
    assert_eq!(retry_after.as_deref(), Some("1"), "Retry-After of a 1-a-second bucket");
    // What was accepted is there for the lead.
    let got = fixture::ok(fixture::call(&url, Some(team.token("lead")), "wait_messages", json!({ "timeout_seconds": 5 })).await);
    let bodies: Vec<&str> = got["messages"].as_array().expect("messages").iter().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(bodies, ["m0", "m1", "m2"], "{got}");

    bus.teardown(&team.key(&ns.name)).await.expect("teardown");
    serving.abort();
    ns.cleanup().await;
}

/// Should Redis itself fill up (many teams at their budgets at once), a send is refused with the
/// same 429 code rather than an internal error, and what was stored stays readable.
#[tokio::test]
async fn a_redis_at_maxmemory_refuses_sends_as_inbox_full_and_keeps_what_it_has() {
    let redis = PrivateRedis::start(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]).await;
    let limits = BusLimits { send_rate_per_second: 0, ..BusLimits::default() };
    let bus = Bus::connect(BusConfig { limits, ..BusConfig::from_url(redis.url()) }).await.expect("connect");
    let t = team(&bus, "full", &["lead", "dev"]).await;
    let mut accepted = BTreeSet::new();
    let mut refused = None;
    for i in 0..1_000 {
        match bus.send(&t, msg("lead", "dev", format!("{i:08}{}", "z".repeat(FLOOD_BODY - 8)))).await {
            Ok(d) => {
                accepted.insert(d[0].stream_id.clone());
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("a 4 MB Redis refused some of 1,000 64 KiB sends");
    assert!(matches!(refused, BusError::OutOfMemory(_)), "{refused:?}");
    assert_eq!(refused.code(), "inbox_full");
    assert_eq!(redis.ping().await.expect("PING"), "PONG");
    let got: BTreeSet<String> = drain(&bus, &t, "dev").await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, accepted, "what Redis stored before it filled is delivered");
}
