//! Arbitrary `Retry-After` values → `parse_retry_after`.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use llm_proxy::fuzzing::retry_after;

/// 9999-12-31T23:59:59Z: `now` stays a date a clock can show.
const LAST: u64 = 253_402_300_799;

fuzz_target!(|data: &[u8]| {
    // The first 5 bytes pick `now`; the rest is the header value.
    if data.len() < 5 {
        return;
    }
    let (head, value) = data.split_at(5);
    let mut b = [0u8; 8];
    b[..5].copy_from_slice(head);
    let now = UNIX_EPOCH + Duration::from_secs(u64::from_le_bytes(b) % (LAST + 1));
    let Ok(v) = std::str::from_utf8(value) else {
        return; // a header value that is not text never reaches the parser
    };
    let got = retry_after(v, now);
    // delay-seconds = 1*DIGIT (RFC 9110); u64's own parser also takes `+5`.
    let digits = v.trim();
    // Any such value is a wait (past u64 seconds it can only saturate).
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        match digits.parse::<u64>() {
            Ok(n) => assert_eq!(got, Some(Duration::from_secs(n)), "{v:?}"),
            Err(_) => assert!(got.is_some(), "{v:?}"),
        }
    }
});
