//! The gateway's JSON API end to end on the local stack: real TokenReview and
//! SubjectAccessReview, real projected tokens bound to real Pods, real Redis.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::time::Duration;

use fixture::*;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::*;
use team_operator::api::{Member, MemberPhase, MemberRole, Team, TeamTask, labels};
use team_operator::bus::RosterState;
use team_operator::controller::pod::GATEWAY_AUDIENCE;
use team_operator::gateway::args::{self, *};

#[tokio::test]
async fn members_message_each_other_and_broadcast() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "gw-messages").await;
    let gw = start_gateway(&s).await;
    let team = team_with_members(&s, &ns, &gw.bus, "alpha", &["general", "general-2"]).await;
    let (a, b) = (team.token("general"), team.token("general-2"));

    // A sends to B; B's wait returns it, from A.
    let sent = ok(call(&gw.url, Some(a), "send_message", json!({ "to": "general-2", "body": "hello B" })).await);
    assert_eq!(sent["delivered"][0]["to"], "general-2", "{sent}");
    let got = ok(call(&gw.url, Some(b), "wait_messages", json!({ "timeout_seconds": 5 })).await);
    let msgs = got["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 1, "{got}");
    assert_eq!((msgs[0]["from"].as_str(), msgs[0]["body"].as_str()), (Some("general"), Some("hello B")));

    // Unacked, it comes back; acked, the next wait times out empty.
    let again = ok(call(&gw.url, Some(b), "wait_messages", json!({ "timeout_seconds": 1 })).await);
    assert_eq!(again["messages"][0]["body"], "hello B", "{again}");
    let stream_id = again["messages"][0]["stream_id"].clone();
    let after = ok(call(&gw.url, Some(b), "wait_messages", json!({ "ack": [stream_id], "timeout_seconds": 1 })).await);
    assert_eq!(after["acked"], 1, "{after}");
    assert_eq!(after["messages"], json!([]), "{after}");
    assert_eq!(after["timed_out"], true);

    // A broadcast from the lead reaches every other member.
    let sent = ok(call(&gw.url, Some(team.token("lead")), "send_message", json!({ "to": "*", "body": "all hands" })).await);
    let mut to: Vec<&str> = sent["delivered"].as_array().unwrap().iter().filter_map(|d| d["to"].as_str()).collect();
    to.sort();
    assert_eq!(to, ["general", "general-2"]);
    let mut handled = Vec::new();
    for member in ["general", "general-2"] {
        let got = ok(call(&gw.url, Some(team.token(member)), "wait_messages", json!({ "timeout_seconds": 5 })).await);
        assert_eq!(got["messages"][0]["body"], "all hands", "{member}: {got}");
        assert_eq!(got["messages"][0]["from"], "lead");
        handled.push(got["messages"][0]["stream_id"].clone());
    }

    // A wait blocks until a message arrives; while it blocks, its member has the condition
    // Waiting (from which the controller shows Idle), and Waiting=False once it returns. The
    // gateway writes that condition only, never the phase.
    let members: Api<Member> = ns.api();
    let waiting_is = |want: &'static str| {
        move |m: &Member| {
            m.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Waiting")).is_some_and(|c| c.status == want)
        }
    };
    let lead_member = format!("{}-lead", team.name);
    let phase_before = members.get(&lead_member).await.unwrap().phase();
    let waiter = spawn_wait(&gw.url, team.token("lead"), json!([]));
    wait_for(&members, &lead_member, Duration::from_secs(10), "the waiting lead to read Waiting", waiting_is("True")).await;
    let (_, metrics) = get(&gw.url, None, "/metrics").await;
    assert!(
        metrics["raw"].as_str().unwrap_or_default().lines().any(|l| l == "team_operator_gateway_waits 1"),
        "one wait in progress: {metrics}"
    );
    ok(call(&gw.url, Some(b), "send_message", json!({ "to": "lead", "body": "done" })).await);
    let got = ok(waiter.await.unwrap());
    assert_eq!(got["messages"][0]["body"], "done", "{got}");
    let lead = members.get(&lead_member).await.unwrap();
    assert!(waiting_is("False")(&lead), "cleared before the wait answered: {:?}", lead.status);
    assert_eq!(lead.phase(), phase_before, "the gateway never writes the phase");
    let managers: Vec<String> = lead
        .managed_fields()
        .iter()
        .filter(|f| {
            f.fields_v1
                .as_ref()
                .and_then(|v| v.0.pointer("/f:status/f:conditions"))
                .is_some_and(|c| c.get(r#"k:{"type":"Waiting"}"#).is_some())
        })
        .filter_map(|f| f.manager.clone())
        .collect();
    assert_eq!(managers, ["team-operator-gateway-wait"], "{:?}", lead.managed_fields());

    // A phase the controller moved on while the member waited is left alone. (The wait hands back
    // the broadcast, else its redelivery would return at once.)
    let waiter = spawn_wait(&gw.url, a, json!([handled[0]]));
    let general = format!("{}-general", team.name);
    wait_for(&members, &general, Duration::from_secs(10), "the waiting general to read Waiting", waiting_is("True")).await;
    members
        .patch_status(&general, &Default::default(), &kube::api::Patch::Merge(json!({ "status": { "phase": "Completed" } })))
        .await
        .unwrap();
    let got = ok(waiter.await.unwrap());
    assert_eq!((got["acked"].as_u64(), got["timed_out"].as_bool()), (Some(1), Some(true)), "{got}");
    assert_eq!(members.get(&general).await.unwrap().phase(), MemberPhase::Completed);

    // A finished member acts no more; unknown recipients are an error, not a silent drop.
    let answer = call(&gw.url, Some(a), "send_message", json!({ "to": "nobody", "body": "x" })).await;
    assert_error(&answer, 400, "invalid_argument", "`team` is required");
    let answer = call(&gw.url, Some(b), "send_message", json!({ "to": "nobody", "body": "x" })).await;
    assert_error(&answer, 404, "unknown_recipient", "nobody");

    // The metrics count the calls.
    let (_, metrics) = get(&gw.url, None, "/metrics").await;
    let text = metrics["raw"].as_str().unwrap_or_default();
    assert!(text.contains("team_operator_gateway_requests_total{tool=\"send_message\",code=\"ok\"}"), "{text}");
    assert!(text.contains("team_operator_messages_sent_total"), "{text}");

    gw.bus.teardown(&team.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}

/// A member admitted and running whose name the operator has not put on the roster yet (its
/// agent started first) is told to retry, not that it is no member: 503 `unavailable`, which
/// clients retry, until the roster has it. Others see the roster as it is.
#[tokio::test]
async fn a_member_not_on_the_roster_yet_is_told_to_retry() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "gw-roster-lag").await;
    let gw = start_gateway(&s).await;
    let team = team_with_members_off_roster(&s, &ns, &gw.bus, "alpha", &["general", "late"], &["late"]).await;
    let late = team.token("late");
    let says = "late is not on team";
    assert_error(&call(&gw.url, Some(late), "wait_messages", json!({ "timeout_seconds": 1 })).await, 503, "unavailable", says);
    assert_error(&call(&gw.url, Some(late), "send_message", json!({ "to": "general", "body": "hi" })).await, 503, "unavailable", says);
    // To the others, a name not on the roster is no member (nothing is delivered to it).
    assert_error(
        &call(&gw.url, Some(team.token("general")), "send_message", json!({ "to": "late", "body": "hi" })).await,
        404,
        "unknown_recipient",
        "recipient late is not a member",
    );

    gw.bus.update_roster(&team.key(&ns.name), &[("late".to_owned(), RosterState::Active)]).await.expect("roster");
    ok(call(&gw.url, Some(late), "send_message", json!({ "to": "general", "body": "on the roster now" })).await);
    let got = ok(call(&gw.url, Some(team.token("general")), "wait_messages", json!({ "timeout_seconds": 5 })).await);
    assert_eq!(
        (got["messages"][0]["from"].as_str(), got["messages"][0]["body"].as_str()),
        (Some("late"), Some("on the roster now")),
        "{got}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn tasks_and_memory() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "gw-tasks").await;
    let gw = start_gateway(&s).await;
    let team = team_with_members(&s, &ns, &gw.bus, "beta", &["general"]).await;
    let (lead, a) = (team.token("lead"), team.token("general"));

    let first = ok(call(&gw.url, Some(lead), "team_task", json!({ "action": "create", "subject": "design", "owner": "general" })).await);
    let first_name = first["name"].as_str().unwrap().to_owned();
    assert!(first_name.starts_with("beta-task-"), "{first}");
    assert_eq!(first["state"], "pending");
    let second =
        ok(call(&gw.url, Some(lead), "team_task", json!({ "action": "create", "subject": "build", "depends_on": [first_name] })).await);
    let second_name = second["name"].as_str().unwrap().to_owned();

    // A task with an open dependency cannot start.
    let answer = call(&gw.url, Some(a), "team_task", json!({ "action": "update", "name": second_name, "state": "in_progress" })).await;
    assert_error(&answer, 409, "conflict", "blocked");

    // The owner moves the first one through.
    let t = ok(call(&gw.url, Some(a), "team_task", json!({ "action": "update", "name": first_name, "state": "in_progress" })).await);
    assert_eq!(t["state"], "in_progress", "{t}");
    let t = ok(call(
        &gw.url,
        Some(a),
        "team_task",
        json!({ "action": "update", "name": first_name, "state": "completed", "result": "done: v1" }),
    )
    .await);
    assert_eq!((t["state"].as_str(), t["result"].as_str()), (Some("completed"), Some("done: v1")), "{t}");
    let answer = call(&gw.url, Some(a), "team_task", json!({ "action": "update", "name": first_name, "state": "pending" })).await;
    assert_error(&answer, 409, "conflict", "final");

    // Now the second can start.
    let t = ok(call(&gw.url, Some(a), "team_task", json!({ "action": "update", "name": second_name, "state": "in_progress" })).await);
    assert_eq!(t["state"], "in_progress");
    let stored: TeamTask = ns.api::<TeamTask>().get(&second_name).await.unwrap();
    assert!(stored.status.as_ref().and_then(|s| s.started_at.as_ref()).is_some());

    let list = ok(call(&gw.url, Some(a), "team_task", json!({ "action": "list", "state": "completed" })).await);
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1, "{list}");
    let got = ok(get(&gw.url, Some(a), &format!("/v1/teams/beta/tasks/{first_name}")).await);
    assert_eq!(got["result"], "done: v1");

    // Memory: own agent type only.
    let w = ok(call(&gw.url, Some(a), "agent_memory", json!({ "action": "write", "text": "use cargo nextest" })).await);
    assert_eq!(w["stored_bytes"], 17);
    ok(call(&gw.url, Some(a), "agent_memory", json!({ "action": "append", "text": "\nkeep PRs small" })).await);
    let r = ok(call(&gw.url, Some(a), "agent_memory", json!({ "action": "read" })).await);
    assert_eq!(r["text"], "use cargo nextest\nkeep PRs small", "{r}");
    assert_eq!((r["agent"].as_str(), r["project"].as_str()), (Some("general"), Some("beta")));
    let answer = call(&gw.url, Some(a), "agent_memory", json!({ "action": "read", "agent": "lead" })).await;
    assert_error(&answer, 403, "forbidden", "own agent type");
    let r = ok(call(&gw.url, Some(lead), "agent_memory", json!({ "action": "read" })).await);
    assert_eq!(r["text"], Value::Null, "the lead's agent type has its own memory: {r}");

    // get members shows the team.
    let members = ok(get(&gw.url, Some(a), "/v1/teams/beta/members").await);
    assert_eq!(members["members"].as_array().unwrap().len(), 2, "{members}");

    gw.bus.teardown(&team.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}

#[tokio::test]
async fn authorization() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "gw-auth").await;
    let gw = start_gateway(&s).await;
    let x = team_with_members(&s, &ns, &gw.bus, "team-x", &["general"]).await;
    let y = team_with_members(&s, &ns, &gw.bus, "team-y", &["general"]).await;
    let member_x = x.token("general");

    // No token, a forged token, a token for another audience.
    assert_error(&call(&gw.url, None, "send_message", json!({ "to": "lead", "body": "x" })).await, 401, "unauthenticated", "Authorization");
    // A forged signature: the real one reversed (changing only its last character may not change
    // the decoded bytes, since base64's last character carries padding bits).
    let (signed, signature) = member_x.rsplit_once('.').expect("a JWT");
    let forged = format!("{signed}.{}", signature.chars().rev().collect::<String>());
    assert_ne!(forged, member_x);
    assert_error(&call(&gw.url, Some(&forged), "get", json!({ "kind": "teams" })).await, 401, "unauthenticated", "not accepted");
    assert_error(&call(&gw.url, Some("garbage"), "get", json!({ "kind": "teams" })).await, 401, "unauthenticated", "not accepted");
    let (s_mcp, _) = raw(&gw.url, None, "/mcp", br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec()).await;
    assert_eq!(s_mcp, 401);

    // A member of team X acting in team Y.
    for (tool, args) in [
        ("send_message", json!({ "team": "team-y", "to": "lead", "body": "hi" })),
        ("wait_messages", json!({ "team": "team-y", "timeout_seconds": 0 })),
        ("team_task", json!({ "team": "team-y", "action": "list" })),
        ("agent_memory", json!({ "team": "team-y", "action": "read" })),
        ("get", json!({ "team": "team-y", "kind": "members" })),
        ("team_delete", json!({ "team": "team-y" })),
    ] {
        assert_error(&call(&gw.url, Some(member_x), tool, args).await, 403, "forbidden", "team-y");
    }
    assert_error(&get(&gw.url, Some(member_x), "/v1/teams/team-y/tasks").await, 403, "forbidden", "team-y");
    // ... or in another namespace, or as another member.
    let answer = call(&gw.url, Some(member_x), "send_message", json!({ "namespace": "default", "to": "lead", "body": "x" })).await;
    assert_error(&answer, 403, "forbidden", "own namespace");
    let answer = call(&gw.url, Some(member_x), "send_message", json!({ "member": "lead", "to": "general", "body": "x" })).await;
    assert_error(&answer, 403, "forbidden", "only as itself");

    // Lead-only tools.
    assert_error(&call(&gw.url, Some(member_x), "team_delete", json!({})).await, 403, "forbidden", "lead");
    assert_error(
        &call(&gw.url, Some(member_x), "spawn_member", json!({ "agent": "general", "prompt": "p" })).await,
        403,
        "forbidden",
        "lead",
    );

    // The lead spawns a member into its own team.
    let spawned = ok(call(&gw.url, Some(x.token("lead")), "spawn_member", json!({ "agent": "general", "prompt": "review" })).await);
    let object = spawned["object"].as_str().unwrap().to_owned();
    assert!(object.starts_with("team-x-general-"), "{spawned}");
    let m: Member = ns.api::<Member>().get(&object).await.unwrap();
    assert_eq!((m.spec.team.as_str(), m.spec.prompt.as_str()), ("team-x", "review"));
    assert_error(
        &call(&gw.url, Some(x.token("lead")), "spawn_member", json!({ "agent": "nope", "prompt": "p" })).await,
        400,
        "invalid_argument",
        "no agent type",
    );

    // A kube user: refused without RBAC, allowed with it, and acting as the lead.
    let person = user_token(&s, &ns.name, "person").await;
    let args = json!({ "namespace": ns.name, "team": "team-y", "agent": "general", "prompt": "from a person" });
    assert_error(&call(&gw.url, Some(&person), "spawn_member", args.clone()).await, 403, "forbidden", "create members");
    grant(&s, &ns.name, "person", &["members", "teams/messages", "teams"], &["create", "get", "list"]).await;
    // RBAC is evaluated per call: no cache to wait for, but the RoleBinding may take a moment.
    let spawned = eventually_ok(|| call(&gw.url, Some(&person), "spawn_member", args.clone())).await;
    assert_eq!(spawned["team"], "team-y");
    ok(call(
        &gw.url,
        Some(&person),
        "send_message",
        json!({ "namespace": ns.name, "team": "team-y", "to": "general", "body": "from a person" }),
    )
    .await);
    // A person's message is signed with the kube user; `member` cannot sign it otherwise.
    let signed = format!("user:system:serviceaccount:{}:person", ns.name);
    assert_error(
        &call(
            &gw.url,
            Some(&person),
            "send_message",
            json!({ "namespace": ns.name, "team": "team-y", "member": "lead", "to": "general", "body": "x" }),
        )
        .await,
        400,
        "invalid_argument",
        "user:",
    );
    // A person's wait on a member's inbox only looks: the member still gets the message.
    let peek = json!({ "namespace": ns.name, "team": "team-y", "member": "general", "timeout_seconds": 1 });
    let looked = ok(call(&gw.url, Some(&person), "wait_messages", peek.clone()).await);
    assert_eq!((looked["messages"][0]["from"].as_str(), looked["peek"].as_bool()), (Some(signed.as_str()), Some(true)), "{looked}");
    let again = ok(call(&gw.url, Some(&person), "wait_messages", peek.clone()).await);
    assert_eq!(again["messages"].as_array().map(Vec::len), Some(1), "looking twice sees it twice: {again}");
    assert_error(
        &call(
            &gw.url,
            Some(&person),
            "wait_messages",
            json!({ "namespace": ns.name, "team": "team-y", "member": "general", "ack": ["1-0"] }),
        )
        .await,
        400,
        "invalid_argument",
        "acks are general's own",
    );
    let got = ok(call(&gw.url, Some(y.token("general")), "wait_messages", json!({ "timeout_seconds": 5 })).await);
    assert_eq!((got["messages"][0]["from"].as_str(), got["messages"][0]["body"].as_str()), (Some(signed.as_str()), Some("from a person")));
    // Handled and acked by the member: the person's look now finds nothing, and waits for the next.
    let stream_id = got["messages"][0]["stream_id"].as_str().unwrap().to_owned();
    ok(call(&gw.url, Some(y.token("general")), "wait_messages", json!({ "ack": [stream_id], "receive": false })).await);
    let quiet = ok(call(&gw.url, Some(&person), "wait_messages", peek.clone()).await);
    assert_eq!((quiet["messages"].as_array().map(Vec::len), quiet["timed_out"].as_bool()), (Some(0), Some(true)), "{quiet}");
    // `lead` reaches the team's lead whatever its name.
    ok(call(&gw.url, Some(y.token("general")), "send_message", json!({ "to": "lead", "body": "to whoever leads" })).await);
    let lead_got = ok(call(&gw.url, Some(y.token("lead")), "wait_messages", json!({ "timeout_seconds": 5 })).await);
    assert_eq!(
        (lead_got["messages"][0]["from"].as_str(), lead_got["messages"][0]["body"].as_str()),
        (Some("general"), Some("to whoever leads"))
    );
    assert_error(
        &call(&gw.url, Some(&person), "team_delete", json!({ "namespace": ns.name, "team": "team-y" })).await,
        403,
        "forbidden",
        "delete teams",
    );
    assert_error(&call(&gw.url, Some(&person), "get", json!({ "kind": "teams" })).await, 400, "invalid_argument", "namespace");

    // A pod token for another audience is a kube credential of the pod's ServiceAccount, which
    // RBAC does not allow anything here.
    let pod = &x.pods["general"];
    let other = fixture::pod_token(&s, &ns.name, pod, "https://kubernetes.default.svc").await;
    let answer = call(&gw.url, Some(&other), "team_task", json!({ "namespace": ns.name, "team": "team-x", "action": "list" })).await;
    assert!(matches!(answer.0, 401 | 403), "{answer:?}");
    let _ = GATEWAY_AUDIENCE;

    // The lead deletes its team.
    ok(call(&gw.url, Some(x.token("lead")), "team_delete", json!({})).await);

    gw.bus.teardown(&x.key(&ns.name)).await.unwrap();
    gw.bus.teardown(&y.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}

/// Identity comes from ownership (issue 11): a pod is a member only through its controller
/// reference to a Member that names it back; labels, a forged owner reference or a finished
/// Member give nothing. A pod of no team is its ServiceAccount, under RBAC.
#[tokio::test]
async fn labels_and_forged_owners_make_no_member() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "gw-forge").await;
    let gw = start_gateway(&s).await;
    let fz = team_with_members(&s, &ns, &gw.bus, "fz", &["general"]).await;
    ok(call(&gw.url, Some(fz.token("general")), "send_message", json!({ "to": "lead", "body": "for the lead only" })).await);
    let pods: Api<Pod> = ns.api();
    let lead_member: Member = ns.api::<Member>().get("fz-lead").await.expect("lead member");

    // A pod labelled exactly as the operator labels the lead's pod, owned by nobody.
    let labelled = kwok_pod("fz-impostor")
        .label(labels::TEAM, "fz")
        .label(labels::MEMBER, "lead")
        .label(labels::AGENT, "lead")
        .label(labels::ROLE, MemberRole::Lead.as_str())
        .label(labels::MANAGED_BY, "team-operator")
        .service_account("default")
        .build();
    // A pod claiming the lead's Member as its controller, which does not name it back.
    let claiming = kwok_pod("fz-claimer").owner(support::owner_ref(&lead_member)).service_account("default").build();
    for pod in [labelled, claiming] {
        let pod = pods.create(&PostParams::default(), &pod).await.expect("create pod");
        let token = fixture::pod_token(&s, &ns.name, &pod, GATEWAY_AUDIENCE).await;
        let who = pod.name_any();
        // Not a member of fz: it acts as ServiceAccount default, which RBAC allows nothing.
        let wait = call(&gw.url, Some(&token), "wait_messages", json!({ "team": "fz", "timeout_seconds": 0 })).await;
        assert_error(&wait, 403, "forbidden", "get teams/messages");
        let delete = call(&gw.url, Some(&token), "team_delete", json!({ "team": "fz" })).await;
        assert_error(&delete, 403, "forbidden", "delete teams");
        let create =
            call(&gw.url, Some(&token), "team_create", json!({ "name": format!("{who}-own"), "agents": [{ "name": "a", "image": "x" }] }))
                .await;
        assert_error(&create, 403, "forbidden", "create teams");
    }
    // The lead's message is still there, for the lead.
    let got = ok(call(&gw.url, Some(fz.token("lead")), "wait_messages", json!({ "timeout_seconds": 5 })).await);
    assert_eq!(got["messages"][0]["body"], "for the lead only");
    assert!(ns.api::<Team>().get("fz").await.is_ok(), "the team still exists");

    // A member that has ended is no member any more, at once (not after the identity cache's 30 s).
    let general = fz.token("general").to_owned();
    ok(call(&gw.url, Some(&general), "team_task", json!({ "action": "list" })).await);
    ns.api::<Member>()
        .patch_status("fz-general", &PatchParams::default(), &Patch::Merge(&json!({ "status": { "phase": "Completed" } })))
        .await
        .expect("complete the member");
    // No member now: a pod of no team that names no team. The gateway's Member watch follows the
    // status write within moments.
    wait_until(Duration::from_secs(10), "the finished member to be refused as a member", || async {
        let answer = call(&gw.url, Some(&general), "team_task", json!({ "action": "list" })).await;
        answer.0 == 400 && answer.1.to_string().contains("`team` is required")
    })
    .await;

    gw.bus.teardown(&fz.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}

/// team_create from a member: refused unless its team allows sub-teams; a sub-team takes the
/// parent's agent types and memory project, and is owned by the parent and the calling pod.
#[tokio::test]
async fn members_create_sub_teams_only_where_allowed() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "gw-sub").await;
    let gw = start_gateway(&s).await;
    let p = team_with_members(&s, &ns, &gw.bus, "parent", &["general"]).await;
    let member = p.token("general");
    let hostile = json!({ "name": "escape", "agents": [{ "name": "root", "template": { "spec": { "hostPID": true, "containers": [{ "name": "x", "image": "x" }] } } }] });
    assert_error(&call(&gw.url, Some(member), "team_create", hostile.clone()).await, 403, "forbidden", "spec.allowSubTeams");
    assert_error(&call(&gw.url, Some(member), "team_create", json!({ "name": "child" })).await, 403, "forbidden", "spec.allowSubTeams");

    let teams: Api<Team> = ns.api();
    allow_sub_teams(&ns, "parent").await;
    assert_error(&call(&gw.url, Some(member), "team_create", hostile.clone()).await, 400, "invalid_argument", "agents[0]");
    let other_project = json!({ "name": "child", "memory_project": "elsewhere" });
    assert_error(&call(&gw.url, Some(member), "team_create", other_project).await, 400, "invalid_argument", "memory_project");
    let created = ok(call(&gw.url, Some(member), "team_create", json!({ "name": "child" })).await);
    assert_eq!(created["memory_project"], "parent");
    let child = teams.get("child").await.expect("child team");
    let parent = teams.get("parent").await.expect("parent team");
    assert_eq!(child.spec.agents, parent.spec.agents, "the parent's agent types");
    assert_eq!(child.parent_uid(), parent.metadata.uid.as_deref(), "owned by the parent");
    assert_eq!(child.spec.lead.pod_name.as_deref(), Some(p.pods["general"].name_any().as_str()));
    // The calling pod leads the sub-team (by uid).
    ok(call(&gw.url, Some(member), "team_task", json!({ "team": "child", "action": "list" })).await);

    gw.bus.teardown(&p.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}

/// `kubectl get team <name> -n <ns> -o yaml`: what a user reads.
async fn kubectl_yaml(ns: &str, team: &str) -> String {
    let cache = scratch_dir("gateway-kubectl-cache");
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .arg("--cache-dir")
        .arg(&cache)
        .args(["-n", ns, "get", "team", team, "-o", "yaml"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running kubectl (is the stack's PATH set? `eval \"$(hack/stack.sh env)\"`): {e}"));
    assert!(out.status.success(), "kubectl get team {team}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// team_create takes the Team's `priority` and `budget`, checked as the CRD checks them, each
/// refusal naming the field and the rule; a member's sub-team may not outrank its parent.
#[tokio::test]
async fn team_create_takes_a_priority_and_a_budget_checked_as_the_crd_checks_them() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "gw-budget").await;
    let gw = start_gateway(&s).await;
    let person = user_token(&s, &ns.name, "person").await;
    grant(&s, &ns.name, "person", &["teams"], &["create", "get"]).await;
    let agents = json!([{ "name": "general", "image": "x" }]);
    let budget = json!({ "turns": 40, "seconds": 3600, "tokens": 500000 });
    let created = eventually_ok(|| {
        call(
            &gw.url,
            Some(&person),
            "team_create",
            json!({ "name": "rho", "namespace": ns.name, "agents": agents, "priority": -250, "budget": budget }),
        )
    })
    .await;
    assert_eq!((created["priority"].clone(), created["budget"].clone()), (json!(-250), budget.clone()), "{created}");
    let yaml = kubectl_yaml(&ns.name, "rho").await;
    let spec: Value = serde_yaml::from_str::<Value>(&yaml).expect("yaml")["spec"].clone();
    assert_eq!((spec["priority"].clone(), spec["budget"].clone()), (json!(-250), budget), "kubectl get team rho -o yaml:\n{yaml}");

    for (bad, field, rule) in [
        (json!({ "priority": 1001 }), "`priority`", "1001 is out of range: at least -1000, at most 1000"),
        (json!({ "priority": -1001 }), "`priority`", "-1001 is out of range"),
        (json!({ "budget": {} }), "`budget`", "a budget sets at least one of turns, seconds, tokens"),
        (json!({ "budget": { "turns": 0 } }), "`budget.turns`", "0 is out of range: at least 1, at most 1000000"),
        (
            json!({ "budget": { "tokens": 5, "seconds": 31536001 } }),
            "`budget.seconds`",
            "31536001 is out of range: at least 1, at most 31536000",
        ),
    ] {
        let mut args = json!({ "name": "bad", "namespace": ns.name, "agents": agents });
        args.as_object_mut().expect("object").extend(bad.as_object().expect("object").clone());
        let answer = call(&gw.url, Some(&person), "team_create", args).await;
        assert_error(&answer, 400, "invalid_argument", &format!("team_create: field {field}: {rule}"));
    }
    let typo = call(
        &gw.url,
        Some(&person),
        "team_create",
        json!({ "name": "bad", "namespace": ns.name, "agents": agents, "budget": { "turn": 3 } }),
    )
    .await;
    assert_error(&typo, 400, "invalid_argument", "turn");
    assert!(ns.api::<Team>().get_opt("bad").await.expect("read").is_none(), "nothing refused was created");

    // A member's sub-team: at most its parent's priority (0 here).
    let p = team_with_members(&s, &ns, &gw.bus, "parent", &["general"]).await;
    allow_sub_teams(&ns, "parent").await;
    let member = p.token("general");
    let above = call(&gw.url, Some(member), "team_create", json!({ "name": "child", "priority": 1 })).await;
    assert_error(&above, 400, "invalid_argument", "field `priority`: a sub-team's priority is at most its parent's (0), not 1");
    let child = ok(call(&gw.url, Some(member), "team_create", json!({ "name": "child", "priority": -5, "budget": { "turns": 9 } })).await);
    assert_eq!((child["priority"].clone(), child["budget"].clone()), (json!(-5), json!({ "turns": 9 })), "{child}");

    gw.bus.teardown(&p.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}

/// Only the operator makes lead Members (the chart's ValidatingAdmissionPolicy, which the
/// harness applies as the chart renders it).
#[tokio::test]
async fn only_the_operator_creates_lead_members() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "gw-leadvap").await;
    let members: Api<Member> = ns.api();
    let mut m = support::teams::member("self-made-lead", "any", None);
    m.spec.role = MemberRole::Lead;
    // The harness applies the policy with the chart identities; the API server may take a moment
    // to load a new policy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let refusal = loop {
        match members.create(&PostParams::default(), &m).await {
            Err(kube::Error::Api(e)) => break e,
            Ok(_) => {
                let _ = members.delete("self-made-lead", &Default::default()).await;
                assert!(tokio::time::Instant::now() < deadline, "a lead Member created by the admin user");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("create: {e}"),
        }
    };
    assert_eq!(refusal.code, 403, "{refusal:?}");
    assert!(refusal.message.contains("spec.role"), "{}", refusal.message);
    m.spec.role = MemberRole::Specialist;
    members.create(&PostParams::default(), &m).await.expect("a specialist is fine");
    ns.cleanup().await;
}

#[tokio::test]
async fn bad_requests_get_4xx_naming_the_problem() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "gw-bad").await;
    let settings = team_operator::gateway::GatewaySettings { max_body_bytes: 4096, ..Default::default() };
    let gw = start_gateway_with(&s, settings).await;
    let team = team_with_members(&s, &ns, &gw.bus, "gamma", &["general"]).await;
    let t = Some(team.token("general"));

    assert_error(
        &call(&gw.url, t, "send_message", json!({ "to": "lead", "body": "x", "bdy": 1 })).await,
        400,
        "invalid_argument",
        "unknown field `bdy`",
    );
    assert_error(
        &call(&gw.url, t, "wait_messages", json!({ "timeout_seconds": "soon" })).await,
        400,
        "invalid_argument",
        "timeout_seconds",
    );
    assert_error(&call(&gw.url, t, "team_task", json!({ "action": "explode" })).await, 400, "invalid_argument", "action");
    assert_error(&call(&gw.url, t, "send_message", json!({ "to": "lead" })).await, 400, "invalid_argument", "missing field `body`");
    assert_error(&call(&gw.url, t, "send_message", json!([1, 2])).await, 400, "invalid_argument", "JSON object");
    assert_error(&call(&gw.url, t, "team_task", json!({ "action": "create" })).await, 400, "invalid_argument", "subject");
    assert_error(&call(&gw.url, t, "no_such_tool", json!({})).await, 404, "not_found", "no tool named");
    assert_error(
        &raw(&gw.url, t, "/v1/tools/send_message", b"{\"to\": \"lead\", \"body\": \"\xff\xfe\"}".to_vec()).await,
        400,
        "invalid_argument",
        "UTF-8",
    );
    assert_error(&raw(&gw.url, t, "/v1/tools/send_message", b"{\"to\": ".to_vec()).await, 400, "invalid_argument", "not valid JSON");
    let big = json!({ "to": "lead", "body": "x".repeat(10_000) });
    assert_error(&call(&gw.url, t, "send_message", big).await, 413, "too_large", "4096 bytes");
    assert_error(&get(&gw.url, t, "/v1/teams/gamma/tasks?color=red").await, 400, "invalid_argument", "color");
    assert_error(&get(&gw.url, t, "/nowhere").await, 404, "not_found", "endpoint");

    gw.bus.teardown(&team.key(&ns.name)).await.unwrap();
    ns.cleanup().await;
}

/// Grants `sa` the verbs on the agentteams.dev resources in `ns`.
/// A `wait_messages` of the member holding `token` acking `ack`, running until a message comes or
/// 5 s pass.
fn spawn_wait(url: &str, token: &str, ack: Value) -> tokio::task::JoinHandle<(u16, Value)> {
    let (url, token) = (url.to_owned(), token.to_owned());
    tokio::spawn(async move { call(&url, Some(&token), "wait_messages", json!({ "ack": ack, "timeout_seconds": 5 })).await })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![Just("create"), Just("update"), Just("read"), Just("teams"), Just("*"), Just("in_progress")].prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop_oneof![
            Just("to".to_owned()),
            Just("body".to_owned()),
            Just("action".to_owned()),
            Just("name".to_owned()),
            Just("state".to_owned()),
            Just("ack".to_owned()),
            Just("timeout_seconds".to_owned()),
            Just("agents".to_owned()),
            Just("kind".to_owned()),
            Just("text".to_owned()),
            Just("template".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn decode_all(v: &Value) {
    let _ = args::decode::<SendMessageArgs>("send_message", v.clone());
    let _ = args::decode::<WaitMessagesArgs>("wait_messages", v.clone());
    let _ = args::decode::<TeamTaskArgs>("team_task", v.clone());
    let _ = args::decode::<AgentMemoryArgs>("agent_memory", v.clone());
    let _ = args::decode::<SpawnMemberArgs>("spawn_member", v.clone());
    let _ = args::decode::<TeamCreateArgs>("team_create", v.clone());
    let _ = args::decode::<TeamDeleteArgs>("team_delete", v.clone());
    let _ = args::decode::<GetArgs>("get", v.clone());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// No byte string makes the body parser or any decoder panic.
    #[test]
    fn decoders_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = args::parse_body(&bytes) {
            decode_all(&v);
        }
    }

    /// Nor does any JSON value shaped like tool arguments.
    #[test]
    fn decoders_never_panic_on_json(v in json_value()) {
        decode_all(&v);
        let text = serde_json::to_vec(&v).unwrap();
        prop_assert!(args::parse_body(&text).is_ok());
    }
}
