//! Request bodies as JSON objects, parsed strictly: every service reads its
//! body through [`parse_object`] (by way of `ApiRequest::json_object`), so
//! each rule here holds for every route at once.
//!
//! * **A key given twice is refused**, at any depth. serde_json's own `Value`
//!   keeps the last one silently, so `{"email":"a@x.io","email":"b@x.io"}`
//!   registered `b@x.io` while a proxy or log that keeps the first saw
//!   `a@x.io` (RFC 8259 §4 leaves duplicates' meaning to the parser: two
//!   readers can disagree, so the only safe answer is to refuse).
//! * **A number outside f64's range** (`1e400`) is named by its field, so
//!   the caller gets a 422 on `amount`, not a 400 "not JSON": the body is
//!   valid JSON, only the value is unusable. serde_json refuses such a
//!   number while parsing, before any visitor sees it; rather than turn on
//!   its `arbitrary_precision` feature, which would change `Value` for the
//!   whole workspace (features unify across crates), the parser keeps the
//!   path it is at and names it when serde_json reports that error.
//!
//! The parser is a [`Visitor`] building the same `serde_json::Value`s that
//! serde_json would, on serde_json's own deserializer, so its recursion
//! limit and every syntax rule still apply.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not a usable JSON object.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all (a 400).
    #[error("body is not valid JSON: {0}")]
    Malformed(serde_json::Error),
    /// A key given twice in one object (a 400: the body has no one meaning).
    #[error("body is ambiguous: the key \"{path}\" appears more than once")]
    DuplicateKey { path: String },
    /// A number serde_json cannot hold (a 422 on the field).
    #[error("{path} is a number out of range")]
    NumberOutOfRange { path: String },
    /// Valid JSON, but not an object (a 422 on `body`).
    #[error("body must be a JSON object")]
    NotAnObject,
}

/// The message a number out of range is named with in a 422.
pub const OUT_OF_RANGE: &str = "is a number out of range";

/// Parses `body` as a JSON object, refusing duplicate keys at every depth.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, BodyError> {
    let walk = RefCell::new(Walk::default());
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = Strict(&walk)
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match parsed {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(BodyError::NotAnObject),
        Err(err) => {
            let walk = walk.into_inner();
            if walk.duplicate {
                return Err(BodyError::DuplicateKey {
                    path: render(&walk.path),
                });
            }
            if is_number_out_of_range(&err) {
                // A top-level number or array is not an object whatever
                // its numbers hold.
                return match walk.path.first() {
                    Some(Segment::Key(_)) => Err(BodyError::NumberOutOfRange {
                        path: render(&walk.path),
                    }),
                    _ => Err(BodyError::NotAnObject),
                };
            }
            Err(BodyError::Malformed(err))
        }
    }
}

/// serde_json has no public error code; its message for this one has been
/// the same since 1.0 (a unit test below pins it, so an upgrade that
/// changes it fails the build's tests rather than turning 422s into 400s).
fn is_number_out_of_range(err: &serde_json::Error) -> bool {
    err.classify() == serde_json::error::Category::Syntax
        && err.to_string().starts_with("number out of range")
}

#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Where the parser is (the path from the root to the value being read),
/// and whether it stopped on a duplicate key. A failing value leaves its
/// segment in place, so after an error the path names where it happened.
#[derive(Debug, Default)]
struct Walk {
    path: Vec<Segment>,
    duplicate: bool,
}

/// `amount`, `items[2].price`: how a field is named in an error.
fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[derive(Clone, Copy)]
struct Strict<'w>(&'w RefCell<Walk>);

impl Strict<'_> {
    fn enter(self, segment: Segment) {
        self.0.borrow_mut().path.push(segment);
    }

    fn leave(self) {
        self.0.borrow_mut().path.pop();
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json only hands over finite floats; `Value` does the same.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.enter(Segment::Index(items.len()));
            let item = seq.next_element_seed(self)?;
            self.leave();
            match item {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let duplicate = object.contains_key(&key);
            self.enter(Segment::Key(key.clone()));
            if duplicate {
                self.0.borrow_mut().duplicate = true;
                return Err(de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(self)?;
            self.leave();
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Map<String, Value>, BodyError> {
        parse_object(text.as_bytes())
    }

    #[test]
    fn objects_parse_as_serde_json_would() {
        let text = r#"{"a": 1, "b": -2, "c": 1.5, "d": "x", "e": null, "f": [true, {"g": []}],
                       "h": 18446744073709551615, "i": 1e-400}"#;
        let strict = parse(text).expect("valid");
        let plain: Value = serde_json::from_str(text).expect("valid");
        assert_eq!(Value::Object(strict), plain);
    }

    #[test]
    fn duplicate_keys_are_named_at_every_depth() {
        for (text, path) in [
            (r#"{"email": "a@x.io", "email": "b@x.io"}"#, "email"),
            (r#"{"a": 1, "\u0061": 2}"#, "a"),
            (r#"{"o": {"k": 1, "k": 1}}"#, "o.k"),
            (r#"{"l": [{}, {"k": 1, "j": 2, "k": 3}]}"#, "l[1].k"),
        ] {
            match parse(text) {
                Err(BodyError::DuplicateKey { path: found }) => assert_eq!(found, path, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // The same key in two objects is no duplicate.
        assert!(parse(r#"{"a": {"k": 1}, "b": {"k": 1}}"#).is_ok());
    }

    #[test]
    fn numbers_out_of_range_name_their_field() {
        for (text, path) in [
            (r#"{"amount": 1e400}"#, "amount"),
            (r#"{"amount": -1e400}"#, "amount"),
            (r#"{"x": 1, "o": {"n": [0, 1e999]}}"#, "o.n[1]"),
        ] {
            match parse(text) {
                Err(BodyError::NumberOutOfRange { path: found }) => {
                    assert_eq!(found, path, "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let digits = format!(r#"{{"amount": 1{}}}"#, "0".repeat(400));
        assert!(matches!(
            parse(&digits),
            Err(BodyError::NumberOutOfRange { .. })
        ));
        assert!(matches!(parse("1e400"), Err(BodyError::NotAnObject)));
        assert!(matches!(parse("[1e400]"), Err(BodyError::NotAnObject)));
    }

    #[test]
    fn serde_json_still_words_the_out_of_range_error_as_expected() {
        let err = serde_json::from_str::<Value>("1e400").expect_err("out of range");
        assert!(is_number_out_of_range(&err), "{err}");
        let other = serde_json::from_str::<Value>("1e").expect_err("malformed");
        assert!(!is_number_out_of_range(&other), "{other}");
    }

    #[test]
    fn malformed_and_non_object_bodies() {
        for text in ["", "{", r#"{"a": 1,}"#, r#"{"a": 1} x"#, r#"{"a": 1e}"#] {
            assert!(
                matches!(parse(text), Err(BodyError::Malformed(_))),
                "{text}"
            );
        }
        for text in ["[]", "3", "\"x\"", "null"] {
            assert!(matches!(parse(text), Err(BodyError::NotAnObject)), "{text}");
        }
        assert_eq!(parse(" {} ").expect("valid"), Map::new());
    }

    #[test]
    fn serde_json_nesting_limit_still_applies() {
        let deep = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        assert!(matches!(parse(&deep), Err(BodyError::Malformed(_))));
        let fine = format!("{}1{}", r#"{"a":"#.repeat(100), "}".repeat(100));
        assert!(parse(&fine).is_ok());
    }
}
