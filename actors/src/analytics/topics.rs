//! The topics analytics publishes: none. It only counts what the other
//! services publish (the list it consumes is in `mod.rs`).

use crate::events::Topic;

/// Every topic analytics publishes.
pub const ALL: &[Topic] = &[];
