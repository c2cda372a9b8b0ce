//! The conditions that tools read, on the real stack: the real `kubectl wait` (from the PATH that
//! `hack/stack.sh env` sets) returns as Members, Teams and TeamTasks complete or fail; the
//! conditions come in the same write as the phase; `kubectl explain` describes each kind and
//! `kubectl get teams` shows the lead and the cap.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::process::Output;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::operator::Operator;
use support::teams::{member, task, team};
use support::*;
use team_operator::api::{Member, MemberPhase, Team, TeamTask};

/// How long a `kubectl wait` here may wait: members run 2 s on kwok.
const WAIT: &str = "--timeout=90s";

/// Runs the real kubectl against the stack; `--cache-dir` of its own, so a discovery or OpenAPI
/// cache from before the CRDs changed is not what it reads.
async fn kubectl(args: &[&str]) -> Output {
    let cache = scratch_dir("conditions-kubectl-cache");
    let kubeconfig = kubeconfig_path();
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(&kubeconfig).arg("--cache-dir").arg(&cache).args(args).kill_on_drop(true);
    cmd.output()
        .await
        .unwrap_or_else(|e| panic!("running kubectl {args:?} (is the stack's PATH set? `eval \"$(hack/stack.sh env)\"`): {e}"))
}

/// `kubectl wait --for=condition=<cond> <object>` in `ns`, which must succeed.
async fn kubectl_wait(ns: &str, cond: &str, object: &str) {
    let out = kubectl(&["-n", ns, "wait", &format!("--for=condition={cond}"), object, WAIT]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl wait --for=condition={cond} {object} failed: {stdout}{stderr}");
    assert!(stdout.contains("condition met"), "kubectl wait --for=condition={cond} {object}: {stdout}");
}

fn cond<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

/// The status ("True"/"False") of each of `types`, in order.
fn statuses(conditions: &[Condition], types: &[&str]) -> Vec<String> {
    types.iter().map(|t| cond(conditions, t).status.clone()).collect()
}

async fn setup(prefix: &str) -> (Stack, TestNamespace, Operator) {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, prefix).await;
    let op = Operator::start(ns.name(), 10);
    (s, ns, op)
}

#[tokio::test]
async fn kubectl_wait_returns_when_a_member_runs_completes_or_fails() {
    let (_s, ns, _op) = setup("cond-member").await;
    ns.api::<Team>().create(&PostParams::default(), &team("omega", 3)).await.expect("team");
    let members: Api<Member> = ns.api();
    for m in [member("good", "omega", Some((0, "2s"))), member("bad", "omega", Some((1, "2s"))), member("runner", "omega", None)] {
        members.create(&PostParams::default(), &m).await.expect("member");
    }
    // Started before any of them finished: each wait returns on the transition it waits for.
    tokio::join!(
        kubectl_wait(ns.name(), "Complete", "member/good"),
        kubectl_wait(ns.name(), "Failed", "member/bad"),
        kubectl_wait(ns.name(), "Ready", "member/runner"),
    );

    let good = members.get("good").await.expect("good");
    let st = good.status.clone().expect("status");
    assert_eq!(good.phase(), MemberPhase::Completed);
    assert_eq!(statuses(&st.conditions, &["Ready", "Complete", "Failed"]), ["False", "True", "False"], "{}", describe(&good));
    assert_eq!(cond(&st.conditions, "Complete").reason, "PodSucceeded");

    let bad = members.get("bad").await.expect("bad");
    let st = bad.status.clone().expect("status");
    assert_eq!((bad.phase(), st.exit_code), (MemberPhase::Failed, Some(1)));
    assert_eq!(statuses(&st.conditions, &["Ready", "Complete", "Failed"]), ["False", "False", "True"], "{}", describe(&bad));
    let failed = cond(&st.conditions, "Failed");
    assert_eq!(Some(failed.reason.as_str()), st.reason.as_deref(), "the Failed condition carries the member's reason");
    assert_eq!(Some(failed.message.as_str()), st.message.as_deref());
    assert!(failed.message.contains("exit code 1"), "{failed:?}");
    assert_eq!(failed.observed_generation, bad.metadata.generation);

    let runner = members.get("runner").await.expect("runner");
    let st = runner.status.clone().expect("status");
    assert_eq!(statuses(&st.conditions, &["Ready", "Complete", "Failed"]), ["True", "False", "False"], "{}", describe(&runner));
    // Ready flipped when the pod ran; Complete and Failed have held False since the member queued.
    let (ready, complete) = (cond(&st.conditions, "Ready"), cond(&st.conditions, "Complete"));
    assert!(ready.last_transition_time.0 >= complete.last_transition_time.0, "{:?}", st.conditions);

    // Refused for a missing team: Failed at once, with the refusal's reason.
    members.create(&PostParams::default(), &member("orphan", "nosuchteam", None)).await.expect("member");
    kubectl_wait(ns.name(), "Failed", "member/orphan").await;
    let orphan = members.get("orphan").await.expect("orphan");
    assert_eq!(cond(&orphan.status.expect("status").conditions, "Failed").reason, "TeamNotFound");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_team_completes_or_fails_with_its_lead_and_its_open_tasks_fail() {
    let (_s, ns, _op) = setup("cond-team").await;
    let teams: Api<Team> = ns.api();
    for name in ["done", "broken"] {
        teams.create(&PostParams::default(), &team(name, 2)).await.expect("team");
    }
    tokio::join!(kubectl_wait(ns.name(), "Ready", "team/done"), kubectl_wait(ns.name(), "Ready", "team/broken"));

    // `kubectl get teams` shows the lead and the cap.
    let out = kubectl(&["-n", ns.name(), "get", "team", "done"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.len() == 2 && rows[0].starts_with(&["NAME", "PHASE", "LEAD", "MAX"]), "{table}");
    assert_eq!(&rows[1][..4], ["done", "Active", "lead", "2"], "{table}");

    let tasks: Api<TeamTask> = ns.api();
    tasks.create(&PostParams::default(), &task("open", "done", None, &[])).await.expect("task");
    let members: Api<Member> = ns.api();
    for (name, code) in [("done", 0), ("broken", 1)] {
        let lead = wait_for(&members, &format!("{name}-lead"), TIMEOUT, "the lead's pod", |m| {
            m.status.as_ref().is_some_and(|s| s.pod_name.is_some())
        })
        .await;
        set_sim_exit(&ns.api(), lead.status.and_then(|s| s.pod_name).as_deref().expect("pod"), code, None).await;
    }
    tokio::join!(
        kubectl_wait(ns.name(), "Complete", "team/done"),
        kubectl_wait(ns.name(), "Failed", "team/broken"),
        kubectl_wait(ns.name(), "Failed", "teamtask/open"),
    );

    let types = ["Ready", "Complete", "Failed", "Disbanded"];
    let done = teams.get("done").await.expect("done");
    let cs = done.status.clone().expect("status").conditions;
    assert_eq!(statuses(&cs, &types), ["False", "True", "False", "True"], "{}", describe(&done));
    assert_eq!((cond(&cs, "Complete").reason.as_str(), cond(&cs, "Disbanded").reason.as_str()), ("LeadCompleted", "LeadCompleted"));
    assert_eq!(cond(&cs, "Complete").observed_generation, done.metadata.generation);
    let broken = teams.get("broken").await.expect("broken");
    let cs = broken.status.clone().expect("status").conditions;
    assert_eq!(statuses(&cs, &types), ["False", "False", "True", "True"], "{}", describe(&broken));
    assert_eq!(cond(&cs, "Failed").reason, "LeadFailed");
    // The README's CI recipe: wait for the end, then check once that the lead completed.
    for (team, completed) in [("done", true), ("broken", false)] {
        kubectl_wait(ns.name(), "Disbanded", &format!("team/{team}")).await;
        let out = kubectl(&["-n", ns.name(), "wait", "--for=condition=Complete", &format!("team/{team}"), "--timeout=0s"]).await;
        assert_eq!(out.status.success(), completed, "team {team}: {}", String::from_utf8_lossy(&out.stderr));
    }

    let open = tasks.get("open").await.expect("task");
    let cs = open.status.clone().expect("status").conditions;
    assert_eq!(statuses(&cs, &["Complete", "Failed"]), ["False", "True"], "{}", describe(&open));
    assert_eq!(cond(&cs, "Failed").reason, "TeamDisbanded");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_failed_owner_fails_its_task_for_kubectl_wait() {
    let (_s, ns, _op) = setup("cond-owner").await;
    ns.api::<Team>().create(&PostParams::default(), &team("kappa", 2)).await.expect("team");
    let members: Api<Member> = ns.api();
    members.create(&PostParams::default(), &member("crasher", "kappa", Some((3, "2s")))).await.expect("member");
    let named = wait_for(&members, "crasher", TIMEOUT, "a name", |m| m.agent_name().is_some()).await;
    let tasks: Api<TeamTask> = ns.api();
    tasks.create(&PostParams::default(), &task("owned", "kappa", named.agent_name(), &[])).await.expect("task");
    kubectl_wait(ns.name(), "Failed", "teamtask/owned").await;
    let owned = tasks.get("owned").await.expect("task");
    let st = owned.status.clone().expect("status");
    let failed = cond(&st.conditions, "Failed");
    assert_eq!(failed.reason, "OwnerFailed", "{}", describe(&owned));
    assert!(failed.message.contains("crasher") || failed.message.contains(named.agent_name().unwrap_or_default()), "{failed:?}");
    assert_eq!(cond(&st.conditions, "Complete").status, "False");
    ns.cleanup().await;
}

/// No operator runs here: what the task shows right after the gateway's answer is the gateway's
/// own write, so its conditions come with the state and not from a reconcile after it.
#[tokio::test]
async fn a_task_moved_through_the_gateway_gets_its_conditions_in_the_same_write() {
    use fixture::*;
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "cond-gateway").await;
    let gw = start_gateway(&s).await;
    let team = team_with_members(&s, &ns, &gw.bus, "lambda", &["general"]).await;
    let (lead, general) = (team.token("lead"), team.token("general"));
    let tasks: Api<TeamTask> = ns.api();
    let mut names = Vec::new();
    for subject in ["ship it", "try it"] {
        let created =
            ok(call(&gw.url, Some(lead), "team_task", json!({ "action": "create", "subject": subject, "owner": "general" })).await);
        names.push(created["name"].as_str().expect("name").to_owned());
    }
    let update = |name: &str, state: &str, result: &str| json!({ "action": "update", "name": name, "state": state, "result": result });
    ok(call(&gw.url, Some(general), "team_task", update(&names[0], "completed", "shipped v2")).await);
    ok(call(&gw.url, Some(general), "team_task", update(&names[1], "failed", "the build broke")).await);

    let done = tasks.get(&names[0]).await.expect("task");
    let cs = done.status.clone().expect("status").conditions;
    assert_eq!(statuses(&cs, &["Complete", "Failed"]), ["True", "False"], "{}", describe(&done));
    assert_eq!((cond(&cs, "Complete").reason.as_str(), cond(&cs, "Complete").message.as_str()), ("TaskCompleted", "shipped v2"));
    let broke = tasks.get(&names[1]).await.expect("task");
    let cs = broke.status.clone().expect("status").conditions;
    assert_eq!(statuses(&cs, &["Complete", "Failed"]), ["False", "True"], "{}", describe(&broke));
    assert_eq!(cond(&cs, "Failed").reason, "TaskFailed");
    // And kubectl agrees, with nothing left to wait for.
    let out = kubectl(&["-n", ns.name(), "wait", "--for=condition=Complete", &format!("teamtask/{}", names[0]), "--timeout=0s"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    gw.bus.teardown(&team.key(&ns.name)).await.expect("teardown");
    ns.cleanup().await;
}

#[tokio::test]
async fn kubectl_explain_describes_each_kind_and_its_conditions() {
    let s = stack().await;
    let expect = [
        ("team", "A team of AI agents"),
        ("team.spec", "Desired state of a Team"),
        ("team.status.conditions", "it disbanded because its lead completed"),
        ("member", "A member of a Team"),
        ("member.spec", "Desired state of a Member"),
        ("member.status.conditions", "Complete: its pod succeeded"),
        ("teamtask", "A task on a team's board"),
        ("teamtask.status", "Observed state of a TeamTask"),
        ("teamtask.status.conditions", "Complete: the task completed"),
    ];
    for (path, says) in expect {
        let last = std::sync::Mutex::new(String::new());
        // The API server publishes a changed CRD's OpenAPI a moment after it is applied; the CRDs
        // are applied again each round, since the stack is shared with other checkouts.
        wait_until(Duration::from_secs(60), &format!("`kubectl explain {path}` to say {says:?}"), || async {
            install_crds(&s.client).await;
            let out = kubectl(&["explain", path]).await;
            let text = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
            let met = out.status.success() && text.contains(says) && !text.contains("Auto-generated");
            let mut last = last.lock().expect("last output");
            if !met && *last != text {
                eprintln!("kubectl explain {path}: {text}{}", String::from_utf8_lossy(&out.stderr));
                *last = text;
            }
            met
        })
        .await;
    }
}
