//! Where the watch gets its data: the API server (lists for `--once`, reflectors for the live
//! view) and the teams' inbox streams in Redis (XREVRANGE, read-only: nothing is acknowledged).

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, Client};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;

use super::model::{MessageView, Messages, TeamId, latest};
use crate::api::{Member, Team, TeamTask};
use crate::bus::TeamKey;

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

/// A read-only view of the inboxes.
pub struct Inboxes {
    conn: Option<Result<MultiplexedConnection, String>>,
    per_team: usize,
}

impl Inboxes {
    /// Connects to `url` (None: messages are not shown). Never fails: an unreachable Redis is
    /// reported in the messages panel.
    pub async fn connect(url: Option<&str>, per_team: usize) -> Self {
        let conn = match url {
            None => None,
            Some(url) => Some(
                async {
                    let client = redis::Client::open(url).map_err(|e| format!("bad URL: {e}"))?;
                    match tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection()).await {
                        Ok(Ok(c)) => Ok(c),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer from {} in 3s", redact(url))),
                    }
                }
                .await,
            ),
        };
        Inboxes { conn, per_team }
    }

    /// The latest messages of `team`, whose inboxes are `members` plus what its roster names.
    pub async fn read(&self, team: &TeamId, members: &[String]) -> Messages {
        let conn = match &self.conn {
            None => return Messages::NotConfigured,
            Some(Err(e)) => return Messages::Unavailable(e.clone()),
            Some(Ok(c)) => c.clone(),
        };
        match tokio::time::timeout(Duration::from_secs(3), read_team(conn, team, members, self.per_team)).await {
            Ok(Ok(ms)) => Messages::Loaded(ms),
            Ok(Err(e)) => Messages::Unavailable(e.to_string()),
            Err(_) => Messages::Unavailable("Redis did not answer in 3s".into()),
        }
    }

    /// Messages of every team in `teams` (namespace, name, member names).
    pub async fn read_all(&self, teams: &[(TeamId, Vec<String>)]) -> BTreeMap<TeamId, Messages> {
        let mut out = BTreeMap::new();
        for (id, members) in teams {
            out.insert(id.clone(), self.read(id, members).await);
        }
        out
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

async fn read_team(mut conn: MultiplexedConnection, team: &TeamId, members: &[String], n: usize) -> redis::RedisResult<Vec<MessageView>> {
    let key = TeamKey::new(team.0.clone(), team.1.clone());
    let roster: Vec<String> = redis::cmd("HKEYS").arg(key.roster()).query_async(&mut conn).await?;
    let mut names: Vec<String> = members.iter().cloned().chain(roster).collect();
    names.sort();
    names.dedup();
    let mut all = Vec::new();
    for name in names {
        let reply: StreamRangeReply =
            redis::cmd("XREVRANGE").arg(key.inbox(&name)).arg("+").arg("-").arg("COUNT").arg(n).query_async(&mut conn).await?;
        for entry in reply.ids {
            let get = |f: &str| entry.get::<String>(f);
            all.push(MessageView {
                sent_at: get("ts").and_then(|t| t.parse::<i64>().ok()).and_then(chrono::DateTime::from_timestamp_millis),
                from: get("from").unwrap_or_else(|| "?".into()),
                to: get("to").unwrap_or_else(|| name.clone()),
                system: get("kind").as_deref() == Some("system"),
                body: get("body").unwrap_or_default(),
                stream_id: entry.id.clone(),
            });
        }
    }
    Ok(latest(all, n))
}
