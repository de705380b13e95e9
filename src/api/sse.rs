//! The event stream (`GET /v1/events`): server-sent events from the agent's event bus,
//! resumable with `Last-Event-ID`, ended when the server shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use super::json::EventJson;
use super::{Api, ApiError};
use crate::model::Event as MemberEvent;

/// Keep-alive comments on the event stream, so proxies and clients see a live connection.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /v1/events`: the event stream, resumed after `Last-Event-ID` when given.
pub(super) async fn events(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testing::event;

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
}
