//! Chat templates (Jinja, from a `tokenizer_config.json` or GGUF `tokenizer.chat_template`)
//! rendered with minijinja the way transformers' `apply_chat_template` renders them:
//! `trim_blocks` and `lstrip_blocks` on, a single trailing newline of the template dropped,
//! Python string and dict methods (`.strip()`, `.startswith()`, `.items()`, ...), the
//! `raise_exception`, `strftime_now` and `tojson` helpers, loop controls, and the variables
//! `messages`, `add_generation_prompt`, `bos_token` and `eos_token`.

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with its line.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(source))
            .map_err(|e| Error::ChatTemplate(format!("the template does not compile: {e:#}")))?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The template in `tokenizer.chat_template`, if the file has one; `bos_token` and
    /// `eos_token` are the texts of the tokenizer's BOS and EOS tokens.
    pub fn from_gguf(g: &crate::gguf::GgufFile, tok: &Tokenizer) -> Result<Option<ChatTemplate>> {
        let Some(source) = g.opt_str("tokenizer.chat_template")? else {
            return Ok(None);
        };
        let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or_default();
        ChatTemplate::new(source, &text(tok.bos_id()), &text(tok.eos_id()))
            .map(Some)
            .map_err(|e| Error::ChatTemplate(format!("GGUF key tokenizer.chat_template: {e}")))
    }

    /// The template in a `tokenizer_config.json`'s `chat_template` field: a string, or a list
    /// of `{name, template}` of which the one named `default` (else the first) is used.
    /// `bos_token` and `eos_token` come from the same file (a string or `{content: ...}`).
    pub fn from_tokenizer_config(cfg: &serde_json::Value) -> Result<Option<ChatTemplate>> {
        let source = match cfg.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => {
                let named = |want: &str| {
                    list.iter()
                        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(want))
                };
                let chosen = named("default").or_else(|| list.first()).ok_or_else(|| {
                    Error::ChatTemplate(
                        "tokenizer_config.json: chat_template is an empty list".into(),
                    )
                })?;
                chosen
                    .get("template")
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| {
                        Error::ChatTemplate(
                            "tokenizer_config.json: chat_template list entries need a string \
                             \"template\" field"
                                .into(),
                        )
                    })?
                    .to_owned()
            }
            Some(other) => {
                return Err(Error::ChatTemplate(format!(
                    "tokenizer_config.json: chat_template must be a string or a list of \
                     {{name, template}}, found {other}"
                )))
            }
        };
        let token = |field: &str| -> String {
            match cfg.get(field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Object(o)) => o
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            }
        };
        ChatTemplate::new(&source, &token("bos_token"), &token("eos_token"))
            .map(Some)
            .map_err(|e| Error::ChatTemplate(format!("tokenizer_config.json chat_template: {e}")))
    }

    /// The template text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; `add_generation_prompt` appends the assistant turn's opening.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        tmpl.render(ctx).map_err(|e| {
            if e.kind() == ErrorKind::InvalidOperation {
                if let Some(msg) = e.detail().and_then(|d| d.strip_prefix(RAISED)) {
                    return Error::ChatTemplate(format!("the template rejected the chat: {msg}"));
                }
            }
            Error::ChatTemplate(format!("rendering failed: {e:#}"))
        })
    }
}

/// Marks errors raised by the template itself.
const RAISED: &str = "raise_exception: ";

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{msg}"),
    ))
}

/// transformers' `{% generation %}` / `{% endgeneration %}` (assistant-mask markers) render
/// their body unchanged; minijinja has no such tag, so they become `{% if true %}` /
/// `{% endif %}` with the same whitespace control.
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (lead, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, trail) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[b.len()..]),
            None => (body, ""),
        };
        match body.trim() {
            "generation" => out.push_str(&format!("{{%{lead} if true {trail}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{lead} endif {trail}%}}")),
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Python's `json.dumps(x, ensure_ascii=False, indent=indent, separators=separators,
/// sort_keys=sort_keys)`, as transformers' `tojson` filter calls it.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => {
            if let Some(s) = v.as_str() {
                Some(s.to_owned())
            } else {
                let n = i64::try_from(v.clone()).map_err(|_| {
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("tojson: indent must be an integer or string, not {v}"),
                    )
                })?;
                Some(" ".repeat(n.max(0) as usize))
            }
        }
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] => (a.to_string(), b.to_string()),
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair (item, key)",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let mut out = String::new();
    let style = JsonStyle {
        indent: indent.as_deref(),
        item_sep: &item_sep,
        key_sep: &key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    write_json(&value, &style, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

struct JsonStyle<'a> {
    indent: Option<&'a str>,
    item_sep: &'a str,
    key_sep: &'a str,
    sort_keys: bool,
}

fn write_json(
    v: &Value,
    style: &JsonStyle<'_>,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), minijinja::Error> {
    use minijinja::value::ValueKind as K;
    let newline = |out: &mut String, depth: usize| {
        if let Some(ind) = style.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    };
    // With an indent, Python strips the trailing space of the item separator.
    let item_sep = if style.indent.is_some() {
        style.item_sep.trim_end()
    } else {
        style.item_sep
    };
    match v.kind() {
        K::Undefined | K::None => out.push_str("null"),
        K::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        K::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                out.push_str(&python_float(f64::try_from(v.clone())?));
            }
        }
        K::String | K::Plain => write_json_str(v.as_str().unwrap_or(&v.to_string()), out),
        K::Seq | K::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(x, style, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        K::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if style.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json_str(&k.to_string(), out);
                out.push_str(style.key_sep);
                write_json(&v.get_item(k)?, style, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        other => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize a value of kind {other:?}"),
            ))
        }
    }
    Ok(())
}

/// Python's float repr: whole floats keep `.0`.
fn python_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        f.to_string()
    }
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `datetime.now().strftime(fmt)` in UTC, for the directives chat templates use.
fn strftime_now(fmt: String) -> std::result::Result<Value, minijinja::Error> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&fmt, secs).map(Value::from)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Civil date from days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn strftime(fmt: &str, unix_secs: i64) -> std::result::Result<String, minijinja::Error> {
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (sod / 3600, sod % 3600 / 60, sod % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let day_of_year = {
        let mut d = day;
        for m in 1..month {
            d += match m {
                2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
        }
        d
    };
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut d = chars.next();
        let no_pad = d == Some('-');
        if no_pad {
            d = chars.next();
        }
        let num = |v: i64, width: usize| {
            if no_pad {
                v.to_string()
            } else {
                format!("{v:0width$}")
            }
        };
        match d {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&num(year.rem_euclid(100), 2)),
            Some('m') => out.push_str(&num(month as i64, 2)),
            Some('d') => out.push_str(&num(day as i64, 2)),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('H') => out.push_str(&num(hour, 2)),
            Some('I') => out.push_str(&num(hour12, 2)),
            Some('M') => out.push_str(&num(minute, 2)),
            Some('S') => out.push_str(&num(second, 2)),
            Some('j') => out.push_str(&num(day_of_year as i64, 3)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('b') | Some('h') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('F') => out.push_str(&format!("{year}-{month:02}-{day:02}")),
            Some('T') => out.push_str(&format!("{hour:02}:{minute:02}:{second:02}")),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('%') => out.push('%'),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.map(String::from).unwrap_or_default()
                    ),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
        pairs
            .iter()
            .map(|(r, c)| ChatMessage::new(*r, *c))
            .collect()
    }

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
             {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
            "",
            "",
        )
        .unwrap();
        let m = msgs(&[("user", "Hi")]);
        assert_eq!(
            t.render(&m, true).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&m, false).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn blocks_are_trimmed_like_transformers() {
        // trim_blocks drops the newline after a block tag; lstrip_blocks drops the indentation
        // before one; the template's single trailing newline is dropped.
        let t = ChatTemplate::new(
            "{{ bos_token }}\n{% for m in messages %}\n    {% if m.role == 'user' %}\nU: {{ m.content }}\n    {% endif %}\n{% endfor %}\n",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            t.render(&msgs(&[("user", "a"), ("assistant", "b")]), false)
                .unwrap(),
            "<s>\nU: a\n"
        );
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m.content.strip() }}|{{ m.role.upper() }}|{{ m.content.startswith('  he') }};{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&msgs(&[("user", "  hello  ")]), false).unwrap(),
            "hello|USER|True;"
        );
    }

    #[test]
    fn raise_exception_carries_its_message() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'system' %}{{ raise_exception('System message first!') }}{% endif %}",
            "",
            "",
        )
        .unwrap();
        let e = t
            .render(&msgs(&[("user", "x")]), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("System message first!"), "{e}");
        assert!(t
            .render(&msgs(&[("system", "x")]), false)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn syntax_errors_say_so() {
        let e = ChatTemplate::new("{% for m in messages %}", "", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not compile"), "{e}");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ {'b': [1, 2.0, none], 'a': 'é\"\n'} | tojson(indent=2) }}|{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&msgs(&[("user", "<x>")]), false).unwrap(),
            "{\"role\": \"user\", \"content\": \"<x>\"}|{\n  \"b\": [\n    1,\n    2.0,\n    null\n  ],\n  \"a\": \"é\\\"\\n\"\n}|{\"a\": 2, \"b\": 1}"
        );
    }

    #[test]
    fn loop_controls_and_namespace_work() {
        let t = ChatTemplate::new(
            "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&msgs(&[("user", "1"), ("user", "2"), ("user", "3")]), false)
                .unwrap(),
            "2"
        );
    }

    #[test]
    fn generation_tags_render_their_body() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{%- generation -%} {{ m.content }} {%- endgeneration %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&msgs(&[("assistant", "ok")]), false).unwrap(),
            "ok"
        );
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %a %A %b %B %j %-d %I%p %%", t).unwrap(),
            "2024-02-29 13:05:09 Thu Thursday Feb February 060 29 01PM %"
        );
        assert_eq!(strftime("%d %b %Y", 0).unwrap(), "01 Jan 1970");
        assert!(strftime("%Q", 0).is_err());
        let now = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
        assert_eq!(now.render(&[], false).unwrap().len(), 4);
    }

    #[test]
    fn tokenizer_config_forms() {
        let cfg = serde_json::json!({
            "bos_token": {"content": "<s>"},
            "eos_token": "</s>",
            "chat_template": [
                {"name": "tool_use", "template": "tools"},
                {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}
            ]
        });
        let t = ChatTemplate::from_tokenizer_config(&cfg).unwrap().unwrap();
        assert_eq!(
            t.render(&msgs(&[("user", "x")]), false).unwrap(),
            "<s>x</s>"
        );
        let plain = serde_json::json!({"chat_template": "{{ messages | length }}"});
        let t = ChatTemplate::from_tokenizer_config(&plain)
            .unwrap()
            .unwrap();
        assert_eq!(t.render(&msgs(&[("user", "x")]), false).unwrap(), "1");
        assert!(ChatTemplate::from_tokenizer_config(&serde_json::json!({}))
            .unwrap()
            .is_none());
        let bad = serde_json::json!({"chat_template": 5});
        assert!(ChatTemplate::from_tokenizer_config(&bad).is_err());
    }
}
