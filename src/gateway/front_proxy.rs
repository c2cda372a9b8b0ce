//! The API server's front proxy as a caller: how the gateway trusts the identity the API server
//! forwards when it proxies the gateway's aggregated API (see [`super::aggregated`]).
//!
//! The API server authenticates the person (client certificate, exec plugin, OIDC token, …),
//! authorizes the request to the APIService, and proxies it with its front-proxy client
//! certificate and the caller's identity in `X-Remote-User`, `X-Remote-Uid`, `X-Remote-Group` and
//! `X-Remote-Extra-<key>` headers. Those headers are believed only on a TLS connection whose
//! client certificate chains to the requestheader CA and whose common name is one of the allowed
//! names — both read, with the header names, from the `extension-apiserver-authentication`
//! ConfigMap in kube-system, as every aggregated API server does. A request that carries such a
//! header on any other connection is refused (`unauthenticated`), never believed and never
//! silently dropped to a bearer token.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::auth::UserCaller;
use super::error::ApiError;

/// Namespace and name of the ConfigMap the API server publishes its requestheader settings in.
pub const AUTHENTICATION_CONFIGMAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");

/// The header names and prefixes every API server uses unless told otherwise; a request carrying
/// one of them from outside the front proxy is refused whatever the ConfigMap lists.
const DEFAULT_HEADERS: [&str; 3] = ["x-remote-user", "x-remote-uid", "x-remote-group"];
const DEFAULT_EXTRA_PREFIX: &str = "x-remote-extra-";

/// The API server's requestheader settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeaderConfig {
    /// PEM bundle of the CA(s) that sign the front proxy's client certificate.
    pub client_ca_pem: String,
    /// Common names a front-proxy certificate may have; empty: any the CA signed.
    pub allowed_names: Vec<String>,
    /// Header names, lowercase.
    pub username_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}

impl RequestHeaderConfig {
    /// The settings from the ConfigMap's data; an error names the missing or malformed key.
    pub fn from_configmap(data: &BTreeMap<String, String>) -> Result<Self, String> {
        let ca = data
            .get("requestheader-client-ca-file")
            .filter(|s| !s.trim().is_empty())
            .ok_or("it has no requestheader-client-ca-file: the API server runs without --requestheader-client-ca-file, so it proxies no aggregated API")?;
        let list = |key: &str| -> Result<Vec<String>, String> {
            match data.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                None => Ok(Vec::new()),
                Some(json) => serde_json::from_str::<Vec<String>>(json)
                    .map(|v| v.into_iter().map(|s| s.to_ascii_lowercase()).collect())
                    .map_err(|e| format!("{key} is not a JSON list of strings: {e}")),
            }
        };
        let allowed_names = match data.get("requestheader-allowed-names").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Vec::new(),
            // Names are compared as they are (certificate common names are case-sensitive).
            Some(json) => {
                serde_json::from_str(json).map_err(|e| format!("requestheader-allowed-names is not a JSON list of strings: {e}"))?
            }
        };
        let config = RequestHeaderConfig {
            client_ca_pem: ca.clone(),
            allowed_names,
            username_headers: list("requestheader-username-headers")?,
            uid_headers: list("requestheader-uid-headers")?,
            group_headers: list("requestheader-group-headers")?,
            extra_prefixes: list("requestheader-extra-headers-prefix")?,
        };
        if config.username_headers.is_empty() {
            return Err("requestheader-username-headers is empty: the front proxy would name nobody".into());
        }
        Ok(config)
    }

    /// Whether a verified client certificate with common name `cn` is the front proxy's.
    pub fn allows(&self, cn: Option<&str>) -> Result<(), String> {
        if self.allowed_names.is_empty() {
            return Ok(());
        }
        match cn {
            Some(cn) if self.allowed_names.iter().any(|n| n == cn) => Ok(()),
            Some(cn) => Err(format!("client certificate CN={cn} is not among requestheader-allowed-names {:?}", self.allowed_names)),
            None => Err(format!("client certificate has no common name; requestheader-allowed-names is {:?}", self.allowed_names)),
        }
    }
}

/// What the connection a request came on proves about its sender: put into every request's
/// extensions by the TLS listener ([`super::tls`]); a request without it came over plain HTTP.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The front proxy, under these settings (those its certificate was verified with).
    front_proxy: Option<Arc<RequestHeaderConfig>>,
    /// Why a client certificate that chains to the requestheader CA is still not the front proxy.
    refused: Option<String>,
}

impl Peer {
    /// A connection whose client certificate chains to the CA of `config`, with common name `cn`.
    pub fn verified(config: Arc<RequestHeaderConfig>, cn: Option<&str>) -> Self {
        match config.allows(cn) {
            Ok(()) => Peer { front_proxy: Some(config), refused: None },
            Err(why) => Peer { front_proxy: None, refused: Some(why) },
        }
    }

    /// Whether this connection is the API server's front proxy.
    pub fn is_front_proxy(&self) -> bool {
        self.front_proxy.is_some()
    }

    /// The caller named by the front proxy's headers (None: not the front proxy); a front-proxy
    /// request that names nobody is refused.
    pub fn identity(&self, headers: &HeaderMap) -> Option<Result<UserCaller, ApiError>> {
        self.front_proxy.as_ref().map(|config| identity(headers, config))
    }

    /// Refuses a request that claims an identity in a requestheader header when this connection
    /// is not the front proxy's.
    pub fn refuse_claims(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.is_front_proxy() {
            return Ok(());
        }
        let Some(name) = claimed_header(headers) else { return Ok(()) };
        let why = self.refused.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        Err(ApiError::unauthenticated(format!(
            "the {name} header is accepted only from the API server's front proxy: a TLS client certificate signed by the requestheader CA with an allowed name{why}"
        )))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Peer>().cloned().unwrap_or_default())
    }
}

/// The first requestheader-like header of a request, if any.
fn claimed_header(headers: &HeaderMap) -> Option<String> {
    headers.keys().map(|k| k.as_str()).find(|k| DEFAULT_HEADERS.contains(k) || k.starts_with(DEFAULT_EXTRA_PREFIX)).map(str::to_owned)
}

/// The user the front proxy names, as the API server's own requestheader authenticator reads
/// it: the first non-empty username header, every group header's values, the extras by prefix
/// (lowercase, percent-decoded key).
pub fn identity(headers: &HeaderMap, config: &RequestHeaderConfig) -> Result<UserCaller, ApiError> {
    let first = |names: &[String]| {
        names.iter().find_map(|n| headers.get(n.as_str()).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()))
    };
    let username = first(&config.username_headers).ok_or_else(|| {
        ApiError::unauthenticated(format!("the front proxy named no user (headers {})", config.username_headers.join(", ")))
    })?;
    let groups = config
        .group_headers
        .iter()
        .flat_map(|n| headers.get_all(n.as_str()).iter())
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let Some(key) = config.extra_prefixes.iter().find_map(|p| name.as_str().strip_prefix(p.as_str())) else { continue };
        if let Ok(v) = value.to_str() {
            extra.entry(percent_decode(key)).or_default().push(v.to_owned());
        }
    }
    Ok(UserCaller { username: username.to_owned(), uid: first(&config.uid_headers).map(str::to_owned), groups, extra })
}

/// `%2F` → `/`: extra keys such as `authentication.kubernetes.io/pod-name` travel escaped.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RequestHeaderConfig {
        let data: BTreeMap<String, String> = [
            ("requestheader-client-ca-file", "-----BEGIN CERTIFICATE-----\n…\n-----END CERTIFICATE-----\n"),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-uid-headers", r#"["X-Remote-Uid"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        RequestHeaderConfig::from_configmap(&data).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_configmap_is_read_with_lowercase_header_names() {
        let c = config();
        assert_eq!(c.username_headers, ["x-remote-user"]);
        assert_eq!(c.allowed_names, ["front-proxy-client"]);
        let mut data = BTreeMap::new();
        assert!(RequestHeaderConfig::from_configmap(&data).unwrap_err().contains("requestheader-client-ca-file"));
        data.insert("requestheader-client-ca-file".to_owned(), "pem".to_owned());
        data.insert("requestheader-username-headers".to_owned(), "X-Remote-User".to_owned());
        assert!(RequestHeaderConfig::from_configmap(&data).unwrap_err().contains("requestheader-username-headers is not a JSON list"));
    }

    #[test]
    fn the_front_proxy_names_user_groups_and_extras() {
        let h = headers(&[
            ("x-remote-user", "alice"),
            ("x-remote-uid", "u-1"),
            ("x-remote-group", "devs"),
            ("x-remote-group", "system:authenticated"),
            ("x-remote-extra-authentication.kubernetes.io%2fpod-name", "p"),
            ("x-remote-extra-scopes", "a"),
            ("x-remote-extra-scopes", "b"),
        ]);
        let u = identity(&h, &config()).unwrap();
        assert_eq!((u.username.as_str(), u.uid.as_deref()), ("alice", Some("u-1")));
        assert_eq!(u.groups, ["devs", "system:authenticated"]);
        assert_eq!(u.extra["authentication.kubernetes.io/pod-name"], ["p"]);
        assert_eq!(u.extra["scopes"], ["a", "b"]);
        assert_eq!(identity(&headers(&[("x-remote-group", "g")]), &config()).unwrap_err().code.as_str(), "unauthenticated");
    }

    #[test]
    fn only_an_allowed_name_is_the_front_proxy() {
        let c = Arc::new(config());
        assert!(Peer::verified(c.clone(), Some("front-proxy-client")).is_front_proxy());
        let other = Peer::verified(c.clone(), Some("team-operator-admin"));
        assert!(!other.is_front_proxy());
        let e = other.refuse_claims(&headers(&[("x-remote-user", "system:admin")])).unwrap_err();
        assert_eq!(e.code.as_str(), "unauthenticated");
        assert!(e.message.contains("CN=team-operator-admin"), "{}", e.message);
        assert!(!Peer::verified(c, None).is_front_proxy());
    }

    #[test]
    fn a_plain_connection_claiming_an_identity_is_refused() {
        let plain = Peer::default();
        assert!(plain.identity(&headers(&[("x-remote-user", "system:admin")])).is_none());
        for forged in [("x-remote-user", "system:admin"), ("x-remote-group", "system:masters"), ("x-remote-extra-scopes", "x")] {
            let e = plain.refuse_claims(&headers(&[forged, ("authorization", "Bearer t")])).unwrap_err();
            assert!(e.message.contains(forged.0) && e.message.contains("front proxy"), "{}", e.message);
        }
        assert!(plain.refuse_claims(&headers(&[("authorization", "Bearer t")])).is_ok());
    }
}
