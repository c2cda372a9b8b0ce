//! What a refused pod create means for its member (issue 11, point 8), and when to try again.
//!
//! - Refused for good (Pod Security, an invalid template: 403 or 422 that is not a quota): the
//!   member fails with reason `PodRejected` and the API server's message, after a few tries with
//!   backoff (an admission webhook may be restarting).
//! - Its name is taken by a pod the Member does not control (see `admission_flight::create_pod`):
//!   refused for good the same way; the other pod is left alone.
//! - Refused by a ResourceQuota (403 "exceeded quota"): transient. The member stays Queued with
//!   reason `QuotaExceeded` and is tried again with backoff.
//! - Anything else (a timeout, a 5xx, a conflict): tried again with backoff.
//!
//! A member waiting out its backoff is not admitted, so it holds no slot and does not stand at
//! the head of the queue: other members keep starting. Pure, so every rule is unit-tested.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How a pod create was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Will not succeed as the template stands.
    Rejected(String),
    /// A quota is used up; may succeed once pods end.
    Quota(String),
    /// May succeed on a retry.
    Transient(String),
}

/// Reason on a Member whose pod can never be created.
pub const POD_REJECTED: &str = "PodRejected";
/// Reason on a Queued Member held back by a ResourceQuota.
pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
/// Reason of the refusal of a create whose pod name is held by a pod the member does not control.
pub const NAME_TAKEN: &str = "NameTaken";
/// Tries of a rejected create before the member fails.
pub const REJECTED_TRIES: u32 = 3;
/// First retry after a refusal; it doubles per try up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Refusal {
    /// Classifies a pod create's error.
    pub fn of(e: &kube::Error) -> Refusal {
        match e {
            kube::Error::Api(s) if s.code == 403 && s.message.contains("exceeded quota") => Refusal::Quota(s.message.clone()),
            kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => Refusal::Rejected(s.message.clone()),
            kube::Error::Api(s) if s.code == 409 && s.reason == NAME_TAKEN => Refusal::Rejected(s.message.clone()),
            other => Refusal::Transient(other.to_string()),
        }
    }
}

/// Refusals per member uid: how many in a row, and when the next try may be.
#[derive(Debug, Default)]
pub struct Backoff {
    members: HashMap<String, (u32, Instant)>,
}

impl Backoff {
    /// Records a refusal of `uid`'s pod at `now`; returns how many in a row.
    pub fn refused(&mut self, uid: &str, now: Instant) -> u32 {
        let entry = self.members.entry(uid.to_owned()).or_insert((0, now));
        entry.0 += 1;
        let wait = FIRST_BACKOFF.saturating_mul(1 << (entry.0 - 1).min(6)).min(MAX_BACKOFF);
        entry.1 = now + wait;
        entry.0
    }

    /// Whether `uid` must wait at `now`.
    pub fn waiting(&self, uid: &str, now: Instant) -> bool {
        self.members.get(uid).is_some_and(|(_, until)| *until > now)
    }

    /// The earliest end of a wait after `now`, if any member waits.
    pub fn next(&self, now: Instant) -> Option<Duration> {
        self.members.values().filter(|(_, until)| *until > now).map(|(_, until)| *until - now).min()
    }

    /// Forgets `uid` (its pod was created, or it failed).
    pub fn clear(&mut self, uid: &str) {
        self.members.remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure(message, "Forbidden").with_code(code)))
    }

    #[test]
    fn quota_is_transient_pod_security_and_invalid_are_not() {
        assert!(matches!(Refusal::of(&api(403, "pods \"x\" is forbidden: exceeded quota: pods, requested: pods=1")), Refusal::Quota(_)));
        assert!(matches!(
            Refusal::of(&api(403, "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\"")),
            Refusal::Rejected(_)
        ));
        assert!(matches!(Refusal::of(&api(422, "Pod \"x\" is invalid")), Refusal::Rejected(_)));
        assert!(matches!(Refusal::of(&api(500, "etcd timeout")), Refusal::Transient(_)));
        assert!(matches!(Refusal::of(&api(409, "conflict")), Refusal::Transient(_)));
        let taken = kube::core::Status::failure("pod x exists and is not controlled by Member m", NAME_TAKEN).with_code(409);
        assert!(matches!(Refusal::of(&kube::Error::Api(Box::new(taken))), Refusal::Rejected(_)));
    }

    #[test]
    fn backoff_doubles_and_clears() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.refused("u", t0), 1);
        assert!(b.waiting("u", t0 + Duration::from_millis(900)));
        assert!(!b.waiting("u", t0 + Duration::from_millis(1100)));
        assert_eq!(b.refused("u", t0), 2);
        assert!(b.waiting("u", t0 + Duration::from_millis(1900)));
        assert_eq!(b.next(t0), Some(Duration::from_secs(2)));
        b.clear("u");
        assert!(!b.waiting("u", t0));
        assert!(!b.waiting("other", t0));
    }
}
