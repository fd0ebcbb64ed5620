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
    ///
    /// Checks `input` where it lies and allocates only for the URN it returns (once for a
    /// full URN, twice for a bare id, whose prefixed text is built first): ingest and the
    /// transformer parse a recipient per envelope.
    pub fn parse(input: &str) -> Result<Self, EnvelopeError> {
        if input.is_empty() {
            return Err(EnvelopeError::InvalidUrn("empty".into()));
        }
        let bare = !input.contains(':');
        let len = if bare {
            DEFAULT_PREFIX.len() + input.len()
        } else {
            input.len()
        };
        if len > MAX_URN_LEN {
            return Err(EnvelopeError::InvalidUrn(format!(
                "longer than {MAX_URN_LEN} bytes"
            )));
        }
        // The default prefix holds no forbidden character, so checking `input` suffices.
        if let Some(bad) = input
            .chars()
            .find(|c| matches!(c, '+' | '#' | '/') || c.is_whitespace() || c.is_control())
        {
            return Err(EnvelopeError::InvalidUrn(format!(
                "contains forbidden character {bad:?}"
            )));
        }
        if bare {
            // `urn:sm:user:<id>` with a non-empty id free of `:`: four parts, the first `urn`.
            return Ok(Self(format!("{DEFAULT_PREFIX}{input}").into()));
        }
        let (mut parts, mut any_empty) = (0usize, false);
        for part in input.split(':') {
            parts += 1;
            any_empty |= part.is_empty();
        }
        if parts != 4 || any_empty {
            return Err(EnvelopeError::InvalidUrn(
                "expected urn:<namespace>:<type>:<id> with four non-empty parts".into(),
            ));
        }
        if !input.starts_with("urn:") {
            return Err(EnvelopeError::InvalidUrn("must start with \"urn:\"".into()));
        }
        Ok(Self(input.into()))
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

    /// The parser as first written (an owned copy, a `Vec` of parts): the one above must
    /// answer every input as it did, errors included.
    fn reference_parse(input: &str) -> Result<String, String> {
        if input.is_empty() {
            return Err(EnvelopeError::InvalidUrn("empty".into()).to_string());
        }
        let full = if input.contains(':') {
            input.to_owned()
        } else {
            format!("{DEFAULT_PREFIX}{input}")
        };
        if full.len() > MAX_URN_LEN {
            return Err(
                EnvelopeError::InvalidUrn(format!("longer than {MAX_URN_LEN} bytes")).to_string(),
            );
        }
        if let Some(bad) = full
            .chars()
            .find(|c| matches!(c, '+' | '#' | '/') || c.is_whitespace() || c.is_control())
        {
            return Err(
                EnvelopeError::InvalidUrn(format!("contains forbidden character {bad:?}"))
                    .to_string(),
            );
        }
        let parts: Vec<&str> = full.split(':').collect();
        if parts.len() != 4 || parts.iter().any(|p| p.is_empty()) {
            return Err(EnvelopeError::InvalidUrn(
                "expected urn:<namespace>:<type>:<id> with four non-empty parts".into(),
            )
            .to_string());
        }
        if parts[0] != "urn" {
            return Err(EnvelopeError::InvalidUrn("must start with \"urn:\"".into()).to_string());
        }
        Ok(full)
    }

    /// `parse`'s answer in the reference's terms.
    fn answer(input: &str) -> Result<String, String> {
        UserUrn::parse(input)
            .map(|urn| urn.as_str().to_owned())
            .map_err(|err| err.to_string())
    }

    #[test]
    fn answers_as_the_reference_at_the_edges() {
        let long_bare = "b".repeat(MAX_URN_LEN - DEFAULT_PREFIX.len());
        let long_full = format!("urn:a:b:{}", "c".repeat(MAX_URN_LEN - 8));
        for input in [
            "",
            ":",
            ":::",
            "urn:::",
            "urn:a:b:c",
            "URN:a:b:c",
            "urn:a:b:c:",
            "xurn:a:b:c",
            "urn:a:b",
            "urn:a:b:c:d",
            "bob",
            "bo b",
            "bo\u{85}b",
            "b\u{7f}",
            "urn:a:b:\u{2003}",
            long_bare.as_str(),
            &format!("{long_bare}x"),
            long_full.as_str(),
            &format!("{long_full}x"),
            &format!("{long_full}/"),
        ] {
            assert_eq!(answer(input), reference_parse(input), "{input:?}");
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
        fn answers_as_the_reference(input in "(urn|[a-z]{0,3}|[:+#/ \\t\\x7f\\x{85}\\x{2003}é]){0,12}") {
            prop_assert_eq!(answer(&input), reference_parse(&input));
        }

        #[test]
        fn answers_joined_parts_as_the_reference(parts in prop::collection::vec("urn|[a-z]{0,2}|[+# \\t/é]", 0..7)) {
            let input = parts.join(":");
            prop_assert_eq!(answer(&input), reference_parse(&input));
        }

        #[test]
        fn answers_any_text_as_the_reference(input in "\\PC{0,80}|.{0,300}") {
            prop_assert_eq!(answer(&input), reference_parse(&input));
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
