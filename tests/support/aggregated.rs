//! The gateway as an aggregated API in the suites: a real APIService that the stack's API server
//! proxies to, with its front-proxy client certificate and the caller's identity.
//!
//! The gateway runs in-process (as the chart's gateway ServiceAccount, so the chart's RBAC must
//! let it read the front-proxy trust) and serves TLS on the stack's node address (NODE_IP,
//! 10.244.0.1, which this machine owns: loopback endpoints are invalid, and the aggregator dials
//! endpoints with `--enable-aggregator-routing`). A selectorless Service with a hand-made
//! EndpointSlice points there. The APIService, its caller ClusterRole and binding are the chart's
//! own `templates/apiservice.yaml`, rendered for a group of the test's own
//! (`<namespace>.e2e.agentteams.dev`), so tests running at once never share one and the chart's
//! template is what the API server runs.
//!
//! An APIService that is not Available stalls every namespace deletion of the cluster (the
//! namespace controller cannot finish discovery), so [`AggregatedApi::stop`] (or `Drop`, on a
//! panic) deletes it before the gateway stops, and [`start`] first deletes any left behind by a
//! killed test run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use serde_json::json;
use team_operator::bus::{Bus, BusConfig};
use team_operator::gateway::tls::ServingCert;
use team_operator::gateway::{GatewaySettings, GatewayState};
use team_operator::metrics::Metrics;

use super::identity::{CHART, chart_user, fullname, impersonating, ok};
use super::{Stack, TIMEOUT, TestNamespace, stack_dir, wait_for};

/// Suffix of the suites' API groups; what the sweep of left-over APIServices looks for.
pub const GROUP_SUFFIX: &str = "e2e.agentteams.dev";

/// The stack's node address (hack/node.sh NODE_IP): where the test gateway serves TLS.
pub fn node_ip() -> String {
    std::env::var("NODE_IP").unwrap_or_else(|_| "10.244.0.1".into())
}

/// A CA and a certificate it signed, as PEM.
pub struct Pem {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

/// A new CA and a serving certificate for `host`.
pub fn serving_pki(host: &str) -> Pem {
    let ca_key = KeyPair::generate().expect("CA key");
    let params = ca_params("team-operator e2e gateway CA");
    let ca = params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec![host.to_owned()]).expect("serving params");
    p.distinguished_name.push(DnType::CommonName, host);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).expect("serving cert");
    Pem { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() }
}

/// A client certificate with common name `cn` and organizations `groups`, signed by the CA whose
/// files are `pki/<ca>.crt` and `pki/<ca>.key` in the stack's state (`ca` for cluster users,
/// `front-proxy-ca` for the front proxy).
pub fn client_cert(ca: &str, cn: &str, groups: &[&str]) -> Pem {
    let pki = stack_dir().join("pki");
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap_or_else(|e| panic!("reading {}: {e}", pki.join(f).display()));
    let (ca_pem, ca_key) = (read(&format!("{ca}.crt")), read(&format!("{ca}.key")));
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key).expect("CA key")).expect("CA cert");
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("client params");
    p.distinguished_name.push(DnType::CommonName, cn);
    for g in groups {
        p.distinguished_name.push(DnType::OrganizationName, *g);
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).expect("client cert");
    Pem { ca: ca_pem, cert: cert.pem(), key: key.serialize_pem() }
}

/// The stack's real front-proxy client certificate (what the API server proxies with).
pub fn front_proxy_client() -> Pem {
    let pki = stack_dir().join("pki");
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap_or_else(|e| panic!("reading {}: {e}", pki.join(f).display()));
    Pem { ca: read("front-proxy-ca.crt"), cert: read("front-proxy-client.crt"), key: read("front-proxy-client.key") }
}

/// A kubeconfig like the stack's admin one whose user is the client certificate `pem`, with the
/// context's namespace `namespace`; `tag` names the file.
pub fn cert_kubeconfig(pem: &Pem, namespace: Option<&str>, tag: &str) -> PathBuf {
    let dir = super::scratch_dir("kubeconfigs");
    let (cert, key) = (dir.join(format!("{tag}.crt")), dir.join(format!("{tag}.key")));
    std::fs::write(&cert, &pem.cert).expect("write cert");
    std::fs::write(&key, &pem.key).expect("write key");
    let path = super::kubeconfig_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    for entry in kc["users"].as_sequence_mut().expect("kubeconfig users") {
        entry["user"] = serde_yaml::to_value(json!({
            "client-certificate": cert.to_string_lossy(),
            "client-key": key.to_string_lossy(),
        }))
        .expect("user");
    }
    for entry in kc["contexts"].as_sequence_mut().expect("kubeconfig contexts") {
        match namespace {
            Some(ns) => entry["context"]["namespace"] = ns.into(),
            None => {
                if let Some(m) = entry["context"].as_mapping_mut() {
                    m.remove("namespace");
                }
            }
        }
    }
    let file = dir.join(format!("{tag}.kubeconfig"));
    std::fs::write(&file, serde_yaml::to_string(&kc).expect("yaml")).expect("write kubeconfig");
    file
}

/// A kubeconfig like the stack's admin one whose user is an exec plugin (a script, as EKS's or
/// GKE's helpers are) printing `token` in an ExecCredential; `tag` names the files.
pub fn exec_kubeconfig(token: &str, namespace: &str, tag: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = super::scratch_dir("kubeconfigs");
    let script = dir.join(format!("{tag}-credential.sh"));
    let credential = json!({ "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": { "token": token } });
    std::fs::write(&script, format!("#!/bin/sh\ncat <<'EOF'\n{credential}\nEOF\n")).expect("write the exec plugin");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod the exec plugin");
    let path = super::kubeconfig_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    for entry in kc["users"].as_sequence_mut().expect("kubeconfig users") {
        entry["user"] = serde_yaml::to_value(json!({ "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": script.to_string_lossy(),
            "interactiveMode": "Never",
        } }))
        .expect("user");
    }
    for entry in kc["contexts"].as_sequence_mut().expect("kubeconfig contexts") {
        entry["context"]["namespace"] = namespace.into();
    }
    let file = dir.join(format!("{tag}.kubeconfig"));
    std::fs::write(&file, serde_yaml::to_string(&kc).expect("yaml")).expect("write kubeconfig");
    file
}

/// The gateway of one test, served through the API server as `v1alpha1.<group>`.
pub struct AggregatedApi {
    /// The API group (`<namespace>.e2e.agentteams.dev`): what teamctl's `--api-group` takes.
    pub group: String,
    /// The gateway's plain JSON API (127.0.0.1), for direct calls.
    pub url: String,
    /// Its TLS port (NODE_IP:port), which only the API server should reach.
    pub tls_addr: std::net::SocketAddr,
    /// The CA of its serving certificate, and the name on it.
    pub serving_ca: String,
    pub server_name: String,
    pub state: Arc<GatewayState>,
    pub bus: Bus,
    client: Client,
    cluster_objects: ClusterObjects,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stopped: bool,
}

/// Names of the cluster-scoped objects a test made, deleted when it ends.
#[derive(Clone)]
struct ClusterObjects {
    api_service: String,
    caller_role: String,
}

/// Starts the test's gateway and registers it as an aggregated API; returns once the API server
/// reports the APIService Available.
pub async fn start(s: &Stack, ns: &TestNamespace) -> AggregatedApi {
    start_with(s, ns, GatewaySettings::default()).await
}

pub async fn start_with(s: &Stack, ns: &TestNamespace, settings: GatewaySettings) -> AggregatedApi {
    sweep(&s.client).await;
    let release = ns.name().to_owned();
    let service = format!("{}-gateway", fullname(&release));
    let group = format!("{}.{GROUP_SUFFIX}", ns.name());
    let server_name = format!("{service}.{}.svc", ns.name());
    let pki = serving_pki(&server_name);

    let bus = Bus::connect(BusConfig::from_url(s.redis_url.clone())).await.expect("redis");
    let settings = GatewaySettings { api_group: group.clone(), ..settings };
    let client = impersonating(&chart_user("gateway")).await;
    let state = Arc::new(GatewayState::new(client, bus.clone(), Arc::new(Metrics::default()), settings));
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", plain.local_addr().expect("addr"));
    let tls = tokio::net::TcpListener::bind((node_ip().as_str(), 0))
        .await
        .unwrap_or_else(|e| panic!("cannot bind {}: {e}; is the stack's node up (hack/stack.sh status)?", node_ip()));
    let tls_addr = tls.local_addr().expect("addr");
    let cert = ServingCert::from_pem(pki.cert.as_bytes(), pki.key.as_bytes()).expect("serving cert");
    let (a, b) = (state.clone(), state.clone());
    let tasks = vec![
        tokio::spawn(async move {
            let _ = team_operator::gateway::serve(plain, a).await;
        }),
        tokio::spawn(async move {
            let _ = team_operator::gateway::serve_aggregated(tls, b, cert).await;
        }),
    ];

    // The Service the chart's APIService names, pointing at this process.
    let services: Api<Service> = ns.api();
    let svc = serde_json::from_value(json!({
        "metadata": { "name": service },
        "spec": { "ports": [{ "name": "https", "port": 443, "targetPort": tls_addr.port() }] },
    }))
    .expect("service");
    services.create(&PostParams::default(), &svc).await.expect("create Service");
    let slice = serde_json::from_value(json!({
        "metadata": { "name": service, "labels": {
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "team-operator-tests",
        } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [tls_addr.ip().to_string()], "conditions": { "ready": true } }],
        "ports": [{ "name": "https", "port": tls_addr.port(), "protocol": "TCP" }],
    }))
    .expect("endpointslice");
    ns.api::<EndpointSlice>().create(&PostParams::default(), &slice).await.expect("create EndpointSlice");

    // The chart's APIService and caller RBAC for this group and CA.
    let group_arg = format!("gateway.apiService.group={group}");
    let ca_arg = format!("gateway.apiService.tls.caBundle={}", pki.ca);
    let manifest = ok(
        "helm",
        &[
            "template",
            &release,
            CHART,
            "--namespace",
            ns.name(),
            "--show-only",
            "templates/apiservice.yaml",
            "--set",
            &group_arg,
            "--set",
            "gateway.apiService.tls.existingSecret=e2e-unused",
            "--set-string",
            &ca_arg,
        ],
        None,
    );
    let cluster_objects =
        ClusterObjects { api_service: format!("v1alpha1.{group}"), caller_role: format!("{}-gateway-caller", fullname(&release)) };
    let api = AggregatedApi {
        group,
        url,
        tls_addr,
        serving_ca: pki.ca,
        server_name,
        state,
        bus,
        client: s.client.clone(),
        cluster_objects,
        tasks,
        stopped: false,
    };
    ok("kubectl", &["apply", "--server-side", "--field-manager", super::FIELD_MANAGER, "-f", "-"], Some(manifest.as_bytes()));
    let services: Api<APIService> = Api::all(s.client.clone());
    wait_for(&services, &api.cluster_objects.api_service, TIMEOUT, "the APIService Available", |a: &APIService| {
        a.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| c.type_ == "Available" && c.status == "True")
    })
    .await;
    api
}

impl AggregatedApi {
    /// Unregisters the APIService (first, so discovery never sees it unavailable), then stops
    /// the gateway.
    pub async fn stop(mut self) {
        self.stopped = true;
        delete_cluster_objects(&self.client, &self.cluster_objects).await;
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for AggregatedApi {
    fn drop(&mut self) {
        if !self.stopped {
            // The test's runtime may be unwinding: delete from a thread with a runtime and client
            // of its own, before the gateway tasks go with this value.
            let Some(config) = super::CONFIG.get().cloned() else { return };
            let objects = self.cluster_objects.clone();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async move {
                    let Ok(client) = Client::try_from(config) else { return };
                    let _ = tokio::time::timeout(Duration::from_secs(10), delete_cluster_objects(&client, &objects)).await;
                });
            })
            .join();
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn delete_cluster_objects(client: &Client, o: &ClusterObjects) {
    let dp = DeleteParams::default();
    let _ = Api::<APIService>::all(client.clone()).delete(&o.api_service, &dp).await;
    let _ = Api::<ClusterRoleBinding>::all(client.clone()).delete(&o.caller_role, &dp).await;
    let _ = Api::<ClusterRole>::all(client.clone()).delete(&o.caller_role, &dp).await;
}

/// Deletes the suites' APIServices whose test namespace is gone or going: a killed test run's
/// leftovers, which would stall namespace deletion on the whole stack.
async fn sweep(client: &Client) {
    let services: Api<APIService> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Ok(list) = services.list(&ListParams::default()).await else { return };
    for a in list.items {
        let name = a.name_any();
        if !name.ends_with(GROUP_SUFFIX) {
            continue;
        }
        let Some(ns) = a.spec.as_ref().and_then(|s| s.service.as_ref()).and_then(|s| s.namespace.clone()) else { continue };
        let live = namespaces.get_opt(&ns).await.ok().flatten().is_some_and(|n| n.metadata.deletion_timestamp.is_none());
        if !live {
            let release = ns.clone();
            let objects = ClusterObjects { api_service: name, caller_role: format!("{}-gateway-caller", fullname(&release)) };
            delete_cluster_objects(client, &objects).await;
        }
    }
}
