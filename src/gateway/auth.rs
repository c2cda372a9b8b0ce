//! Who calls: a bearer token proven by the Kubernetes API, and a member only by ownership.
//!
//! 1. The token is reviewed for the gateway's audience (`team-operator-gateway`, TokenReview with
//!    `audiences` set, and the answer's `status.audiences` checked). A pod's projected
//!    ServiceAccount token passes; its user is `system:serviceaccount:<ns>:<sa>` with the extras
//!    `authentication.kubernetes.io/pod-name` and `pod-uid` (tokens are bound to the pod, so they
//!    die with it). The caller is a member only through ownership, never labels: that Pod (uid
//!    equal to the token's) → its controller reference to a Member (kind, uid) → that Member,
//!    whose `status.podName` names the pod back and whose phase is not terminal. Team, agent
//!    name, agent type and role come from the Member. A pod that names a Member in a forged
//!    controller reference fails the `status.podName` back-check.
//! 2. A pod that is no member ([`PodCaller::member`] None) acts as its ServiceAccount, and RBAC
//!    decides its calls as for people ([`PodCaller::account`]) — except in a team whose
//!    `spec.lead.podName` names it and which that pod (by uid) owns: there it is the lead (see
//!    `tools::actor`).
//! 3. Any other token is reviewed for the API server's own audience: a person's or a CI job's kube
//!    credential. Such a [`UserCaller`] is authorized per call with a SubjectAccessReview against
//!    RBAC on the `agentteams.dev` resources (see [`super::tools`] for the verbs).
//!
//! 4. A request the API server proxies to the aggregated API carries no token: its caller is the
//!    user the API server's front proxy names in its headers, believed only on a connection that
//!    proves to be the front proxy (see [`super::front_proxy`]), and authorized like 3. The same
//!    headers from anyone else are refused.
//!
//! Identities are cached by token for a short time (default 30 s). A cached member identity is
//! checked on every use against the gateway's watch of Members and dropped at once when its
//! Member is gone or replaced (uid), names another pod in `status.podName`, or has ended; a
//! status write that changes none of these keeps it. A deleted pod ends its Member (Failed), so
//! that drops it too.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};

use super::error::ApiError;
use super::front_proxy::Peer;
use crate::api::{GROUP, Member, MemberRole};
use crate::controller::pod::GATEWAY_AUDIENCE;

/// Extra of a TokenReview user naming the pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// Extra of a TokenReview user with the uid of the pod a token is bound to.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// Most cached identities; the cache is cleared when it grows past this.
const CACHE_CAP: usize = 10_000;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A pod presenting its projected token for the gateway's audience (boxed: it is the larger).
    Pod(Box<PodCaller>),
    /// A kube credential (a person, the demo driver, CI).
    User(UserCaller),
}

/// A pod, proven by its bound token, and the Member it runs (if any), proven by ownership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCaller {
    pub namespace: String,
    pub pod: String,
    /// The pod's uid, from the token and equal to the Pod's.
    pub pod_uid: String,
    pub service_account: String,
    /// The pod's ServiceAccount as RBAC sees it: what a pod of no team acts as.
    pub account: UserCaller,
    /// The Member whose pod this is; None for a pod of no team.
    pub member: Option<MemberIdentity>,
}

/// A member, as its Member object says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberIdentity {
    /// Name of the Member object (whose phase shows the member's waits, see [`super::idle`]).
    pub object: String,
    pub uid: String,
    /// `spec.team`.
    pub team: String,
    /// `status.name`: the team-unique agent name.
    pub name: String,
    /// `spec.agent`: the agent type.
    pub agent: String,
    /// `spec.role`.
    pub role: MemberRole,
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
    /// The username Kubernetes authenticated: a person's, or a pod's ServiceAccount
    /// (`system:serviceaccount:<ns>:<name>`).
    pub fn username(&self) -> &str {
        match self {
            Caller::Pod(p) => &p.account.username,
            Caller::User(u) => &u.username,
        }
    }

    /// A short description for logs and messages.
    pub fn describe(&self) -> String {
        match self {
            Caller::Pod(p) => match &p.member {
                Some(m) => format!("member {} of team {} (pod {}/{})", m.name, m.team, p.namespace, p.pod),
                None => format!("pod {}/{} ({})", p.namespace, p.pod, p.account.username),
            },
            Caller::User(u) => format!("user {}", u.username),
        }
    }
}

/// Proves tokens with TokenReview and checks RBAC with SubjectAccessReview; caches identities.
pub struct Authenticator {
    client: Client,
    ttl: Duration,
    /// Shared, so a hit costs a reference count, not a copy of the identity.
    cache: Mutex<HashMap<String, (Instant, Arc<Caller>)>>,
    /// The gateway's watch of Members: what a cached member identity is checked against.
    members: Store<Member>,
}

impl Authenticator {
    pub fn new(client: Client, ttl: Duration, members: Store<Member>) -> Self {
        Authenticator { client, ttl, cache: Mutex::new(HashMap::new()), members }
    }

    /// The caller of a request that came over a connection proving `peer`: the user the front
    /// proxy names, or the one behind the `Authorization: Bearer` header.
    pub async fn authenticate(&self, headers: &HeaderMap, peer: &Peer) -> Result<Arc<Caller>, ApiError> {
        if let Some(user) = peer.identity(headers) {
            return user.map(|u| Arc::new(Caller::User(u)));
        }
        peer.refuse_claims(headers)?;
        let token = bearer(headers)?;
        if let Some(caller) = self.cached(token) {
            return Ok(caller);
        }
        let caller = Arc::new(self.review(token).await?);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAP {
                cache.clear();
            }
            cache.insert(token.to_owned(), (Instant::now() + self.ttl, caller.clone()));
        }
        Ok(caller)
    }

    fn cached(&self, token: &str) -> Option<Arc<Caller>> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(token) {
            Some((until, caller)) if *until > Instant::now() && self.still_holds(caller) => Some(caller.clone()),
            Some(_) => {
                cache.remove(token);
                None
            }
            None => None,
        }
    }

    /// Whether a cached identity still holds: a member's Member (as the watch has it) is the
    /// same object, still names this pod and has not ended. A Member the watch does not hold
    /// (not listed yet, or gone) does not hold: the token is reviewed again.
    fn still_holds(&self, caller: &Caller) -> bool {
        let Caller::Pod(p) = caller else { return true };
        let Some(m) = &p.member else { return true };
        self.members.get(&ObjectRef::new(&m.object).within(&p.namespace)).is_some_and(|now| runs(&now, &m.uid, &p.pod))
    }

    async fn review(&self, token: &str) -> Result<Caller, ApiError> {
        let status = self.token_review(token, Some(GATEWAY_AUDIENCE)).await?;
        if status.authenticated == Some(true) {
            if !status.audiences.iter().flatten().any(|a| a == GATEWAY_AUDIENCE) {
                return Err(ApiError::unauthenticated(format!("the token was not accepted for audience {GATEWAY_AUDIENCE}")));
            }
            return self.pod_caller(status).await;
        }
        let status = self.token_review(token, None).await?;
        if status.authenticated != Some(true) {
            let why = status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "not authenticated".into());
            return Err(ApiError::unauthenticated(format!("the bearer token was not accepted: {why}")));
        }
        Ok(Caller::User(user_of(status.user.unwrap_or_default())))
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

    /// A token for the gateway's audience: a ServiceAccount token bound to a pod, and the Member
    /// that pod runs, if it runs one.
    async fn pod_caller(&self, status: TokenReviewStatus) -> Result<Caller, ApiError> {
        let user = status.user.unwrap_or_default();
        let account = user_of(user.clone());
        let username = account.username.clone();
        let Some((namespace, service_account)) = username.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) else {
            return Err(ApiError::unauthenticated(format!(
                "a token for audience {GATEWAY_AUDIENCE} must be a ServiceAccount token; got user {username}"
            )));
        };
        let extra = |key: &str| user.extra.as_ref().and_then(|e| e.get(key)).and_then(|v| v.first()).cloned();
        let (Some(pod_name), Some(pod_uid)) = (extra(POD_NAME_EXTRA), extra(POD_UID_EXTRA)) else {
            return Err(ApiError::unauthenticated(format!(
                "the token of {username} is not bound to a pod; use the pod's projected token (audience {GATEWAY_AUDIENCE})"
            )));
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pods
            .get_opt(&pod_name)
            .await
            .map_err(|e| ApiError::from_kube(e, "reading the caller's pod"))?
            .filter(|p| p.metadata.uid.as_deref() == Some(pod_uid.as_str()))
            .ok_or_else(|| {
                ApiError::unauthenticated(format!("the caller's pod {namespace}/{pod_name} (uid {pod_uid}) no longer exists"))
            })?;
        let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
        if sa != service_account {
            return Err(ApiError::unauthenticated(format!("pod {namespace}/{pod_name} runs as {sa}, not {service_account}")));
        }
        let member = self.member_of(namespace, &pod).await?;
        Ok(Caller::Pod(Box::new(PodCaller {
            namespace: namespace.to_owned(),
            pod: pod_name,
            pod_uid,
            service_account: service_account.to_owned(),
            account,
            member,
        })))
    }

    /// The Member `pod` runs: its controller reference names a Member by uid, and that Member
    /// names the pod back in `status.podName` and has not ended. Anything less is no member.
    async fn member_of(&self, namespace: &str, pod: &Pod) -> Result<Option<MemberIdentity>, ApiError> {
        let Some(owner) = crate::controller::pod::controlling_member(pod) else { return Ok(None) };
        let key = ObjectRef::new(&owner.name).within(namespace);
        let member = match self.members.get(&key) {
            Some(m) => Some(m),
            None => Api::<Member>::namespaced(self.client.clone(), namespace)
                .get_opt(&owner.name)
                .await
                .map_err(|e| ApiError::from_kube(e, "reading the caller's Member"))?
                .map(Arc::new),
        };
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let Some(m) = member.filter(|m| runs(m, &owner.uid, pod_name)) else {
            tracing::info!(pod = pod_name, member = owner.name, "pod names a Member that does not name it back; not a member");
            return Ok(None);
        };
        let Some(name) = m.agent_name() else { return Ok(None) };
        Ok(Some(MemberIdentity {
            object: owner.name.clone(),
            uid: owner.uid.clone(),
            team: m.spec.team.clone(),
            name: name.to_owned(),
            agent: m.spec.agent.clone(),
            role: m.spec.role,
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

/// Whether Member `m` is the one of uid `uid`, runs `pod` and has not ended.
fn runs(m: &Member, uid: &str, pod: &str) -> bool {
    m.metadata.uid.as_deref() == Some(uid) && m.status.as_ref().and_then(|s| s.pod_name.as_deref()) == Some(pod) && !m.phase().is_terminal()
}

fn user_of(user: k8s_openapi::api::authentication::v1::UserInfo) -> UserCaller {
    UserCaller {
        username: user.username.unwrap_or_default(),
        uid: user.uid,
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
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
        assert_eq!(bearer(&h).unwrap_err().code.as_str(), "unauthenticated");
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer(&h).unwrap_err().message.contains("Bearer"));
        h.insert("authorization", "Bearer  ".parse().unwrap());
        assert!(bearer(&h).is_err());
        h.insert("authorization", "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), "abc.def");
    }
}
