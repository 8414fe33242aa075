//! The Avro single-object decoder on arbitrary bytes: never panics, and whatever decodes
//! re-encodes to a message that decodes to the same value. The attributor's field-rule
//! check (`json::check_*`, run on every decoded input event) never panics either, and
//! every rule it reports has a field and a reason.
#![no_main]

use feedback_events::codec::Decoded;
use feedback_events::json::{self, Limits};
use feedback_events::{decode, Encoded, Event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = decode(data) else {
        // Every failure has its bounded reason code and a message.
        let e = decode(data).unwrap_err();
        assert!(feedback_events::DecodeError::CODES.contains(&e.code()));
        assert!(!e.to_string().is_empty());
        return;
    };
    let limits = Limits::default();
    let checked = match &d {
        Decoded::Interaction(i) => json::check_interaction(i, &limits),
        Decoded::Rating(r) => json::check_rating(r, &limits),
        Decoded::Attributed(a) => match &a.event {
            Event::Interaction(i) => json::check_interaction(i, &limits),
            Event::Rating(r) => json::check_rating(r, &limits),
        },
    };
    if let Err(errors) = checked {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e:?}");
        }
    }
    let again = match &d {
        Decoded::Interaction(i) => i.encode(),
        Decoded::Rating(r) => r.encode(),
        Decoded::Attributed(a) => a.encode(),
    };
    assert_eq!(decode(&again).as_ref(), Ok(&d), "re-encoded value differs");
    // Our encoding is canonical: encoding the same value again gives the same bytes.
    let third = match decode(&again).unwrap() {
        Decoded::Interaction(i) => i.encode(),
        Decoded::Rating(r) => r.encode(),
        Decoded::Attributed(a) => a.encode(),
    };
    assert_eq!(again, third);
});
