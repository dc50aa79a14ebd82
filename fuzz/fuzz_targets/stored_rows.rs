//! The decoders of rows read back from SQLite: every service's row (orders,
//! users, sessions, invoices, audit entries, notifications, templates) and
//! the event bus's dead letters. What a file holds after a crash, a hand
//! edit or a downgrade may be refused as a corrupt row, never panic and
//! never fail any other way; and the stored forms of ids and times read
//! back to exactly what was written (six fraction digits).
//!
//! Each text column is either a well-formed id or time (so the fuzzer gets
//! past the first column) or any text.

#![no_main]

use actors::events::dead_letters::letter_from_row;
use actors::storage::sql::Dialect;
use actors::storage::StoreError;
use actors::{audit, auth, billing, notifications, orders};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sqlx::Sqlite;
use time::OffsetDateTime;
use uuid::Uuid;

/// A text column as the fuzzer fills it.
#[derive(Arbitrary, Debug)]
enum Text {
    Id(u128),
    Time(i64, u32),
    Raw(String),
}

impl Text {
    fn sql(&self) -> String {
        match self {
            Text::Id(n) => Uuid::from_u128(*n).to_string(),
            Text::Time(secs, nanos) => match moment(*secs, *nanos) {
                Some(t) => Sqlite::time(t).unwrap_or_else(|_| secs.to_string()),
                None => secs.to_string(),
            },
            Text::Raw(text) => text.clone(),
        }
    }
}

fn opt(text: &Option<Text>) -> Option<String> {
    text.as_ref().map(Text::sql)
}

fn moment(secs: i64, nanos: u32) -> Option<OffsetDateTime> {
    let t = OffsetDateTime::from_unix_timestamp(secs).ok()?;
    Some(t + time::Duration::nanoseconds(i64::from(nanos % 1_000_000_000)))
}

#[derive(Arbitrary, Debug)]
enum Row {
    Order(Text, Text, i64, Text, Option<Text>, Text, Text, Text),
    User(Text, Text, Text, Text, Text),
    Session(
        Text,
        Text,
        Text,
        Text,
        Text,
        Option<Text>,
        Option<Text>,
        Option<Text>,
    ),
    Invoice(
        Text,
        Text,
        Text,
        Text,
        i64,
        Text,
        Text,
        Text,
        Option<Text>,
        Option<Text>,
        Option<Text>,
    ),
    AuditEntry(
        i64,
        Text,
        Text,
        Text,
        Text,
        Option<Text>,
        Text,
        Option<Text>,
        Option<Text>,
        Text,
        Text,
    ),
    Notification(
        Text,
        Text,
        Option<Text>,
        Option<Text>,
        Option<Text>,
        Option<Text>,
        Text,
        i64,
        Option<Text>,
        Option<Text>,
        Text,
        Option<Text>,
    ),
    Template(Text, Text, Option<Text>, Text, Option<Text>, Text, Text),
    DeadLetter(Text, Text, Text, i64, Text, i64, Option<i64>),
    /// A time as SQLite stores it, read back.
    StoredTime(i64, u32),
}

/// Refused rows are corrupt rows: nothing else can go wrong without a database.
fn decoded<T>(result: Result<T, StoreError>) {
    if let Err(err) = result {
        assert!(
            matches!(err, StoreError::Corrupt(_)),
            "not a corrupt-row error: {err}"
        );
    }
}

fuzz_target!(|row: Row| {
    match row {
        Row::Order(a, b, c, d, e, f, g, h) => decoded(orders::store::fuzzing::order_from_row((
            a.sql(),
            b.sql(),
            c,
            d.sql(),
            opt(&e),
            f.sql(),
            g.sql(),
            h.sql(),
        ))),
        Row::User(a, b, c, d, e) => decoded(auth::store::fuzzing::user_from_row((
            a.sql(),
            b.sql(),
            c.sql(),
            d.sql(),
            e.sql(),
        ))),
        Row::Session(a, b, c, d, e, f, g, h) => decoded(auth::store::fuzzing::session_from_row((
            a.sql(),
            b.sql(),
            c.sql(),
            d.sql(),
            e.sql(),
            opt(&f),
            opt(&g),
            opt(&h),
        ))),
        Row::Invoice(a, b, c, d, e, f, g, h, i, j, k) => {
            decoded(billing::store::fuzzing::invoice_from_row((
                a.sql(),
                b.sql(),
                c.sql(),
                d.sql(),
                e,
                f.sql(),
                g.sql(),
                h.sql(),
                opt(&i),
                opt(&j),
                opt(&k),
            )))
        }
        Row::AuditEntry(a, b, c, d, e, f, g, h, i, j, k) => {
            decoded(audit::store::fuzzing::stored_from_row((
                a,
                b.sql(),
                c.sql(),
                d.sql(),
                e.sql(),
                opt(&f),
                g.sql(),
                opt(&h),
                opt(&i),
                j.sql(),
                k.sql(),
            )))
        }
        Row::Notification(a, b, c, d, e, f, g, h, i, j, k, l) => {
            decoded(notifications::store::fuzzing::notification_from_row((
                a.sql(),
                b.sql(),
                opt(&c),
                opt(&d),
                opt(&e),
                opt(&f),
                g.sql(),
                h,
                opt(&i),
                opt(&j),
                k.sql(),
                opt(&l),
            )))
        }
        Row::Template(a, b, c, d, e, f, g) => {
            decoded(notifications::store::fuzzing::template_from_row((
                a.sql(),
                b.sql(),
                opt(&c),
                d.sql(),
                opt(&e),
                f.sql(),
                g.sql(),
            )))
        }
        Row::DeadLetter(a, b, c, d, e, f, g) => decoded(letter_from_row((
            a.sql(),
            b.sql(),
            c.sql(),
            d,
            e.sql(),
            f,
            g,
        ))),
        Row::StoredTime(secs, nanos) => {
            let Some(t) = moment(secs, nanos) else { return };
            let stored = match Sqlite::time(t) {
                Ok(stored) => stored,
                // Refused only outside the years RFC 3339 can write.
                Err(StoreError::TimeOutOfRange(_)) => {
                    let year = t
                        .checked_to_offset(time::UtcOffset::UTC)
                        .map(|utc| utc.year());
                    assert!(
                        !year.is_some_and(|year| (0..=9999).contains(&year)),
                        "{t} refused, though in the stored years"
                    );
                    return;
                }
                Err(err) => panic!("{t} refused with {err}"),
            };
            let read = Sqlite::read_time(stored.clone(), "time").expect("a stored time reads back");
            let micros = t
                .replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
                .expect("in range");
            assert_eq!(read, micros, "{stored} read back as another time");
        }
    }
});
