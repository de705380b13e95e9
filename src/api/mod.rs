//! The agent's HTTP API (JSON over axum): members, self, health, join/leave/force-leave,
//! tags, and the membership event stream as server-sent events. The CLI is its main client.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot, watch};

pub mod json;

use crate::agent::handle::{AgentHandle, Command};
use crate::hooks::HookTestError;
use crate::model::{Event as MemberEvent, Fitness};
pub use crate::net::http::{Limits, ServeStats};
use json::{
    ErrorJson, EventJson, HealthJson, HookTestRequest, HooksJson, JoinJson, JoinRequest,
    MaintenanceRequest, MemberJson, MembersJson, ReplayJson, ReplayRequest, SelfJson, StatusJson,
    TagsRequest,
};

/// How long a request waits for the agent task before answering 503.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive comments on the event stream, so proxies and clients see a live connection.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Serves the full API on `listener` within `limits` until `shutdown` completes; `token`,
/// when set, is required as `Authorization: Bearer <token>` on every request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: AgentHandle,
    token: Option<String>,
    limits: Limits,
    stats: Arc<ServeStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_streams, streams_stopped) = watch::channel(false);
    let mut app = full_router(Api {
        handle,
        streams_stopped,
    });
    if let Some(token) = token {
        let check = BearerCheck::new(&token)?;
        app = app.layer(middleware::from_fn_with_state(
            Arc::new(check),
            require_token,
        ));
    }
    app = app.layer(middleware::from_fn(refuse_browsers));
    // Event streams never end on their own, and graceful shutdown waits for every open
    // response: end them when shutdown starts, or the server would never stop.
    let signal = async move {
        shutdown.await;
        let _ = stop_streams.send(true);
    };
    crate::net::http::serve(listener, app, limits, stats, signal, SHUTDOWN_DRAIN).await;
    Ok(())
}

/// How long open API requests may run on once the agent stops.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// Browsers send `Origin` (and `Sec-Fetch-Site`) with every cross-site request, including
/// the "simple" POSTs no CORS preflight guards; the CLI, curl and scripts send neither. So a
/// web page the operator visits cannot make the agent leave or change its tags.
async fn refuse_browsers(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let cross_site = headers.contains_key(header::ORIGIN)
        || headers
            .get("sec-fetch-site")
            .is_some_and(|site| site != "none" && site != "same-origin");
    if cross_site {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "requests from web pages are refused (Origin or Sec-Fetch-Site header present)",
        )
        .into_response();
    }
    next.run(request).await
}

/// The public, unauthenticated subset (`GET /v1/health` and `GET /metrics`) for load
/// balancers, probes and Prometheus.
pub fn read_only_router(handle: AgentHandle) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(handle)
}

/// What the full API's handlers share.
#[derive(Clone)]
struct Api {
    handle: AgentHandle,
    /// Turns true when the server shuts down; event streams end then.
    streams_stopped: watch::Receiver<bool>,
}

impl FromRef<Api> for AgentHandle {
    fn from_ref(api: &Api) -> Self {
        api.handle.clone()
    }
}

fn full_router(api: Api) -> Router {
    Router::new()
        .route("/v1/members", get(members))
        .route("/v1/members/{name}", get(member))
        .route("/v1/members/{name}/force-leave", post(force_leave))
        .route("/v1/self", get(self_info))
        .route("/v1/self/tags", put(set_tags))
        .route(
            "/v1/self/maintenance",
            put(maintenance_on).delete(maintenance_off),
        )
        .route("/v1/health", get(health))
        .route("/v1/events", get(events))
        .route("/v1/join", post(join))
        .route("/v1/leave", post(leave))
        .route("/v1/hooks", get(hooks_list))
        .route("/v1/hooks/replay", post(hooks_replay))
        .route("/v1/hooks/{name}/test", post(hook_test))
        .route("/metrics", get(metrics))
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorJson {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

/// Asks the agent task, turning a stopped or stuck agent into 503.
async fn ask<T>(
    handle: &AgentHandle,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ApiError> {
    match tokio::time::timeout(ASK_TIMEOUT, handle.ask(make)).await {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent is shutting down",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("agent did not answer within {}s", ASK_TIMEOUT.as_secs()),
        )),
    }
}

/// A `k=v` tag filter, as `?tag=` and `swimd members --tag` take it.
pub(crate) fn parse_tag_filter(filter: &str) -> Result<(String, String), String> {
    match filter.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("tag filter must be k=v, got '{filter}'")),
    }
}

/// True when the member carries every `(key, value)` tag.
pub(crate) fn has_tags(member: &MemberJson, tags: &[(String, String)]) -> bool {
    tags.iter()
        .all(|(key, value)| member.tags.get(key) == Some(value))
}

/// `GET /v1/members` filters.
#[derive(Debug, Default, PartialEq)]
struct MemberQuery {
    state: Option<crate::model::State>,
    tags: Vec<(String, String)>,
}

impl MemberQuery {
    fn parse(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut query = MemberQuery::default();
        for (key, value) in pairs {
            match key.as_str() {
                "state" if query.state.is_some() => {
                    return Err(ApiError::bad_request("state may be given only once"));
                }
                "state" => match value.parse() {
                    Ok(state) => query.state = Some(state),
                    Err(_) => {
                        return Err(ApiError::bad_request(format!(
                            "state must be one of {}, got '{value}'",
                            crate::model::State::ALL.map(|s| s.as_str()).join(", ")
                        )));
                    }
                },
                "tag" => query
                    .tags
                    .push(parse_tag_filter(&value).map_err(ApiError::bad_request)?),
                // Rejecting unknown parameters turns a typo (`?status=`) into an error
                // instead of a silently unfiltered list.
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter '{other}'"
                    )));
                }
            }
        }
        Ok(query)
    }

    fn matches(&self, member: &MemberJson) -> bool {
        self.state
            .as_ref()
            .is_none_or(|state| member.state == *state)
            && has_tags(member, &self.tags)
    }
}

async fn members(
    State(handle): State<AgentHandle>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<MembersJson>, ApiError> {
    let query = MemberQuery::parse(query?.0)?;
    let seen = ask(&handle, Command::Members).await?;
    let mut members: Vec<MemberJson> = seen
        .value
        .iter()
        .map(|m| MemberJson::new(m, seen.at))
        .filter(|m| query.matches(m))
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(MembersJson { members }))
}

async fn member(
    State(handle): State<AgentHandle>,
    Path(name): Path<String>,
) -> Result<Json<MemberJson>, ApiError> {
    let lookup = name.clone();
    let seen = ask(&handle, |reply| Command::Member(lookup, reply)).await?;
    match &seen.value {
        Some(member) => Ok(Json(MemberJson::new(member, seen.at))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no member named {name}"),
        )),
    }
}

async fn self_info(State(handle): State<AgentHandle>) -> Result<Json<SelfJson>, ApiError> {
    Ok(Json(SelfJson::from(
        &ask(&handle, Command::SelfInfo).await?,
    )))
}

async fn health(
    State(handle): State<AgentHandle>,
) -> Result<(StatusCode, Json<HealthJson>), ApiError> {
    let fitness = ask(&handle, Command::Health).await?;
    let status = match fitness {
        Fitness::Fit => StatusCode::OK,
        Fitness::Unfit(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    Ok((status, Json(HealthJson::from(&fitness))))
}

async fn join(
    State(handle): State<AgentHandle>,
    body: Result<Json<JoinRequest>, JsonRejection>,
) -> Result<Json<JoinJson>, ApiError> {
    let Json(JoinRequest { addrs }) = body?;
    if addrs.is_empty() {
        return Err(ApiError::bad_request(
            "addrs must list at least one host:port",
        ));
    }
    match ask(&handle, |reply| Command::Join(addrs, reply)).await? {
        Ok(contacted) => Ok(Json(JoinJson { contacted })),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

async fn leave(State(handle): State<AgentHandle>) -> Result<Json<StatusJson>, ApiError> {
    ask(&handle, Command::Leave).await?;
    Ok(Json(StatusJson {
        status: "leaving".to_string(),
    }))
}

async fn force_leave(
    State(handle): State<AgentHandle>,
    Path(name): Path<String>,
) -> Result<Json<StatusJson>, ApiError> {
    match ask(&handle, |reply| Command::ForceLeave(name, reply)).await? {
        Ok(()) => Ok(Json(StatusJson {
            status: "left".to_string(),
        })),
        Err(e) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
    }
}

async fn maintenance_on(
    State(handle): State<AgentHandle>,
    body: Result<Json<MaintenanceRequest>, JsonRejection>,
) -> Result<Json<StatusJson>, ApiError> {
    let Json(MaintenanceRequest { reason }) = body?;
    set_maintenance(&handle, Some(reason), "maintenance").await
}

async fn maintenance_off(State(handle): State<AgentHandle>) -> Result<Json<StatusJson>, ApiError> {
    set_maintenance(&handle, None, "ready").await
}

async fn set_maintenance(
    handle: &AgentHandle,
    maintenance: Option<String>,
    status: &str,
) -> Result<Json<StatusJson>, ApiError> {
    match ask(handle, |reply| Command::SetMaintenance(maintenance, reply)).await? {
        Ok(()) => Ok(Json(StatusJson {
            status: status.to_string(),
        })),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

async fn set_tags(
    State(handle): State<AgentHandle>,
    body: Result<Json<TagsRequest>, JsonRejection>,
) -> Result<Json<StatusJson>, ApiError> {
    let Json(TagsRequest { tags }) = body?;
    match ask(&handle, |reply| Command::SetTags(tags, reply)).await? {
        Ok(()) => Ok(Json(StatusJson {
            status: "updated".to_string(),
        })),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

async fn hooks_list(State(handle): State<AgentHandle>) -> Result<Json<HooksJson>, ApiError> {
    let mut hooks = ask(&handle, Command::Hooks).await?;
    hooks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(HooksJson { hooks }))
}

async fn hook_test(
    State(handle): State<AgentHandle>,
    Path(name): Path<String>,
    body: Option<Json<HookTestRequest>>,
) -> Result<Json<StatusJson>, ApiError> {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    if let Some(event) = &request.event
        && !crate::hooks::spec::EVENTS.contains(&event.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "unknown event {event:?} (expected one of: {})",
            crate::hooks::spec::EVENTS.join(", ")
        )));
    }
    let result = ask(&handle, |reply| Command::HookTest {
        name,
        event: request.event,
        member: request.member,
        reply,
    })
    .await?;
    match result {
        Ok(status) => Ok(Json(StatusJson { status })),
        Err(e @ (HookTestError::NoSuchHook(_) | HookTestError::NoSuchMember(_))) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ HookTestError::Failed { .. }) => {
            Err(ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))
        }
    }
}

async fn hooks_replay(
    State(handle): State<AgentHandle>,
    body: Option<Json<ReplayRequest>>,
) -> Result<Json<ReplayJson>, ApiError> {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    match ask(&handle, |reply| Command::HookReplay(request.hook, reply)).await? {
        Ok(replayed) => Ok(Json(ReplayJson { replayed })),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

/// `GET /metrics`: Prometheus text format 0.0.4.
async fn metrics(State(handle): State<AgentHandle>) -> Result<Response, ApiError> {
    let registry = ask(&handle, Command::Metrics).await?;
    let text = crate::metrics::render(&registry);
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

async fn no_such_endpoint(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// `GET /v1/events`: the event stream, resumed after `Last-Event-ID` when given.
async fn events(State(api): State<Api>, headers: HeaderMap) -> Result<Response, ApiError> {
    let last_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|id| id.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID must be an event id (a number)")
                })?,
        ),
    };
    let (replay, live) = api.handle.events.subscribe(last_id);
    let feed = EventFeed::new(replay, live, api.streams_stopped);
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        feed.next().await.map(|event| (event, feed))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
        .into_response())
}

/// One subscriber's events: the replayed ones first, then live ones.
struct EventFeed {
    replay: std::vec::IntoIter<Arc<MemberEvent>>,
    /// The last replayed id: a live event may also have made it into the replay (it is
    /// buffered before it is broadcast), and must not be sent twice.
    replayed_up_to: Option<u64>,
    live: broadcast::Receiver<Arc<MemberEvent>>,
    stopped: watch::Receiver<bool>,
}

impl EventFeed {
    fn new(
        replay: Vec<Arc<MemberEvent>>,
        live: broadcast::Receiver<Arc<MemberEvent>>,
        stopped: watch::Receiver<bool>,
    ) -> Self {
        let replayed_up_to = replay.last().map(|e| e.id);
        EventFeed {
            replay: replay.into_iter(),
            replayed_up_to,
            live,
            stopped,
        }
    }

    /// The next SSE event, or `None` when the stream should end.
    async fn next(&mut self) -> Option<Result<Event, Infallible>> {
        if let Some(event) = self.replay.next() {
            return Some(Ok(sse_event(&event)));
        }
        loop {
            let received = tokio::select! {
                received = self.live.recv() => received,
                // Ends on shutdown, and also if the sender is gone.
                _ = self.stopped.wait_for(|stopped| *stopped) => return None,
            };
            match received {
                Ok(event) if self.replayed_up_to.is_some_and(|id| event.id <= id) => continue,
                Ok(event) => return Some(Ok(sse_event(&event))),
                Err(RecvError::Lagged(missed)) => {
                    return Some(Ok(Event::default()
                        .event("lagged")
                        .data(missed.to_string())));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// `id: <id>`, `event: <type>`, `data: <EventJson>`.
fn sse_event(event: &MemberEvent) -> Event {
    let event = EventJson::from(event);
    // axum panics on a line break in a field; types are ours, but a panic must not be
    // one bad string away.
    let kind: String = event
        .kind
        .chars()
        .filter(|c| *c != '\n' && *c != '\r')
        .collect();
    let data = serde_json::to_string(&event)
        .unwrap_or_else(|e| format!("{{\"error\":\"unencodable event: {e}\"}}"));
    Event::default()
        .id(event.id.to_string())
        .event(kind)
        .data(data)
}

/// Checks bearer tokens without revealing, through timing, how much of a guess was right.
struct BearerCheck {
    key: ring::hmac::Key,
    expected: ring::hmac::Tag,
}

impl BearerCheck {
    fn new(token: &str) -> std::io::Result<Self> {
        if token.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the API token must not be empty",
            ));
        }
        // Comparing MACs under a random key hides both the content and the length of the
        // token, which a plain constant-time byte comparison would leak.
        let key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| std::io::Error::other("no randomness for the API token check"))?;
        let expected = ring::hmac::sign(&key, token.as_bytes());
        Ok(BearerCheck { key, expected })
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some((scheme, presented)) = value.as_bytes().split_at_checked(7) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer ")
            && ring::hmac::verify(&self.key, presented, self.expected.as_ref()).is_ok()
    }
}

async fn require_token(
    State(check): State<Arc<BearerCheck>>,
    request: Request,
    next: Next,
) -> Response {
    if check.accepts(request.headers()) {
        next.run(request).await
    } else {
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

/// Client side of the event stream: splits `text/event-stream` bytes into events.
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

/// One decoded server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `id:` field, if the event had one.
    pub id: Option<String>,
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// The longest line the decoder buffers: far above any event, low enough that a broken
/// server cannot make a client grow without bound.
const SSE_MAX_LINE: usize = 1 << 20;

impl SseDecoder {
    /// Feeds bytes as they arrive; returns the events they completed.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut events = Vec::new();
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end + 1..];
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() > SSE_MAX_LINE {
            return Err(format!(
                "event stream line longer than {SSE_MAX_LINE} bytes"
            ));
        }
        Ok(events)
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take().unwrap_or_else(|| "message".to_string());
            let id = self.id.take();
            return self.data.take().map(|data| SseEvent { id, event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

/// A fake agent behind a real API server, for the API's and the CLI's tests.
#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    use super::testing::{self, FakeApi, event};
    use super::*;

    /// Guards every wait on the network: a hung test fails instead of blocking CI.
    const GUARD: Duration = Duration::from_secs(10);

    async fn get(url: &str) -> (StatusCode, Value) {
        let response = reqwest::get(url).await.expect("request");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    fn names(body: &Value) -> Vec<&str> {
        body["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["name"].as_str().expect("name"))
            .collect()
    }

    #[tokio::test]
    async fn members_are_sorted_by_name() {
        let api = FakeApi::start(None).await;
        let (status, body) = get(&api.url("/v1/members")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(names(&body), ["alpha", "bravo", "charlie", "delta"]);
        let parsed: MembersJson = serde_json::from_value(body).expect("MembersJson");
        assert_eq!(
            parsed.members[0].tags.get("role").map(String::as_str),
            Some("web")
        );
        api.shutdown().await;
    }

    #[tokio::test]
    async fn members_filter_by_state_and_every_tag() {
        let api = FakeApi::start(None).await;
        let (_, body) = get(&api.url("/v1/members?state=failed")).await;
        assert_eq!(names(&body), ["charlie"]);
        let (_, body) = get(&api.url("/v1/members?tag=role=web")).await;
        assert_eq!(names(&body), ["alpha", "charlie"]);
        let (_, body) = get(&api.url("/v1/members?tag=role=web&tag=dc=a")).await;
        assert_eq!(names(&body), ["alpha"]);
        let (_, body) = get(&api.url("/v1/members?tag=role=web&state=suspect")).await;
        assert_eq!(names(&body), Vec::<&str>::new());
        api.shutdown().await;
    }

    #[tokio::test]
    async fn members_reject_bad_filters() {
        let api = FakeApi::start(None).await;
        for query in [
            "state=dead",
            "state=Alive",
            "state=alive&state=left",
            "tag=role",
            "tag==x",
            "status=alive",
        ] {
            let (status, body) = get(&api.url(&format!("/v1/members?{query}"))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert!(body["error"].is_string(), "{query}: {body}");
        }
        api.shutdown().await;
    }

    #[tokio::test]
    async fn one_member_by_name_or_404() {
        let api = FakeApi::start(None).await;
        let (status, body) = get(&api.url("/v1/members/bravo")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["state"], "suspect");
        assert_eq!(body["incarnation"], 3);
        let (status, body) = get(&api.url("/v1/members/zulu")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({"error": "no member named zulu"}));
        api.shutdown().await;
    }

    #[tokio::test]
    async fn self_info_is_the_agents_view() {
        let api = FakeApi::start(None).await;
        let (status, body) = get(&api.url("/v1/self")).await;
        assert_eq!(status, StatusCode::OK);
        let parsed: SelfJson = serde_json::from_value(body).expect("SelfJson");
        assert_eq!(parsed.member.name, "alpha");
        assert_eq!(parsed.counts.failed, 1);
        api.shutdown().await;
    }

    #[tokio::test]
    async fn health_is_200_when_ok_and_503_otherwise() {
        let api = FakeApi::start(None).await;
        let (status, body) = get(&api.url("/v1/health")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "ok", "reason": ""}));
        api.state.lock().expect("state").health = Fitness::Unfit("not joined".to_string());
        let (status, body) = get(&api.url("/v1/health")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"status": "unhealthy", "reason": "not joined"}));
        api.shutdown().await;
    }

    #[tokio::test]
    async fn join_reports_contacted_and_rejects_empty_or_refused() {
        let api = FakeApi::start(None).await;
        let client = reqwest::Client::new();
        let post = |body: Value| client.post(api.url("/v1/join")).json(&body).send();
        let response = post(json!({"addrs": ["10.0.0.2:7946", "10.0.0.3:7946"]}))
            .await
            .expect("join");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.json::<Value>().await.expect("body"),
            json!({"contacted": 2})
        );
        let response = post(json!({"addrs": []})).await.expect("join");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = post(json!({"addrs": ["nohost"]})).await.expect("join");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.json::<Value>().await.expect("body"),
            json!({"error": "none of [\"nohost\"] could be resolved"})
        );
        let response = post(json!({"adrs": ["10.0.0.2:7946"]}))
            .await
            .expect("join");
        assert!(response.status().is_client_error());
        assert!(response.json::<Value>().await.expect("JSON error")["error"].is_string());
        assert_eq!(
            api.state.lock().expect("state").actions,
            ["join 10.0.0.2:7946,10.0.0.3:7946", "join nohost"]
        );
        api.shutdown().await;
    }

    #[tokio::test]
    async fn maintenance_turns_on_with_a_reason_and_off_and_refuses_a_bad_reason() {
        let api = FakeApi::start(None).await;
        let client = reqwest::Client::new();
        let url = api.url("/v1/self/maintenance");
        let on = client
            .put(&url)
            .json(&json!({"reason": "kernel upgrade"}))
            .send()
            .await
            .expect("on");
        assert_eq!(on.status(), StatusCode::OK);
        assert_eq!(
            on.json::<Value>().await.expect("body"),
            json!({"status": "maintenance"})
        );
        let off = client.delete(&url).send().await.expect("off");
        assert_eq!(off.status(), StatusCode::OK);
        assert_eq!(
            off.json::<Value>().await.expect("body"),
            json!({"status": "ready"})
        );
        for bad in [
            json!({"reason": "x".repeat(257)}),
            json!({"reason": "two\nlines"}),
            json!({"why": "typo"}),
        ] {
            let response = client.put(&url).json(&bad).send().await.expect("bad");
            assert!(response.status().is_client_error(), "{bad}");
        }
        assert_eq!(
            api.state.lock().expect("state").actions,
            ["maint on kernel upgrade", "maint off"]
        );
        api.shutdown().await;
    }

    #[tokio::test]
    async fn leave_answers_after_the_agent_confirms() {
        let api = FakeApi::start(None).await;
        let response = reqwest::Client::new()
            .post(api.url("/v1/leave"))
            .send()
            .await
            .expect("leave");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.json::<Value>().await.expect("body"),
            json!({"status": "leaving"})
        );
        assert_eq!(api.state.lock().expect("state").actions, ["leave"]);
        api.shutdown().await;
    }

    #[tokio::test]
    async fn force_leave_of_a_failed_member_or_409() {
        let api = FakeApi::start(None).await;
        let client = reqwest::Client::new();
        let response = client
            .post(api.url("/v1/members/charlie/force-leave"))
            .send()
            .await
            .expect("force-leave");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.json::<Value>().await.expect("body"),
            json!({"status": "left"})
        );
        let response = client
            .post(api.url("/v1/members/alpha/force-leave"))
            .send()
            .await
            .expect("force-leave");
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            response.json::<Value>().await.expect("body"),
            json!({"error": "alpha is alive, not failed: only failed members can be forced out"})
        );
        api.shutdown().await;
    }

    #[tokio::test]
    async fn set_tags_or_400() {
        let api = FakeApi::start(None).await;
        let client = reqwest::Client::new();
        let put = |body: Value| client.put(api.url("/v1/self/tags")).json(&body).send();
        let response = put(json!({"tags": {"role": "web", "dc": "b"}}))
            .await
            .expect("tags");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.json::<Value>().await.expect("body"),
            json!({"status": "updated"})
        );
        let response = put(json!({"tags": {"note": "x".repeat(40)}}))
            .await
            .expect("tags");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.json::<Value>().await.expect("body"),
            json!({"error": "tags take 47 bytes encoded, more than gossip.max_tags_bytes (32)"})
        );
        assert_eq!(
            api.state.lock().expect("state").actions,
            ["tags dc=b,role=web"]
        );
        api.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_answer_json() {
        let api = FakeApi::start(None).await;
        let (status, body) = get(&api.url("/v1/nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({"error": "no such endpoint: GET /v1/nope"}));
        let (status, body) = get(&api.url("/v1/join")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body["error"].is_string());
        api.shutdown().await;
    }

    #[tokio::test]
    async fn a_stopped_agent_is_503() {
        let api = FakeApi::start_without_agent().await;
        for path in ["/v1/members", "/v1/members/alpha", "/v1/self", "/v1/health"] {
            let (status, body) = get(&api.url(path)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(body, json!({"error": "agent is shutting down"}), "{path}");
        }
        let response = reqwest::Client::new()
            .post(api.url("/v1/leave"))
            .send()
            .await
            .expect("leave");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        api.shutdown().await;
    }

    #[tokio::test]
    async fn token_is_required_when_configured() {
        let api = FakeApi::start(Some("s3cret")).await;
        let client = reqwest::Client::new();
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
        ] {
            let mut request = client.get(api.url("/v1/members"));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.expect("request");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(
                response.json::<Value>().await.expect("body"),
                json!({"error": "missing or wrong bearer token"})
            );
        }
        let response = client
            .get(api.url("/v1/members"))
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        let response = client
            .get(api.url("/v1/health"))
            .header("authorization", "bearer s3cret")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        let response = client
            .get(api.url("/metrics"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = client
            .get(api.url("/metrics"))
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        api.shutdown().await;
    }

    #[tokio::test]
    async fn requests_from_web_pages_are_refused() {
        let api = FakeApi::start_on(
            "127.0.0.1:0".parse().unwrap(),
            None,
            crate::agent::handle::EventBus::default(),
            true,
        )
        .await;
        let client = reqwest::Client::new();
        for (name, value) in [
            ("origin", "https://evil.example"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            let response = client
                .post(api.url("/v1/leave"))
                .header(name, value)
                .header("content-type", "text/plain")
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}: {value}");
            let body = response.json::<Value>().await.expect("body");
            assert!(
                body["error"].as_str().unwrap().contains("web pages"),
                "{body}"
            );
        }
        assert!(
            api.state.lock().unwrap().actions.is_empty(),
            "a web page acted on the agent"
        );
        let response = client
            .get(api.url("/v1/members"))
            .header("sec-fetch-site", "none")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        api.shutdown().await;
    }

    #[tokio::test]
    async fn an_empty_token_is_refused_at_start() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (commands, _inbox) = tokio::sync::mpsc::channel(1);
        let handle = AgentHandle {
            commands,
            events: Default::default(),
        };
        let result = serve(
            listener,
            handle,
            Some(String::new()),
            testing::TEST_LIMITS,
            Arc::default(),
            std::future::pending(),
        )
        .await;
        assert_eq!(
            result.expect_err("empty token").kind(),
            std::io::ErrorKind::InvalidInput
        );
    }

    #[tokio::test]
    async fn read_only_router_serves_health_and_metrics_only_without_token() {
        let (commands, _state) = testing::fake_agent();
        let handle = AgentHandle {
            commands,
            events: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server =
            tokio::spawn(async move { axum::serve(listener, read_only_router(handle)).await });
        let (status, body) = get(&format!("http://{addr}/v1/health")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ok");
        let (status, _) = get(&format!("http://{addr}/v1/members")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let response = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("metrics");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4"
        );
        assert!(
            response
                .text()
                .await
                .expect("body")
                .contains("swimd_health_score 0")
        );
        server.abort();
    }

    /// Reads server-sent events from a response, one at a time.
    struct EventReader {
        body: std::pin::Pin<
            Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>,
        >,
        decoder: SseDecoder,
        ready: std::collections::VecDeque<SseEvent>,
    }

    impl EventReader {
        async fn open(url: &str, last_event_id: Option<u64>) -> EventReader {
            let mut request = reqwest::Client::new().get(url);
            if let Some(id) = last_event_id {
                request = request.header("last-event-id", id.to_string());
            }
            let response = request.send().await.expect("subscribe");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            EventReader {
                body: Box::pin(response.bytes_stream()),
                decoder: SseDecoder::default(),
                ready: Default::default(),
            }
        }

        /// The next event, or `None` once the stream has ended.
        async fn next(&mut self) -> Option<SseEvent> {
            loop {
                if let Some(event) = self.ready.pop_front() {
                    return Some(event);
                }
                let chunk = tokio::time::timeout(GUARD, self.body.next())
                    .await
                    .expect("an event in time")?;
                self.ready.extend(
                    self.decoder
                        .feed(&chunk.expect("stream chunk"))
                        .expect("valid SSE"),
                );
            }
        }
    }

    fn assert_event(received: Option<SseEvent>, expected: &MemberEvent) {
        let expected = &EventJson::from(expected);
        let received = received.expect("an event");
        assert_eq!(received.id, Some(expected.id.to_string()));
        assert_eq!(received.event, expected.kind);
        let data: EventJson = serde_json::from_str(&received.data).expect("EventJson data");
        assert_eq!(&data, expected);
    }

    #[tokio::test]
    async fn events_stream_what_is_published_after_connecting() {
        let api = FakeApi::start(None).await;
        let mut reader = EventReader::open(&api.url("/v1/events"), None).await;
        // Published before anyone asked to resume: a fresh subscriber does not replay it.
        let joined = event(1, "member.joined", "bravo", None, "alive");
        let failed = event(2, "member.failed", "bravo", Some("suspect"), "failed");
        api.events.publish(joined.clone());
        api.events.publish(failed.clone());
        assert_event(reader.next().await, &joined);
        assert_event(reader.next().await, &failed);
        api.shutdown().await;
        assert_eq!(
            reader.next().await,
            None,
            "the stream ends when the server shuts down"
        );
    }

    #[tokio::test]
    async fn events_resume_after_last_event_id() {
        let api = FakeApi::start(None).await;
        let events: Vec<MemberEvent> = (1..=3)
            .map(|id| event(id, "member.updated", "alpha", Some("alive"), "alive"))
            .collect();
        for e in &events {
            api.events.publish(e.clone());
        }
        let mut reader = EventReader::open(&api.url("/v1/events"), Some(1)).await;
        assert_event(reader.next().await, &events[1]);
        assert_event(reader.next().await, &events[2]);
        let later = event(4, "member.left", "alpha", Some("alive"), "left");
        api.events.publish(later.clone());
        assert_event(reader.next().await, &later);
        api.shutdown().await;
    }

    #[tokio::test]
    async fn events_reject_a_malformed_last_event_id() {
        let api = FakeApi::start(None).await;
        let response = reqwest::Client::new()
            .get(api.url("/v1/events"))
            .header("last-event-id", "abc")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        api.shutdown().await;
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_how_many_it_missed() {
        // Drive the feed directly: filling a 1024-event channel over HTTP would only test
        // socket buffers.
        let (sender, live) = broadcast::channel(2);
        let (_stop, stopped) = watch::channel(false);
        let mut feed = EventFeed::new(Vec::new(), live, stopped);
        for id in 1..=5 {
            sender
                .send(Arc::new(event(
                    id,
                    "member.updated",
                    "alpha",
                    None,
                    "alive",
                )))
                .expect("send");
        }
        let lagged = format!(
            "{:?}",
            feed.next().await.expect("lagged").expect("infallible")
        );
        assert!(
            lagged.contains("lagged") && lagged.contains('3'),
            "{lagged}"
        );
        let next = format!(
            "{:?}",
            feed.next().await.expect("event").expect("infallible")
        );
        assert!(next.contains("id: 4"), "{next}");
    }

    #[tokio::test]
    async fn replayed_events_are_not_sent_twice() {
        let (sender, live) = broadcast::channel(8);
        let (_stop, stopped) = watch::channel(false);
        let replay = vec![Arc::new(event(5, "member.updated", "alpha", None, "alive"))];
        let mut feed = EventFeed::new(replay, live, stopped);
        // The race the feed guards against: event 5 was buffered for replay and then also
        // arrived live.
        sender
            .send(Arc::new(event(5, "member.updated", "alpha", None, "alive")))
            .expect("send");
        sender
            .send(Arc::new(event(6, "member.updated", "alpha", None, "alive")))
            .expect("send");
        let first = format!(
            "{:?}",
            feed.next().await.expect("event").expect("infallible")
        );
        let second = format!(
            "{:?}",
            feed.next().await.expect("event").expect("infallible")
        );
        assert!(first.contains("id: 5"), "{first}");
        assert!(second.contains("id: 6"), "{second}");
    }

    #[test]
    fn sse_decoder_handles_split_chunks_comments_and_multiline_data() {
        let mut decoder = SseDecoder::default();
        let mut events = decoder
            .feed(b": keep-alive\n\nid: 7\nevent: member.fa")
            .expect("feed");
        assert!(events.is_empty());
        events.extend(
            decoder
                .feed(b"iled\r\ndata: {\"a\":\ndata:1}\n\nevent: lagged\ndata: 3\n\n")
                .expect("feed"),
        );
        assert_eq!(
            events,
            [
                SseEvent {
                    id: Some("7".into()),
                    event: "member.failed".into(),
                    data: "{\"a\":\n1}".into()
                },
                SseEvent {
                    id: None,
                    event: "lagged".into(),
                    data: "3".into()
                },
            ]
        );
    }

    #[test]
    fn sse_decoder_refuses_an_endless_line() {
        let mut decoder = SseDecoder::default();
        assert!(decoder.feed(&vec![b'x'; SSE_MAX_LINE + 1]).is_err());
    }

    #[test]
    fn tag_filters_are_key_equals_value() {
        assert_eq!(
            parse_tag_filter("role=web"),
            Ok(("role".into(), "web".into()))
        );
        assert_eq!(
            parse_tag_filter("url=a=b"),
            Ok(("url".into(), "a=b".into()))
        );
        assert_eq!(
            parse_tag_filter("empty="),
            Ok(("empty".into(), String::new()))
        );
        assert!(parse_tag_filter("role").is_err());
        assert!(parse_tag_filter("=web").is_err());
    }
}
