//! The bearer-token check every authenticated request goes through
//! (`TokenKeys::verify_access`): on arbitrary text, and on a real token with
//! the fuzzer's bytes spliced in. Nothing panics, and a token whose signed
//! part was changed is never accepted with different claims.

#![no_main]

use actors::access::{TokenKeys, TokenSettings};
use actors::api::Role;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixture {
    keys: TokenKeys,
    token: String,
    user_id: uuid::Uuid,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = TokenKeys::new(&[7u8; 64], TokenSettings::default()).expect("keys");
        let user_id = uuid::Uuid::from_u128(1);
        let token = keys
            .issue_access(user_id, Role::User, uuid::Uuid::from_u128(2))
            .expect("issue")
            .token;
        Fixture {
            keys,
            token,
            user_id,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    if let Ok(text) = std::str::from_utf8(data) {
        if text != fixture.token {
            if let Ok(claims) = fixture.keys.verify_access(text) {
                // Only another encoding of the same signed claims can pass.
                assert_eq!(claims.user_id, fixture.user_id, "forged: {text}");
            }
        }
    }
    // The real token with the input written over part of it.
    let Some((&at, patch)) = data.split_first() else {
        return;
    };
    let mut token = fixture.token.clone().into_bytes();
    let start = usize::from(at) % token.len();
    for (slot, byte) in token[start..].iter_mut().zip(patch) {
        *slot = *byte;
    }
    if let Ok(text) = String::from_utf8(token) {
        if let Ok(claims) = fixture.keys.verify_access(&text) {
            assert_eq!(claims.user_id, fixture.user_id, "forged: {text}");
        }
    }
});
