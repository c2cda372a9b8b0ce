//! Fair share of the operator-wide cap on the stack: a big team queued first does not starve a
//! small one created after it, a higher-priority team's members go first, a Queued member's
//! status says which cap holds it, and `teamctl get members` shows each one's place in the queue.
//! Member pods run on kwok until the test ends them, one at a time, so every freed slot is one
//! turn whose winner the test reads.
#[path = "fixtures/gateway.rs"]
mod gateway_fixtures;
mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use futures::future;
use gateway_fixtures::{Gateway, grant, start_gateway_with, user_token};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;
use support::operator::Operator;
use support::teams::{member, team};
use support::*;
use team_operator::api::{Member, MemberPhase, Team};
use team_operator::controller::admission_status::{OPERATOR_CAP_REACHED, TEAM_CAP_REACHED};
use team_operator::gateway::GatewaySettings;

const LONG: Duration = Duration::from_secs(120);
/// The operator-wide cap of the test's operator.
const CAP: usize = 4;

fn admitted(m: &Member) -> bool {
    m.status.as_ref().is_some_and(|s| s.pod_name.is_some())
}

fn queued_named(m: &Member) -> bool {
    m.phase() == MemberPhase::Queued && m.agent_name().is_some() && !admitted(m)
}

fn reason(m: &Member) -> Option<&str> {
    m.status.as_ref()?.reason.as_deref()
}

async fn specialists(api: &Api<Member>) -> Vec<Member> {
    api.list(&ListParams::default()).await.expect("members").items.into_iter().filter(|m| !m.is_lead()).collect()
}

/// Creates `team` (with `priority`) and its `members`, none of which ends by itself.
async fn team_of(ns: &TestNamespace, name: &str, max_agents: i32, priority: i32, members: &[String]) {
    let mut t = team(name, max_agents);
    t.spec.priority = priority;
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    let api: Api<Member> = ns.api();
    let pp = PostParams::default();
    let objects: Vec<Member> = members.iter().map(|m| member(m, name, None)).collect();
    future::try_join_all(objects.iter().map(|m| api.create(&pp, m))).await.expect("members");
}

/// Waits until each of `names` is named and Queued, and returns them.
async fn all_queued(api: &Api<Member>, names: &[String]) -> Vec<Member> {
    future::join_all(names.iter().map(|n| wait_for(api, n, LONG, "named and Queued", queued_named))).await
}

/// The slots in admission order (member object names) and the members seen admitted.
struct Slots {
    api: Api<Member>,
    pods: Api<Pod>,
    order: VecDeque<String>,
    seen: BTreeSet<String>,
}

impl Slots {
    /// Ends the pod of the member that was admitted first of those that run, waits for the one
    /// member that takes its slot, and returns that member's team.
    async fn free_oldest(&mut self) -> String {
        let oldest = self.order.pop_front().expect("a member holds a slot");
        let m = self.api.get(&oldest).await.expect("member");
        let pod = m.status.and_then(|s| s.pod_name).expect("its pod");
        set_sim_exit(&self.pods, &pod, 0, None).await;
        wait_for(&self.api, &oldest, LONG, "Completed", |m| m.phase() == MemberPhase::Completed).await;
        let (api, seen) = (self.api.clone(), self.seen.clone());
        wait_until(LONG, "a member to take the freed slot", || {
            let (api, seen) = (api.clone(), seen.clone());
            async move { specialists(&api).await.iter().any(|m| admitted(m) && !seen.contains(&m.name_any())) }
        })
        .await;
        let new: Vec<Member> =
            specialists(&self.api).await.into_iter().filter(|m| admitted(m) && !self.seen.contains(&m.name_any())).collect();
        assert_eq!(new.len(), 1, "one slot freed, one member admitted: {:?}", new.iter().map(|m| m.name_any()).collect::<Vec<_>>());
        let (name, team) = (new[0].name_any(), new[0].spec.team.clone());
        self.seen.insert(name.clone());
        self.order.push_back(name);
        team
    }
}

/// `teamctl get members --team <team>`, as JSON (object name → queue_position) and as the table a
/// person reads (object name → POSITION column).
async fn positions(gw: &Gateway, token: &str, ns: &str, team: &str) -> (BTreeMap<String, Option<u64>>, BTreeMap<String, String>) {
    let run = |extra: &'static [&'static str]| async move {
        let mut args = vec!["--gateway", gw.url.as_str(), "--token", token, "-n", ns, "--team", team];
        args.extend(extra);
        args.extend(["get", "members"]);
        // Async: the gateway answering it is served by this test's runtime.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_teamctl")).args(&args).output().await.expect("teamctl");
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "teamctl {args:?}: {}: {printed}{}", out.status, String::from_utf8_lossy(&out.stderr));
        printed
    };
    let json: Value = serde_json::from_str(&run(&["-o", "json"]).await).expect("json");
    let by_json = json["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["role"] != "lead")
        .map(|m| (m["object"].as_str().unwrap_or_default().to_owned(), m["queue_position"].as_u64()))
        .collect();
    let table = run(&[]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} column: {table}"));
    let (position, object) = (col("POSITION"), col("OBJECT"));
    let by_table = lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.len() == header.len() && cells[2] != "lead")
        .map(|cells| (cells[object].to_owned(), cells[position].to_owned()))
        .collect();
    (by_json, by_table)
}

/// Sorted positions of a team's members, from the JSON of [`positions`].
fn places(by_json: &BTreeMap<String, Option<u64>>) -> Vec<Option<u64>> {
    let mut p: Vec<Option<u64>> = by_json.values().copied().collect();
    p.sort();
    p
}

/// Waits until `teamctl get members` shows each team's sorted places as `want` (the gateway's
/// caches follow the API within moments); fails naming what it last saw.
async fn wait_places(s: &Stack, gw: &Gateway, token: &str, ns: &str, want: &[(&str, Vec<Option<u64>>)]) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let mut got = Vec::new();
        for (team, _) in want {
            got.push((*team, places(&positions(gw, token, ns, team).await.0)));
        }
        if got.iter().zip(want).all(|((_, g), (_, w))| g == w) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for the places {want:?}; last seen {got:?}{}", crd_note(s).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A note for a failure message when the stack's Team CRD has lost `spec.priority` (the stack is
/// shared; a checkout without the field applied its CRDs meanwhile, and the API server prunes the
/// field from what it serves).
async fn crd_note(s: &Stack) -> String {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(s.client.clone());
    let crd = crds.get("teams.agentteams.dev").await.map(|c| serde_json::to_string(&c.spec).unwrap_or_default()).unwrap_or_default();
    if crd.contains("\"priority\"") {
        String::new()
    } else {
        "\n(the stack's Team CRD has no spec.priority now: another checkout's suite applied its CRDs)".into()
    }
}

/// Creates `team` with `priority`, first making sure the stack's Team CRD is this branch's (the
/// stack is shared: another checkout's suite may have applied CRDs without `spec.priority`, which
/// the API server would then prune).
async fn prioritised_team_of(s: &Stack, ns: &TestNamespace, name: &str, max_agents: i32, priority: i32, members: &[String]) {
    install_crds(&s.client).await;
    team_of(ns, name, max_agents, priority, members).await;
    let stored = ns.api::<Team>().get(name).await.expect("team");
    assert_eq!(stored.spec.priority, priority, "the stored Team keeps spec.priority (is the Team CRD this branch's?)");
}

#[tokio::test]
async fn a_big_team_queued_first_does_not_starve_a_small_one_and_priority_goes_first() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "fair").await;
    let _op = Operator::start(ns.name(), CAP as u32);
    let gw = start_gateway_with(&s, GatewaySettings { namespace: Some(ns.name().to_owned()), ..Default::default() }).await;
    let person = user_token(&s, ns.name(), "person").await;
    grant(&s, ns.name(), "person", &["teams", "members"], &["get", "list"]).await;
    let api: Api<Member> = ns.api();

    // A team of 200 fills the operator-wide cap of 4; the other 196 queue, held by that cap.
    let big: Vec<String> = (0..200).map(|i| format!("b{i:03}")).collect();
    team_of(&ns, "big", 200, 0, &big).await;
    wait_until(LONG, "4 of the big team admitted, 196 named and Queued", || {
        let api = api.clone();
        async move {
            let all = specialists(&api).await;
            all.iter().filter(|m| admitted(m)).count() == CAP && all.iter().filter(|m| queued_named(m)).count() == 200 - CAP
        }
    })
    .await;
    let all = specialists(&api).await;
    let held: Vec<(String, Option<&str>)> =
        all.iter().filter(|m| queued_named(m) && reason(m) != Some(OPERATOR_CAP_REACHED)).map(|m| (m.name_any(), reason(m))).collect();
    assert!(held.is_empty(), "every queued member of the big team is held by the operator-wide cap: {held:?}");
    let first: Vec<String> = all.iter().filter(|m| admitted(m)).map(|m| m.name_any()).collect();
    let mut slots = Slots { api: api.clone(), pods: ns.api(), order: first.iter().cloned().collect(), seen: first.into_iter().collect() };

    // A team of 5 created after it queues behind the same cap...
    let small: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
    team_of(&ns, "small", 5, 0, &small).await;
    for m in all_queued(&api, &small).await {
        assert_eq!(reason(&m), Some(OPERATOR_CAP_REACHED), "{}", describe(&m));
        let message = m.status.as_ref().and_then(|s| s.message.as_deref()).unwrap_or_default();
        assert!(message.contains("operator-wide cap of 4"), "{message}");
    }
    // ... and `teamctl get members` places it first: it holds no slot, the big team holds 4, so
    // the small team takes turns 1-4, the tie at 4 each goes to the big team's older member (5),
    // the small team's fifth is 6, and the big team's other 195 come after (7 to 201).
    let mut big_places = vec![None; CAP];
    big_places.push(Some(5));
    big_places.extend((7..=201).map(Some));
    let small_places = vec![Some(1), Some(2), Some(3), Some(4), Some(6)];
    wait_places(&s, &gw, &person, ns.name(), &[("small", small_places), ("big", big_places)]).await;
    let (small_json, small_table) = positions(&gw, &person, ns.name(), "small").await;
    for (object, place) in &small_json {
        assert_eq!(small_table.get(object), Some(&place.map_or("-".to_owned(), |p| p.to_string())), "{small_table:?}");
    }

    // Each slot freed (the oldest running member ends) is one turn: the small team's five are
    // all admitted within the next 9 slots (first come first served: after all 196), taking
    // turns with the big team by the slots each holds.
    let mut turns = Vec::new();
    while small.iter().any(|m| !slots.seen.contains(m)) {
        assert!(turns.len() < 9, "the small team still waits after {} freed slots: {turns:?}", turns.len());
        turns.push(slots.free_oldest().await);
    }
    assert_eq!(turns, ["small", "small", "big", "big", "small", "small", "big", "big", "small"]);

    // A team of priority 10 (maxAgents 2) created after a team of priority 0 goes first, even
    // once it holds more slots than that team.
    let later = vec!["l0".to_owned()];
    team_of(&ns, "later", 5, 0, &later).await;
    let urgent: Vec<String> = (0..3).map(|i| format!("u{i}")).collect();
    prioritised_team_of(&s, &ns, "urgent", 2, 10, &urgent).await;
    for m in all_queued(&api, &urgent).await {
        assert_eq!(reason(&m), Some(OPERATOR_CAP_REACHED), "the team had room when it queued: {}", describe(&m));
    }
    all_queued(&api, &later).await;
    // Urgent takes places 1 and 2 (its maxAgents), `later` (holding none) 3.
    wait_places(&s, &gw, &person, ns.name(), &[("urgent", vec![None, Some(1), Some(2)]), ("later", vec![Some(3)])]).await;
    let note = crd_note(&s).await;
    assert_eq!(slots.free_oldest().await, "urgent", "priority 10 takes the next slot{note}");
    let note = crd_note(&s).await;
    assert_eq!(slots.free_oldest().await, "urgent", "priority 10 holds 1 and still goes before `later`, which holds none{note}");
    let waiting: Vec<String> = urgent.iter().filter(|u| !slots.seen.contains(*u)).cloned().collect();
    assert_eq!(waiting.len(), 1, "the urgent team's maxAgents of 2 holds its third");
    let third = api.get(&waiting[0]).await.expect("member");
    assert!(queued_named(&third) && reason(&third) == Some(OPERATOR_CAP_REACHED), "its reason is written once: {}", describe(&third));
    let (u, table) = positions(&gw, &person, ns.name(), "urgent").await;
    assert_eq!((u.get(&waiting[0]), table.get(&waiting[0]).map(String::as_str)), (Some(&None), Some("-")), "{table:?}");

    // A member that queues while its team holds its maxAgents says so.
    let late = vec!["u3".to_owned()];
    let api_members: Api<Member> = ns.api();
    api_members.create(&PostParams::default(), &member("u3", "urgent", None)).await.expect("u3");
    let u3 = all_queued(&api, &late).await.remove(0);
    assert_eq!(reason(&u3), Some(TEAM_CAP_REACHED), "{}", describe(&u3));
    let message = u3.status.as_ref().and_then(|s| s.message.as_deref()).unwrap_or_default();
    assert_eq!(message, "waiting for a slot: team urgent holds its maxAgents of 2");
    // As a person reads it with kubectl: the Reason column of `kubectl get members`.
    let listed = support::identity::ok("kubectl", &["-n", ns.name(), "get", "members", "u3", &waiting[0], "--no-headers"], None);
    let reasons: Vec<&str> = listed.lines().filter_map(|l| l.split_whitespace().find(|c| c.ends_with("CapReached"))).collect();
    assert_eq!(reasons, [TEAM_CAP_REACHED, OPERATOR_CAP_REACHED], "{listed}");
    ns.cleanup().await;
}
