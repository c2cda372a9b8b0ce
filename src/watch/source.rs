//! Where the watch gets its data: the API server (lists for `--once`, reflectors for the live
//! view) and the gateway (the teams' newest messages, read-only).

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, Client};

use super::model::{MessageView, Messages, TeamId, latest};
use crate::api::{Member, Team, TeamTask};
use crate::bus::{Message, MessageKind};
use crate::gateway::args::{GetArgs, Kind, MESSAGES_MAX};
use crate::gateway::client::GatewayClient;
use crate::gateway::tools::Tool;

/// `Api` of kind `K` in `ns`, or across all namespaces.
pub fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One list of each kind.
pub async fn list_all(client: &Client, ns: Option<&str>) -> anyhow::Result<(Vec<Team>, Vec<Member>, Vec<TeamTask>)> {
    let lp = ListParams::default();
    let (teams, members, tasks) = (api::<Team>(client, ns), api::<Member>(client, ns), api::<TeamTask>(client, ns));
    let (t, m, k) = tokio::try_join!(teams.list(&lp), members.list(&lp), tasks.list(&lp))?;
    Ok((t.items, m.items, k.items))
}

/// The teams' newest messages, read through the gateway's `get messages` (read-only: nothing is
/// acknowledged), under the caller's RBAC: `get` on `teams/messages`, as for wait_messages.
pub struct Inboxes {
    client: GatewayClient,
    per_team: usize,
}

/// Longest one team's read may take before the panel says so.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

impl Inboxes {
    pub fn new(client: GatewayClient, per_team: usize) -> Self {
        Inboxes { client, per_team: per_team.clamp(1, MESSAGES_MAX) }
    }

    /// The newest messages of `team`. Never fails: a refusal or an unreachable gateway is
    /// reported in the messages panel.
    pub async fn read(&self, team: &TeamId) -> Messages {
        let args = GetArgs {
            kind: Kind::Messages,
            team: Some(team.1.clone()),
            namespace: Some(team.0.clone()),
            limit: Some(self.per_team),
            ..Default::default()
        };
        let args = serde_json::to_value(args).unwrap_or_default();
        match tokio::time::timeout(READ_TIMEOUT, self.client.call(Tool::Get.as_str(), &args)).await {
            Ok(Ok(answer)) => match serde_json::from_value::<Vec<Message>>(answer["messages"].clone()) {
                Ok(ms) => Messages::Loaded(latest(ms.into_iter().map(view).collect(), self.per_team)),
                Err(e) => Messages::Unavailable(format!("the gateway's answer is not a message list: {e}")),
            },
            Ok(Err(e)) => Messages::Unavailable(e.to_string()),
            Err(_) => Messages::Unavailable(format!("the gateway did not answer in {}s", READ_TIMEOUT.as_secs())),
        }
    }

    /// Messages of every team in `teams`.
    pub async fn read_all(&self, teams: &[TeamId]) -> BTreeMap<TeamId, Messages> {
        let mut out = BTreeMap::new();
        for id in teams {
            out.insert(id.clone(), self.read(id).await);
        }
        out
    }
}

fn view(m: Message) -> MessageView {
    MessageView {
        stream_id: m.stream_id,
        sent_at: Some(m.sent_at),
        from: m.from,
        to: m.to,
        system: m.kind == MessageKind::System,
        body: m.body,
    }
}
