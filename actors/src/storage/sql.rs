//! SQL written once for both backends.
//!
//! Most statements read the same on SQLite and PostgreSQL (`$n` placeholders
//! work on both, and so do `ON CONFLICT`, `RETURNING` and partial indexes).
//! What differs is small and named here, once per backend, in [`Dialect`]:
//! how an id and a time are stored (text on SQLite; `UUID` and `TIMESTAMPTZ`
//! on PostgreSQL) and the row lock PostgreSQL needs where SQLite's single
//! writer already serialises.
//!
//! A function that runs such SQL is written once inside [`per_backend!`],
//! which compiles it twice, as `sqlite::f` and `postgres::f`, each with `DB`
//! naming its backend. Each copy is concrete, so sqlx's executor and
//! encoding traits need no generic bounds (sqlx's `Any` driver was not an
//! option: it has no UUID, time or array types). Statements whose text
//! really differs (multi-row inserts: `json_each` against `UNNEST`; `FOR
//! UPDATE SKIP LOCKED`) stay in a module per backend next to their caller.

use sqlx::{Postgres, Sqlite};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;

/// What differs between the backends in statements written once.
pub trait Dialect: sqlx::Database {
    /// How an id is bound and read back: hyphenated text on SQLite, `UUID`
    /// on PostgreSQL.
    type Id;

    /// ` FOR UPDATE` where a row read in a transaction must be locked
    /// against concurrent writers (PostgreSQL, with replicas); nothing on
    /// SQLite, whose single writer connection serialises every write.
    const FOR_UPDATE: &'static str;

    fn id(id: Uuid) -> Self::Id;

    /// The id a row holds; `what` names it in the error of a corrupt row.
    fn read_id(stored: Self::Id, what: &str) -> Result<Uuid, StoreError>;

    /// How a time is bound and read back: RFC 3339 text in UTC with six
    /// fraction digits on SQLite (so stored times sort as text),
    /// `TIMESTAMPTZ` on PostgreSQL.
    type Time;

    /// The time bound for `t`; refused ([`StoreError::TimeOutOfRange`])
    /// outside the years 0000..=9999 on both backends, so that what one
    /// stores the other could too.
    fn time(t: OffsetDateTime) -> Result<Self::Time, StoreError>;

    /// The time a row holds; `what` names it in the error of a corrupt row.
    fn read_time(stored: Self::Time, what: &str) -> Result<OffsetDateTime, StoreError>;
}

/// RFC 3339 with exactly six fraction digits: SQLite's stored times.
const STORED_TIME: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// `t` in UTC, if its year is one RFC 3339 can write (0000..=9999).
fn in_stored_years(t: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    t.checked_to_offset(time::UtcOffset::UTC)
        .filter(|utc| (0..=9999).contains(&utc.year()))
        .ok_or(StoreError::TimeOutOfRange(t))
}

impl Dialect for Sqlite {
    type Id = String;
    const FOR_UPDATE: &'static str = "";

    fn id(id: Uuid) -> String {
        id.to_string()
    }

    fn read_id(stored: String, what: &str) -> Result<Uuid, StoreError> {
        Uuid::parse_str(&stored).map_err(|_| StoreError::Corrupt(format!("{what} `{stored}`")))
    }

    type Time = String;

    fn time(t: OffsetDateTime) -> Result<String, StoreError> {
        in_stored_years(t)?
            .format(STORED_TIME)
            .map_err(|e| StoreError::Corrupt(format!("time {t}: {e}")))
    }

    fn read_time(stored: String, what: &str) -> Result<OffsetDateTime, StoreError> {
        OffsetDateTime::parse(&stored, &Rfc3339)
            .map_err(|_| StoreError::Corrupt(format!("{what} `{stored}`")))
    }
}

impl Dialect for Postgres {
    type Id = Uuid;
    const FOR_UPDATE: &'static str = " FOR UPDATE";

    fn id(id: Uuid) -> Uuid {
        id
    }

    fn read_id(stored: Uuid, _what: &str) -> Result<Uuid, StoreError> {
        Ok(stored)
    }

    type Time = OffsetDateTime;

    fn time(t: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
        in_stored_years(t)
    }

    fn read_time(stored: OffsetDateTime, _what: &str) -> Result<OffsetDateTime, StoreError> {
        Ok(stored)
    }
}

/// Compiles the items it is given twice: as `pub mod sqlite` with `DB` =
/// [`Sqlite`] and `Db` = [`super::sqlite::SqliteDb`], and as `pub mod
/// postgres` with `DB` = [`Postgres`] and `Db` = [`super::postgres::PgDb`].
/// Both see the enclosing module (`use super::*`). Inside, `Db::writer()` is
/// the pool writes go through and `Db::read()` a connection for reads (a
/// reader on SQLite, the pool on PostgreSQL), and [`Dialect`] says what
/// differs: `DB::id(…)`, `DB::FOR_UPDATE`.
///
/// Exported (`actors::per_backend!`) for services defined outside this
/// crate; the caller's crate needs `sqlx` as a dependency.
#[macro_export]
macro_rules! per_backend {
    ($($item:item)*) => {
        /// The statements above, on SQLite.
        pub mod sqlite {
            // One body binds `String`s on SQLite, which a second bind needs
            // borrowed, and `Copy` values on PostgreSQL, which clippy would
            // have bound by value.
            #![allow(clippy::needless_borrows_for_generic_args)]
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::storage::sql::Dialect as _;
            #[allow(dead_code, clippy::upper_case_acronyms)]
            type DB = sqlx::Sqlite;
            #[allow(dead_code)]
            type Db = $crate::storage::sqlite::SqliteDb;
            $($item)*
        }

        /// The statements above, on PostgreSQL.
        pub mod postgres {
            // One body binds `String`s on SQLite, which a second bind needs
            // borrowed, and `Copy` values on PostgreSQL, which clippy would
            // have bound by value.
            #![allow(clippy::needless_borrows_for_generic_args)]
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::storage::sql::Dialect as _;
            #[allow(dead_code, clippy::upper_case_acronyms)]
            type DB = sqlx::Postgres;
            #[allow(dead_code)]
            type Db = $crate::storage::postgres::PgDb;
            $($item)*
        }
    };
}

pub use crate::per_backend;

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn sqlite_times_read_back_at_microseconds_across_the_stored_years() {
        for t in [
            datetime!(0000-01-01 00:00:00 UTC),
            datetime!(2026-12-03 20:15:29.123456789 +02:00),
            datetime!(9999-12-31 23:59:59.999999 UTC),
        ] {
            let stored = Sqlite::time(t).expect("in the stored years");
            let read = Sqlite::read_time(stored.clone(), "time").expect("reads back");
            let micros = t
                .replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
                .unwrap();
            assert_eq!(read, micros, "{stored}");
        }
    }

    /// Found by the `stored_rows` fuzz target: a year before 0000 was
    /// written as `-2177-…`, which no RFC 3339 reader takes back.
    #[test]
    fn times_outside_the_stored_years_are_refused_on_both_backends() {
        let before_year_zero = OffsetDateTime::from_unix_timestamp(-68_719_476_737).unwrap();
        // In UTC this is already 10000-01-01.
        let past_9999 = datetime!(9999-12-31 23:30:00 -01:00);
        for t in [
            before_year_zero,
            datetime!(-0001-12-31 23:59:59 UTC),
            past_9999,
        ] {
            assert!(
                matches!(Sqlite::time(t), Err(StoreError::TimeOutOfRange(_))),
                "SQLite stored {t}"
            );
            assert!(
                matches!(Postgres::time(t), Err(StoreError::TimeOutOfRange(_))),
                "PostgreSQL stored {t}"
            );
        }
    }
}
