//! The billing service's values: the invoice as stored and returned, its
//! number, and what billing reads from the order events it consumes (its own
//! payload types: billing knows orders only through their events).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::events::Event;
use crate::ServiceError;

/// How many digits an invoice number has at least (`INV-000001`); past
/// 999999 it simply grows (`INV-1000000`).
pub const NUMBER_DIGITS: usize = 6;

/// What invoice numbers start with (`INV-` gives `INV-000001`): at most 16
/// visible ASCII characters, so a number stays one token in any system
/// that receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InvoicePrefix(String);

impl InvoicePrefix {
    pub const MAX_LEN: usize = 16;

    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value.len() <= Self::MAX_LEN && value.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(value.to_owned()))
        } else {
            Err("must be at most 16 visible ASCII characters")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for InvoicePrefix {
    fn default() -> Self {
        Self("INV-".into())
    }
}

impl TryFrom<String> for InvoicePrefix {
    type Error = &'static str;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<InvoicePrefix> for String {
    fn from(prefix: InvoicePrefix) -> String {
        prefix.0
    }
}

/// The invoice number for the `seq`-th invoice of a database.
pub fn invoice_number(prefix: &str, seq: i64) -> String {
    format!("{prefix}{seq:0width$}", width = NUMBER_DIGITS)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Open,
    Paid,
    Void,
    /// Paid, then its order was cancelled: the payment was given back.
    Refunded,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Void => "void",
            InvoiceStatus::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(InvoiceStatus::Open),
            "paid" => Some(InvoiceStatus::Paid),
            "void" => Some(InvoiceStatus::Void),
            "refunded" => Some(InvoiceStatus::Refunded),
            _ => None,
        }
    }
}

/// An invoice as stored and as returned (and as the `data` of the
/// `invoice.*` events). Deserializable so that consumers and tests can read
/// those events back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invoice {
    pub id: Uuid,
    pub number: String,
    pub order_id: Uuid,
    pub user_id: Uuid,
    #[schema(minimum = 1)]
    pub amount: i64,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub status: InvoiceStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub paid_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub voided_at: Option<OffsetDateTime>,
    /// When the payment was refunded (events from before refunds lack it).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub refunded_at: Option<OffsetDateTime>,
}

/// Which invoices a list shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvoiceFilter {
    /// Everyone's (admin).
    All,
    /// One user's.
    User(Uuid),
}

/// What billing reads of an order event's `data` (the order JSON); the
/// other fields are ignored, so orders may add some without breaking billing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct OrderPayload {
    pub id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub currency: String,
}

/// A consumed event, read: what billing is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    /// `order.created`: invoice it.
    Created(OrderPayload),
    /// `order.cancelled`: void its invoice.
    Cancelled(OrderPayload),
}

impl OrderEvent {
    /// Reads `event`. A malformed payload, or a topic billing does not
    /// consume, is a `Conflict`: the delivery fails, is retried, and ends
    /// among the dead letters where an operator sees it.
    pub fn from_event(event: &Event) -> Result<Self, ServiceError> {
        use crate::orders::topics::{ORDER_CANCELLED, ORDER_CREATED};
        if event.topic == ORDER_CREATED {
            let order: OrderPayload = event.payload()?;
            // The table's checks would refuse these too, but as a database
            // error (a worker failure): say what is wrong instead.
            if order.amount <= 0 {
                return Err(malformed(event, "amount must be greater than 0"));
            }
            if !(order.currency.len() == 3
                && order.currency.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(malformed(
                    event,
                    "currency must be a three-letter ISO 4217 code",
                ));
            }
            Ok(OrderEvent::Created(order))
        } else if event.topic == ORDER_CANCELLED {
            Ok(OrderEvent::Cancelled(event.payload()?))
        } else {
            Err(ServiceError::Conflict(format!(
                "event {} ({}) is not one billing consumes",
                event.id, event.topic
            )))
        }
    }

    pub fn order(&self) -> &OrderPayload {
        match self {
            OrderEvent::Created(order) | OrderEvent::Cancelled(order) => order,
        }
    }
}

fn malformed(event: &Event, why: &str) -> ServiceError {
    ServiceError::Conflict(format!(
        "event {} ({}) has a malformed payload: {why}",
        event.id, event.topic
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(topic: crate::events::Topic, data: serde_json::Value) -> Event {
        Event::new(topic, Some("req-1"), None, &data).expect("serializable")
    }

    fn order_json() -> serde_json::Value {
        json!({
            "id": "0190d5d4-7b4f-7c3e-9a4b-3f2a1b0c9d8e",
            "user_id": "0190d5d4-7b4f-7c3e-9a4b-3f2a1b0c9d8f",
            "amount": 5000,
            "currency": "USD",
            "description": "ignored",
            "status": "created",
            "created_at": "2024-07-20T10:00:00.000000Z",
            "updated_at": "2024-07-20T10:00:00.000000Z"
        })
    }

    #[test]
    fn numbers_have_at_least_six_digits() {
        assert_eq!(invoice_number("INV-", 1), "INV-000001");
        assert_eq!(invoice_number("INV-", 42), "INV-000042");
        assert_eq!(invoice_number("INV-", 999_999), "INV-999999");
        assert_eq!(invoice_number("INV-", 1_000_000), "INV-1000000");
        assert_eq!(invoice_number("", 7), "000007");
    }

    #[test]
    fn an_order_created_event_is_read_ignoring_other_fields() {
        let read =
            OrderEvent::from_event(&event(crate::orders::topics::ORDER_CREATED, order_json()))
                .expect("parses");
        let OrderEvent::Created(order) = read else {
            panic!("{read:?}")
        };
        assert_eq!(order.id.to_string(), "0190d5d4-7b4f-7c3e-9a4b-3f2a1b0c9d8e");
        assert_eq!(order.amount, 5000);
        assert_eq!(order.currency, "USD");
    }

    #[test]
    fn an_order_cancelled_event_is_read() {
        let read =
            OrderEvent::from_event(&event(crate::orders::topics::ORDER_CANCELLED, order_json()))
                .expect("parses");
        assert!(matches!(read, OrderEvent::Cancelled(_)), "{read:?}");
    }

    #[test]
    fn malformed_payloads_are_conflicts() {
        let mut missing = order_json();
        if let Some(fields) = missing.as_object_mut() {
            fields.remove("user_id");
        }
        let mut zero = order_json();
        zero["amount"] = json!(0);
        let mut currency = order_json();
        currency["currency"] = json!("usd");
        for data in [missing, zero, currency, json!("not an object")] {
            let err =
                OrderEvent::from_event(&event(crate::orders::topics::ORDER_CREATED, data.clone()))
                    .unwrap_err();
            assert!(matches!(err, ServiceError::Conflict(_)), "{data}: {err:?}");
        }
    }

    #[test]
    fn other_topics_are_refused() {
        let err =
            OrderEvent::from_event(&event(crate::billing::topics::INVOICE_PAID, order_json()))
                .unwrap_err();
        assert!(matches!(err, ServiceError::Conflict(_)), "{err:?}");
    }

    #[test]
    fn invoices_serialize_as_the_api_documents_them() {
        let created = OffsetDateTime::from_unix_timestamp(1_721_469_600).expect("time");
        let invoice = Invoice {
            id: Uuid::now_v7(),
            number: invoice_number("INV-", 1),
            order_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            amount: 5000,
            currency: "USD".into(),
            status: InvoiceStatus::Open,
            created_at: created,
            paid_at: None,
            voided_at: None,
            refunded_at: None,
        };
        let json = serde_json::to_value(&invoice).expect("json");
        assert_eq!(json["number"], "INV-000001");
        assert_eq!(json["status"], "open");
        assert_eq!(json["created_at"], "2024-07-20T10:00:00Z");
        assert!(json["paid_at"].is_null());
        assert!(json["voided_at"].is_null());
        let back: Invoice = serde_json::from_value(json).expect("back");
        assert_eq!(back, invoice);
    }
}
