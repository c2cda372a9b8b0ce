//! A client of the gateway's JSON API, used by `teamctl` and by `teamctl mcp`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::error::ErrorBody;

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
    /// The gateway answered with a 4xx error: the call was refused.
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

/// A handle on one gateway.
#[derive(Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
    token: Token,
}

impl GatewayClient {
    pub fn new(base: &str, token: Token) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Unavailable(format!("cannot build an HTTP client: {e}")))?;
        Ok(GatewayClient { http, base: base.trim_end_matches('/').to_owned(), token })
    }

    fn token(&self) -> Result<Option<String>, ClientError> {
        match &self.token {
            Token::None => Ok(None),
            Token::Literal(t) => Ok(Some(t.clone())),
            Token::File(path) => std::fs::read_to_string(path).map(|t| Some(t.trim().to_owned())).map_err(|e| ClientError::Refused {
                status: 401,
                code: "unauthenticated".into(),
                message: format!("cannot read the token file {}: {e}", path.display()),
            }),
        }
    }

    /// Calls `tool` with `args`; the result object on success.
    pub async fn call(&self, tool: &str, args: &Value) -> Result<Value, ClientError> {
        let url = format!("{}/v1/tools/{tool}", self.base);
        let mut req = self.http.post(&url).json(args);
        if let Some(token) = self.token()? {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unavailable(format!("cannot reach the gateway at {}: {e}", self.base)))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| ClientError::Unavailable(format!("reading the gateway's answer: {e}")))?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text)
                .map_err(|e| ClientError::Unavailable(format!("the gateway answered with invalid JSON: {e}")));
        }
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => {
                (if status >= 500 { "unavailable" } else { "invalid_argument" }.to_owned(), format!("HTTP {status}: {}", text.trim()))
            }
        };
        if status >= 500 {
            return Err(ClientError::Unavailable(format!("{code}: {message}")));
        }
        Err(ClientError::Refused { status, code, message })
    }
}
