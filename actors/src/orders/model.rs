//! The orders service's values, parsed at the edge: an order request is turned
//! into typed values (an [`Amount`], a [`Currency`]) or a list of field errors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::FieldError;

/// A positive amount of minor units (5000 is 50.00).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

/// The largest amount accepted: far above any real order, far below overflow.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

impl Amount {
    pub fn parse(value: &Value) -> Result<Self, &'static str> {
        const TOO_LARGE: &str = "must be at most 1000000000000000";
        let n = match value {
            Value::Number(n) => match n.as_i64() {
                Some(n) => n,
                // Beyond i64 (a u64, or a float of that size) is beyond the
                // bound: say so rather than "must be an integer".
                None if n.as_u64().is_some() => return Err(TOO_LARGE),
                None if n.as_f64().is_some_and(|f| f > MAX_AMOUNT as f64) => return Err(TOO_LARGE),
                None if n.as_f64().is_some_and(|f| f < 0.0 && f.fract() == 0.0) => {
                    return Err("must be greater than 0")
                }
                None => return Err("must be an integer number of minor units"),
            },
            _ => return Err("must be an integer number of minor units"),
        };
        if n <= 0 {
            return Err("must be greater than 0");
        }
        if n > MAX_AMOUNT {
            return Err(TOO_LARGE);
        }
        Ok(Self(n))
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }
}

/// An ISO 4217 alphabetic code: three capital letters naming a currency in
/// the ISO 4217 table (as the `iso_currency` crate lists it: the current
/// currencies, the fund codes such as `USN`, the special `X` codes such as
/// `XAU`, and the few it keeps after they were superseded, such as `HRK`,
/// since stored orders may name them). Lowercase is refused, as before:
/// codes are compared as stored, and `usd` is not silently upper-cased.
/// The same type parses `orders.default_currency`, so the setting must be a
/// real code too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl TryFrom<String> for Currency {
    type Error = &'static str;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.0
    }
}

impl Currency {
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("must be a three-letter ISO 4217 code in capitals, such as USD");
        }
        if iso_currency::Currency::from_code(value).is_none() {
            return Err("is not an ISO 4217 currency code");
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// US dollars: the default of `default_currency`.
    pub fn usd() -> Self {
        Self("USD".to_owned())
    }
}

/// At most [`Description::MAX_CHARS`] characters of printable text
/// ([`crate::text::check_printable`], the rule display names follow too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value.chars().count() > Self::MAX_CHARS {
            return Err("must be at most 500 characters");
        }
        crate::text::check_printable(value)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The body [`NewOrder::parse`] accepts, for the OpenAPI document: unknown
/// fields are refused, `null` is as good as leaving a field out.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewOrder)]
#[allow(dead_code)]
pub struct NewOrderBody {
    /// Integer minor units (5000 is 50.00).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    amount: i64,
    /// An ISO 4217 code in capitals; the configured default (USD) when left out.
    #[schema(schema_with = super::openapi::currency_or_null)]
    currency: Option<String>,
    /// Printable text: no control or bidirectional override characters.
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$"
    )]
    description: Option<String>,
}

/// A valid request to create an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrder {
    pub amount: Amount,
    pub currency: Currency,
    pub description: Option<Description>,
}

impl NewOrder {
    /// Parses `{amount, currency?, description?}`, naming every field at fault.
    pub fn parse(
        body: &Map<String, Value>,
        default_currency: &Currency,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        for field in body.keys() {
            if !matches!(field.as_str(), "amount" | "currency" | "description") {
                errors.push(FieldError::new(field, "is not a known field"));
            }
        }
        let amount = match body.get("amount") {
            None | Some(Value::Null) => Err("is required"),
            Some(v) => Amount::parse(v),
        }
        .map_err(|m| errors.push(FieldError::new("amount", m)))
        .ok();
        let currency = match body.get("currency") {
            None | Some(Value::Null) => Ok(default_currency.clone()),
            Some(Value::String(s)) => Currency::parse(s),
            Some(_) => Err("must be a string"),
        }
        .map_err(|m| errors.push(FieldError::new("currency", m)))
        .ok();
        let description = match body.get("description") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Description::parse(s).map(Some),
            Some(_) => Err("must be a string"),
        }
        .map_err(|m| errors.push(FieldError::new("description", m)))
        .ok();
        match (amount, currency, description) {
            (Some(amount), Some(currency), Some(description)) if errors.is_empty() => Ok(Self {
                amount,
                currency,
                description,
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Created,
    Cancelled,
    Paid,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Paid => "paid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "created" => Some(OrderStatus::Created),
            "cancelled" => Some(OrderStatus::Cancelled),
            "paid" => Some(OrderStatus::Paid),
            _ => None,
        }
    }
}

/// An order as stored and as returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    #[schema(minimum = 1)]
    pub amount: i64,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub description: Option<String>,
    pub status: OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Which orders a list shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderFilter {
    /// Everyone's (admin).
    All,
    /// One user's.
    User(Uuid),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    fn parse(v: Value) -> Result<NewOrder, Vec<FieldError>> {
        NewOrder::parse(v.as_object().unwrap(), &usd())
    }

    #[test]
    fn a_minimal_order_takes_the_default_currency() {
        let order = parse(json!({"amount": 5000})).unwrap();
        assert_eq!(order.amount.minor_units(), 5000);
        assert_eq!(order.currency.as_str(), "USD");
        assert_eq!(order.description, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors =
            parse(json!({"amount": "5", "currency": "usd", "description": 3, "colour": "red"}))
                .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["colour", "amount", "currency", "description"]);
    }

    #[test]
    fn amounts_must_be_positive_integers_in_range() {
        assert!(Amount::parse(&json!(0)).is_err());
        assert!(Amount::parse(&json!(-1)).is_err());
        assert!(Amount::parse(&json!(1.5)).is_err());
        assert!(Amount::parse(&json!(MAX_AMOUNT + 1)).is_err());
        assert_eq!(Amount::parse(&json!(1)).unwrap().minor_units(), 1);
    }

    #[test]
    fn amounts_beyond_the_bound_say_so_whatever_their_type() {
        let too_large = Err("must be at most 1000000000000000");
        assert_eq!(Amount::parse(&json!(u64::MAX)), too_large);
        assert_eq!(Amount::parse(&json!(1e300)), too_large);
        assert_eq!(Amount::parse(&json!(i64::MAX)), too_large);
        assert_eq!(Amount::parse(&json!(-1e300)), Err("must be greater than 0"));
        assert!(Amount::parse(&json!(2.5e3)).is_err());
    }

    #[test]
    fn currencies_must_be_iso_4217_codes_in_capitals() {
        for code in ["USD", "EUR", "JPY", "CHF", "XAU", "USN"] {
            assert_eq!(Currency::parse(code).expect(code).as_str(), code);
        }
        assert_eq!(
            Currency::parse("XYZ"),
            Err("is not an ISO 4217 currency code")
        );
        assert_eq!(Currency::parse("ABC"), Currency::parse("XYZ"));
        for bad in ["usd", "Usd", "US", "USDX", "U$D", ""] {
            assert_eq!(
                Currency::parse(bad),
                Err("must be a three-letter ISO 4217 code in capitals, such as USD"),
                "{bad}"
            );
        }
    }

    #[test]
    fn descriptions_must_be_printable() {
        assert!(Description::parse("Two coffees, one café").is_ok());
        for bad in [
            "nul\0",
            "bell\u{7}",
            "new\nline",
            "\u{202E}evil",
            "\u{2066}x",
        ] {
            assert_eq!(
                Description::parse(bad),
                Err(crate::text::NOT_PRINTABLE),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missing_amount_is_required() {
        let errors = parse(json!({})).unwrap_err();
        assert_eq!(errors, vec![FieldError::new("amount", "is required")]);
    }
}
