//! teamctl as a kubectl user runs it: no `--gateway`, no token. The kubeconfig's client
//! certificate goes to the stack's API server, which proxies to the gateway's APIService (the
//! chart's template, see support/aggregated.rs) with the caller's identity in its front-proxy
//! headers; the gateway authorizes that user with a SubjectAccessReview. Also: those headers are
//! believed from the front proxy only, `-o yaml|json|wide|name`, `-A`, the kubectl plugin, and
//! the completion scripts and man page.
#[path = "fixtures/gateway.rs"]
mod fixture;
mod support;

use std::path::Path;

use fixture::{assert_error, call, ok as ok_call, team_with_members};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use serde_json::{Value, json};
use support::aggregated::{self, AggregatedApi, Pem};
use support::*;
use team_operator::bus::PERSON_SENDER_PREFIX;

/// The stack's admin (a client certificate in system:masters), with the context's namespace `ns`.
fn admin_kubeconfig(ns: &str) -> std::path::PathBuf {
    let pki = stack_dir().join("pki");
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).expect("admin certificate");
    let admin = Pem { ca: String::new(), cert: read("admin.crt"), key: read("admin.key") };
    aggregated::cert_kubeconfig(&admin, Some(ns), &format!("admin-{ns}"))
}

/// The user name the stack's admin certificate carries.
const ADMIN: &str = "team-operator-admin";

/// Runs the real teamctl with `kubeconfig` and nothing else of the environment's teamctl
/// settings; exit code, stdout, stderr.
async fn teamctl(kubeconfig: &Path, api: &AggregatedApi, args: &[&str]) -> (i32, String, String) {
    run_as(env!("CARGO_BIN_EXE_teamctl"), kubeconfig, api, args, None).await
}

async fn run_as(program: &str, kubeconfig: &Path, api: &AggregatedApi, args: &[&str], path: Option<&str>) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env("KUBECONFIG", kubeconfig).env("TEAM_API_GROUP", &api.group);
    for var in ["TEAM_GATEWAY_URL", "TEAM_TOKEN", "TEAM_TOKEN_FILE", "TEAM_NAMESPACE", "TEAM"] {
        cmd.env_remove(var);
    }
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd.output().await.unwrap_or_else(|e| panic!("run {program}: {e}"));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[track_caller]
fn succeeded(r: &(i32, String, String)) -> String {
    assert_eq!(r.0, 0, "exit {}\nstdout:\n{}\nstderr:\n{}", r.0, r.1, r.2);
    r.1.clone()
}

#[tokio::test]
async fn a_client_certificate_user_works_through_the_api_server() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "kubectl-cert").await;
    let api = aggregated::start(&s, &ns).await;
    let team = team_with_members(&s, &ns, &api.bus, "alpha", &["general"]).await;
    let kc = admin_kubeconfig(ns.name());

    // No -n: the context's namespace. The message is the admin's own, by the name on its certificate.
    let sent = succeeded(&teamctl(&kc, &api, &["--team", "alpha", "send", "general", "hello", "from", "the", "kubeconfig"]).await);
    assert!(sent.contains("to general"), "{sent}");
    let got = ok_call(call(&api.url, Some(team.token("general")), "wait_messages", json!({ "timeout_seconds": 5 })).await);
    assert_eq!(got["messages"][0]["body"], "hello from the kubeconfig", "{got}");
    assert_eq!(got["messages"][0]["from"], format!("{PERSON_SENDER_PREFIX}{ADMIN}"), "{got}");

    // The task board, in every output format.
    let name = succeeded(
        &teamctl(&kc, &api, &["-n", ns.name(), "--team", "alpha", "-o", "name", "task", "create", "write tests", "--owner", "general"])
            .await,
    );
    let task = name.trim().strip_prefix("teamtask.agentteams.dev/").unwrap_or_else(|| panic!("-o name: {name}")).to_owned();
    let yaml = succeeded(&teamctl(&kc, &api, &["-n", ns.name(), "--team", "alpha", "get", "tasks", "-o", "yaml"]).await);
    let board: Value = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("-o yaml is not YAML ({e}):\n{yaml}"));
    assert_eq!(
        (board["tasks"][0]["name"].as_str(), board["tasks"][0]["subject"].as_str()),
        (Some(task.as_str()), Some("write tests")),
        "{yaml}"
    );
    assert_eq!(board["tasks"][0]["owner"], "general", "{yaml}");
    let json = succeeded(&teamctl(&kc, &api, &["--team", "alpha", "get", "tasks", task.as_str(), "-o", "json"]).await);
    let one: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("-o json ({e}):\n{json}"));
    assert_eq!(one["state"], "pending", "{json}");
    let table = succeeded(&teamctl(&kc, &api, &["--team", "alpha", "get", "tasks"]).await);
    assert!(table.starts_with("NAME") && table.contains("write tests") && !table.contains("DEPENDS ON"), "{table}");
    let wide = succeeded(&teamctl(&kc, &api, &["--team", "alpha", "get", "members", "-o", "wide"]).await);
    let header = wide.lines().next().unwrap_or_default();
    assert!(header.contains("POD") && header.contains("EXIT"), "{wide}");
    assert!(wide.contains("alpha-general-pod"), "{wide}");

    // The newest messages, read-only: the member still has its message pending.
    let messages = succeeded(&teamctl(&kc, &api, &["--team", "alpha", "get", "messages"]).await);
    assert!(messages.contains(&format!("{PERSON_SENDER_PREFIX}{ADMIN} -> general: hello from the kubeconfig")), "{messages}");

    // A person's wait looks at the lead's inbox (and acks nothing: the acks are the lead's).
    succeeded(&teamctl(&kc, &api, &["--team", "alpha", "send", "lead", "status?"]).await);
    let seen = succeeded(&teamctl(&kc, &api, &["--team", "alpha", "wait", "--timeout", "5"]).await);
    assert!(seen.contains(&format!("{PERSON_SENDER_PREFIX}{ADMIN} -> lead: status?")), "{seen}");
    let again = ok_call(call(&api.url, Some(team.token("lead")), "wait_messages", json!({ "timeout_seconds": 5 })).await);
    assert_eq!(again["messages"][0]["body"], "status?", "the lead still gets it: {again}");

    // -A: the cluster-wide path, this team among them, with its namespace.
    let all = succeeded(&teamctl(&kc, &api, &["-A", "get", "teams"]).await);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(all.lines().any(|l| l.split_whitespace().take(2).eq([ns.name(), "alpha"])), "{all}");

    api.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn a_user_without_rbac_is_refused_by_the_gateway() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "kubectl-norbac").await;
    let api = aggregated::start(&s, &ns).await;
    team_with_members(&s, &ns, &api.bus, "alpha", &["general"]).await;
    // A real cluster user: a client certificate the API server accepts, with no RBAC at all.
    let user = format!("e2e-nobody-{}", ns.name());
    let kc = aggregated::cert_kubeconfig(&aggregated::client_cert("ca", &user, &[]), Some(ns.name()), &user);

    let (code, out, err) = teamctl(&kc, &api, &["--team", "alpha", "send", "general", "hi"]).await;
    assert_eq!(code, 2, "exit code (refused)\n{out}{err}");
    assert!(err.contains("forbidden") && err.contains(&format!("user {user} may not create teams/messages")), "{err}");
    let (code, _, err) = teamctl(&kc, &api, &["--team", "alpha", "-o", "json", "get", "tasks"]).await;
    assert_eq!(code, 2, "{err}");

    // The same user with the verb granted: the refusal was RBAC's, for this user, and nothing else.
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "send" },
        "rules": [{ "apiGroups": ["agentteams.dev"], "resources": ["teams/messages"], "verbs": ["create"] }],
    }))
    .expect("role");
    ns.api::<Role>().create(&PostParams::default(), &role).await.expect("create Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "send" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "send" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    }))
    .expect("binding");
    ns.api::<RoleBinding>().create(&PostParams::default(), &binding).await.expect("create RoleBinding");
    wait_until(TIMEOUT, "the RoleBinding to let the user send", || async {
        teamctl(&kc, &api, &["--team", "alpha", "send", "general", "hi"]).await.0 == 0
    })
    .await;

    api.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn an_exec_plugin_credential_reaches_the_gateway_as_its_user() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "kubectl-exec").await;
    let api = aggregated::start(&s, &ns).await;
    team_with_members(&s, &ns, &api.bus, "alpha", &["general"]).await;
    // The plugin hands teamctl a ServiceAccount's token, as cloud helpers hand out theirs.
    let token = fixture::user_token(&s, ns.name(), "e2e-exec").await;
    let kc = aggregated::exec_kubeconfig(&token, ns.name(), &format!("exec-{}", ns.name()));
    let (code, out, err) = teamctl(&kc, &api, &["--team", "alpha", "get", "members"]).await;
    assert_eq!(code, 2, "{out}{err}");
    let user = format!("system:serviceaccount:{}:e2e-exec", ns.name());
    assert!(err.contains(&format!("user {user} may not list members")), "{err}");

    api.stop().await;
    ns.cleanup().await;
}

/// A request straight to the gateway, as `client` builds it, with `headers`.
async fn post(client: &reqwest::Client, url: &str, headers: &[(&str, &str)], body: Value) -> reqwest::Result<(u16, Value)> {
    let mut req = client.post(url).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }))))
}

/// A client of the gateway's TLS port that trusts its serving CA, presenting `identity` if given.
fn tls_client(api: &AggregatedApi, identity: Option<&Pem>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(api.serving_ca.as_bytes()).expect("CA"))
        .resolve(&api.server_name, api.tls_addr);
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{}{}", id.cert, id.key).as_bytes()).expect("identity"));
    }
    b.build().expect("client")
}

#[tokio::test]
async fn a_forged_x_remote_user_without_the_front_proxy_certificate_gets_nothing() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "kubectl-forged").await;
    let api = aggregated::start(&s, &ns).await;
    let team = team_with_members(&s, &ns, &api.bus, "alpha", &["general"]).await;
    let body = json!({ "to": "general", "body": "forged", "team": "alpha", "namespace": ns.name() });
    let forged = [("x-remote-user", ADMIN), ("x-remote-group", "system:masters")];
    let tls_url = format!("https://{}:{}/v1/tools/send_message", api.server_name, api.tls_addr.port());
    let plain_url = format!("{}/v1/tools/send_message", api.url);

    // Plain HTTP: refused, with or without a token beside the headers.
    let plain = reqwest::Client::new();
    let answer = post(&plain, &plain_url, &forged, body.clone()).await.expect("plain port");
    assert_error(&answer, 401, "unauthenticated", "front proxy");
    let bearer = format!("Bearer {}", team.token("lead"));
    let with_token: Vec<(&str, &str)> = forged.iter().copied().chain([("authorization", bearer.as_str())]).collect();
    assert_error(&post(&plain, &plain_url, &with_token, body.clone()).await.expect("plain port"), 401, "unauthenticated", "x-remote-user");

    // TLS without a client certificate: refused.
    let answer = post(&tls_client(&api, None), &tls_url, &forged, body.clone()).await.expect("TLS port");
    assert_error(&answer, 401, "unauthenticated", "front proxy");

    // A cluster client certificate (the admin's, not the front proxy's CA): no connection at all.
    let pki = stack_dir().join("pki");
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).expect("admin certificate");
    let admin = Pem { ca: String::new(), cert: read("admin.crt"), key: read("admin.key") };
    let refused = post(&tls_client(&api, Some(&admin)), &tls_url, &forged, body.clone()).await;
    assert!(refused.is_err(), "a certificate of another CA was let through: {refused:?}");

    // Signed by the front-proxy CA but not an allowed name: refused, naming it.
    let impostor = aggregated::client_cert("front-proxy-ca", "not-the-front-proxy", &[]);
    let answer = post(&tls_client(&api, Some(&impostor)), &tls_url, &forged, body.clone()).await.expect("TLS port");
    assert_error(&answer, 401, "unauthenticated", "CN=not-the-front-proxy");

    // Nothing reached the inbox.
    let peek = ok_call(call(&api.url, Some(team.token("general")), "wait_messages", json!({ "timeout_seconds": 0 })).await);
    assert_eq!(peek["messages"], json!([]), "a forged call was delivered: {peek}");

    // The real front-proxy certificate: its headers are the caller (so the refusals above were
    // the certificate's doing): a user without RBAC is forbidden, the admin's group delivers.
    let proxy = tls_client(&api, Some(&aggregated::front_proxy_client()));
    let nobody = [("x-remote-user", "e2e-nobody")];
    assert_error(&post(&proxy, &tls_url, &nobody, body.clone()).await.expect("TLS port"), 403, "forbidden", "user e2e-nobody may not");
    let (status, sent) = post(&proxy, &tls_url, &forged, body.clone()).await.expect("TLS port");
    assert_eq!(status, 200, "{sent}");
    let got = ok_call(call(&api.url, Some(team.token("general")), "wait_messages", json!({ "timeout_seconds": 5 })).await);
    assert_eq!(got["messages"][0]["from"], format!("{PERSON_SENDER_PREFIX}{ADMIN}"), "{got}");

    api.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn teamctl_is_the_kubectl_plugin_kubectl_team() {
    let s = stack().await;
    install_crds(&s.client).await;
    let ns = TestNamespace::new(&s.client, "kubectl-plugin").await;
    let api = aggregated::start(&s, &ns).await;
    team_with_members(&s, &ns, &api.bus, "alpha", &["general"]).await;
    let kc = admin_kubeconfig(ns.name());

    // kubectl finds kubectl-team on PATH (a link to teamctl, as the krew manifest installs it).
    let dir = scratch_dir(&format!("plugin-{}", ns.name()));
    let link = dir.join(team_operator::teamctl::PLUGIN_NAME);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_teamctl"), &link).expect("link kubectl-team");
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let listed = succeeded(&run_as("kubectl", &kc, &api, &["plugin", "list"], Some(&path)).await);
    assert!(listed.contains(&link.display().to_string()), "{listed}");
    let members = succeeded(&run_as("kubectl", &kc, &api, &["team", "--team", "alpha", "get", "members"], Some(&path)).await);
    assert!(members.starts_with("NAME") && members.contains("general"), "{members}");
    let help = succeeded(&run_as("kubectl", &kc, &api, &["team", "--help"], Some(&path)).await);
    assert!(help.contains("Usage: kubectl team"), "{help}");

    api.stop().await;
    ns.cleanup().await;
}

#[test]
fn completion_scripts_and_the_man_page_are_generated() {
    let teamctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_teamctl")).args(args).output().expect("run teamctl");
        assert!(out.status.success(), "teamctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    assert!(teamctl(&["completion", "bash"]).contains("_teamctl()"));
    assert!(teamctl(&["completion", "zsh"]).starts_with("#compdef teamctl"));
    assert!(teamctl(&["completion", "fish"]).contains("complete -c teamctl"));
    let man = teamctl(&["man"]);
    assert!(man.contains(".TH teamctl") && man.contains("\\-\\-kubeconfig"), "{man}");
}

#[test]
fn the_krew_manifest_names_the_archive_hack_krew_packs() {
    let out = scratch_dir("krew");
    let status = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/krew.sh"))
        .arg(&out)
        .env("TEAMCTL_BIN", env!("CARGO_BIN_EXE_teamctl"))
        .status()
        .expect("run hack/krew.sh");
    assert!(status.success(), "hack/krew.sh failed");
    let manifest: Value = serde_yaml::from_str(&std::fs::read_to_string(out.join("team.yaml")).expect("team.yaml")).expect("YAML");
    assert_eq!((manifest["kind"].as_str(), manifest["metadata"]["name"].as_str()), (Some("Plugin"), Some("team")));
    assert_eq!(manifest["spec"]["version"], format!("v{}", env!("CARGO_PKG_VERSION")));
    let platform = &manifest["spec"]["platforms"][0];
    assert_eq!(platform["bin"], team_operator::teamctl::PLUGIN_NAME);
    let archive = out.join("kubectl-team_linux_amd64.tar.gz");
    let sha = std::process::Command::new("sha256sum").arg(&archive).output().expect("sha256sum");
    let sha = String::from_utf8_lossy(&sha.stdout).split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(platform["sha256"], sha, "the manifest's sha256 is the archive's");
    assert!(
        platform["uri"].as_str().is_some_and(|u| u.ends_with(&format!("/v{}/kubectl-team_linux_amd64.tar.gz", env!("CARGO_PKG_VERSION")))),
        "{platform}"
    );
    let listing = std::process::Command::new("tar").arg("tzf").arg(&archive).output().expect("tar");
    assert_eq!(String::from_utf8_lossy(&listing.stdout).trim(), "kubectl-team");
}
