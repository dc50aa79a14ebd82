//! Shared resources: what the process makes once and hands to every
//! service that asks — the key-value store, the access-token keys, whether
//! rate limits apply. A typed map, so a new kind of resource needs no new
//! field anywhere: the binary (or a program embedding Stageworks) inserts a
//! value, a service takes it by its type.

use std::any::{type_name, Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// Values keyed by their type; cloning the registry shares the values.
#[derive(Clone, Default)]
pub struct Resources {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value`, replacing any earlier value of the same type.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was inserted.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|value| value.downcast_ref::<T>())
            .cloned()
    }

    /// The value of type `T`, or an error naming the type.
    pub fn require<T: Clone + Send + Sync + 'static>(&self) -> Result<T, MissingResource> {
        self.get().ok_or(MissingResource(type_name::<T>()))
    }
}

/// A service asked for a resource the process did not provide.
#[derive(Debug, thiserror::Error)]
#[error("no shared resource of type {0} was provided")]
pub struct MissingResource(pub &'static str);

/// Whether rate limits apply in this process (`rate_limit.enabled`):
/// services that limit something of their own honour it, so one switch
/// turns every limit off for a load test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimiting {
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_type() {
        let mut resources = Resources::new();
        resources.insert(RateLimiting { enabled: false });
        resources.insert(Arc::new(String::from("shared")));
        assert_eq!(
            resources.get::<RateLimiting>(),
            Some(RateLimiting { enabled: false })
        );
        assert_eq!(
            resources.require::<Arc<String>>().unwrap().as_str(),
            "shared"
        );
        let missing = resources.require::<u32>().unwrap_err();
        assert_eq!(
            missing.to_string(),
            "no shared resource of type u32 was provided"
        );
    }
}
