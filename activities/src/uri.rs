//! URI templates and the percent-encodings the activities need.
//!
//! The DSL supports only RFC 6570 simple string expansion (`{var}`): the variable's value is
//! percent-encoded so that it stays inside one path segment or query value. Baton also accepts
//! reserved expansion (`{+var}`), which keeps the reserved characters (`/`, `?`, `&`...) of the
//! value, for a variable that holds a path or a whole URL; several variables in one expression
//! (`{x,y}`) are joined with commas as RFC 6570 says. The other operators (`#`, `.`, `/`, `;`,
//! `?`, `&`) are rejected rather than expanded wrongly. As the DSL says, a variable name is
//! taken verbatim (`{pet.id}` reads the top-level key `pet.id`), a missing or null variable
//! expands to the empty string, and a variable holding an array or an object is an
//! `expression` error.

use serde_json::Value;

use crate::problem::Problem;

/// Expands `template` with the top-level fields of `arguments`.
pub(crate) fn expand(template: &str, arguments: &Value) -> Result<String, Problem> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| Problem::validation(format!("the URI template '{template}' has an unclosed '{{'")))?;
        out.push_str(&expand_expression(&after[..close], template, arguments)?);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_expression(expression: &str, template: &str, arguments: &Value) -> Result<String, Problem> {
    let (reserved, names) = match expression.strip_prefix('+') {
        Some(names) => (true, names),
        None => (false, expression),
    };
    if let Some(operator) = names.chars().next().filter(|c| "#./;?&=,!@|".contains(*c)) {
        return Err(Problem::validation(format!(
            "the URI template '{template}' uses the operator '{operator}'; only {{var}} and {{+var}} are supported"
        )));
    }
    let mut values = Vec::new();
    for name in names.split(',') {
        if name.is_empty() || name.contains('{') {
            return Err(Problem::validation(format!(
                "the URI template '{template}' has an empty or malformed variable"
            )));
        }
        let text = match arguments.get(name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(Value::Bool(flag)) => flag.to_string(),
            Some(Value::Number(number)) => number.to_string(),
            Some(Value::Array(_) | Value::Object(_)) => {
                return Err(Problem::expression(format!(
                    "the URI template variable '{name}' is an array or an object; only strings, numbers, booleans and null can be substituted"
                )));
            }
        };
        values.push(if reserved { encode_reserved(&text) } else { encode_component(&text) });
    }
    Ok(values.join(","))
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn is_reserved(byte: u8) -> bool {
    matches!(
        byte,
        b':' | b'/'
            | b'?'
            | b'#'
            | b'['
            | b']'
            | b'@'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
    )
}

fn push_escaped(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(byte >> 4)] as char);
    out.push(HEX[usize::from(byte & 0xF)] as char);
}

/// Percent-encodes everything but the unreserved characters (RFC 3986 section 2.3).
pub(crate) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if is_unreserved(byte) {
            out.push(byte as char);
        } else {
            push_escaped(&mut out, byte);
        }
    }
    out
}

/// Percent-encodes everything but the unreserved and reserved characters, keeping `%XX`
/// triplets already in the text (RFC 6570 reserved expansion).
fn encode_reserved(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    for (index, &byte) in bytes.iter().enumerate() {
        let triplet =
            byte == b'%' && bytes.get(index + 1..index + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
        if is_unreserved(byte) || is_reserved(byte) || triplet {
            out.push(byte as char);
        } else {
            push_escaped(&mut out, byte);
        }
    }
    out
}

/// `application/x-www-form-urlencoded`, as HTML forms and OAuth2 token requests use it.
pub(crate) fn form_urlencode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        form_encode_into(&mut out, name);
        out.push('=');
        form_encode_into(&mut out, value);
    }
    out
}

/// One name or value of a form.
pub(crate) fn form_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    form_encode_into(&mut out, text);
    out
}

fn form_encode_into(out: &mut String, text: &str) {
    for &byte in text.as_bytes() {
        match byte {
            b' ' => out.push('+'),
            b'*' | b'-' | b'.' | b'_' => out.push(byte as char),
            _ if byte.is_ascii_alphanumeric() => out.push(byte as char),
            _ => push_escaped(out, byte),
        }
    }
}

/// The text a scalar parameter value stands for in a URI, a header or a form; `None` for
/// arrays and objects, which each caller lays out in its own way.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => Some(number.to_string()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn simple_expansion_encodes_and_missing_is_empty() {
        let args = json!({ "petId": 7, "name": "a b/c", "pet.id": "x", "none": null });
        assert_eq!(expand("https://h/pet/{petId}", &args).expect("expands"), "https://h/pet/7");
        assert_eq!(expand("https://h/{name}", &args).expect("expands"), "https://h/a%20b%2Fc");
        assert_eq!(expand("https://h/{pet.id}/{missing}/{none}", &args).expect("expands"), "https://h/x//");
        assert_eq!(expand("https://h/{petId,name}", &args).expect("expands"), "https://h/7,a%20b%2Fc");
        assert_eq!(expand("https://h/é", &args).expect("expands"), "https://h/é");
    }

    #[test]
    fn reserved_expansion_keeps_reserved_characters() {
        let args = json!({ "path": "a/b?c=d%20e f" });
        assert_eq!(expand("https://h/{+path}", &args).expect("expands"), "https://h/a/b?c=d%20e%20f");
    }

    #[test]
    fn unsupported_forms_and_non_scalars_are_errors() {
        let args = json!({ "list": [1], "q": "x" });
        assert_eq!(expand("https://h/{list}", &args).expect_err("fails").kind, crate::ErrorType::Expression);
        assert_eq!(expand("https://h/{?q}", &args).expect_err("fails").kind, crate::ErrorType::Validation);
        assert_eq!(expand("https://h/{q", &args).expect_err("fails").kind, crate::ErrorType::Validation);
        assert_eq!(expand("https://h/{}", &args).expect_err("fails").kind, crate::ErrorType::Validation);
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_urlencode([("a b", "c&d=é"), ("x", "*-._~")]), "a+b=c%26d%3D%C3%A9&x=*-._%7E");
    }
}
