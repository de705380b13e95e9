//! The agent's HTTP API (JSON over axum): members, self, health, join/leave/force-leave,
//! tags, and the membership event stream as server-sent events. The CLI is its main client.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tokio::sync::{oneshot, watch};

mod auth;
pub mod json;
mod sse;

use crate::agent::handle::{AgentHandle, Command};
use crate::hooks::HookTestError;
use crate::model::Fitness;
pub use crate::net::http::{Limits, ServeStats};
use auth::{BearerToken, refuse_browsers, require_token};
use json::{
    ErrorJson, HealthJson, HookTestRequest, HooksJson, JoinJson, JoinRequest, MaintenanceRequest,
    MemberJson, MembersJson, ReplayJson, ReplayRequest, SelfJson, StatusJson, TagsRequest,
};
use sse::events;

/// How long a request waits for the agent task before answering 503.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
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
        let check = BearerToken::new(&token)?;
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

/// A fake agent behind a real API server, for the API's and the CLI's tests.
#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    use super::json::EventJson;
    use super::testing::{self, FakeApi, event};
    use super::*;
    use crate::cli::sse::{SseDecoder, SseEvent};
    use crate::model::Event as MemberEvent;

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
