//! The decoder of stored events: what an outbox row, a Redis stream entry
//! and a dead letter hold is an [`Event`] as JSON, read back after a crash,
//! an upgrade or by another replica. It may be refused, never panic, and
//! whatever it accepts writes back to the same event.

#![no_main]

use actors::events::{Event, Topic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Topic::parse(text);
    if let Ok(event) = Event::from_json(text) {
        let json = event.to_json().expect("an accepted event serializes");
        let again = Event::from_json(&json).expect("what it wrote reads back");
        assert_eq!(again, event);
    }
});
