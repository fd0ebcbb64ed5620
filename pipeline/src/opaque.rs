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

/// Bytes checked per block by [`in_alphabet`].
const ALPHABET_BLOCK: usize = 64;

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

/// Whether `text` is canonical base64: the standard alphabet, padded to a multiple of four,
/// with `=` only at its end and no stray bits in the last character before it. This is what
/// `STANDARD.decode` accepts, checked without decoding: one pass of range checks that the
/// compiler turns into vector instructions, where the decoder takes ~8 instructions a byte.
fn is_canonical(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return false;
    }
    let padding = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if padding > 2 {
        return false;
    }
    let (body, last) = match bytes.split_last_chunk::<4>() {
        Some((body, last)) => (body, &last[..4 - padding]),
        None => return false,
    };
    if !in_alphabet(body) || !in_alphabet(last) {
        return false;
    }
    // The bits a padded quantum leaves over in its last character must be zero.
    let stray_mask = match padding {
        2 => 0b1111,
        1 => 0b11,
        _ => 0,
    };
    last.last().is_some_and(|&b| sextet(b) & stray_mask == 0)
}

/// Whether every byte is in the standard base64 alphabet (`A-Z a-z 0-9 + /`). Checked in
/// blocks without an early exit inside one, so each block compiles to vector compares.
fn in_alphabet(bytes: &[u8]) -> bool {
    bytes.chunks(ALPHABET_BLOCK).all(|block| {
        block.iter().fold(true, |ok, &b| {
            ok & ((b.wrapping_sub(b'A') < 26)
                | (b.wrapping_sub(b'a') < 26)
                | (b.wrapping_sub(b'0') < 10)
                | (b == b'+')
                | (b == b'/'))
        })
    })
}

/// The six-bit value of a standard base64 character (one already checked to be in the alphabet).
fn sextet(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        _ => 63,
    }
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
    fn padding_inside_the_text_is_refused_even_at_a_block_edge() {
        let mut text = "A".repeat(ALPHABET_BLOCK - 4);
        text.push_str("AA==");
        text.push_str("AAAA");
        assert_eq!(Opaque::from_base64(&text), Err(NotBase64));
        assert!(lenient(&text).is_none());
    }

    #[test]
    fn stray_bits_before_padding_are_not_canonical() {
        for good in ["QQ==", "QUE=", "QUFB", "+/+/", "AA=="] {
            assert!(is_canonical(good), "{good:?}");
        }
        for bad in [
            "QR==",
            "QUF=",
            "QUE",
            "QQ=",
            "A===",
            "====",
            "QQ==QQ==",
            "Q\u{e9}==",
        ] {
            assert!(!is_canonical(bad), "{bad:?}");
        }
    }

    #[test]
    fn non_base64_is_refused() {
        for bad in ["!!", "a", "aGk==", "aG=k", "a b=", "====", "aGl=", "QR=="] {
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
        fn canonical_is_exactly_what_the_strict_decoder_accepts(
            bytes in proptest::collection::vec(any::<u8>(), 1..400),
            at in any::<prop::sample::Index>(),
            with in prop::sample::select(b"AZaz09+/=-_ !\x80".to_vec()),
            cut in 0usize..4,
            change in any::<bool>(),
            near_end in any::<bool>(),
        ) {
            // A canonical text, maybe with one character changed (often one of the last
            // few, where padding and stray bits are) and maybe cut short.
            let mut text = STANDARD.encode(&bytes).into_bytes();
            if change {
                let index = if near_end {
                    text.len() - 1 - at.index(4.min(text.len()))
                } else {
                    at.index(text.len())
                };
                text[index] = with;
            }
            text.truncate(text.len() - cut.min(text.len() - 1));
            let text = String::from_utf8_lossy(&text).into_owned();
            prop_assert_eq!(is_canonical(&text), STANDARD.decode(&text).is_ok(), "{}", text);
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
