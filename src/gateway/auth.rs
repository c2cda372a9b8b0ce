//! Who calls: a bearer token proven by the Kubernetes API.
//!
//! 1. The token is reviewed for the gateway's audience (`team-operator-gateway`, TokenReview with
//!    `audiences` set). A pod's projected ServiceAccount token passes; its user is
//!    `system:serviceaccount:<ns>:<sa>` with the extra `authentication.kubernetes.io/pod-name`
//!    (tokens are bound to the pod, so they die with it). The gateway reads that Pod: its labels
//!    `agentteams.dev/team`, `agentteams.dev/member`, `agentteams.dev/agent` and
//!    `agentteams.dev/role` say which team, agent name, agent type and role the caller has. A pod
//!    without these labels is a [`PodCaller`] of no team: it may create a team, which it then
//!    leads (`spec.lead.podName`).
//! 2. Any other token is reviewed for the API server's own audience: a person's or a CI job's kube
//!    credential. Such a [`UserCaller`] is authorized per call with a SubjectAccessReview against
//!    RBAC on the `agentteams.dev` resources (see [`super::tools`] for the verbs).
//!
//! Results are cached by token for a short time (default 30 s, never past the token's expiry as
//! far as the review says), so a busy agent costs the API server one review per interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};

use super::error::ApiError;
use crate::api::{GROUP, labels};
use crate::controller::pod::{GATEWAY_AUDIENCE, ROLE_LABEL};

/// Extra of a TokenReview user naming the pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// Most cached identities; the cache is cleared when it grows past this.
const CACHE_CAP: usize = 10_000;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A pod presenting its projected token for the gateway's audience.
    Pod(PodCaller),
    /// A kube credential (a person, the demo driver, CI).
    User(UserCaller),
}

/// A pod, and the team it is a member of according to its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCaller {
    pub namespace: String,
    pub pod: String,
    pub service_account: String,
    /// `agentteams.dev/team`; None for a pod of no team.
    pub team: Option<String>,
    /// `agentteams.dev/member`: the team-unique agent name.
    pub member: Option<String>,
    /// `agentteams.dev/agent`: the agent type.
    pub agent: Option<String>,
    /// `agentteams.dev/role` is `lead`.
    pub lead: bool,
    /// Name of the Member that controls the pod (its controlling owner reference), whose phase
    /// shows the member's waits (see [`super::idle`]).
    pub member_object: Option<String>,
}

/// A Kubernetes user, as the API server knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCaller {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Caller {
    /// A short description for logs and messages.
    pub fn describe(&self) -> String {
        match self {
            Caller::Pod(p) => match (&p.team, &p.member) {
                (Some(t), Some(m)) => format!("member {m} of team {t} (pod {}/{})", p.namespace, p.pod),
                _ => format!("pod {}/{}", p.namespace, p.pod),
            },
            Caller::User(u) => format!("user {}", u.username),
        }
    }
}

/// Proves tokens with TokenReview and checks RBAC with SubjectAccessReview; caches identities.
pub struct Authenticator {
    client: Client,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Caller)>>,
}

impl Authenticator {
    pub fn new(client: Client, ttl: Duration) -> Self {
        Authenticator { client, ttl, cache: Mutex::new(HashMap::new()) }
    }

    /// The caller behind the request's `Authorization: Bearer` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = bearer(headers)?;
        if let Some(caller) = self.cached(token) {
            return Ok(caller);
        }
        let caller = self.review(token).await?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAP {
                cache.clear();
            }
            cache.insert(token.to_owned(), (Instant::now() + self.ttl, caller.clone()));
        }
        Ok(caller)
    }

    fn cached(&self, token: &str) -> Option<Caller> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(token) {
            Some((until, caller)) if *until > Instant::now() => Some(caller.clone()),
            Some(_) => {
                cache.remove(token);
                None
            }
            None => None,
        }
    }

    async fn review(&self, token: &str) -> Result<Caller, ApiError> {
        let status = self.token_review(token, Some(GATEWAY_AUDIENCE)).await?;
        if status.authenticated == Some(true) {
            return self.pod_caller(status).await;
        }
        let status = self.token_review(token, None).await?;
        if status.authenticated != Some(true) {
            let why = status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "not authenticated".into());
            return Err(ApiError::unauthenticated(format!("the bearer token was not accepted: {why}")));
        }
        let user = status.user.unwrap_or_default();
        Ok(Caller::User(UserCaller {
            username: user.username.unwrap_or_default(),
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        }))
    }

    async fn token_review(&self, token: &str, audience: Option<&str>) -> Result<TokenReviewStatus, ApiError> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: token.to_owned(), audiences: audience.map(|a| vec![a.to_owned()]) },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let done = api.create(&PostParams::default(), &review).await.map_err(|e| ApiError::from_kube(e, "TokenReview"))?;
        Ok(done.status.unwrap_or_default())
    }

    /// A token for the gateway's audience: a ServiceAccount token bound to a pod.
    async fn pod_caller(&self, status: TokenReviewStatus) -> Result<Caller, ApiError> {
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let Some((namespace, service_account)) = username.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) else {
            return Err(ApiError::unauthenticated(format!(
                "a token for audience {GATEWAY_AUDIENCE} must be a ServiceAccount token; got user {username}"
            )));
        };
        let pod_name = user.extra.as_ref().and_then(|e| e.get(POD_NAME_EXTRA)).and_then(|v| v.first()).cloned();
        let Some(pod_name) = pod_name else {
            return Err(ApiError::unauthenticated(format!(
                "the token of {username} is not bound to a pod; use the pod's projected token (audience {GATEWAY_AUDIENCE})"
            )));
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pods
            .get_opt(&pod_name)
            .await
            .map_err(|e| ApiError::from_kube(e, "reading the caller's pod"))?
            .ok_or_else(|| ApiError::unauthenticated(format!("the caller's pod {namespace}/{pod_name} no longer exists")))?;
        let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
        if sa != service_account {
            return Err(ApiError::unauthenticated(format!("pod {namespace}/{pod_name} runs as {sa}, not {service_account}")));
        }
        let member_object = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "Member" && o.api_version.starts_with(&format!("{GROUP}/")))
            .map(|o| o.name.clone());
        let labels = pod.metadata.labels.unwrap_or_default();
        Ok(Caller::Pod(PodCaller {
            namespace: namespace.to_owned(),
            pod: pod_name,
            service_account: service_account.to_owned(),
            team: labels.get(labels::TEAM).cloned(),
            member: labels.get(labels::MEMBER).cloned(),
            agent: labels.get(labels::AGENT).cloned(),
            lead: labels.get(ROLE_LABEL).is_some_and(|r| r == "lead"),
            member_object,
        }))
    }

    /// Asks RBAC whether `user` may `verb` the `agentteams.dev` resource (and subresource) in
    /// `namespace`; refuses with `forbidden` naming what was missing.
    pub async fn check(
        &self,
        user: &UserCaller,
        verb: &str,
        resource: &str,
        subresource: Option<&str>,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<(), ApiError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.to_owned()),
                    resource: Some(resource.to_owned()),
                    subresource: subresource.map(str::to_owned),
                    verb: Some(verb.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    name: name.map(str::to_owned),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let done = api.create(&PostParams::default(), &review).await.map_err(|e| ApiError::from_kube(e, "SubjectAccessReview"))?;
        if done.status.as_ref().is_some_and(|s| s.allowed) {
            return Ok(());
        }
        let what = match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        Err(ApiError::forbidden(format!("user {} may not {verb} {what}.{GROUP} in namespace {namespace} (RBAC)", user.username)))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::unauthenticated("missing Authorization header: send `Authorization: Bearer <token>`"));
    };
    let value = value.to_str().map_err(|_| ApiError::unauthenticated("the Authorization header is not visible ASCII"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthenticated("the Authorization header must be `Bearer <token>`"))?;
    if token.is_empty() {
        return Err(ApiError::unauthenticated("the bearer token is empty"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h).unwrap_err().code, "unauthenticated");
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer(&h).unwrap_err().message.contains("Bearer"));
        h.insert("authorization", "Bearer  ".parse().unwrap());
        assert!(bearer(&h).is_err());
        h.insert("authorization", "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), "abc.def");
    }
}
