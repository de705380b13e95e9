//! The client side of the API's event stream (`swimd watch`): splits `text/event-stream`
//! bytes into events.

/// Splits `text/event-stream` bytes into events.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

/// One decoded server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
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
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
