//! The CLI's client of the agent's HTTP API: base URL, bearer token, timeouts, and errors
//! that say in a few words why the agent could not be reached.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::client::ApiArgs;
use super::render::printable;
use crate::api::json::ErrorJson;

/// How long to wait for the agent to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole request/answer; above the API's own 10 s wait for the agent task.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence on the event stream after which it is considered dead; the API sends a
/// keep-alive every 15 s.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// The agent's API, as the CLI reaches it.
pub(super) struct ApiClient {
    /// The address as the user gave it, for messages.
    pub(super) api: String,
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `args`; `timeout` bounds each whole request (None for streams).
    pub(super) fn new(args: &ApiArgs, timeout: Option<Duration>) -> anyhow::Result<Self> {
        let base = api_base_url(&args.api)?;
        // The API is local (or on a trusted network): a proxy from the environment would
        // only get in the way.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT);
        builder = match timeout {
            Some(timeout) => builder.timeout(timeout),
            None => builder.read_timeout(STREAM_IDLE_TIMEOUT),
        };
        let http = builder.build().context("cannot set up an HTTP client")?;
        Ok(ApiClient {
            api: args.api.clone(),
            base,
            token: args.token.clone(),
            http,
        })
    }

    /// A request to the API path made of `segments` (each one percent-encoded).
    pub(super) fn request(
        &self,
        method: Method,
        segments: &[&str],
    ) -> anyhow::Result<RequestBuilder> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow!("--api {} cannot take a path", self.api))?
            .pop_if_empty()
            .extend(segments);
        let request = self.http.request(method, url);
        Ok(match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        })
    }

    /// Sends a request; a transport failure becomes the "cannot reach" error.
    pub(super) async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        request.send().await.map_err(|e| self.unreachable(&e))
    }

    /// One JSON request and its JSON answer; HTTP errors become their `error` message.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&impl serde::Serialize>,
    ) -> anyhow::Result<T> {
        let mut request = self.request(method, segments)?;
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        let body = response.bytes().await.map_err(|e| self.broken_answer(&e))?;
        serde_json::from_slice(&body).map_err(|e| {
            anyhow!(
                "the agent API at {} sent an answer this swimd cannot read: {e}",
                self.api
            )
        })
    }

    /// The error an HTTP error answer stands for.
    pub(super) async fn error_from(&self, response: Response) -> anyhow::Error {
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<ErrorJson>(&body) {
            Ok(ErrorJson { error }) if status == StatusCode::UNAUTHORIZED => {
                anyhow!("{} (set --token or SWIMD_TOKEN)", printable(&error))
            }
            Ok(ErrorJson { error }) => anyhow!("{}", printable(&error)),
            Err(_) => {
                let text = String::from_utf8_lossy(&body);
                let excerpt: String = text.trim().chars().take(200).collect();
                anyhow!(
                    "the agent API at {} answered {status}: {}",
                    self.api,
                    printable(&excerpt)
                )
            }
        }
    }

    pub(super) fn unreachable(&self, error: &reqwest::Error) -> anyhow::Error {
        if error.is_connect() || error.is_timeout() {
            anyhow!(
                "cannot reach the agent API at {}: {} (is the agent running? set --api or SWIMD_API)",
                self.api,
                describe(error)
            )
        } else {
            anyhow!(
                "request to the agent API at {} failed: {}",
                self.api,
                describe(error)
            )
        }
    }

    pub(super) fn broken_answer(&self, error: &reqwest::Error) -> anyhow::Error {
        anyhow!(
            "the agent API at {} broke off its answer: {}",
            self.api,
            describe(error)
        )
    }
}

/// `host:port` (or an `http://` URL) as the API's base URL.
pub(super) fn api_base_url(api: &str) -> anyhow::Result<Url> {
    let with_scheme = if api.contains("://") {
        api.to_string()
    } else {
        format!("http://{api}")
    };
    let url = Url::parse(&with_scheme)
        .ok()
        .filter(|url| url.has_host())
        .ok_or_else(|| anyhow!("--api '{api}' is not host:port or an http:// URL"))?;
    if url.scheme() != "http" {
        bail!(
            "--api '{api}': the agent API speaks plain http (keep it on 127.0.0.1 or a trusted network)"
        );
    }
    Ok(url)
}

/// The root cause of a request failure, in a few words (`connection refused`).
pub(super) fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        if let Some(io) = source.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            let words = match io.kind() {
                ErrorKind::ConnectionRefused => "connection refused",
                ErrorKind::ConnectionReset => "connection reset",
                ErrorKind::ConnectionAborted => "connection aborted",
                ErrorKind::TimedOut => "timed out",
                ErrorKind::HostUnreachable => "host unreachable",
                ErrorKind::NetworkUnreachable => "network unreachable",
                _ => return io.to_string(),
            };
            return words.to_string();
        }
        innermost = source;
    }
    innermost.to_string()
}
