//! `[services.billing]`: billing's own settings (beside the supervision keys).

use serde::{Deserialize, Serialize};

use super::model::InvoicePrefix;
use crate::service::{Moved, ServiceSettings};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSettings {
    /// What invoice numbers start with: `INV-` (the default) gives
    /// `INV-000001`; at most 16 visible ASCII characters. Numbers run without
    /// gaps per billing database, whatever the prefix.
    pub invoice_prefix: InvoicePrefix,
}

impl ServiceSettings for BillingSettings {
    const MOVED: &'static [Moved] = &[Moved {
        from: "billing.invoice_prefix",
        to: "invoice_prefix",
    }];
}
