//! A scripted model server on loopback: the OpenAI chat-completions (`POST …/chat/completions`),
//! OpenAI Responses (`POST …/responses`, in `responses`) and Anthropic messages
//! (`POST …/v1/messages`) APIs, streaming (SSE) and not, so real agent runtimes (opencode, Codex,
//! Claude Code) can run against it.
//!
//! It is a model that reads what it is sent: every request is parsed into a [`Conversation`]
//! (system text, user texts, the tool calls made so far and their results, the tools offered),
//! and the test's [`Brain`] decides the reply from it — a step that needs a tool result or an
//! injected message waits until that text is in the conversation. Tool calls are given by the
//! tool's own name (`send_message`) and sent under the name the runtime offered it as
//! (`team_send_message` for opencode, `mcp__team__send_message` for Claude Code and for Codex,
//! which offers it as `send_message` in the namespace `mcp__team`).
//!
//! Every request and its reply is kept ([`ModelServer::turns`]): what the tests assert on and
//! what the transcript is made of.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

mod responses;

/// Which wire format a request came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// OpenAI chat completions.
    OpenAi,
    /// OpenAI Responses.
    Responses,
    Anthropic,
}

/// One item of a conversation, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A user message's text.
    User(String),
    /// Text the assistant said.
    Assistant(String),
    /// A tool call the assistant made: the tool's name as offered, and its arguments.
    Call { name: String, args: Value },
    /// The result of a tool call: the name of the tool (when known) and the result text.
    Result { name: String, text: String },
}

/// What a request carries, normalised across the two APIs.
#[derive(Clone, Debug)]
pub struct Conversation {
    pub api: Api,
    pub model: String,
    pub system: String,
    pub items: Vec<Item>,
    /// Names of the tools offered.
    pub tools: Vec<String>,
    pub stream: bool,
}

impl Conversation {
    /// The first user message (a runtime's turn 1: the prompt).
    pub fn first_user(&self) -> &str {
        self.items.iter().find_map(|i| if let Item::User(t) = i { Some(t.as_str()) } else { None }).unwrap_or_default()
    }

    /// Every user text.
    pub fn user_texts(&self) -> impl Iterator<Item = &str> {
        self.items.iter().filter_map(|i| if let Item::User(t) = i { Some(t.as_str()) } else { None })
    }

    /// Whether any user message contains `needle`.
    pub fn user_says(&self, needle: &str) -> bool {
        self.user_texts().any(|t| t.contains(needle))
    }

    /// The calls made of tool `tool` (matched by suffix: `send_message` matches
    /// `mcp__team__send_message`), with their arguments.
    pub fn calls(&self, tool: &str) -> Vec<&Value> {
        self.items
            .iter()
            .filter_map(|i| if let Item::Call { name, args } = i { tool_is(name, tool).then_some(args) } else { None })
            .collect()
    }

    /// The results of tool `tool`, oldest first.
    pub fn results(&self, tool: &str) -> Vec<&str> {
        self.items
            .iter()
            .filter_map(|i| if let Item::Result { name, text } = i { tool_is(name, tool).then_some(text.as_str()) } else { None })
            .collect()
    }

    /// The last item.
    pub fn last(&self) -> Option<&Item> {
        self.items.last()
    }

    /// Whether the tool `tool` is offered.
    pub fn offers(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| tool_is(t, tool))
    }

    /// The text of the newest user message or tool result: what this request adds.
    pub fn newest(&self) -> String {
        match self.items.last() {
            Some(Item::User(t)) => t.clone(),
            Some(Item::Result { name, text }) => format!("[{name} result] {text}"),
            Some(Item::Call { name, .. }) => format!("[call {name}]"),
            Some(Item::Assistant(t)) => format!("[assistant] {t}"),
            None => String::new(),
        }
    }
}

/// Whether the offered tool name `offered` is the tool `tool` (`team_get` and `mcp__team__get`
/// are `get`; `forget` is not).
pub fn tool_is(offered: &str, tool: &str) -> bool {
    offered == tool || offered.strip_suffix(tool).is_some_and(|head| head.ends_with('_'))
}

/// What the model answers: text, and tool calls by the tool's own name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reply {
    pub text: String,
    pub calls: Vec<(String, Value)>,
}

impl Reply {
    pub fn text(t: impl Into<String>) -> Self {
        Reply { text: t.into(), calls: Vec::new() }
    }
    pub fn call(tool: &str, args: Value) -> Self {
        Reply { text: String::new(), calls: vec![(tool.to_owned(), args)] }
    }
}

/// The script: the reply to a conversation, and who (for the record) is speaking.
pub type Brain = dyn Fn(&Conversation) -> (String, Reply) + Send + Sync;

/// One request as recorded.
#[derive(Clone, Debug)]
pub struct Turn {
    /// Seconds since the server started.
    pub at: f64,
    pub api: Api,
    pub path: String,
    pub model: String,
    pub stream: bool,
    /// Who the brain said is speaking (`lead`, `reviewer`, `title`, ...).
    pub who: String,
    /// What this request added (the newest user text or tool result).
    pub saw: String,
    /// The reply, with tool calls under the name they were sent as.
    pub reply: Reply,
    /// Requests of this conversation so far (1 = its first).
    pub items: usize,
}

struct Inner {
    brain: Box<Brain>,
    turns: Mutex<Vec<Turn>>,
    /// Requests to paths the server does not serve.
    unknown: Mutex<Vec<String>>,
    started: Instant,
}

/// The server, on 127.0.0.1 at a random port; stops when dropped.
pub struct ModelServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ModelServer {
    /// Serves `brain` on 127.0.0.1.
    pub async fn start(brain: impl Fn(&Conversation) -> (String, Reply) + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1:0", brain).await
    }

    /// Serves `brain` on `addr` (a loopback address, or the stack's bridge address for pods).
    pub async fn start_on(addr: &str, brain: impl Fn(&Conversation) -> (String, Reply) + Send + Sync + 'static) -> Self {
        let inner = Arc::new(Inner {
            brain: Box::new(brain),
            turns: Mutex::new(Vec::new()),
            unknown: Mutex::new(Vec::new()),
            started: Instant::now(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("model server: bind {addr}: {e}"));
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ModelServer { url, inner, task }
    }

    /// Every request served so far, in order.
    pub fn turns(&self) -> Vec<Turn> {
        self.inner.turns.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Requests to paths it does not serve (method and path).
    pub fn unknown(&self) -> Vec<String> {
        self.inner.unknown.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Waits until some recorded request satisfies `cond` (re-checks every 100 ms, up to
    /// `timeout`); panics naming `what` with the record so far.
    pub async fn wait_turn(&self, timeout: std::time::Duration, what: &str, cond: impl Fn(&Turn) -> bool) -> Turn {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(t) = self.turns().into_iter().find(|t| cond(t)) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; turns so far:\n{}",
                self.transcript()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The record as text: one line per request.
    pub fn transcript(&self) -> String {
        let mut out = String::new();
        for t in self.turns() {
            let calls: Vec<String> = t.reply.calls.iter().map(|(n, a)| format!("{n}({a})")).collect();
            let said = if t.reply.text.is_empty() { String::new() } else { format!(" says {:?}", t.reply.text) };
            let called = if calls.is_empty() { String::new() } else { format!(" calls {}", calls.join(", ")) };
            out.push_str(&format!("{:7.2}s {:>10} saw {:?}{said}{called}\n", t.at, t.who, clip(&t.saw, 160)));
        }
        out
    }
}

fn clip(s: &str, n: usize) -> String {
    let flat = s.replace('\n', " ");
    if flat.chars().count() <= n { flat } else { format!("{}…", flat.chars().take(n).collect::<String>()) }
}

async fn handle(State(inner): State<Arc<Inner>>, method: axum::http::Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let api = if path.ends_with("/chat/completions") {
        Api::OpenAi
    } else if path.ends_with("/responses") {
        Api::Responses
    } else if path.ends_with("/messages/count_tokens") {
        return axum::Json(json!({ "input_tokens": 100 })).into_response();
    } else if path.ends_with("/messages") {
        Api::Anthropic
    } else {
        if let Ok(mut u) = inner.unknown.lock() {
            u.push(format!("{method} {path}"));
        }
        return (StatusCode::NOT_FOUND, axum::Json(json!({ "error": { "type": "not_found", "message": format!("no {path} here") } })))
            .into_response();
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not JSON").into_response();
    };
    let conversation = match api {
        Api::OpenAi => parse_openai(&request),
        Api::Responses => responses::parse(&request),
        Api::Anthropic => parse_anthropic(&request),
    };
    let (who, mut reply) = (inner.brain)(&conversation);
    // Send each call under the name the runtime offered the tool as.
    for (name, _) in &mut reply.calls {
        if let Some(offered) = conversation.tools.iter().find(|t| tool_is(t, name)) {
            *name = offered.clone();
        }
    }
    if let Ok(mut turns) = inner.turns.lock() {
        turns.push(Turn {
            at: inner.started.elapsed().as_secs_f64(),
            api,
            path: path.clone(),
            model: conversation.model.clone(),
            stream: conversation.stream,
            who,
            saw: conversation.newest(),
            reply: reply.clone(),
            items: conversation.items.len(),
        });
    }
    let n = inner.turns.lock().map(|t| t.len()).unwrap_or(0);
    match (api, conversation.stream) {
        (Api::OpenAi, false) => axum::Json(openai_message(&conversation.model, &reply, n)).into_response(),
        (Api::OpenAi, true) => sse(openai_chunks(&conversation.model, &reply, n).into_iter().map(|d| (None, d)).collect(), true),
        (Api::Responses, false) => axum::Json(responses::message(&request, &conversation.model, &reply, n)).into_response(),
        (Api::Responses, true) => {
            sse(responses::events(&request, &conversation.model, &reply, n).into_iter().map(|(e, d)| (Some(e), d)).collect(), false)
        }
        (Api::Anthropic, false) => axum::Json(anthropic_message(&conversation.model, &reply, n)).into_response(),
        (Api::Anthropic, true) => {
            sse(anthropic_events(&conversation.model, &reply, n).into_iter().map(|(e, d)| (Some(e), d)).collect(), false)
        }
    }
}

fn sse(events: Vec<(Option<&'static str>, Value)>, done: bool) -> Response {
    let mut body = String::new();
    for (event, data) in events {
        if let Some(e) = event {
            body.push_str(&format!("event: {e}\n"));
        }
        body.push_str(&format!("data: {data}\n\n"));
    }
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Text of an OpenAI or Anthropic content value: a string, or the text parts of a list.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.clone()),
                p if p.get("type").and_then(Value::as_str) == Some("text") => p.get("text").and_then(Value::as_str).map(str::to_owned),
                p if p.get("type").and_then(Value::as_str) == Some("tool_result") => Some(text_of(&p["content"])),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse_openai(req: &Value) -> Conversation {
    let mut system = String::new();
    let mut items = Vec::new();
    let mut names = std::collections::HashMap::new();
    for m in req["messages"].as_array().into_iter().flatten() {
        match m["role"].as_str().unwrap_or_default() {
            "system" | "developer" => system.push_str(&text_of(&m["content"])),
            "user" => items.push(Item::User(text_of(&m["content"]))),
            "assistant" => {
                let t = text_of(&m["content"]);
                if !t.trim().is_empty() {
                    items.push(Item::Assistant(t));
                }
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    let name = c["function"]["name"].as_str().unwrap_or_default().to_owned();
                    let args = c["function"]["arguments"].as_str().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(Value::Null);
                    names.insert(c["id"].as_str().unwrap_or_default().to_owned(), name.clone());
                    items.push(Item::Call { name, args });
                }
            }
            "tool" => {
                let name = names.get(m["tool_call_id"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
                items.push(Item::Result { name, text: text_of(&m["content"]) });
            }
            _ => {}
        }
    }
    let tools = req["tools"].as_array().into_iter().flatten().filter_map(|t| t["function"]["name"].as_str().map(str::to_owned)).collect();
    Conversation {
        api: Api::OpenAi,
        model: req["model"].as_str().unwrap_or_default().to_owned(),
        system,
        items,
        tools,
        stream: req["stream"].as_bool().unwrap_or(false),
    }
}

fn parse_anthropic(req: &Value) -> Conversation {
    let system = text_of(&req["system"]);
    let mut items = Vec::new();
    let mut names = std::collections::HashMap::new();
    for m in req["messages"].as_array().into_iter().flatten() {
        let role = m["role"].as_str().unwrap_or_default();
        let blocks = match &m["content"] {
            Value::String(s) => vec![json!({ "type": "text", "text": s })],
            Value::Array(b) => b.clone(),
            _ => Vec::new(),
        };
        for b in blocks {
            match (role, b["type"].as_str().unwrap_or_default()) {
                ("user", "text") => items.push(Item::User(b["text"].as_str().unwrap_or_default().to_owned())),
                ("assistant", "text") if !b["text"].as_str().unwrap_or_default().trim().is_empty() => {
                    items.push(Item::Assistant(b["text"].as_str().unwrap_or_default().to_owned()))
                }
                ("assistant", "tool_use") => {
                    let name = b["name"].as_str().unwrap_or_default().to_owned();
                    names.insert(b["id"].as_str().unwrap_or_default().to_owned(), name.clone());
                    items.push(Item::Call { name, args: b["input"].clone() });
                }
                ("user", "tool_result") => {
                    let name = names.get(b["tool_use_id"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
                    items.push(Item::Result { name, text: text_of(&b["content"]) });
                }
                _ => {}
            }
        }
    }
    let tools = req["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect();
    Conversation {
        api: Api::Anthropic,
        model: req["model"].as_str().unwrap_or_default().to_owned(),
        system,
        items,
        tools,
        stream: req["stream"].as_bool().unwrap_or(false),
    }
}

fn openai_message(model: &str, reply: &Reply, n: usize) -> Value {
    let calls: Vec<Value> = reply
        .calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| json!({ "id": format!("call_{n}_{i}"), "type": "function", "function": { "name": name, "arguments": args.to_string() } }))
        .collect();
    let finish = if calls.is_empty() { "stop" } else { "tool_calls" };
    let mut message =
        json!({ "role": "assistant", "content": if reply.text.is_empty() { Value::Null } else { Value::from(reply.text.clone()) } });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": format!("chatcmpl-{n}"), "object": "chat.completion", "created": 0, "model": model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
        "usage": { "prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110 },
    })
}

fn openai_chunks(model: &str, reply: &Reply, n: usize) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        json!({ "id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
    };
    let mut out = vec![chunk(json!({ "role": "assistant", "content": "" }), Value::Null)];
    if !reply.text.is_empty() {
        // Two pieces, as a real stream splits text.
        let mid = reply.text.char_indices().nth(reply.text.chars().count() / 2).map_or(0, |(i, _)| i);
        for piece in [&reply.text[..mid], &reply.text[mid..]] {
            out.push(chunk(json!({ "content": piece }), Value::Null));
        }
    }
    for (i, (name, args)) in reply.calls.iter().enumerate() {
        let id = format!("call_{n}_{i}");
        out.push(chunk(
            json!({ "tool_calls": [{ "index": i, "id": id, "type": "function", "function": { "name": name, "arguments": "" } }] }),
            Value::Null,
        ));
        out.push(chunk(json!({ "tool_calls": [{ "index": i, "function": { "arguments": args.to_string() } }] }), Value::Null));
    }
    let finish = if reply.calls.is_empty() { "stop" } else { "tool_calls" };
    out.push(chunk(json!({}), Value::from(finish)));
    let mut usage =
        json!({ "id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [] });
    usage["usage"] = json!({ "prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110 });
    out.push(usage);
    out
}

fn anthropic_blocks(reply: &Reply, n: usize) -> Vec<Value> {
    let mut blocks = Vec::new();
    if !reply.text.is_empty() {
        blocks.push(json!({ "type": "text", "text": reply.text }));
    }
    for (i, (name, args)) in reply.calls.iter().enumerate() {
        blocks.push(json!({ "type": "tool_use", "id": format!("toolu_{n}_{i}"), "name": name, "input": args }));
    }
    if blocks.is_empty() {
        blocks.push(json!({ "type": "text", "text": "" }));
    }
    blocks
}

fn anthropic_message(model: &str, reply: &Reply, n: usize) -> Value {
    let stop = if reply.calls.is_empty() { "end_turn" } else { "tool_use" };
    json!({
        "id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": model,
        "content": anthropic_blocks(reply, n), "stop_reason": stop, "stop_sequence": null,
        "usage": { "input_tokens": 100, "output_tokens": 10 },
    })
}

fn anthropic_events(model: &str, reply: &Reply, n: usize) -> Vec<(&'static str, Value)> {
    let stop = if reply.calls.is_empty() { "end_turn" } else { "tool_use" };
    let mut out = vec![(
        "message_start",
        json!({ "type": "message_start", "message": {
            "id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": { "input_tokens": 100, "output_tokens": 1 } } }),
    )];
    for (index, block) in anthropic_blocks(reply, n).into_iter().enumerate() {
        match block["type"].as_str() {
            Some("tool_use") => {
                let start = json!({ "type": "tool_use", "id": block["id"], "name": block["name"], "input": {} });
                out.push(("content_block_start", json!({ "type": "content_block_start", "index": index, "content_block": start })));
                out.push((
                    "content_block_delta",
                    json!({ "type": "content_block_delta", "index": index, "delta": { "type": "input_json_delta", "partial_json": block["input"].to_string() } }),
                ));
            }
            _ => {
                out.push((
                    "content_block_start",
                    json!({ "type": "content_block_start", "index": index, "content_block": { "type": "text", "text": "" } }),
                ));
                out.push((
                    "content_block_delta",
                    json!({ "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": block["text"] } }),
                ));
            }
        }
        out.push(("content_block_stop", json!({ "type": "content_block_stop", "index": index })));
    }
    out.push((
        "message_delta",
        json!({ "type": "message_delta", "delta": { "stop_reason": stop, "stop_sequence": null }, "usage": { "output_tokens": 10 } }),
    ));
    out.push(("message_stop", json!({ "type": "message_stop" })));
    out
}
