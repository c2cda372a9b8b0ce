//! What teamctl prints: lines and tables by default, more columns with `-o wide`, the gateway's
//! answer as it is with `-o json` / `-o yaml`, and `kind.group/name` per object with `-o name`
//! (so `kubectl get $(teamctl get tasks -o name)` works).

use serde_json::Value;

use super::cli::{Cli, Command, GetKind, MemoryCommand, Output, TeamCommand};
use crate::api::GROUP;

/// The kinds of object an answer may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Team,
    Member,
    Task,
}

impl Kind {
    /// `kind.group`, as kubectl names a resource.
    fn resource(self) -> String {
        let kind = match self {
            Kind::Team => "team",
            Kind::Member => "member",
            Kind::Task => "teamtask",
        };
        format!("{kind}.{GROUP}")
    }
    /// The field of the object's view that holds its Kubernetes name.
    fn name_field(self) -> &'static str {
        match self {
            Kind::Member => "object",
            Kind::Team | Kind::Task => "name",
        }
    }
}

/// The kind of object the command answers with, if it answers with objects.
fn object_kind(command: &Command) -> Option<Kind> {
    match command {
        Command::Get { kind: GetKind::Teams, .. } | Command::Team(TeamCommand::Create(_)) => Some(Kind::Team),
        Command::Get { kind: GetKind::Members, .. } | Command::Spawn { .. } => Some(Kind::Member),
        Command::Get { kind: GetKind::Tasks, .. } | Command::Task(_) => Some(Kind::Task),
        _ => None,
    }
}

/// Refuses `-o name` for a command that answers with no objects, before it is sent.
pub(super) fn check(cli: &Cli) -> Result<(), String> {
    if cli.output == Some(Output::Name) && object_kind(&cli.command).is_none() {
        return Err("-o name prints objects: use it with get teams|members|tasks, task, spawn or team create".into());
    }
    Ok(())
}

/// Prints an answer in the format asked.
pub(super) fn print(cli: &Cli, v: &Value) {
    match cli.output {
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Some(Output::Yaml) => print!("{}", serde_yaml::to_string(v).unwrap_or_default()),
        Some(Output::Name) => {
            if let Some(kind) = object_kind(&cli.command) {
                for o in objects(v, kind) {
                    println!("{}/{}", kind.resource(), cell(&o[kind.name_field()]));
                }
            }
        }
        Some(Output::Wide) => human(cli, v, true),
        None => human(cli, v, false),
    }
}

/// The objects of an answer: a list's items, or the answer itself.
fn objects(v: &Value, kind: Kind) -> Vec<Value> {
    let list = match kind {
        Kind::Team => "teams",
        Kind::Member => "members",
        Kind::Task => "tasks",
    };
    match v.get(list).and_then(Value::as_array) {
        Some(items) => items.clone(),
        None => vec![v.clone()],
    }
}

fn human(cli: &Cli, v: &Value, wide: bool) {
    match &cli.command {
        Command::Send { .. } => {
            let to: Vec<String> = v["delivered"].as_array().into_iter().flatten().map(|d| cell(&d["to"])).collect();
            println!("sent {} to {}", cell(&v["id"]), if to.is_empty() { "nobody".to_owned() } else { to.join(", ") });
        }
        Command::Wait { .. } => messages(v, false, wide),
        Command::Get { kind: GetKind::Messages, .. } => messages(v, true, wide),
        Command::Memory(MemoryCommand::Read) => {
            if let Some(text) = v["text"].as_str() {
                println!("{text}");
            }
        }
        Command::Memory(_) => {
            println!("stored {} bytes{}", cell(&v["stored_bytes"]), if v["truncated"] == true { " (truncated)" } else { "" });
        }
        Command::Usage { .. } => {
            println!("{}: {} turns, {} tokens", cell(&v["member"]), cell(&v["usage"]["turns"]), cell(&v["usage"]["tokens"]));
            if let Some(over) = v["over"].as_str() {
                println!("over budget: {over}");
            }
        }
        command => match object_kind(command) {
            Some(Kind::Team) => teams_table(&objects(v, Kind::Team), wide, cli.all_namespaces),
            Some(Kind::Member) => members_table(&objects(v, Kind::Member), wide),
            Some(Kind::Task) => tasks_table(&objects(v, Kind::Task), wide),
            None => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        },
    }
}

/// One line per message; `with_time` for `get messages` (a look back), wide adds stream ids and
/// who Kubernetes says sent it. A disbanded team's transcript is named first.
fn messages(v: &Value, with_time: bool, wide: bool) {
    let t = &v["transcript"];
    if t.is_object() {
        println!(
            "transcript of team {} (uid {}), disbanded {}, kept until {}",
            cell(&t["team"]),
            cell(&t["uid"]),
            cell(&t["disbanded_at"]),
            cell(&t["expires_at"])
        );
    }
    let msgs = v["messages"].as_array().cloned().unwrap_or_default();
    if msgs.is_empty() {
        println!("no messages");
    }
    for m in msgs {
        let kind = if m["kind"] == "system" { "[system] " } else { "" };
        let time = if with_time { format!("{} ", cell(&m["sent_at"])) } else { String::new() };
        let id = if wide { format!("{} ", cell(&m["stream_id"])) } else { String::new() };
        let by = if wide && m["sent_by"].is_string() { format!(" (by {})", cell(&m["sent_by"])) } else { String::new() };
        println!("{id}{time}{kind}{}{by} -> {}: {}", cell(&m["from"]), cell(&m["to"]), cell(&m["body"]));
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = width[i])).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r);
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn tasks_table(tasks: &[Value], wide: bool) {
    let mut header = vec!["NAME", "STATE", "OWNER", "SUBJECT", "RESULT"];
    if wide {
        header.extend(["DEPENDS ON", "REASON"]);
    }
    let rows = tasks.iter().map(|t| {
        let state = if t["blocked"] == true { format!("{} (blocked)", cell(&t["state"])) } else { cell(&t["state"]) };
        let mut row = vec![cell(&t["name"]), state, cell(&t["owner"]), cell(&t["subject"]), cell(&t["result"])];
        if wide {
            row.extend([cell(&t["depends_on"]), cell(&t["reason"])]);
        }
        row
    });
    table(&header, rows.collect());
}

/// Members, with a Queued member's place in the queue for the operator-wide cap (POSITION: 1 takes
/// the next slot that frees; `-` for one its team's maxAgents holds), which the gateway computes
/// on read by admission's own rule (`fair_share`).
fn members_table(members: &[Value], wide: bool) {
    let mut header = vec!["NAME", "AGENT", "ROLE", "PHASE", "POSITION", "REASON", "OBJECT"];
    if wide {
        header.extend(["POD", "EXIT", "MESSAGE"]);
    }
    let rows = members.iter().map(|m| {
        let mut row = vec![
            cell(&m["name"]),
            cell(&m["agent"]),
            cell(&m["role"]),
            cell(&m["phase"]),
            cell(&m["queue_position"]),
            cell(&m["reason"]),
            cell(&m["object"]),
        ];
        if wide {
            row.extend([cell(&m["pod"]), cell(&m["exit_code"]), cell(&m["message"])]);
        }
        row
    });
    table(&header, rows.collect());
}

fn teams_table(teams: &[Value], wide: bool, with_namespace: bool) {
    let mut header = vec!["NAME", "PHASE", "LEAD", "ACTIVE", "QUEUED", "COMPLETED", "FAILED"];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend(["MAX", "STARTING", "CANCELLED", "TIMEOUT", "AGENTS"]);
    }
    let rows = teams.iter().map(|t| {
        let c = &t["counts"];
        let mut row = vec![
            cell(&t["name"]),
            cell(&t["phase"]),
            cell(&t["lead"]),
            cell(&c["active"]),
            cell(&c["queued"]),
            cell(&c["completed"]),
            cell(&c["failed"]),
        ];
        if with_namespace {
            row.insert(0, cell(&t["namespace"]));
        }
        if wide {
            let timeout = t["member_timeout_seconds"].as_i64().map_or_else(|| "-".to_owned(), |s| format!("{s}s"));
            row.extend([cell(&t["max_agents"]), cell(&c["starting"]), cell(&c["cancelled"]), timeout, cell(&t["agents"])]);
        }
        row
    });
    table(&header, rows.collect());
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[test]
    fn names_are_kubectl_resource_names() {
        let tasks = json!({ "tasks": [{ "name": "t-1" }, { "name": "t-2" }] });
        let names: Vec<String> =
            objects(&tasks, Kind::Task).iter().map(|o| format!("{}/{}", Kind::Task.resource(), cell(&o["name"]))).collect();
        assert_eq!(names, ["teamtask.agentteams.dev/t-1", "teamtask.agentteams.dev/t-2"]);
        let member = json!({ "name": "general-2", "object": "alpha-x7k2p" });
        assert_eq!(cell(&objects(&member, Kind::Member)[0][Kind::Member.name_field()]), "alpha-x7k2p");
    }

    #[test]
    fn name_output_needs_objects() {
        let cli = Cli::try_parse_from(["teamctl", "-o", "name", "send", "lead", "hi"]).unwrap();
        assert!(check(&cli).unwrap_err().contains("-o name"));
        let cli = Cli::try_parse_from(["teamctl", "-o", "name", "get", "tasks"]).unwrap();
        assert!(check(&cli).is_ok());
    }
}
