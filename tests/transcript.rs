//! A disbanded team's transcript: every message sent in it, kept in Redis for `spec.retention`
//! under the Team's uid, readable with `get messages` (teamctl get messages --team <name>) after
//! the Team is gone, expiring by Redis TTL, and none of it seen by a re-created team of the same
//! name. First on the bus alone (the byte budget, the uid, a zero retention), then end to end
//! with the controller disbanding real Teams and a person reading through the gateway.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::time::Duration;

use fixture::*;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use support::operator::Operator;
use support::teams::{lead_name, team};
use support::*;
use team_operator::api::Team;
use team_operator::bus::{Bus, BusConfig, BusLimits, MessageKind, OutgoingMessage, Recipient, RosterState, TeamKey};

fn msg(from: &str, to: &str, body: String) -> OutgoingMessage {
    OutgoingMessage {
        from: from.into(),
        to: Recipient::Member(to.into()),
        body,
        kind: MessageKind::Message,
        id: None,
        sent_by: Some("alice".into()),
    }
}

fn unique_team() -> TeamKey {
    let id = uuid::Uuid::new_v4().simple().to_string();
    TeamKey::new(format!("ns-{}", &id[..12]), "team")
}

async fn bus_with(limits: BusLimits) -> Bus {
    Bus::connect(BusConfig { limits, ..bus_config() }).await.expect("connect to redis")
}

async fn sync(bus: &Bus, team: &TeamKey) {
    let roster = [("lead".to_owned(), RosterState::Active), ("dev".to_owned(), RosterState::Active)];
    bus.sync_roster(team, &roster).await.expect("sync roster");
}

#[tokio::test]
async fn the_transcript_keeps_the_newest_within_the_team_budget_under_each_uid() {
    let team_max_bytes = 2_000;
    let bus = bus_with(BusLimits { team_max_bytes, inbox_max_bytes: team_max_bytes, ..BusLimits::default() }).await;
    let team = unique_team();
    sync(&bus, &team).await;
    // Ten messages of ~400 bytes each, each read and acked before the next (acks delete inbox
    // entries, so the inboxes never hold more than one): the transcript still has the newest.
    for i in 0..10 {
        bus.send(&team, msg("lead", "dev", format!("{i:02} {}", "x".repeat(300)))).await.expect("send");
        let got = bus.wait(&team, "dev", Duration::from_secs(5)).await.expect("wait");
        bus.ack(&team, "dev", &[got[0].stream_id.clone()]).await.expect("ack");
    }
    bus.system_notice(&team, "dev", "[TEAM DISBANDED] bye".into(), "bye".into()).await.expect("notice");
    bus.mark_disbanded(&team).await.expect("disband");
    bus.teardown_retaining(&team, "uid-1", Duration::from_secs(60)).await.expect("teardown");

    let kept = bus.transcript(&team, None, 100).await.expect("read").expect("a transcript is kept");
    assert_eq!(kept.uid, "uid-1");
    let bodies: Vec<&str> = kept.messages.iter().map(|m| &m.body[..2]).collect();
    assert!(bodies.len() < 11 && bodies.len() >= 3, "the newest that fit 2,000 bytes: {bodies:?}");
    assert_eq!(bodies.last(), Some(&"[T"), "the disband notice is the last entry");
    assert_eq!(bodies[bodies.len() - 2], "09", "the newest message is kept: {bodies:?}");
    assert!(!bodies.contains(&"00"), "the oldest went to stay within the budget: {bodies:?}");
    let size: usize = kept.messages.iter().map(|m| m.body.len()).sum();
    assert!(size <= team_max_bytes as usize, "{size} bytes of bodies");
    let first = &kept.messages[0];
    assert_eq!((first.from.as_str(), first.to.as_str(), first.sent_by.as_deref()), ("lead", "dev", Some("alice")));
    let expires = kept.expires_at.expect("an expiry") - chrono::Utc::now();
    assert!(expires > chrono::Duration::seconds(50) && expires <= chrono::Duration::seconds(60), "{expires}");

    // The same name again, another uid: it starts clean, and each transcript stays its own.
    sync(&bus, &team).await;
    let all = OutgoingMessage { to: Recipient::Broadcast, ..msg("lead", "", "second life".into()) };
    bus.send(&team, all).await.expect("broadcast");
    bus.mark_disbanded(&team).await.expect("disband");
    bus.teardown_retaining(&team, "uid-2", Duration::from_secs(60)).await.expect("teardown");
    bus.teardown_retaining(&team, "uid-2", Duration::from_secs(60)).await.expect("a second teardown changes nothing");
    let newest = bus.transcript(&team, None, 100).await.expect("read").expect("kept");
    assert_eq!(newest.uid, "uid-2");
    let lines: Vec<(&str, &str)> = newest.messages.iter().map(|m| (m.to.as_str(), m.body.as_str())).collect();
    assert_eq!(lines, [("*", "second life")], "a broadcast is one entry to *");
    let older = bus.transcript(&team, Some("uid-1"), 100).await.expect("read").expect("still kept");
    assert_eq!(older.messages.len(), kept.messages.len());

    // A retention of zero keeps nothing; a plain teardown neither.
    let other = unique_team();
    sync(&bus, &other).await;
    bus.send(&other, msg("lead", "dev", "gone".into())).await.expect("send");
    bus.teardown_retaining(&other, "uid-3", Duration::ZERO).await.expect("teardown");
    assert_eq!(bus.transcript(&other, None, 100).await.expect("read"), None);
    let mut keys = redis::cmd("KEYS");
    keys.arg(format!("team-operator:{{{}/{}}}:*", other.namespace, other.team));
    assert_eq!(raw_redis::<Vec<String>>(&keys).await, Vec::<String>::new(), "no key of the team is left");
    let base = format!("team-operator:{{{}/{}}}:", team.namespace, team.team);
    for kept in ["transcript:uid-1", "transcript:uid-2", "transcripts"] {
        raw_redis::<i64>(redis::cmd("DEL").arg(format!("{base}{kept}"))).await;
    }
}

/// `get messages` of `team` as `person`, optionally of the Team with `uid`.
async fn transcript(gw: &Gateway, person: &str, ns: &str, team: &str, uid: Option<&str>) -> (u16, Value) {
    call(&gw.url, Some(person), "get", json!({ "kind": "messages", "namespace": ns, "team": team, "uid": uid })).await
}

#[tokio::test]
async fn a_disbanded_teams_messages_stay_readable_for_its_retention_and_a_new_team_starts_clean() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "transcript").await;
    let _operator = Operator::start(&ns.name, 5);
    let gw = start_gateway(&s).await;
    let person = user_token(&s, &ns.name, "person").await;
    grant(&s, &ns.name, "person", &["teams", "teams/messages"], &["create", "get", "list"]).await;
    let signed = format!("system:serviceaccount:{}:person", ns.name);
    let teams = ns.api::<Team>();

    // A team with the default retention: a person writes to the lead, then deletes the team.
    teams.create(&PostParams::default(), &team("talk", 2)).await.expect("create team");
    let lead = lead_name(&ns, "talk").await;
    let send = json!({ "namespace": ns.name, "team": "talk", "to": "lead", "body": "first words" });
    eventually_ok(|| call(&gw.url, Some(&person), "send_message", send.clone())).await;
    let first_uid = teams.get("talk").await.expect("team").uid().expect("uid");
    teams.delete("talk", &DeleteParams::background()).await.expect("delete team");
    wait_deleted(&teams, "talk", Some(&first_uid), TIMEOUT, "the team to disband and go").await;

    let read = ok(transcript(&gw, &person, &ns.name, "talk", None).await);
    assert_eq!(read["transcript"]["uid"], first_uid.as_str(), "{read}");
    let messages = read["messages"].as_array().expect("messages");
    let words = messages.iter().find(|m| m["body"] == "first words").unwrap_or_else(|| panic!("the message is kept: {read}"));
    assert_eq!((words["from"].as_str(), words["to"].as_str()), (Some(format!("user:{signed}").as_str()), Some(lead.as_str())));
    assert_eq!(words["sent_by"], signed.as_str(), "the authenticated sender is recorded: {read}");
    assert!(
        messages.iter().any(|m| m["kind"] == "system" && m["body"].as_str().is_some_and(|b| b.starts_with("[TEAM DISBANDED]"))),
        "the disband notice is part of it: {read}"
    );

    // What a person types: teamctl names the transcript and prints its messages.
    // Async: the gateway answering it is served by this test's runtime.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_teamctl"))
        .args(["--gateway", &gw.url, "--token", &person, "-n", &ns.name, "--team", "talk", "-o", "wide", "get", "messages"])
        .output()
        .await
        .expect("teamctl");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "teamctl get messages: {}: {printed}{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains(&format!("transcript of team talk (uid {first_uid})")), "{printed}");
    assert!(printed.contains(&format!("(by {signed}) -> {lead}: first words")), "{printed}");

    // The same name again, with a short retention: nothing of the first team in it.
    let mut again = team("talk", 2);
    again.spec.retention = Some("8s".into());
    teams.create(&PostParams::default(), &again).await.expect("re-create team");
    lead_name(&ns, "talk").await;
    let live = ok(transcript(&gw, &person, &ns.name, "talk", None).await);
    assert_eq!(live["messages"], json!([]), "a re-created team starts clean: {live}");
    let send = json!({ "namespace": ns.name, "team": "talk", "to": "lead", "body": "second life" });
    ok(call(&gw.url, Some(&person), "send_message", send).await);
    let second_uid = teams.get("talk").await.expect("team").uid().expect("uid");
    teams.delete("talk", &DeleteParams::background()).await.expect("delete team");
    wait_deleted(&teams, "talk", Some(&second_uid), TIMEOUT, "the re-created team to disband and go").await;
    let bodies = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["kind"] == "message")
            .filter_map(|m| m["body"].as_str().map(str::to_owned))
            .collect()
    };

    // Until it expires the newest is the second team's; the first is still there by its uid.
    let newest = ok(transcript(&gw, &person, &ns.name, "talk", None).await);
    assert_eq!((newest["transcript"]["uid"].as_str(), bodies(&newest)), (Some(second_uid.as_str()), vec!["second life".to_owned()]));
    wait_until(Duration::from_secs(30), "the short-lived transcript to expire", || async {
        transcript(&gw, &person, &ns.name, "talk", Some(&second_uid)).await.0 == 404
    })
    .await;
    let expired = transcript(&gw, &person, &ns.name, "talk", Some(&second_uid)).await;
    assert_error(&expired, 404, "not_found", "spec.retention");
    let first = ok(transcript(&gw, &person, &ns.name, "talk", None).await);
    assert_eq!((first["transcript"]["uid"].as_str(), bodies(&first)), (Some(first_uid.as_str()), vec!["first words".to_owned()]));

    // Without RBAC on teams/messages, nothing is read.
    let stranger = user_token(&s, &ns.name, "stranger").await;
    assert_error(&transcript(&gw, &stranger, &ns.name, "talk", None).await, 403, "forbidden", "teams/messages");
    ns.cleanup().await;
}
