//! The topics billing publishes (API.md, Events), each written to its outbox
//! in the transaction of the change it announces.

use crate::events::Topic;

/// An order was invoiced (data: the invoice as the API shows it).
pub const INVOICE_CREATED: Topic = Topic::new("invoice.created");
/// An invoice was paid.
pub const INVOICE_PAID: Topic = Topic::new("invoice.paid");
/// An invoice was voided (its order was cancelled).
pub const INVOICE_VOIDED: Topic = Topic::new("invoice.voided");

/// A paid invoice's payment was refunded (its order was cancelled while
/// or after it was paid; data: the invoice, `status: "refunded"`).
pub const INVOICE_REFUNDED: Topic = Topic::new("invoice.refunded");

/// Every topic billing publishes.
pub const ALL: &[Topic] = &[
    INVOICE_CREATED,
    INVOICE_PAID,
    INVOICE_VOIDED,
    INVOICE_REFUNDED,
];
