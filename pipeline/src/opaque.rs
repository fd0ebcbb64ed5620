//! Opaque envelope bytes (ciphertext, wrapped key, signature) as the router carries them: their
//! canonical base64 text, checked once at the edge and never decoded for use.
//!
//! ProtoJSON writes bytes as base64 and accepts the standard or URL-safe alphabet, padded or
//! not. The router keeps the canonical spelling (standard alphabet, padded), which is what
//! clients almost always send: such text is only checked, in place, and kept as it is. Any
//! other spelling is decoded and written again canonically.

use std::fmt;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

/// Standard alphabet, padding optional (ProtoJSON parsers accept both).
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// URL-safe alphabet, padding optional (ProtoJSON parsers accept it too).
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Base64 characters checked per step (a multiple of 4): decoded into a buffer on the stack.
const CHECK_CHUNK: usize = 1024;

/// Bytes the router carries without reading them, held as canonical base64 text.
#[derive(Clone, PartialEq, Eq)]
pub struct Opaque(String);

/// Why a text is not base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotBase64;

impl Opaque {
    /// Checks that `text` is base64 in any spelling ProtoJSON accepts and keeps it canonical.
    pub fn from_base64(text: &str) -> Result<Self, NotBase64> {
        if is_canonical(text) {
            return Ok(Self(text.to_owned()));
        }
        let bytes = STANDARD_LENIENT
            .decode(text)
            .or_else(|_| URL_SAFE_LENIENT.decode(text))
            .map_err(|_| NotBase64)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Holds `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(STANDARD.encode(bytes))
    }

    /// The canonical base64 text (standard alphabet, padded).
    pub fn as_base64(&self) -> &str {
        &self.0
    }

    /// The bytes, decoded (tests and tools; the router itself never needs them).
    pub fn to_bytes(&self) -> Vec<u8> {
        STANDARD.decode(&self.0).unwrap_or_default()
    }

    /// How many bytes it holds.
    pub fn len(&self) -> usize {
        let text = self.0.as_bytes();
        let padding = text.iter().rev().take_while(|&&b| b == b'=').count();
        (text.len() / 4 * 3).saturating_sub(padding)
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Opaque {
    /// Shows the size only, never the bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opaque({} bytes)", self.len())
    }
}

/// Whether `text` is canonical base64 (standard alphabet, padded, no stray bits), checked in
/// chunks decoded into a stack buffer: no allocation.
fn is_canonical(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return false;
    }
    // Padding may only end the text; chunks are checked on their own, so a chunk must not
    // end in padding that the whole text has in its middle.
    if bytes[..bytes.len() - 2].contains(&b'=') {
        return false;
    }
    let mut decoded = [0u8; CHECK_CHUNK / 4 * 3];
    bytes
        .chunks(CHECK_CHUNK)
        .all(|chunk| STANDARD.decode_slice(chunk, &mut decoded).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use proptest::prelude::*;

    /// What the router accepted before it kept base64 text: either lenient alphabet.
    fn lenient(text: &str) -> Option<Vec<u8>> {
        STANDARD_LENIENT
            .decode(text)
            .or_else(|_| URL_SAFE_LENIENT.decode(text))
            .ok()
    }

    #[test]
    fn canonical_text_is_kept_as_it_is() {
        let opaque = Opaque::from_base64("aGk=").unwrap();
        assert_eq!(opaque.as_base64(), "aGk=");
        assert_eq!(opaque.to_bytes(), b"hi");
        assert_eq!(opaque.len(), 2);
    }

    #[test]
    fn other_spellings_become_canonical() {
        assert_eq!(Opaque::from_base64("aGk").unwrap().as_base64(), "aGk=");
        assert_eq!(Opaque::from_base64("-_8").unwrap().as_base64(), "+/8=");
        assert_eq!(Opaque::from_base64("-_8=").unwrap().as_base64(), "+/8=");
    }

    #[test]
    fn padding_inside_the_text_is_refused_even_at_a_chunk_edge() {
        let mut text = "A".repeat(CHECK_CHUNK - 4);
        text.push_str("AA==");
        text.push_str("AAAA");
        assert_eq!(Opaque::from_base64(&text), Err(NotBase64));
        assert!(lenient(&text).is_none());
    }

    #[test]
    fn non_base64_is_refused() {
        for bad in ["!!", "a", "aGk==", "aG=k", "a b=", "===="] {
            assert_eq!(Opaque::from_base64(bad), Err(NotBase64), "{bad:?}");
        }
    }

    #[test]
    fn debug_shows_the_size_only() {
        let shown = format!("{:?}", Opaque::from_base64("c2VjcmV0").unwrap());
        assert_eq!(shown, "Opaque(6 bytes)");
    }

    proptest! {
        #[test]
        fn every_spelling_of_the_same_bytes_is_held_alike(
            bytes in proptest::collection::vec(any::<u8>(), 1..3000),
        ) {
            let canonical = STANDARD.encode(&bytes);
            for text in [
                canonical.clone(),
                STANDARD_NO_PAD.encode(&bytes),
                URL_SAFE.encode(&bytes),
                URL_SAFE_NO_PAD.encode(&bytes),
            ] {
                let opaque = Opaque::from_base64(&text).unwrap();
                prop_assert_eq!(opaque.as_base64(), canonical.as_str());
                prop_assert_eq!(opaque.len(), bytes.len());
                prop_assert_eq!(opaque.to_bytes(), bytes.clone());
            }
        }

        #[test]
        fn accepts_exactly_what_the_lenient_decoders_accept(
            bytes in proptest::collection::vec(any::<u8>(), 1..1600),
            at in any::<prop::sample::Index>(),
            with in prop::sample::select(b"AZaz09+/=-_ !".to_vec()),
            cut in 0usize..3,
        ) {
            // A valid text of one or more chunks with one character changed and maybe cut short.
            let mut text = STANDARD.encode(&bytes).into_bytes();
            let index = at.index(text.len());
            text[index] = with;
            text.truncate(text.len() - cut.min(text.len() - 1));
            let text = String::from_utf8(text).unwrap();
            let ours = Opaque::from_base64(&text).ok().map(|o| o.to_bytes());
            prop_assert_eq!(ours, lenient(&text), "{}", text);
        }
    }
}
