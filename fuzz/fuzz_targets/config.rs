//! Configuration parsing: any TOML text over the defaults, read and checked
//! as at start-up (`Config::from_toml`, the environment left out). A bad
//! file is an error naming the key, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = stageworks::config::Config::from_toml(text, actors::BUILTIN) {
        assert!(!error.to_string().is_empty(), "an error that says nothing");
    }
});
