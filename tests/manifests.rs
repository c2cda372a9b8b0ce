//! What a user sees at `kubectl apply` time: the generated CRDs are current, the example applies,
//! and invalid manifests are refused with a message naming the field and the rule.
mod support;

use std::process::Command;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::*;

#[test]
fn committed_crds_match_the_types() {
    let out = Command::new(env!("CARGO_BIN_EXE_team-operator"))
        .args(["crd", "--check", "--out", concat!(env!("CARGO_MANIFEST_DIR"), "/crds")])
        .output()
        .expect("run team-operator crd");
    assert!(out.status.success(), "crds/ is stale; run `cargo run -- crd`: {}", String::from_utf8_lossy(&out.stderr));
}

fn api(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("agentteams.dev", "v1alpha1", kind));
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn team(spec: Value) -> Value {
    json!({ "apiVersion": "agentteams.dev/v1alpha1", "kind": "Team", "metadata": { "name": "t" }, "spec": spec })
}

fn good_spec() -> Value {
    json!({
        "maxAgents": 2,
        "lead": { "agent": "lead" },
        "agents": [{ "name": "lead", "template": { "spec": { "containers": [{ "name": "a", "image": "x" }] } } }],
    })
}

/// Creates `obj` and returns the API server's refusal message.
async fn refusal(api: &Api<DynamicObject>, obj: Value) -> String {
    let obj: DynamicObject = serde_json::from_value(obj).expect("object");
    match api.create(&PostParams::default(), &obj).await {
        Ok(o) => panic!("the API server accepted an invalid object: {o:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "manifests").await;
    let teams = api(&s.client, ns.name(), "Team");
    let members = api(&s.client, ns.name(), "Member");

    let mut zero = good_spec();
    zero["maxAgents"] = json!(0);
    let msg = refusal(&teams, team(zero)).await;
    assert!(msg.contains("spec.maxAgents") && msg.contains("greater than or equal to 1"), "{msg}");

    let mut typo = good_spec();
    typo["agents"][0]["memory"] = json!("locl");
    let msg = refusal(&teams, team(typo)).await;
    assert!(msg.contains("spec.agents[0].memory") && msg.contains("Unsupported value"), "{msg}");

    let mut bad_lead = good_spec();
    bad_lead["lead"]["agent"] = json!("boss");
    let msg = refusal(&teams, team(bad_lead)).await;
    assert!(msg.contains("spec.lead.agent must name one of spec.agents"), "{msg}");

    // `lead` as a recipient means the team's lead, so an agent type named `lead` must be it.
    let mut not_the_lead = good_spec();
    not_the_lead["lead"]["agent"] = json!("planner");
    not_the_lead["agents"] = json!([
        { "name": "planner", "template": { "spec": { "containers": [{ "name": "a", "image": "x" }] } } },
        { "name": "lead", "template": { "spec": { "containers": [{ "name": "a", "image": "x" }] } } },
    ]);
    let msg = refusal(&teams, team(not_the_lead)).await;
    assert!(msg.contains("spec.agents") && msg.contains("agent type named `lead` must be the lead's"), "{msg}");

    let mut bad_name = good_spec();
    bad_name["agents"][0]["name"] = json!("Lead_Agent");
    let msg = refusal(&teams, team(bad_name)).await;
    assert!(msg.contains("spec.agents[0].name") && msg.contains("should match"), "{msg}");

    // spec.priority: an integer from -1000 to 1000.
    for (priority, says) in [
        (json!(5000), "less than or equal to 1000"),
        (json!(-5000), "greater than or equal to -1000"),
        (json!("high"), "must be of type integer"),
    ] {
        let mut bad = good_spec();
        bad["priority"] = priority.clone();
        let msg = refusal(&teams, team(bad)).await;
        assert!(msg.contains("spec.priority") && msg.contains(says), "{priority}: {msg}");
    }

    // spec.retention: hours, minutes and seconds, at most a year.
    for (retention, says) in [("1d", "should match"), ("24", "should match"), ("9000h", "at most 8760h")] {
        let mut bad = good_spec();
        bad["retention"] = json!(retention);
        let msg = refusal(&teams, team(bad)).await;
        assert!(msg.contains("spec.retention") && msg.contains(says), "{retention}: {msg}");
    }

    // Budgets: each limit at least 1, and a budget sets at least one.
    let mut zero_turns = good_spec();
    zero_turns["agents"][0]["budget"] = json!({ "turns": 0 });
    let msg = refusal(&teams, team(zero_turns)).await;
    assert!(msg.contains("spec.agents[0].budget.turns") && msg.contains("greater than or equal to 1"), "{msg}");
    let mut empty = good_spec();
    empty["budget"] = json!({});
    let msg = refusal(&teams, team(empty)).await;
    assert!(msg.contains("spec.budget") && msg.contains("a budget sets at least one of turns, seconds, tokens"), "{msg}");
    let mut long = good_spec();
    long["budget"] = json!({ "seconds": 31_536_001 });
    let msg = refusal(&teams, team(long)).await;
    assert!(msg.contains("spec.budget.seconds") && msg.contains("less than or equal to"), "{msg}");

    let no_team =
        json!({ "apiVersion": "agentteams.dev/v1alpha1", "kind": "Member", "metadata": { "name": "m" }, "spec": { "agent": "lead" } });
    let msg = refusal(&members, no_team).await;
    assert!(msg.contains("spec.team") && msg.contains("Required value"), "{msg}");

    // spec.team is immutable once set.
    let m = json!({ "apiVersion": "agentteams.dev/v1alpha1", "kind": "Member", "metadata": { "name": "m" }, "spec": { "team": "t", "agent": "lead" } });
    members.create(&PostParams::default(), &serde_json::from_value(m).expect("member")).await.expect("valid member");
    let err = members
        .patch("m", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "team": "other" } })))
        .await
        .expect_err("team is immutable");
    assert!(err.to_string().contains("spec.team is immutable"), "{err}");
    ns.cleanup().await;
}

#[tokio::test]
async fn the_spec_review_example_applies_with_kubectl() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "example").await;
    let out = Command::new("kubectl")
        .args(["apply", "-n", ns.name(), "-f", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/spec-review.yaml")])
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("run kubectl (the stack's, from `hack/stack.sh env`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kubectl apply failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("team.agentteams.dev/spec-review created"), "{stdout}");
    assert_eq!(stdout.matches("member.agentteams.dev/").count(), 5, "{stdout}");
    ns.cleanup().await;
}
