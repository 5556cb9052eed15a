//! Reading a `text/event-stream` answer event by event (the event stream of
//! a result lookup). reqwest gives the body's chunks; the framing (events
//! end with a blank line, `event:` and `data:` fields, `:` comments) is
//! parsed here, since no crate we use reads it.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::app::TestApp;

/// Longest wait for one event (or the end of the stream).
const EVENT_WITHIN: Duration = Duration::from_secs(60);

/// One event: its name and its JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
}

/// An open event stream.
pub struct EventStream {
    res: reqwest::Response,
    buf: String,
}

impl EventStream {
    /// The next event, or `None` once the server ended the stream. Fails
    /// the test if neither comes within a minute.
    pub async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(EVENT_WITHIN, self.read())
            .await
            .expect("an event or the end of the stream within a minute")
    }

    /// Every event until the end of the stream.
    pub async fn rest(&mut self) -> Vec<SseEvent> {
        let mut all = Vec::new();
        while let Some(e) = self.next().await {
            all.push(e);
        }
        all
    }

    async fn read(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
            }
            let chunk = self.res.chunk().await.expect("the stream reads")?;
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }
}

/// One event block; `None` for a block without data (a keep-alive comment).
fn parse(block: &str) -> Option<SseEvent> {
    let mut name = "message".to_string();
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    if data.is_empty() {
        return None;
    }
    let data = data.join("\n");
    let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
    Some(SseEvent { name, data })
}

impl TestApp {
    /// Opens the event stream of a result lookup (`Accept:
    /// text/event-stream`); it must answer `200` with that content type.
    pub async fn event_stream(&self, request: Uuid) -> EventStream {
        // Its own client: the app's client times a whole answer out.
        let res = reqwest::Client::new()
            .get(format!(
                "{}/api/coupons/issue-requests/{request}",
                self.address
            ))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("api answers");
        assert_eq!(res.status(), 200);
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct:?}");
        EventStream {
            res,
            buf: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_give_their_name_and_data_and_comments_are_skipped() {
        assert_eq!(parse(":\n\n"), None);
        assert_eq!(
            parse("event: pending\ndata: {\"ahead\":3}\n\n"),
            Some(SseEvent {
                name: "pending".into(),
                data: serde_json::json!({"ahead": 3})
            })
        );
        assert_eq!(
            parse("data:[1,\ndata:2]\n\n").unwrap().data,
            serde_json::json!([1, 2])
        );
    }
}
