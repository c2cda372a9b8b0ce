//! Pod-bound ServiceAccount tokens, as the kubelet projects them into member pods: the
//! credential the gateway fixtures' hand-made members present.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// Mints the pod's projected token: its ServiceAccount's, bound to the pod, for `audience`, as
/// the kubelet projects it (at least 600 s).
pub async fn pod_token(client: &Client, ns: &str, pod: &Pod, audience: &str, seconds: i64) -> Result<String, String> {
    let sa = pod.spec.as_ref().and_then(|p| p.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.into()]),
            expiration_seconds: Some(seconds.max(600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        }),
        ..Default::default()
    };
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let issued: TokenRequest = sas.create_subresource("token", &sa, &PostParams::default(), &request).await.map_err(|e| e.to_string())?;
    issued.status.and_then(|s| s.token).ok_or_else(|| "TokenRequest without a token".into())
}
