//! Every JSON request body decoder: the strict object parser the front-end
//! runs on each body (duplicate keys, number range, depth), then each
//! service's typed parser on what it accepted. None may panic, and a refusal
//! must name what was wrong (every 4xx names its field), as the API promises.

#![no_main]

use actors::error::FieldError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = actors::api::json::parse_object(data) else {
        return;
    };
    let usd = actors::orders::model::Currency::usd();
    named(actors::auth::model::NewUser::parse(&body));
    named(actors::auth::model::Credentials::parse(&body));
    named(actors::auth::model::parse_single_string(
        &body,
        "refresh_token",
    ));
    named(actors::orders::model::NewOrder::parse(&body, &usd));
    named(actors::notifications::model::NewSend::parse(&body));
    named(actors::notifications::model::NewBulk::parse(&body));
    named(actors::notifications::model::TemplateInput::parse(
        &body, None,
    ));
    named(actors::notifications::model::TemplateInput::parse(
        &body,
        Some("welcome"),
    ));
    named(actors::notifications::model::Preferences::parse(&body));
    named(actors::notifications::model::NewSubscription::parse(&body));
    named(actors::audit::model::PostedEntry::parse(&body));
});

/// A refusal lists at least one field error, each naming a field and a reason.
fn named<T>(parsed: Result<T, Vec<FieldError>>) {
    if let Err(errors) = parsed {
        assert!(!errors.is_empty(), "a refusal that names nothing");
        for error in &errors {
            assert!(!error.message.is_empty(), "{error:?} gives no reason");
        }
    }
}
