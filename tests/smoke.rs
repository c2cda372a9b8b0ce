//! Smoke tests of the local stack itself: kwok pod lifecycles, the garbage collector,
//! TokenRequest/TokenReview and Redis streams. Each test runs in its own namespace.
mod support;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use redis::AsyncCommands;
use redis::streams::StreamReadReply;
use support::*;

#[tokio::test]
async fn kwok_runs_pod_to_succeeded() {
    let s = stack().await;
    let ns = TestNamespace::new(&s.client, "smoke-succeeded").await;
    let pods: Api<Pod> = ns.api();

    // Without an exit code the pod is scheduled, runs and stays Running.
    pods.create(&PostParams::default(), &kwok_pod("agent").build()).await.unwrap();
    let running = wait_for(&pods, "agent", TIMEOUT, "pod agent to be Running", |p| pod_phase(p) == Some("Running")).await;
    let status = running.status.as_ref().unwrap();
    assert!(status.pod_ip.as_deref().is_some_and(|ip| ip.starts_with("10.0.")), "{status:?}");
    assert!(running.spec.as_ref().unwrap().node_name.as_deref().unwrap().starts_with("kwok-node-"));

    // The simulated agent exits 0 after a short run.
    set_sim_exit(&pods, "agent", 0, Some("500ms")).await;
    let done = wait_for(&pods, "agent", TIMEOUT, "pod agent to be Succeeded", |p| pod_phase(p) == Some("Succeeded")).await;
    let t = terminated(&done).expect("terminated container state");
    assert_eq!(t.exit_code, 0);
    assert_eq!(t.reason.as_deref(), Some("Completed"));

    ns.cleanup().await;
}

#[tokio::test]
async fn kwok_fails_pod_with_oomkilled_137() {
    let s = stack().await;
    let ns = TestNamespace::new(&s.client, "smoke-oom").await;
    let pods: Api<Pod> = ns.api();

    let pod = kwok_pod("oom").exit_code(137).duration("1s").build();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let failed = wait_for(&pods, "oom", TIMEOUT, "pod oom to be Failed", |p| pod_phase(p) == Some("Failed")).await;
    let t = terminated(&failed).expect("terminated container state");
    assert_eq!(t.exit_code, 137);
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"));

    // Any other non-zero code fails with reason Error.
    pods.create(&PostParams::default(), &kwok_pod("crash").exit_code(3).build()).await.unwrap();
    let failed = wait_for(&pods, "crash", TIMEOUT, "pod crash to be Failed", |p| pod_phase(p) == Some("Failed")).await;
    let t = terminated(&failed).expect("terminated container state");
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));

    // Deleting a pod on a kwok node removes it (kwok plays the kubelet's part).
    pods.delete("crash", &DeleteParams::default()).await.unwrap();
    wait_deleted(&pods, "crash", None, TIMEOUT, "pod crash to be removed").await;

    ns.cleanup().await;
}

#[tokio::test]
async fn garbage_collector_deletes_orphaned_child() {
    let s = stack().await;
    let ns = TestNamespace::new(&s.client, "smoke-gc").await;
    let cms: Api<ConfigMap> = ns.api();

    let cm = |name: &str| ConfigMap { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    let owner = cms.create(&PostParams::default(), &cm("owner")).await.unwrap();
    let mut child = cm("child");
    child.metadata.owner_references = Some(vec![owner_ref(&owner)]);
    let child = cms.create(&PostParams::default(), &child).await.unwrap();

    // Background deletion: the owner goes at once; the garbage collector removes the child.
    cms.delete("owner", &DeleteParams::background()).await.unwrap();
    wait_deleted(&cms, "child", child.metadata.uid.as_deref(), TIMEOUT, "the garbage collector to delete ConfigMap child of deleted owner")
        .await;

    ns.cleanup().await;
}

#[tokio::test]
async fn token_request_and_review_round_trip() {
    let s = stack().await;
    let ns = TestNamespace::new(&s.client, "smoke-token").await;
    let sas: Api<ServiceAccount> = ns.api();

    let sa = ServiceAccount { metadata: ObjectMeta { name: Some("agent".into()), ..Default::default() }, ..Default::default() };
    sas.create(&PostParams::default(), &sa).await.unwrap();

    let audience = "agentteams.dev/gateway";
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { audiences: Some(vec![audience.into()]), expiration_seconds: Some(600), ..Default::default() }),
        ..Default::default()
    };
    let issued: TokenRequest = sas.create_subresource("token", "agent", &PostParams::default(), &request).await.expect("TokenRequest");
    let token = issued.status.and_then(|s| s.token).expect("TokenRequest status.token");
    assert!(!token.is_empty());

    let reviews: Api<TokenReview> = Api::all(s.client.clone());
    let review =
        TokenReview { spec: TokenReviewSpec { token: token.clone(), audiences: Some(vec![audience.into()]) }, ..Default::default() };
    let reviewed = reviews.create(&PostParams::default(), &review).await.expect("TokenReview");
    let status = reviewed.status.expect("TokenReview status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.expect("user info");
    assert_eq!(user.username.as_deref(), Some(format!("system:serviceaccount:{}:agent", ns.name()).as_str()));
    assert_eq!(status.audiences, Some(vec![audience.to_string()]));

    // A token for another audience is rejected for this one.
    let wrong = TokenReview { spec: TokenReviewSpec { token, audiences: Some(vec!["someone-else".into()]) }, ..Default::default() };
    let reviewed = reviews.create(&PostParams::default(), &wrong).await.expect("TokenReview");
    assert_ne!(reviewed.status.and_then(|s| s.authenticated), Some(true));

    ns.cleanup().await;
}

#[tokio::test]
async fn redis_stream_round_trip() {
    let s = stack().await;
    let mut con = s.redis().await;
    let key = format!("smoke:{{{}}}:inbox", uuid::Uuid::new_v4().simple());

    let id: String = con.xadd(&key, "*", &[("from", "lead"), ("body", "hello")]).await.unwrap();
    let reply: StreamReadReply = con.xread(&[&key], &["0"]).await.unwrap();
    assert_eq!(reply.keys.len(), 1);
    let entries = &reply.keys[0].ids;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    assert_eq!(entries[0].get::<String>("from").as_deref(), Some("lead"));
    assert_eq!(entries[0].get::<String>("body").as_deref(), Some("hello"));

    let _: () = con.del(&key).await.unwrap();
}
