//! End-to-end tests of the controller against the real stack: every lifecycle rule of
//! shared/DESIGN.md, with the operator running as its real binary scoped to the test namespace.
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use support::operator::Operator;
use support::teams::{member, task, team};
use support::*;
use team_operator::api::{Member, MemberPhase, TaskState, Team, TeamPhase, TeamTask};
use team_operator::bus::{Bus, TeamKey};

const LONG: Duration = Duration::from_secs(120);

fn phase(m: &Member) -> MemberPhase {
    m.phase()
}

/// Records, from a watch on the namespace's member pods, the most specialist pods ever live at
/// once and every pod uid created per member.
#[derive(Default)]
struct PodLedger {
    live: BTreeSet<String>,
    max_live: usize,
    uids_per_member: BTreeMap<String, BTreeSet<String>>,
}

fn watch_pods(api: Api<Pod>) -> (Arc<Mutex<PodLedger>>, tokio::task::JoinHandle<()>) {
    let ledger = Arc::new(Mutex::new(PodLedger::default()));
    let l = ledger.clone();
    let cfg = watcher::Config::default().labels("agentteams.dev/role=specialist");
    let handle = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher::watcher(api, cfg).default_backoff());
        while let Some(ev) = events.next().await {
            let Ok(ev) = ev else { continue };
            let mut l = l.lock().expect("ledger");
            let see = |p: &Pod, l: &mut PodLedger| {
                let terminal = matches!(pod_phase(p), Some("Succeeded" | "Failed"));
                let name = p.name_any();
                if terminal {
                    l.live.remove(&name);
                } else {
                    l.live.insert(name);
                }
                l.max_live = l.max_live.max(l.live.len());
                let member = p.labels().get("agentteams.dev/member").cloned().unwrap_or_default();
                l.uids_per_member.entry(member).or_default().insert(p.uid().unwrap_or_default());
            };
            match ev {
                Event::Apply(p) | Event::InitApply(p) => see(&p, &mut l),
                Event::Delete(p) => {
                    l.live.remove(&p.name_any());
                }
                Event::Init | Event::InitDone => {}
            }
        }
    });
    (ledger, handle)
}

async fn create_all(api: &Api<Member>, members: Vec<Member>) {
    let pp = PostParams::default();
    future::try_join_all(members.iter().map(|m| api.create(&pp, m))).await.expect("create members");
}

async fn wait_members(
    api: &Api<Member>,
    names: &[String],
    timeout: Duration,
    what: &str,
    cond: impl Fn(&Member) -> bool + Copy,
) -> Vec<Member> {
    future::join_all(names.iter().map(|n| wait_for(api, n, timeout, what, cond))).await
}

async fn setup(prefix: &str, max_agents: u32) -> (Stack, TestNamespace, Operator) {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, prefix).await;
    let op = Operator::start(ns.name(), max_agents);
    (s, ns, op)
}

async fn lead_running(ns: &TestNamespace, team_name: &str) -> Team {
    let teams: Api<Team> = ns.api();
    wait_for(&teams, team_name, TIMEOUT, "the team's lead to be named", |t| t.status.as_ref().is_some_and(|s| s.lead_name.is_some())).await
}

#[tokio::test]
async fn fifty_members_created_at_once_get_fifty_distinct_names_lead_counted() {
    let (_s, ns, _op) = setup("names", 10).await;
    let mut t = team("alpha", 5);
    t.spec.lead.agent = "general".into(); // the lead takes the bare name `general`
    t.spec.agents.retain(|a| a.name != "lead"); // an agent type named `lead` must be the lead's
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    lead_running(&ns, "alpha").await;
    let members: Api<Member> = ns.api();
    let names: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
    create_all(&members, names.iter().map(|n| member(n, "alpha", None)).collect()).await;
    let named = wait_members(&members, &names, LONG, "a team-unique name", |m| m.agent_name().is_some()).await;
    let got: BTreeSet<String> = named.iter().filter_map(|m| m.agent_name().map(str::to_owned)).collect();
    assert_eq!(got.len(), 50, "names must be distinct: {got:?}");
    let expected: BTreeSet<String> = (2..=51).map(|i| format!("general-{i}")).collect();
    assert_eq!(got, expected, "the lead holds `general`, specialists the next 50");
    ns.cleanup().await;
}

/// A team whose members change without pause is reconciled all the same: its counts show its
/// members while they keep coming, and every member named is on its roster in Redis (what the
/// member's own wait and send check). Behind the controller runtime's debounce, which every
/// change pushed back, the Team reconcile did not run at all until the changes stopped.
#[tokio::test]
async fn a_team_whose_members_never_stop_changing_still_counts_them_and_puts_them_on_its_roster() {
    let (s, ns, _op) = setup("steady", 2).await;
    ns.api::<Team>().create(&PostParams::default(), &team("gamma", 2)).await.expect("team");
    lead_running(&ns, "gamma").await;
    let members: Api<Member> = ns.api();
    // A load, not a wait: a Member created every 20 ms (up to 3,000, 60 s), each create and
    // each naming a change of the team, until the test has seen what it looks for.
    let creator = {
        let members = members.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            for i in 0..3000 {
                every.tick().await;
                let members = members.clone();
                tokio::spawn(async move { members.create(&PostParams::default(), &member(&format!("m{i:04}"), "gamma", None)).await });
            }
        })
    };
    // The first member named is on the roster, and counted, while the others keep coming (a
    // bound of a few seconds, against a Team reconcile that runs within PASS_INTERVAL).
    let first = wait_for(&members, "m0000", TIMEOUT, "a name", |m| m.agent_name().is_some()).await;
    let name = first.agent_name().expect("named").to_owned();
    let bus = Bus::connect(s.bus_config()).await.expect("redis");
    let key = TeamKey::new(ns.name(), "gamma");
    wait_until(Duration::from_secs(5), "the first member named on the roster", || async { bus.inbox_counts(&key, &name).await.is_ok() })
        .await;
    let teams: Api<Team> = ns.api();
    let counted = wait_for(&teams, "gamma", Duration::from_secs(5), "the queued members counted", |t| {
        t.status.as_ref().is_some_and(|s| s.queued >= 10)
    })
    .await;
    assert!(!creator.is_finished(), "counted only once the changes stopped: {:?}", counted.status);
    creator.abort();
    ns.cleanup().await;
}

#[tokio::test]
async fn thirty_members_under_max_agents_five_never_exceed_five_and_all_complete() {
    let (_s, ns, op) = setup("cap", 10).await;
    let (ledger, watch) = watch_pods(ns.api());
    ns.api::<Team>().create(&PostParams::default(), &team("beta", 5)).await.expect("team");
    let members: Api<Member> = ns.api();
    let names: Vec<String> = (0..30).map(|i| format!("w{i:02}")).collect();
    create_all(&members, names.iter().map(|n| member(n, "beta", Some((0, "1s")))).collect()).await;
    wait_members(&members, &names, LONG, "Completed", |m| phase(m) == MemberPhase::Completed).await;
    let max_live = ledger.lock().expect("ledger").max_live;
    watch.abort();
    assert!(max_live <= 5, "at most 5 pods may be live at once, saw {max_live}");
    assert_eq!(max_live, 5, "the cap should be used fully");
    let t = wait_for(&ns.api::<Team>(), "beta", TIMEOUT, "30 completed", |t| t.status.as_ref().is_some_and(|s| s.completed == 30)).await;
    assert_eq!(t.status.map(|s| (s.queued, s.active, s.failed)), Some((0, 0, 0)));

    // Members created as a user creates them are never rewritten to add an owner, a completion
    // is no Event, and each status field has one writer: the name the admission's, the final
    // phase the Member reconciler's.
    let all = members.list(&ListParams::default()).await.expect("members");
    let owned: Vec<String> = all.items.iter().filter(|m| !m.is_lead() && !m.owner_references().is_empty()).map(|m| m.name_any()).collect();
    assert!(owned.is_empty(), "members were adopted: {owned:?}");
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let completed = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Completed"))
        .count();
    assert_eq!(completed, 0, "a member's completion must not be an Event");
    let w00 = members.get("w00").await.expect("w00");
    let owner_of = |field: &str| -> Vec<String> {
        w00.managed_fields()
            .iter()
            .filter(|f| f.subresource.as_deref() == Some("status"))
            .filter(|f| f.fields_v1.as_ref().is_some_and(|v| v.0.pointer(&format!("/f:status/f:{field}")).is_some()))
            .filter_map(|f| f.manager.clone())
            .collect()
    };
    assert_eq!(owner_of("name"), ["team-operator-admission"], "{:?}", w00.managed_fields());
    assert_eq!(owner_of("podName"), ["team-operator-admission"]);
    assert_eq!(owner_of("phase"), ["team-operator-member"]);
    assert_eq!(owner_of("exitCode"), ["team-operator-member"]);

    // The operator's metrics tell the same story.
    op.wait_metric("team_operator_members{phase=\"Completed\"}", 30.0, TIMEOUT).await;
    op.wait_metric("team_operator_members{phase=\"Queued\"}", 0.0, TIMEOUT).await;
    op.wait_metric("team_operator_slots_in_use", 0.0, TIMEOUT).await;
    assert_eq!(op.metric("team_operator_pods_created_total").await, Some(31.0), "30 specialists and the lead");
    assert_eq!(op.metric("team_operator_slots_cap").await, Some(10.0));
    assert!(op.metric("team_operator_reconciles_total{kind=\"Member\"}").await.is_some_and(|n| n >= 60.0));
    let metrics = op.metrics().await;
    assert!(metrics.contains("team_operator_reconcile_duration_seconds_bucket{"), "{metrics}");
    ns.cleanup().await;
}

#[tokio::test]
async fn operator_wide_cap_holds_across_two_teams() {
    let (_s, ns, _op) = setup("global", 3).await;
    let (ledger, watch) = watch_pods(ns.api());
    for name in ["east", "west"] {
        ns.api::<Team>().create(&PostParams::default(), &team(name, 3)).await.expect("team");
    }
    let members: Api<Member> = ns.api();
    let names: Vec<String> = (0..8).map(|i| format!("g{i}")).collect();
    create_all(
        &members,
        names.iter().enumerate().map(|(i, n)| member(n, if i % 2 == 0 { "east" } else { "west" }, Some((0, "1s")))).collect(),
    )
    .await;
    wait_members(&members, &names, LONG, "Completed", |m| phase(m) == MemberPhase::Completed).await;
    let max_live = ledger.lock().expect("ledger").max_live;
    watch.abort();
    assert!(max_live <= 3, "the operator-wide cap of 3 must hold across teams, saw {max_live}");
    ns.cleanup().await;
}

#[tokio::test]
async fn oom_killed_member_fails_with_137_lead_is_told_and_its_tasks_fail() {
    let (s, ns, op) = setup("failure", 10).await;
    ns.api::<Team>().create(&PostParams::default(), &team("gamma", 3)).await.expect("team");
    let lead = lead_running(&ns, "gamma").await.status.and_then(|s| s.lead_name).expect("lead name");
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("crasher", "gamma", None)).await.expect("member");
    let named = wait_for(&members, "crasher", TIMEOUT, "a name", |m| m.agent_name().is_some()).await;
    let agent_name = named.agent_name().expect("name").to_owned();

    let tasks: Api<TeamTask> = ns.api();
    for (name, state) in [("t-pending", None), ("t-progress", Some("in_progress")), ("t-done", Some("completed"))] {
        tasks.create(&PostParams::default(), &task(name, "gamma", Some(&agent_name), &[])).await.expect("task");
        if let Some(state) = state {
            tasks
                .patch_status(name, &PatchParams::default(), &Patch::Merge(serde_json::json!({"status": {"state": state}})))
                .await
                .expect("task state");
        }
    }
    // The agent is OOM-killed: kwok ends its pod Failed with exit code 137.
    let pod_name = wait_for(&members, "crasher", TIMEOUT, "a pod", |m| m.status.as_ref().is_some_and(|s| s.pod_name.is_some()))
        .await
        .status
        .and_then(|s| s.pod_name)
        .expect("pod");
    set_sim_exit(&ns.api(), &pod_name, 137, None).await;

    let failed = wait_for(&members, "crasher", TIMEOUT, "Failed", |m| phase(m) == MemberPhase::Failed).await;
    let st = failed.status.expect("status");
    assert_eq!(st.exit_code, Some(137));
    assert_eq!(st.reason.as_deref(), Some("OOMKilled"));
    // The notice went out before the failure was written, and the same write records it.
    let notified =
        st.conditions.iter().find(|c| c.type_ == "LeadNotified").unwrap_or_else(|| panic!("no LeadNotified in {:?}", st.conditions));
    assert_eq!((notified.status.as_str(), notified.reason.as_str()), ("True", "NoticeSent"));

    for name in ["t-pending", "t-progress"] {
        let t = wait_for(&tasks, name, TIMEOUT, "failed because its owner failed", |t| t.state() == TaskState::Failed).await;
        assert_eq!(t.status.and_then(|s| s.reason).as_deref(), Some("OwnerFailed"));
    }
    assert_eq!(tasks.get("t-done").await.expect("task").state(), TaskState::Completed, "a completed task stays completed");

    let bus = Bus::connect(s.bus_config()).await.expect("redis");
    let inbox = bus.wait(&TeamKey::new(ns.name(), "gamma"), &lead, Duration::from_secs(10)).await.expect("lead inbox");
    let notice = inbox
        .iter()
        .find(|m| m.body.starts_with(&format!("[AGENT FAILURE] @{agent_name}")))
        .unwrap_or_else(|| panic!("no failure notice in {inbox:?}"));
    assert!(notice.body.contains("OOMKilled") && notice.body.contains("137"), "{}", notice.body);
    assert_eq!(op.metric("team_operator_notices_total{notice=\"agent_failure\"}").await, Some(1.0));
    op.wait_metric("team_operator_members{phase=\"Failed\"}", 1.0, TIMEOUT).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn deleting_a_team_mid_run_cancels_members_deletes_pods_fails_tasks_and_keys() {
    let (_s, ns, _op) = setup("disband", 10).await;
    ns.api::<Team>().create(&PostParams::default(), &team("delta", 2)).await.expect("team");
    lead_running(&ns, "delta").await;
    let members: Api<Member> = ns.api();
    let names: Vec<String> = (0..4).map(|i| format!("d{i}")).collect();
    create_all(&members, names.iter().map(|n| member(n, "delta", None)).collect()).await;
    // Two run (forever), two wait for a slot.
    wait_for(&ns.api::<Team>(), "delta", TIMEOUT, "two members running and two queued", |t| {
        t.status.as_ref().is_some_and(|s| s.starting + s.active == 2 && s.queued == 2)
    })
    .await;
    let tasks: Api<TeamTask> = ns.api();
    tasks.create(&PostParams::default(), &task("open", "delta", None, &[])).await.expect("task");
    wait_for(&tasks, "open", TIMEOUT, "pending", |t| t.status.as_ref().is_some_and(|s| s.state == Some(TaskState::Pending))).await;

    // Watch the members' phases until they are gone with the Team.
    let last_phase: Arc<Mutex<HashMap<String, MemberPhase>>> = Arc::default();
    let lp = last_phase.clone();
    let mwatch = tokio::spawn({
        let members = members.clone();
        async move {
            let mut events = std::pin::pin!(watcher::watcher(members, watcher::Config::default()).default_backoff().applied_objects());
            while let Some(Ok(m)) = events.next().await {
                lp.lock().expect("phases").insert(m.name_any(), m.phase());
            }
        }
    });
    let ttask = tasks.clone();
    let task_watch =
        tokio::spawn(async move { wait_for(&ttask, "open", LONG, "failed by the disband", |t| t.state() == TaskState::Failed).await });

    let t = ns.api::<Team>().get("delta").await.expect("team");
    ns.api::<Team>().delete("delta", &DeleteParams::background()).await.expect("delete team");
    wait_deleted(&ns.api::<Team>(), "delta", t.uid().as_deref(), LONG, "the Team to go after disbanding").await;
    let failed_task = task_watch.await.expect("task watch");
    assert_eq!(failed_task.status.and_then(|s| s.reason).as_deref(), Some("TeamDisbanded"));

    // GC removes the members and their pods once the Team is gone.
    for n in &names {
        wait_deleted(&members, n, None, LONG, "the member to be garbage-collected").await;
    }
    mwatch.abort();
    let phases = last_phase.lock().expect("phases").clone();
    for n in &names {
        assert_eq!(phases.get(n), Some(&MemberPhase::Cancelled), "member {n} must end Cancelled; saw {phases:?}");
    }
    let pods: Api<Pod> = ns.api();
    let left = pods.list(&ListParams::default().labels("agentteams.dev/team=delta")).await.expect("pods");
    let survivors: Vec<String> = left.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| p.name_any()).collect();
    assert!(survivors.is_empty(), "pods survived the disband: {survivors:?}");
    // What is left is the transcript, kept under the Team's uid for its retention (24 h).
    let base = format!("team-operator:{{{}/delta}}:", ns.name());
    let mut keys: Vec<String> = raw_redis(redis::cmd("KEYS").arg(format!("{base}*"))).await;
    keys.sort();
    let uid = t.uid().expect("uid");
    assert_eq!(keys, [format!("{base}transcript:{uid}"), format!("{base}transcripts")], "every other key of the team is removed");
    for key in &keys {
        let ttl: i64 = raw_redis(redis::cmd("TTL").arg(key)).await;
        assert!((1..=86_400).contains(&ttl), "{key} expires within the default retention: TTL {ttl}");
        raw_redis::<i64>(redis::cmd("DEL").arg(key)).await;
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn lead_finishing_disbands_the_team_and_refuses_new_members() {
    let (_s, ns, _op) = setup("leadend", 10).await;
    ns.api::<Team>().create(&PostParams::default(), &team("eps", 2)).await.expect("team");
    lead_running(&ns, "eps").await;
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("worker", "eps", None)).await.expect("member");
    let lead = wait_for(&members, "eps-lead", TIMEOUT, "the lead's pod", |m| m.status.as_ref().is_some_and(|s| s.pod_name.is_some())).await;
    wait_for(&members, "worker", TIMEOUT, "Active", |m| phase(m) == MemberPhase::Active).await;
    set_sim_exit(&ns.api(), lead.status.and_then(|s| s.pod_name).as_deref().expect("pod"), 0, None).await;

    let t =
        wait_for(&ns.api::<Team>(), "eps", TIMEOUT, "Disbanded", |t| t.status.as_ref().and_then(|s| s.phase) == Some(TeamPhase::Disbanded))
            .await;
    let cond = t.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Disbanded").expect("Disbanded condition");
    assert_eq!(cond.reason, "LeadCompleted");
    wait_for(&members, "worker", TIMEOUT, "Cancelled", |m| phase(m) == MemberPhase::Cancelled).await;

    // Rule 5: a disbanded team takes no new members or tasks.
    members.create(&PostParams::default(), &member("late", "eps", None)).await.expect("member");
    let late = wait_for(&members, "late", TIMEOUT, "refused", |m| phase(m).is_terminal()).await;
    assert_eq!(late.status.as_ref().and_then(|s| s.reason.as_deref()), Some("TeamDisbanded"), "{late:?}");
    let tasks: Api<TeamTask> = ns.api();
    tasks.create(&PostParams::default(), &task("late-task", "eps", None, &[])).await.expect("task");
    let lt = wait_for(&tasks, "late-task", TIMEOUT, "refused", |t| t.state() == TaskState::Failed).await;
    assert_eq!(lt.status.and_then(|s| s.reason).as_deref(), Some("TeamDisbanded"));
    ns.cleanup().await;
}

#[tokio::test]
async fn members_and_tasks_of_a_missing_team_are_refused() {
    let (_s, ns, _op) = setup("missing", 10).await;
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("orphan", "nosuchteam", None)).await.expect("member");
    let m = wait_for(&members, "orphan", TIMEOUT, "Failed", |m| phase(m) == MemberPhase::Failed).await;
    let st = m.status.expect("status");
    assert_eq!(st.reason.as_deref(), Some("TeamNotFound"));
    assert!(st.message.unwrap_or_default().contains("nosuchteam"));
    let tasks: Api<TeamTask> = ns.api();
    tasks.create(&PostParams::default(), &task("orphan-task", "nosuchteam", None, &[])).await.expect("task");
    let t = wait_for(&tasks, "orphan-task", TIMEOUT, "failed", |t| t.state() == TaskState::Failed).await;
    assert_eq!(t.status.and_then(|s| s.reason).as_deref(), Some("TeamNotFound"));
    ns.cleanup().await;
}

#[tokio::test]
async fn task_dependencies_block_until_done_and_failure_propagates() {
    let (_s, ns, _op) = setup("deps", 10).await;
    ns.api::<Team>().create(&PostParams::default(), &team("zeta", 2)).await.expect("team");
    let tasks: Api<TeamTask> = ns.api();
    for t in [task("a", "zeta", None, &[]), task("b", "zeta", None, &["a"]), task("c", "zeta", None, &["b"])] {
        tasks.create(&PostParams::default(), &t).await.expect("task");
    }
    let blocked = |t: &TeamTask| t.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Blocked" && c.status == "True"));
    wait_for(&tasks, "b", TIMEOUT, "Blocked on a", blocked).await;
    tasks
        .patch_status("a", &PatchParams::default(), &Patch::Merge(serde_json::json!({"status": {"state": "completed"}})))
        .await
        .expect("complete a");
    wait_for(&tasks, "b", TIMEOUT, "unblocked", |t| !blocked(t) && t.status.is_some()).await;
    tasks
        .patch_status("b", &PatchParams::default(), &Patch::Merge(serde_json::json!({"status": {"state": "failed"}})))
        .await
        .expect("fail b");
    let c = wait_for(&tasks, "c", TIMEOUT, "failed by its dependency", |t| t.state() == TaskState::Failed).await;
    assert_eq!(c.status.and_then(|s| s.reason).as_deref(), Some("DependencyFailed"));
    // A final state is final: the API server refuses moving it back.
    let err = tasks
        .patch_status("c", &PatchParams::default(), &Patch::Merge(serde_json::json!({"status": {"state": "pending"}})))
        .await
        .expect_err("final");
    assert!(err.to_string().contains("status.state"), "{err}");
    ns.cleanup().await;
}

#[tokio::test]
async fn killed_operator_restarts_without_duplicate_pods_or_cap_breach() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "restart").await;
    let (ledger, watch) = watch_pods(ns.api());
    let mut first = Operator::start(ns.name(), 10);
    ns.api::<Team>().create(&PostParams::default(), &team("eta", 4)).await.expect("team");
    let members: Api<Member> = ns.api();
    let names: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
    create_all(&members, names.iter().map(|n| member(n, "eta", Some((0, "2s")))).collect()).await;
    // Kill -9 once the first wave is running.
    wait_for(&members, "r00", LONG, "Active", |m| matches!(phase(m), MemberPhase::Active | MemberPhase::Completed)).await;
    first.kill().await;
    let _second = Operator::start(ns.name(), 10);
    wait_members(&members, &names, LONG, "Completed", |m| phase(m) == MemberPhase::Completed).await;
    {
        let l = ledger.lock().expect("ledger");
        assert!(l.max_live <= 4, "cap of 4 breached across the restart: {}", l.max_live);
        for (member, uids) in &l.uids_per_member {
            assert_eq!(uids.len(), 1, "member {member} got {} pods", uids.len());
        }
        assert_eq!(l.uids_per_member.len(), 12);
    }
    watch.abort();
    ns.cleanup().await;
}

#[tokio::test]
async fn two_replicas_only_the_leader_reconciles_and_failover_is_clean() {
    use k8s_openapi::api::coordination::v1::Lease;
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "leader").await;
    let (ledger, watch) = watch_pods(ns.api());
    // The one Lease the chart's RBAC lets its controller hold; a previous run's is let go first.
    let _lease = Operator::lease_guard().await;
    let (lease_ns, lease) = support::identity::chart_lease();
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), lease_ns);
    let _ = leases.delete(&lease, &Default::default()).await;
    let replica = |id: &str| Operator::replica(ns.name(), id);
    let mut a = replica("replica-a");
    let holder = |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.clone());
    wait_for(&leases, &lease, TIMEOUT, "replica-a to hold the lease", |l| holder(l).as_deref() == Some("replica-a")).await;
    let b = replica("replica-b");

    ns.api::<Team>().create(&PostParams::default(), &team("theta", 4)).await.expect("team");
    let members: Api<Member> = ns.api();
    let names: Vec<String> = (0..12).map(|i| format!("l{i:02}")).collect();
    create_all(&members, names.iter().map(|n| member(n, "theta", Some((0, "2s")))).collect()).await;
    wait_for(&members, "l00", LONG, "Active", |m| matches!(phase(m), MemberPhase::Active | MemberPhase::Completed)).await;
    let follower_log = std::fs::read_to_string(&b.log).expect("follower log");
    // On a starved machine the leader may miss its renew deadline: it then stops reconciling and
    // exits, and the follower taking over is the failover working. Either way one replica
    // reconciles at a time, which the pod ledger checks below.
    let leader_log = std::fs::read_to_string(&a.log).expect("leader log");
    let stepped_down = leader_log.contains("(the renew deadline); stopped reconciling");
    assert!(
        follower_log.contains("waiting for the lease") && (stepped_down || !follower_log.contains("acquired the lease")),
        "the follower must not reconcile while the leader holds the lease: {follower_log}"
    );

    // kill -9 the leader mid-run: the follower takes over once the lease expires.
    a.kill().await;
    let started = std::time::Instant::now();
    wait_for(&leases, &lease, Duration::from_secs(30), "replica-b to take the lease", |l| holder(l).as_deref() == Some("replica-b")).await;
    let takeover = started.elapsed();
    assert!(takeover <= Duration::from_secs(6 + 5), "takeover took {takeover:?}, lease is 6s");
    wait_members(&members, &names, LONG, "Completed", |m| phase(m) == MemberPhase::Completed).await;
    {
        let l = ledger.lock().expect("ledger");
        assert!(l.max_live <= 4, "cap of 4 breached across the failover: {}", l.max_live);
        assert!(l.uids_per_member.values().all(|u| u.len() == 1), "a member got a second pod: {:?}", l.uids_per_member);
    }
    watch.abort();
    ns.cleanup().await;
}

#[tokio::test]
async fn pods_deleted_from_outside_or_unschedulable_fail_their_members() {
    let (_s, ns, _op) = setup("podloss", 10).await;
    let mut t = team("iota", 3);
    let mut nowhere = support::teams::agent_type("nowhere");
    if let Some(spec) = nowhere.template.spec.as_mut() {
        spec.node_selector = Some([("type".to_owned(), "no-such-node".to_owned())].into());
    }
    t.spec.agents.push(nowhere);
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("victim", "iota", None)).await.expect("member");
    let mut stuck = member("stuck", "iota", None);
    stuck.spec.agent = "nowhere".into();
    members.create(&PostParams::default(), &stuck).await.expect("member");

    let active = wait_for(&members, "victim", TIMEOUT, "Active", |m| phase(m) == MemberPhase::Active).await;
    let pod = active.status.and_then(|s| s.pod_name).expect("pod");
    ns.api::<Pod>().delete(&pod, &DeleteParams::default()).await.expect("delete pod");
    let gone = wait_for(&members, "victim", TIMEOUT, "Failed", |m| phase(m) == MemberPhase::Failed).await;
    assert_eq!(gone.status.and_then(|s| s.reason).as_deref(), Some("PodDeleted"));

    // The test operator's unschedulable deadline is 20 s.
    let stuck = wait_for(&members, "stuck", Duration::from_secs(60), "Failed as unschedulable", |m| phase(m) == MemberPhase::Failed).await;
    let st = stuck.status.expect("status");
    assert_eq!(st.reason.as_deref(), Some("Unschedulable"), "{st:?}");
    let pod = st.pod_name.expect("pod");
    wait_deleted(&ns.api::<Pod>(), &pod, None, TIMEOUT, "the unschedulable pod to be removed").await;
    ns.cleanup().await;
}

/// Every operator these suites start authenticates as the chart's controller ServiceAccount, and
/// so is held to the chart's RBAC: the API server says who it is and refuses what the chart does
/// not grant.
#[tokio::test]
async fn the_operator_under_test_is_the_charts_controller_account() {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "identity").await;
    let kubeconfig = kube::config::Kubeconfig::read_from(support::operator::controller_kubeconfig()).expect("operator kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
    let operator = kube::Client::try_from(config).expect("client");

    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({ "metadata": {} })).expect("review");
    let me = Api::<SelfSubjectReview>::all(operator.clone()).create(&PostParams::default(), &review).await.expect("SelfSubjectReview");
    let user = me.status.and_then(|s| s.user_info).and_then(|u| u.username);
    assert_eq!(user, Some(support::identity::chart_user("controller")));

    ns.api::<Team>().create(&PostParams::default(), &team("iota", 2)).await.expect("team");
    Api::<Team>::namespaced(operator.clone(), ns.name()).get("iota").await.expect("the chart lets the controller read Teams");
    match Api::<Team>::namespaced(operator, ns.name()).delete("iota", &DeleteParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("deleting a Team is not the controller's to do, yet got {other:?}"),
    }
    ns.cleanup().await;
}

/// Rule 6: the unread messages of a team survive 20 kill -9 restarts of the operator and a
/// leader failover, with 300 Members to list (on a restart the Team watch lists long before the
/// Member watch does; a roster synced from the half-listed store used to delete the inboxes).
#[tokio::test]
async fn unread_messages_survive_twenty_restarts_and_a_failover() {
    use k8s_openapi::api::coordination::v1::Lease;
    let (s, ns, mut op) = setup("restarts", 10).await;
    ns.api::<Team>().create(&PostParams::default(), &team("rho", 2)).await.expect("team");
    let members: Api<Member> = ns.api();
    let names: Vec<String> = (0..300).map(|i| format!("r{i:03}")).collect();
    create_all(&members, names.iter().map(|n| member(n, "rho", None)).collect()).await;
    let lead = lead_running(&ns, "rho").await.status.and_then(|s| s.lead_name).expect("lead name");
    // Every member named: the roster then lists all 300 and the sender below.
    let named = wait_members(&members, &names, LONG, "named", |m| m.agent_name().is_some()).await;
    let sender = named[0].agent_name().expect("name").to_owned();
    let bus = Bus::connect(support::bus_config()).await.expect("bus");
    let key = TeamKey::new(ns.name(), "rho");
    let teams: Api<Team> = ns.api();
    wait_for(&teams, "rho", LONG, "the roster to be synced with every name", |t| {
        t.status.as_ref().is_some_and(|s| s.queued + s.active + s.starting == 300)
    })
    .await;
    for i in 0..5 {
        bus.send(
            &key,
            team_operator::bus::OutgoingMessage {
                from: sender.clone(),
                to: team_operator::bus::Recipient::Member(lead.clone()),
                body: format!("finding {i}"),
                kind: team_operator::bus::MessageKind::Message,
                id: Some(format!("m{i}")),
                sent_by: None,
            },
        )
        .await
        .expect("send to the lead");
    }
    let inbox = format!("team-operator:{{{}/rho}}:inbox:{lead}", ns.name());
    let xlen = || async { support::raw_redis::<u64>(redis::cmd("XLEN").arg(&inbox)).await };
    assert_eq!(xlen().await, 5);

    let team_reconciles = r#"team_operator_reconciles_total{kind="Team"}"#;
    for restart in 0..20 {
        op.kill().await;
        op = Operator::start(ns.name(), 10);
        // The restarted operator has listed and reconciled the team at least once.
        wait_until(LONG, "the restarted operator to reconcile the Team", || async {
            op.metric(team_reconciles).await.unwrap_or(0.0) >= 1.0
        })
        .await;
        assert_eq!(xlen().await, 5, "the lead's inbox after restart {}", restart + 1);
    }
    op.kill().await;

    // A leader change between two replicas.
    let _lease = Operator::lease_guard().await;
    let (lease_ns, lease) = support::identity::chart_lease();
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), lease_ns);
    let _ = leases.delete(&lease, &DeleteParams::default()).await;
    let replica = |id: &str| Operator::replica(ns.name(), id);
    let holder = |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.clone());
    let mut a = replica("restarts-a");
    wait_for(&leases, &lease, TIMEOUT, "restarts-a to lead", |l| holder(l).as_deref() == Some("restarts-a")).await;
    let b = replica("restarts-b");
    wait_until(LONG, "the leader to reconcile the Team", || async { a.metric(team_reconciles).await.unwrap_or(0.0) >= 1.0 }).await;
    a.kill().await;
    wait_for(&leases, &lease, Duration::from_secs(30), "restarts-b to take over", |l| holder(l).as_deref() == Some("restarts-b")).await;
    wait_until(LONG, "the new leader to reconcile the Team", || async { b.metric(team_reconciles).await.unwrap_or(0.0) >= 1.0 }).await;
    assert_eq!(xlen().await, 5, "the lead's inbox after the failover");

    // Delivered once: all five, then nothing.
    let got = bus.wait(&key, &lead, Duration::from_secs(5)).await.expect("wait");
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["finding 0", "finding 1", "finding 2", "finding 3", "finding 4"]);
    let ids: Vec<String> = got.iter().map(|m| m.stream_id.clone()).collect();
    let (_, again) = bus.ack_and_wait(&key, &lead, &ids, Duration::from_millis(500)).await.expect("ack and wait");
    assert!(again.is_empty(), "delivered twice: {again:?}");
    drop(b);
    ns.cleanup().await;
}

/// Slots follow ownership (rule 7): ten pods labelled as specialists of a team take no slot of
/// the operator-wide cap, and a member pod whose labels were removed still holds its slot.
#[tokio::test]
async fn slots_are_held_by_member_pods_not_by_labels() {
    let (_s, ns, _op) = setup("slots", 10).await;
    let pods: Api<Pod> = ns.api();
    for i in 0..10 {
        let forged = kwok_pod(&format!("forged-{i}"))
            .label("agentteams.dev/team", "fz")
            .label("agentteams.dev/member", &format!("general-{i}"))
            .label("agentteams.dev/agent", "general")
            .label("agentteams.dev/role", "specialist")
            .label("app.kubernetes.io/managed-by", "team-operator")
            .build();
        pods.create(&PostParams::default(), &forged).await.expect("forged pod");
    }
    ns.api::<Team>().create(&PostParams::default(), &team("sigma", 1)).await.expect("team");
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("first", "sigma", None)).await.expect("member");
    let first = wait_for(&members, "first", LONG, "first to run beside ten labelled pods", |m| phase(m) == MemberPhase::Active).await;

    // Its pod loses every label: it still runs, so it still holds sigma's only slot.
    let pod_name = first.status.and_then(|s| s.pod_name).expect("pod name");
    let strip = serde_json::json!({ "metadata": { "labels": null } });
    pods.patch(&pod_name, &PatchParams::default(), &Patch::Merge(&strip)).await.expect("strip labels");
    wait_for(&pods, &pod_name, TIMEOUT, "the labels to be gone", |p| p.labels().is_empty()).await;
    members.create(&PostParams::default(), &member("second", "sigma", None)).await.expect("member");
    let second = wait_for(&members, "second", LONG, "second to be named", |m| m.agent_name().is_some()).await;
    assert_eq!(second.phase(), MemberPhase::Queued);
    // The unlabelled pod ends: the slot frees and the second starts.
    set_sim_exit(&pods, &pod_name, 0, Some("1s")).await;
    wait_for(&members, "second", LONG, "second to start once the first pod ended", |m| phase(m) == MemberPhase::Active).await;
    ns.cleanup().await;
}

/// An external lead (`spec.lead.podName`): the operator starts no lead pod, never deletes the
/// external one, and the team disbands when that pod ends.
#[tokio::test]
async fn an_external_lead_pod_is_never_the_operators() {
    let (_s, ns, _op) = setup("extlead", 10).await;
    let pods: Api<Pod> = ns.api();
    let lead_pod = pods.create(&PostParams::default(), &kwok_pod("outside-lead").build()).await.expect("lead pod");
    let mut t = team("tau", 2);
    t.spec.lead.pod_name = Some("outside-lead".into());
    t.metadata.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: "outside-lead".into(),
        uid: lead_pod.uid().expect("uid"),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }]);
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    let members: Api<Member> = ns.api();
    let lead =
        wait_for(&members, "tau-lead", LONG, "the lead to read Active from the outside pod", |m| phase(m) == MemberPhase::Active).await;
    assert_eq!(lead.status.and_then(|s| s.pod_name).as_deref(), Some("outside-lead"));
    members.create(&PostParams::default(), &member("helper", "tau", None)).await.expect("member");
    wait_for(&members, "helper", LONG, "the specialist to run", |m| phase(m) == MemberPhase::Active).await;
    let all = pods.list(&ListParams::default()).await.expect("pods");
    let lead_pods: Vec<String> = all
        .items
        .iter()
        .filter(|p| p.labels().get("agentteams.dev/role").map(String::as_str) == Some("lead"))
        .map(|p| p.name_any())
        .collect();
    assert!(lead_pods.is_empty(), "the operator started a lead pod: {lead_pods:?}");

    // The outside pod finishes: the team disbands, the specialist's pod goes, the lead pod stays.
    set_sim_exit(&pods, "outside-lead", 0, Some("1s")).await;
    wait_for(&ns.api::<Team>(), "tau", LONG, "the team to disband", |t| t.is_disbanded()).await;
    wait_for(&members, "helper", LONG, "the specialist cancelled", |m| phase(m) == MemberPhase::Cancelled).await;
    let kept = pods.get("outside-lead").await.expect("the outside lead pod is not deleted");
    assert!(kept.metadata.deletion_timestamp.is_none(), "the operator deleted a pod it did not create");
    ns.cleanup().await;
}

/// A pod create refused for good (the namespace's `restricted` Pod Security refuses a
/// hostNetwork template) fails its Member with `PodRejected`, the API server's message and a
/// Warning Event after a few tries with backoff; a member whose pods pass keeps starting.
#[tokio::test]
async fn a_pod_refused_by_pod_security_fails_its_member_and_others_keep_starting() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::labelled(&s.client, "podsec", &[("pod-security.kubernetes.io/enforce", "restricted")]).await;
    let _op = Operator::start(ns.name(), 10);
    let mut t = team("upsilon", 4);
    let mut host = support::teams::agent_type("host");
    if let Some(spec) = host.template.spec.as_mut() {
        spec.host_network = Some(true);
    }
    t.spec.agents.push(host);
    ns.api::<Team>().create(&PostParams::default(), &t).await.expect("team");
    let members: Api<Member> = ns.api();
    let mut bad = member("on-host", "upsilon", None);
    bad.spec.agent = "host".into();
    members.create(&PostParams::default(), &bad).await.expect("member");
    members.create(&PostParams::default(), &member("fine", "upsilon", None)).await.expect("member");
    wait_for(&members, "fine", LONG, "the compliant member to run", |m| phase(m) == MemberPhase::Active).await;
    let failed = wait_for(&members, "on-host", LONG, "the refused member to fail", |m| phase(m) == MemberPhase::Failed).await;
    let st = failed.status.expect("status");
    assert_eq!(st.reason.as_deref(), Some("PodRejected"));
    assert!(st.message.as_deref().is_some_and(|m| m.contains("PodSecurity")), "{:?}", st.message);
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    wait_for_any(&events, TIMEOUT, "a PodRejected Warning Event", |e: &k8s_openapi::api::events::v1::Event| {
        e.reason.as_deref() == Some("PodRejected") && e.type_.as_deref() == Some("Warning")
    })
    .await;
    ns.cleanup().await;
}

/// A pod made by someone else under the name a member's pod will have (team, agent name and a
/// piece of the Member's uid, all readable) is not taken for the member's: the member fails with
/// `PodRejected` saying the name is taken, and the other pod is neither adopted nor deleted.
#[tokio::test]
async fn a_pod_squatting_a_members_pod_name_is_refused_not_adopted() {
    let (_s, ns, _op) = setup("squat", 10).await;
    let pods: Api<Pod> = ns.api();
    ns.api::<Team>().create(&PostParams::default(), &team("chi", 1)).await.expect("team");
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("first", "chi", None)).await.expect("member");
    let first = wait_for(&members, "first", LONG, "first to run", |m| phase(m) == MemberPhase::Active).await;
    members.create(&PostParams::default(), &member("second", "chi", None)).await.expect("member");
    let second = wait_for(&members, "second", LONG, "second to be named", |m| m.agent_name().is_some()).await;
    assert_eq!(second.phase(), MemberPhase::Queued);

    // Its pod's name, taken first by a pod of nobody's.
    let taken = team_operator::controller::pod::pod_name("chi", second.agent_name().unwrap(), &second.uid().unwrap(), 0);
    pods.create(&PostParams::default(), &kwok_pod(&taken).build()).await.expect("squatting pod");
    set_sim_exit(&pods, &first.status.and_then(|s| s.pod_name).expect("pod name"), 0, Some("1s")).await;

    let failed = wait_for(&members, "second", LONG, "second to fail", |m| phase(m) == MemberPhase::Failed).await;
    let st = failed.status.expect("status");
    assert_eq!(st.reason.as_deref(), Some("PodRejected"));
    assert!(st.message.as_deref().is_some_and(|m| m.contains("its name is taken")), "{:?}", st.message);
    let kept = pods.get(&taken).await.expect("the squatting pod is not deleted");
    assert!(kept.metadata.deletion_timestamp.is_none(), "the operator deleted a pod it did not create");
    assert!(kept.owner_references().is_empty(), "the operator adopted a pod it did not create: {:?}", kept.owner_references());
    ns.cleanup().await;
}
