//! At most one of something per interval per object, on the leading edge: the first call after a
//! quiet spell goes at once, the ones inside the interval are told how long to wait. What the
//! Team reconciler uses for its passes over the members and for writing member counts. Unlike
//! the controller runtime's debounce, which pushes a run back on every new trigger (a team whose
//! members change every few milliseconds would never be reconciled during a launch), a run is
//! never more than one interval late. A rate limit, not state: a restart merely allows one more.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::Resource;

use super::context::object_key;

/// When each object last went, for one kind of thing.
#[derive(Default)]
pub struct Pace(Mutex<HashMap<String, Instant>>);

impl Pace {
    /// None if `obj` may go now (and records that it does), else how long until it may: at
    /// most once per `interval`.
    pub fn delay<K: Resource<DynamicType = ()>>(&self, obj: &K, interval: Duration) -> Option<Duration> {
        self.delay_at(object_key(obj), interval, Instant::now())
    }

    fn delay_at(&self, key: String, interval: Duration, now: Instant) -> Option<Duration> {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match last.get(&key) {
            Some(at) if now.duration_since(*at) < interval => Some(interval - now.duration_since(*at)),
            _ => {
                last.insert(key, now);
                None
            }
        }
    }

    /// Forgets `obj` (it is gone).
    pub fn forget<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&object_key(obj));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_goes_at_once_the_next_waits_out_the_interval_never_longer() {
        let pace = Pace::default();
        let (t0, second) = (Instant::now(), Duration::from_secs(1));
        assert_eq!(pace.delay_at("a".into(), second, t0), None);
        assert_eq!(pace.delay_at("a".into(), second, t0 + Duration::from_millis(300)), Some(Duration::from_millis(700)));
        // Asking again does not push it back (a debounce would).
        assert_eq!(pace.delay_at("a".into(), second, t0 + Duration::from_millis(900)), Some(Duration::from_millis(100)));
        assert_eq!(pace.delay_at("b".into(), second, t0 + Duration::from_millis(900)), None, "per object");
        assert_eq!(pace.delay_at("a".into(), second, t0 + second), None);
    }
}
