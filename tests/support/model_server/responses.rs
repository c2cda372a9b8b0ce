//! The OpenAI Responses API (`POST …/responses`), as Codex speaks it (`wire_api = "responses"`):
//! the request's `instructions` and `input` items (messages, `function_call`,
//! `function_call_output`) read into a [`Conversation`], and the reply written as a response
//! object or as its SSE stream (`response.created`, `response.output_item.added`/`done`,
//! `response.output_text.delta`, `response.function_call_arguments.delta`, `response.completed`
//! with usage).
//!
//! Codex offers an MCP server's tools as one `namespace` tool (`mcp__team`) holding plain
//! functions (`send_message`), and the model calls them with `namespace` beside `name`. Here
//! such a tool is named `<namespace>__<tool>` (`mcp__team__send_message`, Codex's own name for
//! it), and a call to it is sent back split into the two fields.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Api, Conversation, Item, Reply};

/// A tool's name as this server names it: `<namespace>__<tool>` for a tool in a namespace.
fn qualified(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}__{name}"),
        _ => name.to_owned(),
    }
}

/// Text of a Responses content value: a string, or the text of its parts (`input_text`,
/// `output_text`, `text`), one per line.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(super) fn parse(req: &Value) -> Conversation {
    let mut system = req["instructions"].as_str().unwrap_or_default().to_owned();
    let mut items = Vec::new();
    let mut names = HashMap::new();
    let input = match &req["input"] {
        Value::String(s) => vec![json!({ "type": "message", "role": "user", "content": s })],
        Value::Array(a) => a.clone(),
        _ => Vec::new(),
    };
    for it in &input {
        // A message may come without `type` (the API's short form).
        match it["type"].as_str().unwrap_or("message") {
            "message" => match it["role"].as_str().unwrap_or_default() {
                "system" | "developer" => system.push_str(&text_of(&it["content"])),
                "user" => items.push(Item::User(text_of(&it["content"]))),
                "assistant" => {
                    let t = text_of(&it["content"]);
                    if !t.trim().is_empty() {
                        items.push(Item::Assistant(t));
                    }
                }
                _ => {}
            },
            "function_call" => {
                let name = qualified(it["namespace"].as_str(), it["name"].as_str().unwrap_or_default());
                let args = it["arguments"].as_str().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(Value::Null);
                names.insert(it["call_id"].as_str().unwrap_or_default().to_owned(), name.clone());
                items.push(Item::Call { name, args });
            }
            "function_call_output" => {
                let name = names.get(it["call_id"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
                items.push(Item::Result { name, text: text_of(&it["output"]) });
            }
            _ => {}
        }
    }
    let mut tools = Vec::new();
    for t in req["tools"].as_array().into_iter().flatten() {
        match t["type"].as_str() {
            Some("function") => tools.extend(t["name"].as_str().map(str::to_owned)),
            Some("namespace") => {
                let ns = t["name"].as_str();
                tools.extend(t["tools"].as_array().into_iter().flatten().filter_map(|f| f["name"].as_str()).map(|n| qualified(ns, n)));
            }
            _ => {}
        }
    }
    Conversation {
        api: Api::Responses,
        model: req["model"].as_str().unwrap_or_default().to_owned(),
        system,
        items,
        tools,
        stream: req["stream"].as_bool().unwrap_or(false),
    }
}

/// The `namespace` and `name` fields of a call to the offered tool `offered`.
fn call_target(req: &Value, offered: &str) -> (Option<String>, String) {
    for t in req["tools"].as_array().into_iter().flatten().filter(|t| t["type"] == "namespace") {
        let ns = t["name"].as_str().unwrap_or_default();
        for f in t["tools"].as_array().into_iter().flatten() {
            let name = f["name"].as_str().unwrap_or_default();
            if qualified(Some(ns), name) == offered {
                return (Some(ns.to_owned()), name.to_owned());
            }
        }
    }
    (None, offered.to_owned())
}

/// The output items of `reply` (its text as one message, then each call), as completed.
fn output(req: &Value, reply: &Reply, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    if !reply.text.is_empty() {
        out.push(json!({
            "type": "message", "id": format!("msg_{n}"), "status": "completed", "role": "assistant",
            "content": [{ "type": "output_text", "text": reply.text, "annotations": [] }],
        }));
    }
    for (i, (offered, args)) in reply.calls.iter().enumerate() {
        let (namespace, name) = call_target(req, offered);
        let mut call = json!({
            "type": "function_call", "id": format!("fc_{n}_{i}"), "call_id": format!("call_{n}_{i}"),
            "name": name, "arguments": args.to_string(), "status": "completed",
        });
        if let Some(ns) = namespace {
            call["namespace"] = Value::from(ns);
        }
        out.push(call);
    }
    out
}

fn usage() -> Value {
    json!({
        "input_tokens": 100, "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": 10, "output_tokens_details": { "reasoning_tokens": 0 }, "total_tokens": 110,
    })
}

fn response(model: &str, n: usize, status: &str, output: Vec<Value>) -> Value {
    json!({ "id": format!("resp_{n}"), "object": "response", "created_at": 0, "status": status, "model": model, "output": output })
}

/// The reply as one response object (`stream: false`).
pub(super) fn message(req: &Value, model: &str, reply: &Reply, n: usize) -> Value {
    let mut r = response(model, n, "completed", output(req, reply, n));
    r["usage"] = usage();
    r
}

/// The reply as the SSE events of a streamed response: each output item added, its text or
/// arguments in deltas, done; then the completed response with usage.
pub(super) fn events(req: &Value, model: &str, reply: &Reply, n: usize) -> Vec<(&'static str, Value)> {
    let items = output(req, reply, n);
    let mut out = vec![("response.created", json!({ "response": response(model, n, "in_progress", Vec::new()) }))];
    for (index, item) in items.iter().enumerate() {
        let id = item["id"].clone();
        let mut added = item.clone();
        added["status"] = Value::from("in_progress");
        if item["type"] == "message" {
            added["content"] = json!([]);
            out.push(("response.output_item.added", json!({ "output_index": index, "item": added })));
            let text = item["content"][0]["text"].as_str().unwrap_or_default();
            let part = |t: &str| json!({ "type": "output_text", "text": t, "annotations": [] });
            out.push((
                "response.content_part.added",
                json!({ "item_id": id, "output_index": index, "content_index": 0, "part": part("") }),
            ));
            // Two pieces, as a real stream splits text.
            let mid = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i);
            for piece in [&text[..mid], &text[mid..]] {
                out.push((
                    "response.output_text.delta",
                    json!({ "item_id": id, "output_index": index, "content_index": 0, "delta": piece }),
                ));
            }
            out.push(("response.output_text.done", json!({ "item_id": id, "output_index": index, "content_index": 0, "text": text })));
            out.push((
                "response.content_part.done",
                json!({ "item_id": id, "output_index": index, "content_index": 0, "part": part(text) }),
            ));
        } else {
            added["arguments"] = Value::from("");
            out.push(("response.output_item.added", json!({ "output_index": index, "item": added })));
            let args = item["arguments"].clone();
            out.push(("response.function_call_arguments.delta", json!({ "item_id": id, "output_index": index, "delta": args })));
            out.push(("response.function_call_arguments.done", json!({ "item_id": id, "output_index": index, "arguments": args })));
        }
        out.push(("response.output_item.done", json!({ "output_index": index, "item": item })));
    }
    let mut done = response(model, n, "completed", items);
    done["usage"] = usage();
    out.push(("response.completed", json!({ "response": done })));
    // Every event names its type and its place in the stream.
    for (seq, (kind, data)) in out.iter_mut().enumerate() {
        data["type"] = Value::from(*kind);
        data["sequence_number"] = Value::from(seq);
    }
    out
}
