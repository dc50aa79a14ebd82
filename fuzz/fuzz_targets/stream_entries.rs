//! The decoder of Redis stream entries (`XREADGROUP`/`XAUTOCLAIM` replies,
//! RESP2 or RESP3): whatever the server, another replica or an operator's
//! `XADD` put there, an entry is read as its id and its event, or its id
//! and "unreadable" (dead-lettered by the caller), or skipped; it never
//! panics. And an entry written the way the relay writes it reads back to
//! the very event, in either protocol.

#![no_main]

use std::collections::HashMap;

use actors::events::stream::entry;
use actors::events::{Event, Topic};
use fred::types::{Key, Map, Value};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;
use uuid::Uuid;

/// A reply value as the fuzzer shapes it.
#[derive(Arbitrary, Debug)]
enum Shape {
    Null,
    Integer(i64),
    Double(f64),
    Boolean(bool),
    Text(String),
    Bytes(Vec<u8>),
    Array(Vec<Shape>),
    Map(Vec<(String, Shape)>),
}

impl Shape {
    fn value(self) -> Value {
        match self {
            Shape::Null => Value::Null,
            Shape::Integer(n) => Value::Integer(n),
            Shape::Double(d) => Value::Double(d),
            Shape::Boolean(b) => Value::Boolean(b),
            Shape::Text(text) => Value::from(text),
            Shape::Bytes(bytes) => Value::Bytes(bytes.into()),
            Shape::Array(items) => Value::Array(items.into_iter().map(Shape::value).collect()),
            Shape::Map(pairs) => map(pairs.into_iter().map(|(k, v)| (k, v.value()))),
        }
    }
}

fn map(pairs: impl Iterator<Item = (String, Value)>) -> Value {
    let inner: HashMap<Key, Value> = pairs.map(|(k, v)| (Key::from(k), v)).collect();
    Value::Map(Map::try_from(inner).expect("string keys make a map"))
}

/// An event the relay could have written.
#[derive(Arbitrary, Debug)]
struct Written {
    stream_id: (u64, u64),
    id: u128,
    topic: String,
    micros: i64,
    request_id: Option<String>,
    actor_id: Option<u128>,
    data: String,
    resp3: bool,
}

impl Written {
    fn event(&self) -> Option<Event> {
        let occurred_at =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.micros) * 1_000).ok()?;
        Some(Event {
            id: Uuid::from_u128(self.id),
            topic: Topic::parse(&self.topic).ok()?,
            occurred_at,
            request_id: self.request_id.clone(),
            actor_id: self.actor_id.map(Uuid::from_u128),
            data: serde_json::Value::String(self.data.clone()),
            traceparent: None,
        })
    }
}

#[derive(Arbitrary, Debug)]
enum Input {
    Any(Shape),
    Written(Written),
}

fuzz_target!(|input: Input| {
    match input {
        Input::Any(shape) => {
            let _ = entry(shape.value());
        }
        Input::Written(written) => {
            let Some(event) = written.event() else { return };
            let Ok(json) = event.to_json() else { return };
            let id = format!("{}-{}", written.stream_id.0, written.stream_id.1);
            let fields = if written.resp3 {
                map([("event".to_owned(), Value::from(json))].into_iter())
            } else {
                Value::Array(vec![Value::from("event"), Value::from(json)])
            };
            let read = entry(Value::Array(vec![Value::from(id.clone()), fields]));
            assert_eq!(read, Some((id, Some(event))), "a written entry reads back");
        }
    }
});
