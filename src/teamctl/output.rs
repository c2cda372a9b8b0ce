//! Human output: one line per message, tables for teams, members and tasks (`-o json` prints the
//! gateway's answer as it is).

use serde_json::Value;

use super::cli::{Cli, Command, GetKind, MemoryCommand, Output, TeamCommand};

pub(super) fn print(cli: &Cli, v: &Value) {
    if cli.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let s = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match &cli.command {
        Command::Send { .. } => {
            let to: Vec<String> = v["delivered"].as_array().into_iter().flatten().map(|d| s(&d["to"])).collect();
            println!("sent {} to {}", s(&v["id"]), if to.is_empty() { "nobody".to_owned() } else { to.join(", ") });
        }
        Command::Wait { .. } => {
            let msgs = v["messages"].as_array().cloned().unwrap_or_default();
            if msgs.is_empty() {
                println!("no messages");
            }
            for m in msgs {
                let kind = if m["kind"] == "system" { "[system] " } else { "" };
                println!("{kind}{} -> {}: {}", s(&m["from"]), s(&m["to"]), s(&m["body"]));
            }
        }
        Command::Memory(MemoryCommand::Read) => {
            if let Some(text) = v["text"].as_str() {
                println!("{text}");
            }
        }
        Command::Memory(_) => {
            println!("stored {} bytes{}", s(&v["stored_bytes"]), if v["truncated"] == true { " (truncated)" } else { "" });
        }
        _ if v.get("tasks").is_some() => tasks_table(&v["tasks"]),
        _ if v.get("members").is_some() => members_table(&v["members"]),
        _ if v.get("teams").is_some() => teams_table(&v["teams"]),
        Command::Task(_) => tasks_table(&Value::Array(vec![v.clone()])),
        Command::Spawn { .. } => members_table(&Value::Array(vec![v.clone()])),
        Command::Get { kind: GetKind::Members, .. } => members_table(&Value::Array(vec![v.clone()])),
        Command::Get { kind: GetKind::Tasks, .. } => tasks_table(&Value::Array(vec![v.clone()])),
        Command::Get { kind: GetKind::Teams, .. } | Command::Team(TeamCommand::Create(_)) => teams_table(&Value::Array(vec![v.clone()])),
        _ => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
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
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn tasks_table(v: &Value) {
    let rows = v.as_array().into_iter().flatten().map(|t| {
        let state = if t["blocked"] == true { format!("{} (blocked)", cell(&t["state"])) } else { cell(&t["state"]) };
        vec![cell(&t["name"]), state, cell(&t["owner"]), cell(&t["subject"]), cell(&t["result"])]
    });
    table(&["NAME", "STATE", "OWNER", "SUBJECT", "RESULT"], rows.collect());
}

fn members_table(v: &Value) {
    let rows =
        v.as_array().into_iter().flatten().map(|m| {
            vec![cell(&m["name"]), cell(&m["agent"]), cell(&m["role"]), cell(&m["phase"]), cell(&m["reason"]), cell(&m["object"])]
        });
    table(&["NAME", "AGENT", "ROLE", "PHASE", "REASON", "OBJECT"], rows.collect());
}

fn teams_table(v: &Value) {
    let rows = v.as_array().into_iter().flatten().map(|t| {
        let c = &t["counts"];
        vec![
            cell(&t["name"]),
            cell(&t["phase"]),
            cell(&t["lead"]),
            cell(&c["active"]),
            cell(&c["queued"]),
            cell(&c["completed"]),
            cell(&c["failed"]),
        ]
    });
    table(&["NAME", "PHASE", "LEAD", "ACTIVE", "QUEUED", "COMPLETED", "FAILED"], rows.collect());
}
