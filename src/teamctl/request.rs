//! A command as a tool call: the gateway's own argument structs (`gateway::args`), serialized, so
//! teamctl and the gateway cannot disagree on a field name.

use std::io::Read;

use serde::Serialize;
use serde_json::Value;

use super::cli::{Cli, Command, GetKind, MemoryCommand, PlanCommand, ShutdownCommand, TaskCommand, TeamCommand};
use crate::api::TaskState;
use crate::gateway::args::*;
use crate::gateway::tools::Tool;

/// The tool and arguments of a command acting in `namespace` (None: the caller's own, or every
/// one with -A).
pub(super) fn request(cli: &Cli, namespace: Option<String>) -> Result<(Tool, Value), String> {
    let team = cli.team.clone();
    if cli.all_namespaces && !matches!(cli.command, Command::Get { kind: GetKind::Teams, name: None, .. }) {
        return Err("-A (--all-namespaces) applies to `get teams` and `watch`".into());
    }
    let call = match &cli.command {
        Command::Send { to, body, id } => (
            Tool::SendMessage,
            to_value(&SendMessageArgs { to: to.clone(), body: text_arg(body)?, id: id.clone(), member: None, team, namespace }),
        ),
        Command::Wait { timeout, ack, .. } => (
            Tool::WaitMessages,
            to_value(&WaitMessagesArgs { ack: ack.clone(), timeout_seconds: *timeout, team, namespace, ..Default::default() }),
        ),
        Command::Task(t) => {
            let base = TeamTaskArgs {
                action: TaskAction::List,
                name: None,
                subject: None,
                description: None,
                owner: None,
                depends_on: Vec::new(),
                metadata: Default::default(),
                state: None,
                result: None,
                team,
                namespace,
            };
            let args = match t {
                TaskCommand::Create { subject, description, owner, depends_on, metadata } => TeamTaskArgs {
                    action: TaskAction::Create,
                    subject: Some(subject.clone()),
                    description: description.clone(),
                    owner: owner.clone(),
                    depends_on: depends_on.clone(),
                    metadata: metadata.iter().cloned().collect(),
                    ..base
                },
                TaskCommand::Update { name, state, result, owner } => TeamTaskArgs {
                    action: TaskAction::Update,
                    name: Some(name.clone()),
                    state: state.as_deref().map(task_state).transpose()?,
                    result: result.clone(),
                    owner: owner.clone(),
                    ..base
                },
                TaskCommand::Get { name } => TeamTaskArgs { action: TaskAction::Get, name: Some(name.clone()), ..base },
                TaskCommand::Claim { name, owner } => {
                    TeamTaskArgs { action: TaskAction::Claim, name: name.clone(), owner: owner.clone(), ..base }
                }
                TaskCommand::List { state, owner } => TeamTaskArgs {
                    action: TaskAction::List,
                    state: state.as_deref().map(task_state).transpose()?,
                    owner: owner.clone(),
                    ..base
                },
            };
            (Tool::TeamTask, to_value(&args))
        }
        Command::Memory(m) => {
            let (action, text) = match m {
                MemoryCommand::Read => (MemoryAction::Read, None),
                MemoryCommand::Write { text } => (MemoryAction::Write, Some(text_arg(text)?)),
                MemoryCommand::Append { text } => (MemoryAction::Append, Some(text_arg(text)?)),
            };
            (Tool::AgentMemory, to_value(&AgentMemoryArgs { action, text, agent: None, team, namespace }))
        }
        Command::Team(TeamCommand::Delete { name }) => {
            (Tool::TeamDelete, to_value(&TeamDeleteArgs { team: name.clone().or(team), namespace }))
        }
        Command::Team(TeamCommand::Create(c)) => {
            let agents: Vec<AgentTypeArgs> = c
                .agents
                .iter()
                .map(|(name, image)| AgentTypeArgs { name: name.clone(), image: Some(image.clone()), ..Default::default() })
                .collect();
            let args = TeamCreateArgs {
                name: c.name.clone(),
                max_agents: c.max_agents,
                member_timeout_seconds: c.member_timeout_seconds,
                agents: (!agents.is_empty()).then_some(agents),
                lead_agent: c.lead_agent.clone(),
                lead_prompt: c.lead_prompt.clone(),
                memory_project: c.memory_project.clone(),
                retention: c.retention.clone(),
                priority: c.priority,
                budget: (c.budget_turns.is_some() || c.budget_seconds.is_some() || c.budget_tokens.is_some()).then_some(BudgetArgs {
                    turns: c.budget_turns,
                    seconds: c.budget_seconds,
                    tokens: c.budget_tokens,
                }),
                namespace,
            };
            (Tool::TeamCreate, to_value(&args))
        }
        Command::Spawn { agent, prompt, model } => (
            Tool::SpawnMember,
            to_value(&SpawnMemberArgs { agent: agent.clone(), prompt: text_arg(prompt)?, model: model.clone(), team, namespace }),
        ),
        Command::Shutdown(ShutdownCommand::Request { member, reason }) => {
            (Tool::ShutdownRequest, to_value(&ShutdownRequestArgs { member: member.clone(), reason: reason.clone(), team, namespace }))
        }
        Command::Shutdown(ShutdownCommand::Approve { reason }) => (
            Tool::ShutdownResponse,
            to_value(&ShutdownResponseArgs { action: ShutdownAnswer::Approve, reason: reason.clone(), team, namespace }),
        ),
        Command::Shutdown(ShutdownCommand::Reject { reason }) => (
            Tool::ShutdownResponse,
            to_value(&ShutdownResponseArgs { action: ShutdownAnswer::Reject, reason: Some(reason.clone()), team, namespace }),
        ),
        Command::Plan(PlanCommand::Submit { plan }) => {
            (Tool::PlanSubmit, to_value(&PlanSubmitArgs { plan: text_arg(plan)?, team, namespace }))
        }
        Command::Usage { turns, tokens } => {
            // Counted from the start of this run of `teamctl run`: on top of the member's usage before it.
            let (turns, tokens) = super::run::base::Base::from_env().plus(*turns, *tokens);
            (Tool::UsageReport, to_value(&UsageReportArgs { turns, tokens, team, namespace }))
        }
        Command::Plan(PlanCommand::Approve { member, feedback }) => (
            Tool::PlanReview,
            to_value(&PlanReviewArgs { member: member.clone(), action: PlanVerdict::Approve, feedback: feedback.clone(), team, namespace }),
        ),
        Command::Plan(PlanCommand::Reject { member, feedback }) => (
            Tool::PlanReview,
            to_value(&PlanReviewArgs {
                member: member.clone(),
                action: PlanVerdict::Reject,
                feedback: Some(feedback.clone()),
                team,
                namespace,
            }),
        ),
        Command::Get { kind, name, limit, uid } => {
            let kind = match kind {
                GetKind::Teams => Kind::Teams,
                GetKind::Members => Kind::Members,
                GetKind::Tasks => Kind::Tasks,
                GetKind::Messages => Kind::Messages,
            };
            if limit.is_some() && kind != Kind::Messages {
                return Err("--limit applies to `get messages`".into());
            }
            if uid.is_some() && kind != Kind::Messages {
                return Err("--uid applies to `get messages`".into());
            }
            let all_namespaces = cli.all_namespaces;
            let args = GetArgs { kind, name: name.clone(), team, namespace, all_namespaces, limit: *limit, uid: uid.clone() };
            (Tool::Get, to_value(&args))
        }
        Command::Call { tool, args } => {
            let text = text_arg(std::slice::from_ref(args))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
            let tool: Tool = tool.parse()?;
            (tool, v)
        }
        Command::Mcp { .. } | Command::Install { .. } | Command::Watch(_) | Command::Run(_) | Command::Completion { .. } | Command::Man => {
            return Err("not a tool".into());
        }
    };
    Ok(call)
}

/// The JSON of an argument struct (they serialize infallibly: strings, numbers, maps of strings).
pub(super) fn to_value<T: Serialize>(args: &T) -> Value {
    serde_json::to_value(args).unwrap_or(Value::Null)
}

fn task_state(s: &str) -> Result<TaskState, String> {
    serde_json::from_value(Value::String(s.to_owned()))
        .map_err(|_| format!("--state: {s:?} is not a task state: pending, in_progress, completed or failed"))
}

/// The words of a text argument, or stdin for a lone `-`.
fn text_arg(words: &[String]) -> Result<String, String> {
    if words.len() == 1 && words[0] == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| format!("reading stdin: {e}"))?;
        return Ok(s);
    }
    Ok(words.join(" "))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn commands_map_to_tools() {
        let cli = Cli::try_parse_from(["teamctl", "send", "general-2", "hello", "there"]).unwrap();
        let (tool, args) = request(&cli, cli.namespace.clone()).unwrap();
        assert_eq!(tool, Tool::SendMessage);
        assert_eq!(args["body"], "hello there");
        let cli = Cli::try_parse_from(["teamctl", "task", "update", "t1", "--state", "completed", "--result", "ok"]).unwrap();
        let (tool, args) = request(&cli, cli.namespace.clone()).unwrap();
        assert_eq!((tool, args["action"].as_str(), args["state"].as_str()), (Tool::TeamTask, Some("update"), Some("completed")));
        let cli = Cli::try_parse_from(["teamctl", "task", "claim"]).unwrap();
        let (tool, args) = request(&cli, cli.namespace.clone()).unwrap();
        assert_eq!((tool, args["action"].as_str(), args.get("name")), (Tool::TeamTask, Some("claim"), None));
        let cli = Cli::try_parse_from(["teamctl", "-n", "ns", "team", "create", "x", "--agent", "general=img"]).unwrap();
        let (tool, args) = request(&cli, cli.namespace.clone()).unwrap();
        assert_eq!(tool, Tool::TeamCreate);
        assert_eq!(args["agents"][0]["image"], "img");
        assert!(args.get("team").is_none());
    }

    #[test]
    fn all_namespaces_lists_teams_only() {
        let cli = Cli::try_parse_from(["teamctl", "-A", "get", "teams"]).unwrap();
        let (_, args) = request(&cli, None).unwrap();
        assert_eq!((args["kind"].as_str(), args["all_namespaces"].as_bool()), (Some("teams"), Some(true)));
        let cli = Cli::try_parse_from(["teamctl", "-A", "get", "tasks"]).unwrap();
        assert!(request(&cli, None).unwrap_err().contains("-A"));
        assert!(Cli::try_parse_from(["teamctl", "-A", "-n", "x", "get", "teams"]).is_err());
        let cli = Cli::try_parse_from(["teamctl", "get", "messages", "lead", "--limit", "5"]).unwrap();
        let (_, args) = request(&cli, Some("ns".into())).unwrap();
        assert_eq!((args["name"].as_str(), args["limit"].as_u64(), args["namespace"].as_str()), (Some("lead"), Some(5), Some("ns")));
        assert!(args.get("all_namespaces").is_none(), "{args}");
    }

    #[test]
    fn a_bad_state_names_the_flag() {
        let cli = Cli::try_parse_from(["teamctl", "task", "update", "t1", "--state", "done"]).unwrap();
        assert!(request(&cli, cli.namespace.clone()).unwrap_err().contains("--state"));
    }
}
