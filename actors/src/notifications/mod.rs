//! The notifications service (for now only its delivery providers).

pub mod providers;
