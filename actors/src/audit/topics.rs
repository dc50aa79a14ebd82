//! The topics audit publishes: none (it records; nothing follows from it).

use crate::events::Topic;

pub const ALL: &[Topic] = &[];
