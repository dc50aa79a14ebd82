//! Templates: Handlebars, strict. A template is compiled when it is
//! written (a syntax error is a 422 naming `subject`, `body` or `html`) and
//! rendered when a notification is accepted, so a variable missing from
//! `data` is a 422 naming it rather than a dead letter later; what is
//! queued is the rendered text, so editing a template changes the
//! notifications accepted after the edit, not those already queued.
//!
//! Text parts (subject, body) are rendered without HTML escaping (an SMS
//! or a plain-text email must show `&` as `&`); the `html` part escapes
//! what it interpolates, as Handlebars does by default.

use handlebars::Handlebars;
use serde_json::{Map, Value};

use super::model::{Channel, TemplateInput, TemplateName};
use crate::FieldError;

/// What a notification says once rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
}

/// The two strict registries rendering is done with.
pub struct Renderer {
    text: Handlebars<'static>,
    html: Handlebars<'static>,
}

impl Default for Renderer {
    fn default() -> Self {
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        Self { text, html }
    }
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Renderer")
    }
}

/// Checks that each part of a template compiles; each problem names its field.
pub fn check(input: &TemplateInput) -> Result<(), Vec<FieldError>> {
    let parts = [
        ("subject", input.subject.as_deref()),
        ("body", Some(input.body.as_str())),
        ("html", input.html.as_deref()),
    ];
    let errors: Vec<FieldError> = parts
        .into_iter()
        .filter_map(|(field, source)| {
            let err = handlebars::Template::compile(source?).err()?;
            Some(FieldError::new(
                field,
                format!(
                    "does not compile as Handlebars: {}",
                    first_line(&err.to_string())
                ),
            ))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

impl Renderer {
    /// Renders a stored template's parts with `data`. A variable the
    /// template uses and `data` lacks is a field error on `data.<name>`.
    pub fn render(
        &self,
        subject: Option<&str>,
        body: &str,
        html: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Rendered, FieldError> {
        let data = Value::Object(data.clone());
        let text = |source: &str| render_one(&self.text, source, &data);
        Ok(Rendered {
            subject: subject.map(text).transpose()?,
            body: text(body)?,
            html: html
                .map(|source| render_one(&self.html, source, &data))
                .transpose()?,
        })
    }
}

fn render_one(registry: &Handlebars<'_>, source: &str, data: &Value) -> Result<String, FieldError> {
    registry
        .render_template(source, data)
        .map_err(|err| match missing_variable(&err) {
            Some(path) => FieldError::new(
                format!("data.{path}"),
                "is used by the template and missing from data",
            ),
            None => FieldError::new(
                "data",
                format!(
                    "cannot render the template: {}",
                    first_line(&err.to_string())
                ),
            ),
        })
}

/// The variable a strict render found missing, if that is what failed.
fn missing_variable(err: &handlebars::RenderError) -> Option<String> {
    match err.reason() {
        handlebars::RenderErrorReason::MissingVariable(Some(path)) => Some(path.clone()),
        _ => None,
    }
}

/// A default template, created at first start.
pub struct DefaultTemplate {
    pub name: &'static str,
    pub channel: Channel,
    pub subject: &'static str,
    pub body: &'static str,
}

/// The templates the default event mapping uses. Each is created once, at
/// the first start that finds it was never created (an admin's edit or
/// deletion stands).
pub const DEFAULTS: &[DefaultTemplate] = &[
    DefaultTemplate {
        name: "welcome",
        channel: Channel::Email,
        subject: "Welcome, {{name}}",
        body: "Hello {{name}},\n\nyour account {{email}} is ready.\n",
    },
    DefaultTemplate {
        name: "invoice_created",
        channel: Channel::Email,
        subject: "Invoice {{number}}",
        body: "Invoice {{number}} for {{amount}} {{currency}} (minor units) is open.\n",
    },
    DefaultTemplate {
        name: "invoice_paid",
        channel: Channel::Email,
        subject: "Invoice {{number}} paid",
        body: "Thank you: invoice {{number}} for {{amount}} {{currency}} (minor units) is paid.\n",
    },
];

impl DefaultTemplate {
    pub fn input(&self) -> TemplateInput {
        TemplateInput {
            name: TemplateName::parse(self.name).unwrap_or_else(|_| unreachable_name(self.name)),
            channel: self.channel,
            subject: Some(self.subject.to_owned()),
            body: self.body.to_owned(),
            html: None,
        }
    }
}

#[cold]
fn unreachable_name(name: &str) -> TemplateName {
    // DEFAULTS are constants checked by a test below.
    panic!("default template name {name} is not a template name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn rendering_is_strict_and_text_is_not_escaped() {
        let r = Renderer::default();
        let out = r
            .render(
                Some("Hi {{name}}"),
                "{{name}} & co",
                Some("<b>{{name}}</b>"),
                &data(json!({"name": "Ann <A&B>"})),
            )
            .unwrap();
        assert_eq!(out.subject.as_deref(), Some("Hi Ann <A&B>"));
        assert_eq!(out.body, "Ann <A&B> & co");
        assert_eq!(out.html.as_deref(), Some("<b>Ann &lt;A&amp;B&gt;</b>"));
        let missing = r
            .render(None, "{{order.number}}", None, &data(json!({})))
            .unwrap_err();
        assert_eq!(missing.field, "data.order.number", "{missing:?}");
    }

    #[test]
    fn a_template_that_does_not_compile_names_its_field() {
        let mut input = DEFAULTS[0].input();
        input.html = Some("{{#if x}}unclosed".into());
        let errors = check(&input).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "html");
    }

    #[test]
    fn the_defaults_compile_and_render_their_events() {
        let r = Renderer::default();
        for default in DEFAULTS {
            let input = default.input();
            check(&input).unwrap();
            let sample = data(json!({
                "name": "Ann", "email": "ann@example.com", "number": "INV-1",
                "amount": 100, "currency": "USD"
            }));
            r.render(input.subject.as_deref(), &input.body, None, &sample)
                .unwrap();
        }
    }
}
