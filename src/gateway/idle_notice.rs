//! The `[IDLE] @<name>` notice: a member finished a turn and waits for messages, told to its lead
//! when the Team asks for it (`spec.leadNotices.idle`), so a lead learns it without polling.
//!
//! The gateway sends it because the gateway sees the waits: when a member's own wait has
//! blocked for [`super::idle::IDLE_AFTER`] (the moment it reads Idle). Once per turn, not per
//! wait: the notice's idempotency key is the member's uid and the id of the last message a wait
//! handed it (its inbox's last-delivered id), which stays the same from the end of one batch to
//! the next. Every wait of the same pause — an MCP client's 50-s waits one after the other, a
//! retry, another gateway replica, a gateway restarted — makes the same key, and the bus writes a
//! key once (for an hour); the next batch delivered makes the next pause a new key.
//!
//! A notice that cannot be written (the lead finished, Redis away) is logged and dropped: it is a
//! convenience for the lead, and the wait must go on regardless.

use crate::api::{MemberRole, Team};
use crate::bus::TeamKey;
use crate::gateway::GatewayState;
use crate::gateway::auth::MemberIdentity;
use crate::metrics::NoticeLabel;

/// Text of the notice about member `name`.
pub fn body(name: &str) -> String {
    format!("[IDLE] @{name} finished its turn and waits for messages.")
}

/// The idempotency key of the notice for the pause of member `uid` after the message
/// `last_delivered` (`0-0`: before its first message).
pub fn key(uid: &str, last_delivered: &str) -> String {
    format!("idle-{uid}-{last_delivered}")
}

/// Tells the lead of `team` that `member` waits, if the team asks for it (never of the lead
/// itself).
pub async fn tell_lead(state: &GatewayState, team: &Team, key_of_team: &TeamKey, member: &MemberIdentity) {
    if !team.spec.lead_notices.idle || member.role == MemberRole::Lead {
        return;
    }
    let Some(lead) = team.status.as_ref().and_then(|s| s.lead_name.clone()) else { return };
    let result = async {
        let last = state.bus.last_delivered(key_of_team, &member.name).await?;
        state.bus.system_notice(key_of_team, &lead, body(&member.name), key(&member.uid, &last)).await
    }
    .await;
    match result {
        Ok(true) => {
            tracing::debug!(member = member.name, lead, "told the lead the member waits");
            state.metrics.notices.get_or_create(&NoticeLabel::MEMBER_IDLE).inc();
        }
        Ok(false) => {}
        Err(e) => tracing::debug!(member = member.name, lead, error = %e, "idle notice not delivered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_per_pause_between_two_batches() {
        assert_eq!(key("u1", "0-0"), "idle-u1-0-0");
        assert_ne!(key("u1", "1718-0"), key("u1", "1719-0"));
        assert!(body("critic").starts_with("[IDLE] @critic "));
    }
}
