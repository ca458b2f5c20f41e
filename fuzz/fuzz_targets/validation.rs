//! Validation's two roads (src/validation.rs) on the same bytes: the direct read of a well-formed body, with
//! its fall-back, must give what the `serde_json::Value` road gives, for any bytes and both strictness modes.

#![no_main]

use applicant_validator::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    for strict in [false, true] {
        assert_eq!(
            fuzzing::validate(body, strict),
            fuzzing::validate_generic(body, strict),
            "strict: {strict}, body: {:?}",
            String::from_utf8_lossy(body)
        );
    }
});
