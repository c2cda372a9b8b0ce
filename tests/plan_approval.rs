//! Plan approval end to end on the stack: a member of an agent type with `planApproval:
//! required` may only read until the lead approves its plan. It submits a plan and reads phase
//! AwaitingApproval (the operator's, from the gateway's `status.plan`); the lead gets the plan,
//! rejects it with feedback, which comes back to the member as a notice (its next turn under
//! `teamctl run`); it submits again, the lead approves, and every tool opens to it. The member
//! and the lead are real pods of the operator (kwok) calling the gateway with their projected
//! tokens.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use kube::api::{Api, PostParams};
use serde_json::json;
use support::operator::Operator;
use support::teams::{lead_name, member, team};
use support::*;
use team_operator::api::{Member, MemberPhase, PlanApproval, PlanState, Team};

fn plan_state(m: &Member) -> Option<PlanState> {
    m.status.as_ref().and_then(|s| s.plan.as_ref()).map(|p| p.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_needing_approval_reads_until_the_lead_approves_its_plan() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "plan").await;
    let _op = Operator::start(ns.name(), 10);
    let gw = fixture::start_gateway(&s).await;
    let mut t = team("rho", 3);
    t.spec.agents.iter_mut().filter(|a| a.name == "general").for_each(|a| a.plan_approval = PlanApproval::Required);
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    let lead_agent = lead_name(&ns, "rho").await;
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("migrator", "rho", None)).await.expect("member");
    let m = wait_for(&members, "migrator", TIMEOUT, "Active", |m| m.phase() == MemberPhase::Active).await;
    let name = m.agent_name().expect("name").to_owned();
    let me = fixture::member_token(&s, &ns, &m).await;
    let lead_member = members.get("rho-lead").await.expect("lead member");
    let lead = fixture::member_token(&s, &ns, &lead_member).await;

    // Before a plan: reads only, and writes are refused naming the rule.
    fixture::ok(fixture::call(&gw.url, Some(&me), "get", json!({ "kind": "members" })).await);
    fixture::ok(fixture::call(&gw.url, Some(&me), "team_task", json!({ "action": "list" })).await);
    let (code, v) = fixture::call(&gw.url, Some(&me), "send_message", json!({ "to": "lead", "body": "starting" })).await;
    assert_eq!(code, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("planApproval: required"), "{v}");
    let (code, v) = fixture::call(&gw.url, Some(&me), "team_task", json!({ "action": "create", "subject": "migrate" })).await;
    assert_eq!(code, 403, "{v}");
    let (code, v) = fixture::call(&gw.url, Some(&me), "plan_submit", json!({ "plan": " " })).await;
    assert_eq!((code, v["error"]["code"].as_str()), (400, Some("invalid_argument")), "{v}");

    // The plan: the member awaits approval, the lead reads the plan.
    let v = fixture::ok(fixture::call(&gw.url, Some(&me), "plan_submit", json!({ "plan": "1. dump the schema 2. migrate" })).await);
    assert_eq!((v["state"].as_str(), v["revision"].as_i64()), (Some("Submitted"), Some(1)), "{v}");
    wait_for(&members, "migrator", TIMEOUT, "AwaitingApproval", |m| m.phase() == MemberPhase::AwaitingApproval).await;
    let got = fixture::next_bodies(&gw, &lead).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!("[PLAN] @{name} submitted a plan (revision 1)")) && got[0].ends_with("1. dump the schema 2. migrate"),
        "{got:?}"
    );

    // A specialist cannot review; a rejection needs feedback.
    let (code, v) = fixture::call(&gw.url, Some(&me), "plan_review", json!({ "member": name, "action": "approve" })).await;
    assert_eq!(code, 403, "{v}");
    let (code, v) = fixture::call(&gw.url, Some(&lead), "plan_review", json!({ "member": name, "action": "reject" })).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("`feedback`"), "{v}");

    // Rejected: the feedback comes back to the member; it is Active again and still gated.
    fixture::ok(
        fixture::call(
            &gw.url,
            Some(&lead),
            "plan_review",
            json!({ "member": name, "action": "reject", "feedback": "test on a copy first" }),
        )
        .await,
    );
    let got = fixture::next_bodies(&gw, &me).await;
    assert_eq!(
        got,
        vec![format!("[PLAN REJECTED] by {lead_agent}: test on a copy first. Revise your plan and submit it again with plan_submit.")]
    );
    let m = wait_for(&members, "migrator", TIMEOUT, "Active again", |m| m.phase() == MemberPhase::Active).await;
    assert_eq!(plan_state(&m), Some(PlanState::Rejected));
    let (code, _) = fixture::call(&gw.url, Some(&me), "send_message", json!({ "to": "lead", "body": "ok" })).await;
    assert_eq!(code, 403, "still gated after a rejection");

    // Revised and approved: every tool opens.
    let v =
        fixture::ok(fixture::call(&gw.url, Some(&me), "plan_submit", json!({ "plan": "1. copy 2. migrate the copy 3. migrate" })).await);
    assert_eq!(v["revision"].as_i64(), Some(2), "{v}");
    wait_for(&members, "migrator", TIMEOUT, "AwaitingApproval", |m| m.phase() == MemberPhase::AwaitingApproval).await;
    fixture::ok(fixture::call(&gw.url, Some(&lead), "plan_review", json!({ "member": name, "action": "approve", "feedback": "go" })).await);
    let got = fixture::next_bodies(&gw, &me).await;
    assert_eq!(
        got.last().map(String::as_str),
        Some(format!("[PLAN APPROVED] by {lead_agent}: go. Go ahead with your plan: every tool is open to you now.").as_str()),
        "{got:?}"
    );
    let m = wait_for(&members, "migrator", TIMEOUT, "Active, approved", |m| {
        m.phase() == MemberPhase::Active && plan_state(m) == Some(PlanState::Approved)
    })
    .await;
    assert_eq!(m.status.and_then(|s| s.plan).and_then(|p| p.reviewed_by).as_deref(), Some(lead_agent.as_str()));
    fixture::ok(fixture::call(&gw.url, Some(&me), "send_message", json!({ "to": "lead", "body": "migrating" })).await);
    fixture::ok(fixture::call(&gw.url, Some(&me), "team_task", json!({ "action": "create", "subject": "migrate" })).await);

    ns.cleanup().await;
}

/// The exec agent of the member loop: turn 1 submits a plan; a rejection is a turn that submits
/// a revised one; the approval is a turn that goes ahead (a message to the lead, refused before).
const PLANNER: &str = r#"printf '=== turn %s\n' "$TEAM_TURN" >> turns.txt; t=$(cat); printf '%s\n' "$t" >> turns.txt
case "$t" in
  *"[PLAN REJECTED]"*) teamctl plan submit "1. copy 2. migrate the copy" >> turns.txt 2>&1 ;;
  *"[PLAN APPROVED]"*) teamctl send lead "migrating now" >> turns.txt 2>&1 ;;
  *) teamctl send lead "too early" >> turns.txt 2>&1; teamctl plan submit "1. migrate" >> turns.txt 2>&1 ;;
esac"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_teamctl_run_the_review_is_the_members_next_turn() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "plan-loop").await;
    let _op = Operator::start(ns.name(), 10);
    let gw = fixture::start_gateway(&s).await;
    let mut t = team("phi", 3);
    t.spec.agents.iter_mut().filter(|a| a.name == "general").for_each(|a| a.plan_approval = PlanApproval::Required);
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    let lead_agent = lead_name(&ns, "phi").await;
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("migrator", "phi", None)).await.expect("member");
    let m = wait_for(&members, "migrator", TIMEOUT, "Active", |m| m.phase() == MemberPhase::Active).await;
    let name = m.agent_name().expect("name").to_owned();
    let me = fixture::member_token(&s, &ns, &m).await;
    let lead = fixture::member_token(&s, &ns, &members.get("phi-lead").await.expect("lead member")).await;

    let dir = scratch_dir(&format!("plan/{}", ns.name));
    let read = || std::fs::read_to_string(dir.join("turns.txt")).unwrap_or_default();
    let mut run = support::member_loop::exec_member(&gw.url, &me, "migrate the database", &["--idle-timeout", "60"], PLANNER, &dir, &[]);

    // Turn 1: a message is refused by the gate, the plan goes to the lead.
    let got = fixture::next_bodies(&gw, &lead).await;
    assert!(got.iter().all(|b| b.starts_with("[PLAN] ")) && got.len() == 1, "only the plan reached the lead: {got:?}\n{}", read());
    assert!(read().contains("planApproval: required"), "the refusal, as the agent saw it: {}", read());
    wait_for(&members, "migrator", TIMEOUT, "AwaitingApproval", |m| m.phase() == MemberPhase::AwaitingApproval).await;

    // The rejection is turn 2, which submits revision 2; the approval is turn 3, which goes ahead.
    fixture::ok(
        fixture::call(&gw.url, Some(&lead), "plan_review", json!({ "member": name, "action": "reject", "feedback": "copy first" })).await,
    );
    let got = fixture::next_bodies(&gw, &lead).await;
    assert!(got.len() == 1 && got[0].contains("(revision 2)") && got[0].ends_with("1. copy 2. migrate the copy"), "{got:?}\n{}", read());
    assert!(read().contains("=== turn 2") && read().contains(&format!("[PLAN REJECTED] by {lead_agent}: copy first.")), "{}", read());
    fixture::ok(fixture::call(&gw.url, Some(&lead), "plan_review", json!({ "member": name, "action": "approve" })).await);
    let got = fixture::next_bodies(&gw, &lead).await;
    assert_eq!(got, vec!["migrating now".to_owned()], "{}", read());
    assert!(read().contains("=== turn 3") && read().contains(&format!("[PLAN APPROVED] by {lead_agent}.")), "{}", read());
    wait_for(&members, "migrator", TIMEOUT, "Active", |m| m.phase() == MemberPhase::Active && plan_state(m) == Some(PlanState::Approved))
        .await;
    run.kill().await.ok();
    ns.cleanup().await;
}
