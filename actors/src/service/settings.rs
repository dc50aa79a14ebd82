//! A service's own settings: the keys of its `[services.<name>]` section
//! beyond the supervision keys every service has (workers, timeouts,
//! restart policy — read by the binary). The service declares them as a
//! typed struct ([`ServiceSettings`]); this module turns a section into that
//! struct, naming every problem by its full key (`services.billing.invoice_prefix`).

use figment::error::Kind;
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a service's settings struct is: read from its section over its
/// `Default` (so every key is optional), checked by [`ServiceSettings::check`],
/// shown by `check-config`.
///
/// Derive `Serialize`, `Deserialize` (with `#[serde(deny_unknown_fields,
/// default)]`, so a misspelt key is an error) and `Default`; prefer typed
/// fields (a `Currency`, a `Duration` with `humantime_serde`) over strings
/// checked later: a field that does not parse is reported with its key.
pub trait ServiceSettings:
    Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static
{
    /// Checks what types alone cannot (one field against another). Each
    /// problem names its key within the section.
    fn check(&self) -> Vec<SettingProblem> {
        Vec::new()
    }

    /// The settings as `check-config` shows them: credentials masked.
    fn masked(&self) -> Self {
        self.clone()
    }

    /// Keys these settings used to have elsewhere in the configuration
    /// (`billing.invoice_prefix` → `invoice_prefix`): a configuration that
    /// still sets one is refused with a message naming the new key, rather
    /// than silently ignored.
    const MOVED: &'static [Moved] = &[];
}

/// A service without settings of its own.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

impl ServiceSettings for NoSettings {}

/// A key that moved into a service's section.
#[derive(Clone, Copy, Debug)]
pub struct Moved {
    /// The old key, from the configuration's root (`billing.invoice_prefix`).
    pub from: &'static str,
    /// Its key within the service's section (`invoice_prefix`).
    pub to: &'static str,
}

/// One thing wrong with a service's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingProblem {
    /// The key within the section (`invoice_prefix`, `events.user.registered`).
    pub key: std::borrow::Cow<'static, str>,
    pub message: String,
}

impl SettingProblem {
    pub fn new(key: impl Into<std::borrow::Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Reads a service's settings from its section (the keys left once the
/// supervision keys are taken out): defaults, then the section, then
/// [`ServiceSettings::check`]. Every problem is one line naming its full key.
pub fn parse<S: ServiceSettings>(service: &str, section: &Dict) -> Result<S, Vec<String>> {
    let settings: S = Figment::from(Serialized::defaults(S::default()))
        .merge(Serialized::defaults(section))
        .extract()
        .map_err(|err| {
            err.into_iter()
                .map(|e| describe::<S>(service, &e))
                .collect::<Vec<_>>()
        })?;
    let problems = settings.check();
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems
            .into_iter()
            .map(|p| format!("services.{service}.{}: {}", p.key, p.message))
            .collect())
    }
}

/// The settings as `check-config` shows them (every key, defaults included).
pub fn shown<S: ServiceSettings>(settings: &S) -> Dict {
    match Value::serialize(settings.masked()) {
        Ok(Value::Dict(_, dict)) => dict,
        _ => Dict::new(),
    }
}

fn describe<S: ServiceSettings>(service: &str, err: &figment::Error) -> String {
    let path = err.path.join(".");
    match &err.kind {
        Kind::UnknownField(field, _) => {
            let known = shown(&S::default()).into_keys().collect::<Vec<_>>();
            let known = if known.is_empty() {
                "none besides the supervision keys".to_owned()
            } else {
                known.join(", ")
            };
            // figment's path may or may not end with the field already.
            let key = match err.path.last() {
                Some(last) if last == field => path,
                Some(_) => format!("{path}.{field}"),
                None => field.clone(),
            };
            format!("services.{service}.{key}: no such setting (known: {known}, and the supervision keys)")
        }
        kind if path.is_empty() => format!("services.{service}: {kind}"),
        kind => format!("services.{service}.{path}: {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Example {
        prefix: String,
        #[serde(with = "humantime_serde")]
        every: Duration,
    }

    impl Default for Example {
        fn default() -> Self {
            Self {
                prefix: "EX-".into(),
                every: Duration::from_secs(60),
            }
        }
    }

    impl ServiceSettings for Example {
        fn check(&self) -> Vec<SettingProblem> {
            if self.prefix.is_empty() {
                vec![SettingProblem::new("prefix", "must not be empty")]
            } else {
                Vec::new()
            }
        }
    }

    fn section(pairs: &[(&str, Value)]) -> Dict {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn an_empty_section_gives_the_defaults() {
        let settings: Example = parse("example", &Dict::new()).unwrap();
        assert_eq!(settings, Example::default());
    }

    #[test]
    fn keys_override_the_defaults_and_durations_parse() {
        let settings: Example =
            parse("example", &section(&[("every", Value::from("5s"))])).unwrap();
        assert_eq!(settings.every, Duration::from_secs(5));
        assert_eq!(settings.prefix, "EX-");
    }

    #[test]
    fn problems_name_the_full_key() {
        let unknown = parse::<Example>("example", &section(&[("prefx", Value::from("A"))]))
            .unwrap_err()
            .join("\n");
        assert!(
            unknown.starts_with("services.example.prefx: no such setting (known: every, prefix"),
            "{unknown}"
        );
        let mistyped = parse::<Example>("example", &section(&[("every", Value::from(5))]))
            .unwrap_err()
            .join("\n");
        assert!(
            mistyped.starts_with("services.example.every: "),
            "{mistyped}"
        );
        let checked =
            parse::<Example>("example", &section(&[("prefix", Value::from(""))])).unwrap_err();
        assert_eq!(checked, vec!["services.example.prefix: must not be empty"]);
    }

    #[test]
    fn no_settings_refuses_any_key() {
        assert!(parse::<NoSettings>("toy", &Dict::new()).is_ok());
        let err = parse::<NoSettings>("toy", &section(&[("x", Value::from(1))])).unwrap_err();
        assert!(err[0].contains("known: none besides"), "{err:?}");
    }
}
