//! What analytics reads and answers: the facts an event contributes (parsed
//! from its payload once, at the edge of the store), the metrics, the
//! buckets, and the query parameters of `/stats` and `/timeseries`, each
//! parsed into a typed value or refused with a 422 naming its field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::topics::{USER_LOGGED_IN, USER_REGISTERED};
use crate::billing::topics::{INVOICE_CREATED, INVOICE_PAID, INVOICE_REFUNDED, INVOICE_VOIDED};
use crate::events::Event;
use crate::orders::topics::{ORDER_CANCELLED, ORDER_CREATED};
use crate::{FieldError, ServiceError};

pub const HOUR: i64 = 3600;
pub const DAY: i64 = 24 * HOUR;

/// The most points one `/timeseries` answers.
pub const MAX_POINTS: i64 = 10_000;
/// The range `/stats` and `/timeseries` cover when not given.
pub const DEFAULT_RANGE: i64 = 30 * DAY;

/// A bucket's size. Buckets start on the hour / at midnight UTC, stored as
/// unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Grain {
    Hour,
    Day,
}

impl Grain {
    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Hour => "hour",
            Grain::Day => "day",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Grain::Hour => HOUR,
            Grain::Day => DAY,
        }
    }

    /// The start of the bucket holding `t` (unix seconds).
    pub fn floor(self, t: i64) -> i64 {
        t.div_euclid(self.seconds()) * self.seconds()
    }
}

/// The metric of distinct active users: not a sum, so never stored by an
/// event's increment; counted from the activity table.
pub const ACTIVE: &str = "users.active";

/// What one consumed event adds to the figures.
#[derive(Clone, Debug)]
pub struct Fact {
    pub event: Event,
    /// `occurred_at`, unix seconds: the buckets it counts in.
    pub at: i64,
    /// The user it is about (the payload's, else the actor).
    pub user: Option<Uuid>,
    /// Additive metrics and their increments.
    pub counts: Vec<(String, i64)>,
    /// What it adds to its user's totals (`/users/{id}`).
    pub logins: i64,
    pub orders: i64,
    pub invoices_paid: i64,
    /// `(currency, amount)` paid by the user.
    pub paid: Option<(String, i64)>,
}

/// The fields of the payloads analytics reads (the user, the order and the
/// invoice as the API shows them; a login's `user_id`).
#[derive(Deserialize)]
struct Payload {
    id: Option<Uuid>,
    user_id: Option<Uuid>,
    amount: Option<i64>,
    currency: Option<String>,
}

impl Fact {
    /// The fact of `event`; `Err` (a conflict: the bus retries it, then
    /// keeps it as a dead letter) for a payload missing what its topic
    /// promises.
    pub fn from_event(event: &Event) -> Result<Fact, ServiceError> {
        let payload: Payload = event.payload()?;
        let topic = &event.topic;
        let mut fact = Fact {
            event: event.clone(),
            at: event.occurred_at.unix_timestamp(),
            user: payload.user_id.or(event.actor_id),
            counts: Vec::new(),
            logins: 0,
            orders: 0,
            invoices_paid: 0,
            paid: None,
        };
        let money = || -> Result<(String, i64), ServiceError> {
            match (&payload.currency, payload.amount) {
                (Some(currency), Some(amount)) if is_currency(currency) => {
                    Ok((currency.clone(), amount))
                }
                _ => Err(ServiceError::Conflict(format!(
                    "event {} ({topic}) has no amount and currency",
                    event.id
                ))),
            }
        };
        let count = |fact: &mut Fact, metric: &str| fact.counts.push((metric.to_owned(), 1));
        if *topic == USER_REGISTERED {
            fact.user = payload.id.or(fact.user);
            count(&mut fact, "users.registered");
        } else if *topic == USER_LOGGED_IN {
            count(&mut fact, "logins");
            fact.logins = 1;
        } else if *topic == ORDER_CREATED {
            count(&mut fact, "orders.created");
            fact.orders = 1;
        } else if *topic == ORDER_CANCELLED {
            count(&mut fact, "orders.cancelled");
        } else if *topic == INVOICE_CREATED {
            let (currency, amount) = money()?;
            count(&mut fact, "invoices.created");
            fact.counts
                .push((format!("revenue.invoiced.{currency}"), amount));
        } else if *topic == INVOICE_PAID {
            // An order is paid when its invoice is: orders publishes no event
            // of its own for it.
            let (currency, amount) = money()?;
            count(&mut fact, "invoices.paid");
            count(&mut fact, "orders.paid");
            fact.counts
                .push((format!("revenue.paid.{currency}"), amount));
            fact.invoices_paid = 1;
            fact.paid = Some((currency, amount));
        } else if *topic == INVOICE_VOIDED {
            count(&mut fact, "invoices.voided");
        } else if *topic == INVOICE_REFUNDED {
            let (currency, amount) = money()?;
            count(&mut fact, "invoices.refunded");
            fact.counts
                .push((format!("revenue.refunded.{currency}"), amount));
        }
        Ok(fact)
    }
}

fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// A metric `/timeseries` knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric(String);

pub(super) const PLAIN: &[&str] = &[
    "users.registered",
    ACTIVE,
    "logins",
    "orders.created",
    "orders.cancelled",
    "orders.paid",
    "invoices.created",
    "invoices.paid",
    "invoices.voided",
    "invoices.refunded",
];

impl Metric {
    pub fn parse(name: &str) -> Option<Metric> {
        let per_currency = ["revenue.invoiced.", "revenue.paid.", "revenue.refunded."]
            .iter()
            .any(|prefix| name.strip_prefix(prefix).is_some_and(is_currency));
        (PLAIN.contains(&name) || per_currency).then(|| Metric(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_active(&self) -> bool {
        self.0 == ACTIVE
    }
}

/// A time range `[from, to)` in unix seconds, `from` before `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

/// Reads `from` and `to` (RFC 3339; default: the last 30 days), collecting
/// every bad field.
fn range(query: &[(String, String)], now: i64, errors: &mut Vec<FieldError>) -> Option<Range> {
    let mut time = |name: &str| -> Option<Option<i64>> {
        match query.iter().find(|(k, _)| k == name) {
            None => Some(None),
            Some((_, value)) => match OffsetDateTime::parse(value, &Rfc3339) {
                Ok(t) => Some(Some(t.unix_timestamp())),
                Err(_) => {
                    errors.push(FieldError::new(name, "must be an RFC 3339 time"));
                    None
                }
            },
        }
    };
    let (from, to) = (time("from"), time("to"));
    let (from, to) = (from?, to?);
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - DEFAULT_RANGE);
    if from >= to {
        errors.push(FieldError::new("from", "must be before `to`"));
        return None;
    }
    Some(Range { from, to })
}

/// `/stats?from=&to=`.
pub fn stats_query(query: &[(String, String)], now: i64) -> Result<Range, ServiceError> {
    let mut errors = Vec::new();
    match range(query, now, &mut errors) {
        Some(range) if errors.is_empty() => Ok(range),
        _ => Err(ServiceError::Validation(errors)),
    }
}

/// `/timeseries?metric=&interval=&from=&to=`, parsed.
#[derive(Clone, Debug)]
pub struct SeriesQuery {
    pub metric: Metric,
    pub grain: Grain,
    pub range: Range,
}

impl SeriesQuery {
    pub fn parse(query: &[(String, String)], now: i64) -> Result<SeriesQuery, ServiceError> {
        let mut errors = Vec::new();
        let value = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let metric = match value("metric") {
            None => {
                errors.push(FieldError::new("metric", "is required"));
                None
            }
            Some(name) => Metric::parse(name).or_else(|| {
                errors.push(FieldError::new(
                    "metric",
                    format!("`{name}` is not a known metric"),
                ));
                None
            }),
        };
        let grain = match value("interval") {
            None | Some("day") => Some(Grain::Day),
            Some("hour") => Some(Grain::Hour),
            Some(_) => {
                errors.push(FieldError::new("interval", "must be `hour` or `day`"));
                None
            }
        };
        let range = range(query, now, &mut errors);
        if let (Some(grain), Some(range)) = (grain, range) {
            let points = points(grain, range);
            if points > MAX_POINTS {
                errors.push(FieldError::new(
                    "from",
                    format!(
                        "the range has {points} points at `{}`; at most {MAX_POINTS}",
                        grain.as_str()
                    ),
                ));
            }
        }
        match (metric, grain, range) {
            (Some(metric), Some(grain), Some(range)) if errors.is_empty() => Ok(SeriesQuery {
                metric,
                grain,
                range,
            }),
            _ => Err(ServiceError::Validation(errors)),
        }
    }

    /// The buckets' starts, in order.
    pub fn buckets(&self) -> impl Iterator<Item = i64> {
        let step = self.grain.seconds();
        let first = self.grain.floor(self.range.from);
        (0..points(self.grain, self.range)).map(move |i| first + i * step)
    }
}

/// How many buckets of `grain` the range touches.
fn points(grain: Grain, range: Range) -> i64 {
    let first = grain.floor(range.from);
    (range.to - first + grain.seconds() - 1) / grain.seconds()
}

/// A time as the API shows it (RFC 3339, UTC).
pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Point {
    pub t: String,
    pub value: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Series {
    pub metric: String,
    pub interval: Grain,
    pub from: String,
    pub to: String,
    pub points: Vec<Point>,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(as = AnalyticsUsers)]
pub struct Users {
    pub registered: i64,
    pub active: i64,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(as = AnalyticsOrders)]
pub struct Orders {
    pub created: i64,
    pub cancelled: i64,
    pub paid: i64,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(as = AnalyticsInvoices)]
pub struct Invoices {
    pub created: i64,
    pub paid: i64,
    pub voided: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Revenue {
    pub currency: String,
    pub invoiced: i64,
    pub paid: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub from: String,
    pub to: String,
    pub users: Users,
    pub logins: i64,
    pub orders: Orders,
    pub invoices: Invoices,
    pub revenue: Vec<Revenue>,
}

impl Stats {
    /// The answer from the summed metrics of the range and its distinct users.
    pub fn of(range: Range, sums: &BTreeMap<String, i64>, active: i64) -> Stats {
        let get = |m: &str| sums.get(m).copied().unwrap_or(0);
        let mut revenue: BTreeMap<&str, Revenue> = BTreeMap::new();
        for (metric, value) in sums {
            let (kind, currency) = if let Some(c) = metric.strip_prefix("revenue.invoiced.") {
                ("invoiced", c)
            } else if let Some(c) = metric.strip_prefix("revenue.paid.") {
                ("paid", c)
            } else {
                continue;
            };
            let entry = revenue.entry(currency).or_insert_with(|| Revenue {
                currency: currency.to_owned(),
                invoiced: 0,
                paid: 0,
            });
            match kind {
                "invoiced" => entry.invoiced += value,
                _ => entry.paid += value,
            }
        }
        Stats {
            from: rfc3339(range.from),
            to: rfc3339(range.to),
            users: Users {
                registered: get("users.registered"),
                active,
            },
            logins: get("logins"),
            orders: Orders {
                created: get("orders.created"),
                cancelled: get("orders.cancelled"),
                paid: get("orders.paid"),
            },
            invoices: Invoices {
                created: get("invoices.created"),
                paid: get("invoices.paid"),
                voided: get("invoices.voided"),
            },
            revenue: revenue.into_values().collect(),
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AnalyticsAmount)]
pub struct Amount {
    pub currency: String,
    pub amount: i64,
}

/// `/users/{id}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UserFigures {
    pub user_id: Uuid,
    pub logins: i64,
    pub orders: i64,
    pub invoices_paid: i64,
    pub amount_paid: Vec<Amount>,
    pub last_active_at: Option<String>,
    pub active_days: i64,
}

/// A scheduled job as `/jobs` shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    #[schema(value_type = String)]
    pub name: &'static str,
    pub schedule: String,
    pub last_run_at: Option<String>,
    pub last_duration_ms: Option<i64>,
    pub last_error: Option<String>,
    pub next_run_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn fields(err: ServiceError) -> Vec<String> {
        match err {
            ServiceError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("not a validation error: {other}"),
        }
    }

    #[test]
    fn buckets_align_on_the_hour_and_midnight_utc() {
        let t = 1_767_312_345; // 2026-01-02T00:05:45Z
        assert_eq!(rfc3339(Grain::Hour.floor(t)), "2026-01-02T00:00:00Z");
        assert_eq!(
            rfc3339(Grain::Day.floor(t + 5 * HOUR)),
            "2026-01-02T00:00:00Z"
        );
    }

    #[test]
    fn a_series_has_every_bucket_the_range_touches() {
        let query = SeriesQuery::parse(
            &q(&[
                ("metric", "logins"),
                ("interval", "hour"),
                ("from", "2026-01-01T10:30:00Z"),
                ("to", "2026-01-01T13:00:00Z"),
            ]),
            0,
        )
        .expect("parses");
        let starts: Vec<String> = query.buckets().map(rfc3339).collect();
        assert_eq!(
            starts,
            [
                "2026-01-01T10:00:00Z",
                "2026-01-01T11:00:00Z",
                "2026-01-01T12:00:00Z"
            ]
        );
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let now = 1_767_312_345;
        let bad = |pairs: &[(&str, &str)]| fields(SeriesQuery::parse(&q(pairs), now).unwrap_err());
        assert_eq!(bad(&[("metric", "nope")]), ["metric"]);
        assert_eq!(bad(&[("metric", "revenue.paid.usd")]), ["metric"]);
        assert_eq!(
            bad(&[("metric", "logins"), ("interval", "week")]),
            ["interval"]
        );
        assert_eq!(
            bad(&[("metric", "logins"), ("from", "yesterday")]),
            ["from"]
        );
        assert_eq!(
            bad(&[
                ("metric", "logins"),
                ("from", "2026-01-02T00:00:00Z"),
                ("to", "2026-01-01T00:00:00Z")
            ]),
            ["from"]
        );
        assert_eq!(
            bad(&[
                ("metric", "logins"),
                ("interval", "hour"),
                ("from", "2024-01-01T00:00:00Z")
            ]),
            ["from"]
        );
        assert!(SeriesQuery::parse(&q(&[("metric", "revenue.paid.EUR")]), now).is_ok());
    }
}
