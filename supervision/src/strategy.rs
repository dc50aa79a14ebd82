//! OTP restart strategies: which children restart when one of them fails.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which siblings are restarted with a failed child (the OTP meaning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed child.
    #[default]
    OneForOne,
    /// Every child: they depend on each other.
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

impl Strategy {
    /// Indices (in start order) of the children to restart when child `failed`
    /// of `count` fails.
    pub fn affected(self, failed: usize, count: usize) -> Range<usize> {
        debug_assert!(failed < count, "child {failed} of {count}");
        match self {
            Strategy::OneForOne => failed..failed + 1,
            Strategy::OneForAll => 0..count,
            Strategy::RestForOne => failed..count,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a strategy name that is not one of the three.
#[derive(Debug, thiserror::Error)]
#[error("unknown strategy `{0}`: expected one_for_one, one_for_all or rest_for_one")]
pub struct UnknownStrategy(pub String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "one_for_one" => Ok(Strategy::OneForOne),
            "one_for_all" => Ok(Strategy::OneForAll),
            "rest_for_one" => Ok(Strategy::RestForOne),
            other => Err(UnknownStrategy(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_for_one_restarts_only_the_failed_child() {
        assert_eq!(Strategy::OneForOne.affected(1, 3), 1..2);
    }

    #[test]
    fn one_for_all_restarts_every_child() {
        assert_eq!(Strategy::OneForAll.affected(1, 3), 0..3);
    }

    #[test]
    fn rest_for_one_restarts_the_failed_child_and_later_ones() {
        assert_eq!(Strategy::RestForOne.affected(1, 3), 1..3);
        assert_eq!(Strategy::RestForOne.affected(2, 3), 2..3);
    }

    #[test]
    fn names_round_trip() {
        for s in [
            Strategy::OneForOne,
            Strategy::OneForAll,
            Strategy::RestForOne,
        ] {
            assert_eq!(s.as_str().parse::<Strategy>().ok(), Some(s));
        }
        assert!("one_for_some".parse::<Strategy>().is_err());
    }
}
