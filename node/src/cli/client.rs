//! Shared HTTP plumbing for the `kv` and `cluster` subcommands.
//!
//! Everything that talks to a ferrokv node goes through [`ApiClient`], which
//! owns a single `reqwest::Client` (connection pool, timeouts) and turns the
//! server's JSON error envelope into an [`ApiError`]. [`print_error`] is what
//! `main` uses to render any failure as `error: <code>: <message>`.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

/// How long we wait for a TCP connection before giving up on a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound for a whole request, so a wedged node can't hang the CLI.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest non-JSON error body we echo back; proxies can return whole pages.
const MAX_RAW_ERROR_CHARS: usize = 200;

/// Options shared by every client subcommand (`kv ...`, `cluster ...`).
///
/// They are `global` so they may be written before or after the
/// sub-subcommand (`ferrokv kv --json get a` and `ferrokv kv get a --json`).
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// Base URL of any ferrokv node's HTTP API.
    #[arg(long, global = true, env = "FERROKV_ENDPOINT", default_value = "http://127.0.0.1:8081", value_name = "URL")]
    pub endpoint: String,

    /// Print machine-readable JSON instead of human-oriented text.
    #[arg(
        long,
        global = true,
        env = "FERROKV_JSON",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub json: bool,
}

/// An error reported by the server (or synthesised from a non-JSON error
/// response), carrying the stable machine-readable `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// Stable snake_case error code, e.g. `key_not_found`.
    pub code: String,
    /// Human-readable explanation from the server.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Wire shape of `{"error":{"code":..,"message":..}}`.
#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

impl ApiError {
    /// Builds an error from a failed response's status and body. Bodies that
    /// are not the ferrokv envelope (a proxy page, axum's plain-text 405, ...)
    /// still get a usable code, `http_<status>`, so scripts can match on it.
    pub fn from_body(status: StatusCode, body: &[u8]) -> Self {
        if let Ok(env) = serde_json::from_slice::<ErrorEnvelope>(body) {
            return Self { status, code: env.error.code, message: env.error.message };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("request failed").to_owned()
        } else {
            truncate_chars(text, MAX_RAW_ERROR_CHARS)
        };
        Self { status, code: format!("http_{}", status.as_u16()), message }
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Prints any CLI failure to stderr as `error: ...`.
///
/// For server errors this is exactly `error: <code>: <message>`; other
/// failures print their whole context chain on one line.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err:#}");
}

/// Thin wrapper around one pooled `reqwest::Client` bound to one endpoint.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
}

impl ApiClient {
    /// Creates a client for `endpoint` (e.g. `http://127.0.0.1:8081`).
    pub fn new(endpoint: &str) -> anyhow::Result<Self> {
        let base = parse_endpoint(endpoint)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("ferrokv-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building HTTP client")?;
        Ok(Self { http, base })
    }

    /// Builds a URL from an already percent-encoded path (starting with `/`).
    ///
    /// The `url` crate normalises paths (`a/../b` becomes `b`), which would
    /// silently address a *different* key; refuse instead of guessing.
    pub fn url(&self, encoded_path: &str) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        let joined = format!("{}{}", self.base.path().trim_end_matches('/'), encoded_path);
        url.set_path(&joined);
        if url.path() != joined {
            bail!(
                "path {encoded_path:?} cannot be sent verbatim over HTTP \
                 (it contains '.' or '..' segments)"
            );
        }
        Ok(url)
    }

    /// Starts a request to `encoded_path` on the endpoint.
    pub fn request(&self, method: Method, encoded_path: &str) -> anyhow::Result<RequestBuilder> {
        Ok(self.http.request(method, self.url(encoded_path)?))
    }

    /// Sends `req`; non-2xx responses become an [`ApiError`] (not wrapped in
    /// extra context, so `print_error` shows exactly `code: message`).
    pub async fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let resp = req.send().await.with_context(|| format!("cannot reach ferrokv at {}", self.base))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // A truncated/unreadable error body should not hide the status code.
        let body = resp.bytes().await.unwrap_or_default();
        Err(ApiError::from_body(status, &body).into())
    }

    /// Sends `req` and decodes a JSON success body.
    pub async fn send_json<T: serde::de::DeserializeOwned>(&self, req: RequestBuilder) -> anyhow::Result<T> {
        let resp = self.send(req).await?;
        let url = resp.url().clone();
        let body = resp.bytes().await.with_context(|| format!("reading response from {url}"))?;
        serde_json::from_slice(&body).with_context(|| format!("invalid JSON from {url}"))
    }
}

/// Validates the endpoint early so typos give a clear message instead of a
/// confusing transport error later.
pub(crate) fn parse_endpoint(endpoint: &str) -> anyhow::Result<Url> {
    let url = Url::parse(endpoint).with_context(|| format!("invalid --endpoint {endpoint:?}"))?;
    match url.scheme() {
        "http" => {}
        // The client is built without a TLS backend to keep the binary lean.
        "https" => bail!("invalid --endpoint {endpoint:?}: https is not supported, use http://"),
        other => bail!("invalid --endpoint {endpoint:?}: unsupported scheme {other:?}"),
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("invalid --endpoint {endpoint:?}: must not contain a query or fragment");
    }
    Ok(url)
}

/// Percent-encodes one path fragment: every byte except RFC 3986
/// "unreserved" characters and `/` is escaped, so keys containing `?`, `#`,
/// `%`, spaces or any non-ASCII text survive the trip unchanged.
pub fn encode_path(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Renders a JSON value for humans: strings without quotes, `null` as `-`.
pub fn display_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Pretty-prints a JSON document on stdout. Takes any `Serialize` so typed
/// output keeps its struct field order (a `Value` map would sort keys).
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding JSON output")?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encode_path_keeps_unreserved_and_slash() {
        assert_eq!(encode_path("a/B-c.d_e~9"), "a/B-c.d_e~9");
    }

    #[test]
    fn encode_path_escapes_reserved_and_utf8() {
        assert_eq!(encode_path("a b?c#d%e"), "a%20b%3Fc%23d%25e");
        assert_eq!(encode_path("é"), "%C3%A9");
        assert_eq!(encode_path("x+y&z=1\\"), "x%2By%26z%3D1%5C");
    }

    #[test]
    fn url_joins_base_path() {
        let c = ApiClient::new("http://h:1/prefix/").expect("client");
        let url = c.url("/v1/kv/a%20b").expect("url");
        assert_eq!(url.as_str(), "http://h:1/prefix/v1/kv/a%20b");
    }

    #[test]
    fn url_keeps_empty_segments() {
        let c = ApiClient::new("http://h:1").expect("client");
        let url = c.url("/v1/kv//a//").expect("url");
        assert_eq!(url.path(), "/v1/kv//a//");
    }

    #[test]
    fn url_refuses_dot_segments() {
        let c = ApiClient::new("http://h:1").expect("client");
        assert!(c.url("/v1/kv/a/../b").is_err());
        assert!(c.url("/v1/kv/.").is_err());
        assert!(c.url("/v1/kv/a/./b").is_err());
        assert!(c.url("/v1/kv/a..b/.c").is_ok());
    }

    #[test]
    fn endpoint_validation() {
        assert!(ApiClient::new("http://127.0.0.1:8081").is_ok());
        assert!(ApiClient::new("https://x").is_err());
        assert!(ApiClient::new("127.0.0.1:8081").is_err());
        assert!(ApiClient::new("http://x/?a=1").is_err());
    }

    #[test]
    fn api_error_from_envelope() {
        let body = br#"{"error":{"code":"key_not_found","message":"no such key"}}"#;
        let err = ApiError::from_body(StatusCode::NOT_FOUND, body);
        assert_eq!(err.code, "key_not_found");
        assert_eq!(err.to_string(), "key_not_found: no such key");
    }

    #[test]
    fn api_error_from_plain_body() {
        let err = ApiError::from_body(StatusCode::METHOD_NOT_ALLOWED, b"");
        assert_eq!(err.to_string(), "http_405: Method Not Allowed");
        let err = ApiError::from_body(StatusCode::BAD_GATEWAY, b" upstream down \n");
        assert_eq!(err.to_string(), "http_502: upstream down");
        let long = "x".repeat(500);
        let err = ApiError::from_body(StatusCode::BAD_GATEWAY, long.as_bytes());
        assert_eq!(err.message.len(), MAX_RAW_ERROR_CHARS + 3);
    }

    #[test]
    fn api_error_prints_without_context_noise() {
        let err: anyhow::Error = ApiError::from_body(
            StatusCode::PRECONDITION_FAILED,
            br#"{"error":{"code":"condition_failed","message":"revision is 7"}}"#,
        )
        .into();
        assert_eq!(format!("{err:#}"), "condition_failed: revision is 7");
    }

    #[test]
    fn display_value_forms() {
        assert_eq!(display_value(&json!(null)), "-");
        assert_eq!(display_value(&json!("a")), "a");
        assert_eq!(display_value(&json!(7)), "7");
    }
}
