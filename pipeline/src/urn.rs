//! User URNs: `urn:<namespace>:<type>:<id>`, the identity of senders and recipients.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::EnvelopeError;

/// Namespace and type given to a bare id (`bob` becomes `urn:sm:user:bob`).
const DEFAULT_PREFIX: &str = "urn:sm:user:";

/// Longest URN accepted, in bytes; keeps keys and topics bounded.
pub const MAX_URN_LEN: usize = 256;

/// A validated user URN: exactly four non-empty `:`-separated parts, the first being `urn`,
/// with no `+`, `#`, `/` or whitespace (they would break MQTT topics and store keys).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserUrn(Arc<str>);

impl UserUrn {
    /// Parses `input`, upgrading a bare id (no `:`) to `urn:sm:user:<id>`.
    pub fn parse(input: &str) -> Result<Self, EnvelopeError> {
        if input.is_empty() {
            return Err(EnvelopeError::InvalidUrn("empty".into()));
        }
        let full = if input.contains(':') {
            input.to_owned()
        } else {
            format!("{DEFAULT_PREFIX}{input}")
        };
        if full.len() > MAX_URN_LEN {
            return Err(EnvelopeError::InvalidUrn(format!(
                "longer than {MAX_URN_LEN} bytes"
            )));
        }
        if let Some(bad) = full
            .chars()
            .find(|c| matches!(c, '+' | '#' | '/') || c.is_whitespace() || c.is_control())
        {
            return Err(EnvelopeError::InvalidUrn(format!(
                "contains forbidden character {bad:?}"
            )));
        }
        let parts: Vec<&str> = full.split(':').collect();
        if parts.len() != 4 || parts.iter().any(|p| p.is_empty()) {
            return Err(EnvelopeError::InvalidUrn(
                "expected urn:<namespace>:<type>:<id> with four non-empty parts".into(),
            ));
        }
        if parts[0] != "urn" {
            return Err(EnvelopeError::InvalidUrn("must start with \"urn:\"".into()));
        }
        Ok(Self(full.into()))
    }

    /// The URN as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserUrn {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for UserUrn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserUrn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserUrn({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bare_id_is_upgraded() {
        assert_eq!(UserUrn::parse("bob").unwrap().as_str(), "urn:sm:user:bob");
    }

    #[test]
    fn full_urn_is_kept() {
        assert_eq!(
            UserUrn::parse("urn:acme:device:42").unwrap().as_str(),
            "urn:acme:device:42"
        );
    }

    #[test]
    fn malformed_urns_are_rejected() {
        for bad in [
            "",
            "urn:sm:user",
            "urn:sm:user:a:b",
            "urn::user:a",
            "urn:sm:user:",
            "urx:sm:user:a",
            "urn:sm:user:a/b",
            "urn:sm:user:a+b",
            "urn:sm:user:a#b",
            "urn:sm:user:a b",
            "a b",
            "bo/b",
        ] {
            assert!(UserUrn::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn valid_parts_round_trip(ns in "[a-z0-9.-]{1,12}", ty in "[a-z]{1,8}", id in "[A-Za-z0-9._@-]{1,40}") {
            let text = format!("urn:{ns}:{ty}:{id}");
            let urn = UserUrn::parse(&text).unwrap();
            prop_assert_eq!(urn.as_str(), text.as_str());
            prop_assert_eq!(UserUrn::parse(urn.as_str()).unwrap(), urn);
        }

        #[test]
        fn parsed_urns_always_have_four_clean_parts(input in "\\PC{0,80}") {
            if let Ok(urn) = UserUrn::parse(&input) {
                let parts: Vec<&str> = urn.as_str().split(':').collect();
                prop_assert_eq!(parts.len(), 4);
                prop_assert_eq!(parts[0], "urn");
                prop_assert!(parts.iter().all(|p| !p.is_empty()));
                prop_assert!(!urn.as_str().chars().any(|c| matches!(c, '+' | '#' | '/') || c.is_whitespace()));
            }
        }
    }
}
