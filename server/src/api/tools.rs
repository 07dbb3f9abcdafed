//! Function calling: `tools` and `tool_choice` on chat completions.
//!
//! The tools are described to the model in a system-prompt section (Hermes style: the
//! functions as JSON, calls written as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`),
//! since the bundled model's chat template has no tools of its own. With `tool_choice`
//! `"required"` or a named function the reply is forced: the assistant turn is opened with
//! `<tool_call>` and the output is constrained to one call whose arguments follow the
//! function's `parameters` schema. With `"auto"` the model writes freely and the calls are
//! parsed out of its text; `"none"` leaves the tools out.
//!
//! Earlier turns come back in the conversation: assistant messages' `tool_calls` are written
//! as the same tags, `tool` messages as `<tool_response>` blocks.

use serde_json::{json, Value};

use super::errors::ApiError;
use super::validation::compile_schema;
use crate::chat_template::ChatMessage;
use crate::structured::Grammar;

pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";

#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    /// The arguments' JSON schema (`{"type": "object"}` when not given).
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

/// A request's tools, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub defs: Vec<ToolDef>,
    pub choice: ToolChoice,
}

/// How the reply is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    /// Text that may hold `<tool_call>` blocks.
    Auto,
    /// The whole reply is one call's JSON (the opening tag is in the prompt).
    Forced,
}

impl Tools {
    pub fn mode(&self) -> Option<CallMode> {
        match self.choice {
            ToolChoice::None => None,
            ToolChoice::Auto => Some(CallMode::Auto),
            ToolChoice::Required | ToolChoice::Named(_) => Some(CallMode::Forced),
        }
    }

    /// The grammar of a forced call: `{"name": <one of the allowed>, "arguments": <its
    /// parameters>}`. Errors name the tool whose parameters cannot be enforced.
    pub fn forced_grammar(&self) -> Result<Option<Grammar>, ApiError> {
        let allowed: Vec<(usize, &ToolDef)> = match &self.choice {
            ToolChoice::None | ToolChoice::Auto => return Ok(None),
            ToolChoice::Required => self.defs.iter().enumerate().collect(),
            ToolChoice::Named(n) => self
                .defs
                .iter()
                .enumerate()
                .filter(|(_, d)| &d.name == n)
                .collect(),
        };
        let mut alts = Vec::new();
        for (i, d) in allowed {
            let param = format!("tools[{i}].function.parameters");
            // Checked alone first so the error points at this tool's parameters.
            compile_schema(&d.parameters, &param)?;
            alts.push(json!({"type": "object",
                "properties": {"name": {"const": d.name}, "arguments": d.parameters},
                "required": ["name", "arguments"], "additionalProperties": false}));
        }
        let schema = match alts.len() {
            1 => alts.pop().expect("one alternative"),
            _ => json!({"anyOf": alts}),
        };
        compile_schema(&schema, "tools").map(Some)
    }

    /// `messages` with the tools described in the system prompt (the first system message
    /// gets the section appended; without one, a system message is put first).
    pub fn prompt(&self, mut messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
        if self.mode().is_none() {
            return messages;
        }
        let functions: Vec<Value> = self
            .defs
            .iter()
            .map(|d| {
                let mut f = json!({"name": d.name, "parameters": d.parameters});
                if let Some(desc) = &d.description {
                    f["description"] = json!(desc);
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        let mut section = String::from(
            "You can call functions to help with the user's request. The functions, as JSON \
             schemas:\n<tools>\n",
        );
        for f in &functions {
            section.push_str(&f.to_string());
            section.push('\n');
        }
        section.push_str(&format!(
            "</tools>\nTo call a function, reply with a JSON object of its name and arguments \
             inside tags:\n{CALL_OPEN}\n{{\"name\": <function-name>, \"arguments\": \
             <arguments-object>}}\n{CALL_CLOSE}"
        ));
        match messages.iter_mut().find(|m| m.role == "system") {
            Some(sys) => {
                sys.content.push_str("\n\n");
                sys.content.push_str(&section);
            }
            None => messages.insert(0, ChatMessage::new("system", section)),
        }
        messages
    }

    /// Text to open the assistant turn with.
    pub fn reply_prefix(&self) -> Option<String> {
        (self.mode() == Some(CallMode::Forced)).then(|| format!("{CALL_OPEN}\n"))
    }
}

/// Checks `tools` and `tool_choice` (raw JSON, so errors can name the exact field).
pub fn validate(tools: Option<&Value>, choice: Option<&Value>) -> Result<Option<Tools>, ApiError> {
    let defs = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, t)| tool_def(i, t))
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                "tools",
                "tools must be a list of {\"type\": \"function\", \"function\": {...}} objects",
            ))
        }
    };
    for (i, d) in defs.iter().enumerate() {
        if defs[..i].iter().any(|e| e.name == d.name) {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name"),
                format!("two tools are named {:?}; names must be unique", d.name),
            ));
        }
    }
    let choice = match choice {
        None | Some(Value::Null) => {
            if defs.is_empty() {
                ToolChoice::None
            } else {
                ToolChoice::Auto
            }
        }
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!(
                        "tool_choice is {other:?}; it must be \"none\", \"auto\", \"required\" \
                         or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                    ),
                ))
            }
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"));
            let Some(name) = name else {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!(
                        "tool_choice is {v}; a named choice is {{\"type\": \"function\", \
                         \"function\": {{\"name\": ...}}}}"
                    ),
                ));
            };
            if !defs.iter().any(|d| d.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("tool_choice names the function {name:?}, which is not in tools"),
                ));
            }
            ToolChoice::Named(name.to_owned())
        }
    };
    if defs.is_empty() {
        return match choice {
            ToolChoice::None => Ok(None),
            _ => Err(ApiError::invalid(
                "tool_choice",
                "tool_choice asks for a tool call, but the request has no tools",
            )),
        };
    }
    Ok(Some(Tools { defs, choice }))
}

fn tool_def(i: usize, t: &Value) -> Result<ToolDef, ApiError> {
    let at = |field: &str| format!("tools[{i}]{field}");
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::invalid(
            at(".type"),
            format!(
                "{} must be \"function\" (the only kind of tool)",
                at(".type")
            ),
        ));
    }
    let Some(f) = t.get("function").filter(|f| f.is_object()) else {
        return Err(ApiError::invalid(
            at(".function"),
            format!(
                "{} is missing: {{\"name\", \"description\", \"parameters\"}}",
                at(".function")
            ),
        ));
    };
    let name = f.get("name").and_then(Value::as_str).unwrap_or("");
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(ApiError::invalid(
            at(".function.name"),
            format!(
                "{} must be 1 to 64 letters, digits, underscores or dashes",
                at(".function.name")
            ),
        ));
    }
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object"}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                at(".function.parameters"),
                format!(
                    "{} must be a JSON schema object",
                    at(".function.parameters")
                ),
            ))
        }
    };
    Ok(ToolDef {
        name: name.to_owned(),
        description: f
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        parameters,
    })
}

/// One call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments object as JSON text.
    pub arguments: String,
}

/// A call's JSON (`{"name", "arguments"}`), or `None` when it is not one.
pub fn parse_call(json_text: &str) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(json_text.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_owned();
    let arguments = match v.get("arguments") {
        None | Some(Value::Null) => "{}".to_owned(),
        // Some models write the arguments as a string of JSON.
        Some(Value::String(s)) if serde_json::from_str::<Value>(s).is_ok() => s.clone(),
        Some(a) => a.to_string(),
    };
    Some(ToolCall {
        id: format!("call_{}", uuid::Uuid::new_v4().simple()),
        name,
        arguments,
    })
}

/// The text outside `<tool_call>` blocks and the calls in them. A block that is not a call
/// (or not closed) stays in the text.
pub fn parse_reply(text: &str) -> (String, Vec<ToolCall>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(CALL_OPEN) {
        let after = &rest[start + CALL_OPEN.len()..];
        let Some(end) = after.find(CALL_CLOSE) else {
            break;
        };
        match parse_call(&after[..end]) {
            Some(call) => {
                content.push_str(&rest[..start]);
                calls.push(call);
            }
            None => content.push_str(&rest[..start + CALL_OPEN.len() + end + CALL_CLOSE.len()]),
        }
        rest = &after[end + CALL_CLOSE.len()..];
    }
    content.push_str(rest);
    let content = if calls.is_empty() {
        content
    } else {
        content.trim().to_owned()
    };
    (content, calls)
}

/// What a stream of reply text turns into.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Content(String),
    Call(ToolCall),
}

/// Splits streamed reply text into content and calls: text that may begin `<tool_call>` is
/// held back until it is known, a call is released once its closing tag arrives.
#[derive(Debug)]
pub struct CallSplitter {
    mode: CallMode,
    buf: String,
}

impl CallSplitter {
    pub fn new(mode: CallMode) -> CallSplitter {
        CallSplitter {
            mode,
            buf: String::new(),
        }
    }

    /// Takes the next text; what can be released now.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        if self.mode == CallMode::Forced {
            return Vec::new();
        }
        let mut out = Vec::new();
        loop {
            match self.buf.find(CALL_OPEN) {
                Some(start) => {
                    let Some(end) = self.buf[start..].find(CALL_CLOSE) else {
                        if start > 0 {
                            out.push(Piece::Content(self.buf[..start].to_owned()));
                            self.buf.drain(..start);
                        }
                        return out;
                    };
                    let end = start + end;
                    let inner = &self.buf[start + CALL_OPEN.len()..end];
                    match parse_call(inner) {
                        Some(call) => {
                            if start > 0 {
                                out.push(Piece::Content(self.buf[..start].to_owned()));
                            }
                            out.push(Piece::Call(call));
                        }
                        None => out.push(Piece::Content(
                            self.buf[..end + CALL_CLOSE.len()].to_owned(),
                        )),
                    }
                    self.buf.drain(..end + CALL_CLOSE.len());
                }
                None => {
                    // Keep a tail that may be the start of the opening tag.
                    let keep = (1..CALL_OPEN.len())
                        .rev()
                        .find(|&k| self.buf.ends_with(&CALL_OPEN[..k]))
                        .unwrap_or(0);
                    let cut = self.buf.len() - keep;
                    if cut > 0 {
                        out.push(Piece::Content(self.buf[..cut].to_owned()));
                        self.buf.drain(..cut);
                    }
                    return out;
                }
            }
        }
    }

    /// The end of the reply: what is still held back.
    pub fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.buf);
        match self.mode {
            CallMode::Forced => match parse_call(&rest) {
                Some(call) => vec![Piece::Call(call)],
                None => vec![Piece::Content(rest)],
            },
            CallMode::Auto if rest.is_empty() => Vec::new(),
            CallMode::Auto => vec![Piece::Content(rest)],
        }
    }
}

/// An assistant message's `tool_calls` as they appear in the prompt.
pub fn render_calls(calls: &[Value], param: &str) -> Result<String, ApiError> {
    let mut out = String::new();
    for (j, c) in calls.iter().enumerate() {
        let f = c.get("function");
        let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) else {
            return Err(ApiError::invalid(
                format!("{param}[{j}].function.name"),
                format!("{param}[{j}] needs function.name"),
            ));
        };
        let args = match f.and_then(|f| f.get("arguments")) {
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
            Some(v) => v.clone(),
            None => json!({}),
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "{CALL_OPEN}\n{{\"name\": {}, \"arguments\": {args}}}\n{CALL_CLOSE}",
            json!(name)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(choice: Value) -> Result<Option<Tools>, ApiError> {
        let t = json!([{"type": "function", "function": {"name": "get_weather",
            "description": "Weather now", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "now"}}]);
        validate(Some(&t), Some(&choice))
    }

    #[test]
    fn choices_parse_and_bad_ones_name_their_field() {
        assert_eq!(
            tools(json!("auto")).unwrap().unwrap().choice,
            ToolChoice::Auto
        );
        assert_eq!(tools(json!("none")).unwrap().unwrap().mode(), None);
        assert_eq!(
            tools(json!({"type": "function", "function": {"name": "now"}}))
                .unwrap()
                .unwrap()
                .choice,
            ToolChoice::Named("now".into())
        );
        let param = |r: Result<Option<Tools>, ApiError>| match r {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("expected a 400, got {other:?}"),
        };
        assert_eq!(
            param(tools(json!("sometimes"))).as_deref(),
            Some("tool_choice")
        );
        assert_eq!(
            param(tools(
                json!({"type": "function", "function": {"name": "nope"}})
            ))
            .as_deref(),
            Some("tool_choice")
        );
        assert_eq!(
            param(validate(Some(&json!([{"type": "retrieval"}])), None)).as_deref(),
            Some("tools[0].type")
        );
        assert_eq!(
            param(validate(None, Some(&json!("required")))).as_deref(),
            Some("tool_choice")
        );
        let bad = json!([{"type": "function", "function": {"name": "f",
            "parameters": {"type": "object", "properties": {"d": {"format": "date"}}}}}]);
        let t = validate(Some(&bad), Some(&json!("required")))
            .unwrap()
            .unwrap();
        let e = t.forced_grammar().unwrap_err();
        assert_eq!(
            e.body().error.param.as_deref(),
            Some("tools[0].function.parameters")
        );
    }

    #[test]
    fn the_prompt_describes_the_tools() {
        let t = tools(json!("auto")).unwrap().unwrap();
        let m = t.prompt(vec![ChatMessage::new("user", "hi")]);
        assert_eq!(m[0].role, "system");
        assert!(m[0].content.contains("\"get_weather\"") && m[0].content.contains(CALL_OPEN));
        let m = t.prompt(vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "hi"),
        ]);
        assert!(m[0].content.starts_with("Be brief.\n\n") && m.len() == 2);
        assert_eq!(t.reply_prefix(), None);
        let forced = tools(json!("required")).unwrap().unwrap();
        assert_eq!(forced.reply_prefix().as_deref(), Some("<tool_call>\n"));
        assert!(forced.forced_grammar().unwrap().is_some());
    }

    #[test]
    fn replies_are_split_into_content_and_calls() {
        let (content, calls) = parse_reply(
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \
             {\"city\": \"Paris\"}}\n</tool_call>",
        );
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        assert!(calls[0].id.starts_with("call_"));
        let (content, calls) = parse_reply("<tool_call>not json</tool_call> ok");
        assert!(calls.is_empty());
        assert_eq!(content, "<tool_call>not json</tool_call> ok");
    }

    #[test]
    fn the_splitter_holds_back_tags_and_releases_calls() {
        let text = "Sure <tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call> done <";
        // Fed a few bytes at a time, the output is the same as parsing the whole.
        let mut s = CallSplitter::new(CallMode::Auto);
        let mut pieces = Vec::new();
        for chunk in text.as_bytes().chunks(3) {
            pieces.extend(s.push(std::str::from_utf8(chunk).unwrap()));
            if let Some(Piece::Content(c)) = pieces.last() {
                assert!(
                    !c.contains('<'),
                    "a tag's start is never released as content: {c:?}"
                );
            }
        }
        pieces.extend(s.finish());
        let content: String = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Content(c) => Some(c.as_str()),
                Piece::Call(_) => None,
            })
            .collect();
        assert_eq!(content, "Sure  done <");
        let calls: Vec<&ToolCall> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Call(c) => Some(c),
                Piece::Content(_) => None,
            })
            .collect();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "now");

        let mut f = CallSplitter::new(CallMode::Forced);
        assert!(f.push("{\"name\": \"now\", ").is_empty());
        assert!(f.push("\"arguments\": {}}").is_empty());
        assert!(matches!(f.finish().as_slice(), [Piece::Call(c)] if c.name == "now"));
    }

    #[test]
    fn earlier_calls_are_rendered_as_tags() {
        let calls = json!([{"id": "call_1", "type": "function", "function":
            {"name": "now", "arguments": "{\"tz\": \"UTC\"}"}}]);
        let text = render_calls(calls.as_array().unwrap(), "messages[1].tool_calls").unwrap();
        assert_eq!(
            text,
            "<tool_call>\n{\"name\": \"now\", \"arguments\": {\"tz\":\"UTC\"}}\n</tool_call>"
        );
    }
}
