//! `[services.orders]`: orders' own settings (beside the supervision keys).

use serde::{Deserialize, Serialize};

use super::model::Currency;
use crate::service::{Moved, ServiceSettings};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersSettings {
    /// The ISO 4217 code of an order whose request names no currency (`USD`).
    pub default_currency: Currency,
}

impl Default for OrdersSettings {
    fn default() -> Self {
        Self {
            default_currency: Currency::usd(),
        }
    }
}

impl ServiceSettings for OrdersSettings {
    const MOVED: &'static [Moved] = &[Moved {
        from: "currency",
        to: "default_currency",
    }];
}
