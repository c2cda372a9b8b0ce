//! A client of the gateway's JSON API, used by `teamctl` and by `teamctl mcp`: straight to the
//! gateway's URL with a bearer token (member pods, a port-forward), or through the Kubernetes API
//! server's aggregated API with the kubeconfig's own credentials (see [`super::aggregated`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use serde_json::Value;

use super::aggregated::VERSION;
use super::error::{ErrorBody, ErrorCode};
use super::tools::Tool;

/// Where the bearer token comes from. A file is read on every call: projected tokens rotate.
#[derive(Clone, Debug)]
pub enum Token {
    None,
    Literal(String),
    File(PathBuf),
}

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway (or the API server in front of it) refused the call with a 4xx.
    #[error("{code}: {message}")]
    Refused { status: u16, code: String, message: String },
    /// The gateway could not be reached or failed (5xx).
    #[error("{0}")]
    Unavailable(String),
}

impl ClientError {
    /// The `{ "error": { code, message } }` form of the error.
    pub fn body(&self) -> ErrorBody {
        let (code, message) = match self {
            ClientError::Refused { code, message, .. } => (code.clone(), message.clone()),
            ClientError::Unavailable(m) => ("unavailable".to_owned(), m.clone()),
        };
        ErrorBody { error: super::error::ErrorDetail { code, message } }
    }
}

/// The longest one wait_messages call blocks through the API server, which ends requests that
/// are not watches after 60 s (`--request-timeout`); a longer wait is made of several calls.
pub const API_SERVER_WAIT_BOUND: u64 = 50;

/// How long the next call of a bounded wait blocks, `elapsed` seconds into a wait of `wanted`
/// seconds (None: as long as the team allows, `cap` once an answer has said it); None when the
/// wait is over. The first call (`elapsed` 0, no answer yet) always goes out.
fn next_chunk(wanted: Option<u64>, cap: Option<u64>, elapsed: u64) -> Option<u64> {
    let first = cap.is_none() && elapsed == 0;
    let total = wanted.or(cap);
    match total {
        _ if first => Some(total.unwrap_or(API_SERVER_WAIT_BOUND).min(API_SERVER_WAIT_BOUND)),
        Some(t) if elapsed < t => Some((t - elapsed).min(API_SERVER_WAIT_BOUND)),
        _ => None,
    }
}

/// How calls travel.
#[derive(Clone)]
enum Transport {
    /// The gateway's own URL.
    Direct { http: reqwest::Client, base: String, token: Token },
    /// `/apis/<group>/v1alpha1/…` on the API server of a kube client.
    ApiServer { client: kube::Client, group: String },
}

/// A check run on the caller's side before a call goes out: None lets the call pass at once, a
/// future that fails refuses it there, as the gateway would (teamctl's quality gates).
pub type CallCheck = Arc<dyn Fn(&str, &Value) -> Option<BoxFuture<'static, Result<(), ClientError>>> + Send + Sync>;

/// A handle on one gateway.
#[derive(Clone)]
pub struct GatewayClient {
    transport: Transport,
    check: Option<CallCheck>,
}

impl GatewayClient {
    /// The gateway at `base` (`http://…`), with `token` as the bearer.
    pub fn new(base: &str, token: Token) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Unavailable(format!("cannot build an HTTP client: {e}")))?;
        Ok(GatewayClient { transport: Transport::Direct { http, base: base.trim_end_matches('/').to_owned(), token }, check: None })
    }

    /// The gateway behind the APIService `v1alpha1.<group>` of `client`'s API server: calls
    /// carry the kube client's credentials, and the gateway sees the caller's own identity.
    pub fn through_api_server(client: kube::Client, group: &str) -> Self {
        GatewayClient { transport: Transport::ApiServer { client, group: group.to_owned() }, check: None }
    }

    /// The same gateway, with `check` run before every call.
    pub fn with_check(mut self, check: CallCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// Calls `tool` with `args`; the result object on success.
    pub async fn call(&self, tool: &str, args: &Value) -> Result<Value, ClientError> {
        if let Some(pending) = self.check.as_ref().and_then(|check| check(tool, args)) {
            pending.await?;
        }
        match &self.transport {
            Transport::ApiServer { .. } if tool == Tool::WaitMessages.as_str() => self.bounded_waits(args).await,
            _ => self.call_once(tool, args).await,
        }
    }

    /// A wait_messages made of calls of at most [`API_SERVER_WAIT_BOUND`] seconds, for as long as
    /// asked (or as the team allows, which each answer reports): the first call carries the
    /// acks, the rest only wait.
    async fn bounded_waits(&self, args: &Value) -> Result<Value, ClientError> {
        let wait = Tool::WaitMessages.as_str();
        if args.get("receive") == Some(&Value::Bool(false)) {
            return self.call_once(wait, args).await;
        }
        let wanted = args.get("timeout_seconds").and_then(Value::as_u64);
        let start = Instant::now();
        let mut call = args.clone();
        let mut chunk = next_chunk(wanted, None, 0);
        loop {
            call["timeout_seconds"] = chunk.unwrap_or(0).into();
            let answer = self.call_once(wait, &call).await?;
            let empty = answer.get("messages").and_then(Value::as_array).is_none_or(Vec::is_empty);
            let cap = answer.get("max_timeout_seconds").and_then(Value::as_u64);
            let elapsed = (start.elapsed().as_millis() + 500) / 1000;
            chunk = next_chunk(wanted, cap, u64::try_from(elapsed).unwrap_or(u64::MAX));
            if !empty || chunk.is_none() {
                return Ok(answer);
            }
            if let Value::Object(o) = &mut call {
                o.remove("ack");
            }
        }
    }

    async fn call_once(&self, tool: &str, args: &Value) -> Result<Value, ClientError> {
        match &self.transport {
            Transport::Direct { http, base, token } => direct(http, base, token, tool, args).await,
            Transport::ApiServer { client, group } => through(client, group, tool, args).await,
        }
    }
}

async fn direct(http: &reqwest::Client, base: &str, token: &Token, tool: &str, args: &Value) -> Result<Value, ClientError> {
    let url = format!("{base}/v1/tools/{tool}");
    let mut req = http.post(&url).json(args);
    if let Some(token) = read_token(token)? {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| ClientError::Unavailable(format!("cannot reach the gateway at {base}: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| ClientError::Unavailable(format!("reading the gateway's answer: {e}")))?;
    answer(status, &text).map_err(|(code, message)| classify(status, code, message))
}

fn read_token(token: &Token) -> Result<Option<String>, ClientError> {
    match token {
        Token::None => Ok(None),
        Token::Literal(t) => Ok(Some(t.clone())),
        Token::File(path) => std::fs::read_to_string(path).map(|t| Some(t.trim().to_owned())).map_err(|e| ClientError::Refused {
            status: 401,
            code: "unauthenticated".into(),
            message: format!("cannot read the token file {}: {e}", path.display()),
        }),
    }
}

/// A call through the API server: to the namespace the arguments name, else cluster-wide.
async fn through(client: &kube::Client, group: &str, tool: &str, args: &Value) -> Result<Value, ClientError> {
    let path = match args.get("namespace").and_then(Value::as_str).filter(|ns| !ns.is_empty()) {
        Some(ns) => format!("/apis/{group}/{VERSION}/namespaces/{ns}/tools/{tool}"),
        None => format!("/apis/{group}/{VERSION}/tools/{tool}"),
    };
    let body = serde_json::to_vec(args).unwrap_or_default();
    let req = http::Request::post(&path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(kube::client::Body::from(body))
        .map_err(|e| ClientError::Unavailable(format!("building the request: {e}")))?;
    let resp = client.send(req).await.map_err(|e| ClientError::Unavailable(format!("cannot reach the API server: {e}")))?;
    let status = resp.status().as_u16();
    let bytes =
        resp.into_body().collect().await.map_err(|e| ClientError::Unavailable(format!("reading the API server's answer: {e}")))?.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    match answer(status, &text) {
        Ok(v) => Ok(v),
        Err((Some(code), message)) => Err(classify(status, Some(code), message)),
        // Not the gateway's error body: the API server's own refusal (a Status).
        Err((None, _)) => Err(api_server_refusal(status, &text, group)),
    }
}

/// The JSON of a 2xx answer; else the gateway's error code (None when the body is not the
/// gateway's) and message.
fn answer(status: u16, text: &str) -> Result<Value, (Option<String>, String)> {
    if (200..300).contains(&status) {
        return serde_json::from_str(text)
            .map_err(|e| (Some(ErrorCode::Unavailable.as_str().into()), format!("the gateway answered with invalid JSON: {e}")));
    }
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(b) => Err((Some(b.error.code), b.error.message)),
        Err(_) => Err((None, format!("HTTP {status}: {}", text.trim()))),
    }
}

fn classify(status: u16, code: Option<String>, message: String) -> ClientError {
    let code = code.unwrap_or_else(|| if status >= 500 { ErrorCode::Unavailable } else { ErrorCode::InvalidArgument }.as_str().to_owned());
    if status >= 500 || code == ErrorCode::Unavailable.as_str() {
        return ClientError::Unavailable(format!("{code}: {message}"));
    }
    ClientError::Refused { status, code, message }
}

/// An error the API server answered itself (a `Status`), in the gateway's codes, saying what
/// to do about it.
fn api_server_refusal(status: u16, text: &str, group: &str) -> ClientError {
    let message = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    let service = format!("APIService v1alpha1.{group}");
    let refused = |code: ErrorCode, message: String| ClientError::Refused { status, code: code.as_str().into(), message };
    match status {
        401 => refused(ErrorCode::Unauthenticated, format!("the API server did not accept the kubeconfig's credentials: {message}")),
        403 => refused(ErrorCode::Forbidden, format!("the API server refused the call to the gateway (RBAC on tools.{group}): {message}")),
        404 => refused(
            ErrorCode::NotFound,
            format!(
                "the API server serves no {group}/{VERSION} ({message}): install the chart with gateway.apiService.enabled (the {service}), set --api-group, or give --gateway"
            ),
        ),
        s if s >= 500 => ClientError::Unavailable(format!(
            "unavailable: the API server cannot reach the gateway ({service}; `kubectl get apiservice v1alpha1.{group}` says why): {message}"
        )),
        _ => refused(ErrorCode::InvalidArgument, format!("HTTP {status} from the API server: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_waits_through_the_api_server_are_cut_into_bounded_calls() {
        // Asked for 120 s: 50, then the rest in calls of at most 50, then over.
        assert_eq!(next_chunk(Some(120), None, 0), Some(50));
        assert_eq!(next_chunk(Some(120), Some(300), 50), Some(50));
        assert_eq!(next_chunk(Some(120), Some(300), 100), Some(20));
        assert_eq!(next_chunk(Some(120), Some(300), 120), None);
        // No timeout: the team's cap, as the first answer reports it.
        assert_eq!(next_chunk(None, None, 0), Some(50));
        assert_eq!(next_chunk(None, Some(300), 50), Some(50));
        assert_eq!(next_chunk(None, Some(300), 290), Some(10));
        assert_eq!(next_chunk(None, Some(30), 30), None);
        // Short waits and polls are one call.
        assert_eq!(next_chunk(Some(5), None, 0), Some(5));
        assert_eq!(next_chunk(Some(5), Some(300), 5), None);
        assert_eq!(next_chunk(Some(0), None, 0), Some(0));
        assert_eq!(next_chunk(Some(0), Some(300), 0), None);
    }

    #[test]
    fn the_gateway_error_body_wins_over_the_status() {
        let gw = r#"{"error":{"code":"forbidden","message":"user x may not create teams/messages"}}"#;
        let e = classify(403, answer(403, gw).unwrap_err().0, "m".into());
        assert!(matches!(e, ClientError::Refused { ref code, .. } if code == "forbidden"), "{e}");
        assert_eq!(answer(403, r#"{"kind":"Status","code":403}"#).unwrap_err().0, None);
    }

    #[test]
    fn api_server_refusals_say_what_to_do() {
        let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;
        let e = api_server_refusal(404, status, "gateway.agentteams.dev");
        assert!(e.to_string().starts_with("not_found: ") && e.to_string().contains("gateway.apiService.enabled"), "{e}");
        let e = api_server_refusal(503, r#"{"message":"service unavailable"}"#, "g.example");
        assert!(matches!(e, ClientError::Unavailable(ref m) if m.contains("kubectl get apiservice v1alpha1.g.example")), "{e}");
        let e = api_server_refusal(403, r#"{"message":"tools.g is forbidden: User \"bob\" cannot create"}"#, "g");
        assert!(e.to_string().contains("User \"bob\""), "{e}");
    }
}
