//! Fuzzes the envelope parser: any bytes either fail cleanly or yield an envelope whose
//! canonical JSON parses back to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::clock::UuidV7Ids;
use pipeline::{Envelope, EnvelopeDraft};

fuzz_target!(|data: &[u8]| {
    if let Ok(draft) = EnvelopeDraft::from_json(data) {
        let envelope = draft.into_envelope(&UuidV7Ids);
        let json = envelope.to_json();
        let back = Envelope::from_json(json.as_bytes()).expect("canonical JSON must parse");
        assert_eq!(back, envelope);
    }
});
