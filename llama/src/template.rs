//! Rendering a model's own chat template.
//!
//! A GGUF file stores the model's chat template as Jinja source under
//! `tokenizer.chat_template`. [`ChatTemplate`] compiles it once with minijinja and renders it
//! the way Hugging Face transformers' `apply_chat_template` does, so that the prompt is
//! byte-for-byte the one the model was trained on:
//!
//! * the environment uses `trim_blocks` and `lstrip_blocks`, loop controls (`{% break %}`,
//!   `{% continue %}`) and lenient undefined values (like jinja2's default `Undefined`);
//! * the context holds `messages`, `tools` (`none` when there are no tools, so
//!   `{% if tools %}` is false and `tools is not none` works), `documents` (`none`),
//!   `add_generation_prompt`, `bos_token` and `eos_token`;
//! * `messages` are dicts with `role` and `content`; an assistant message that calls tools has
//!   `tool_calls: [{"id"?, "type": "function", "function": {"name", "arguments"}}]` with
//!   `arguments` an object; a tool message has `tool_call_id` and `name` when set
//!   (see [`Message::to_template_json`]);
//! * `tools` are in the OpenAI shape `{"type": "function", "function": {...}}`
//!   (see [`ToolSpec::to_template_json`]);
//! * the functions `raise_exception(msg)` (→ [`TemplateError::Raised`]) and
//!   `strftime_now(format)`, and a `tojson` filter that writes exactly what Python's
//!   `json.dumps(x, ensure_ascii=False)` writes (`", "` and `": "` separators, keys in insertion
//!   order, no HTML escaping; `indent`, `ensure_ascii`, `separators` and `sort_keys` arguments
//!   as in transformers);
//! * Python string, dict and list methods (`.strip()`, `.startswith()`, `.split()`,
//!   `.items()`, `.get()`, ...) through minijinja-contrib's pycompat.
//!
//! ```
//! use jielong_chat::chat::Message;
//! use jielong_llama::template::ChatTemplate;
//!
//! let template = ChatTemplate::chatml();
//! let prompt = template
//!     .render(&[Message::system("Be brief."), Message::user("Hi!")], &[], true)
//!     .unwrap();
//! assert_eq!(
//!     prompt,
//!     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{from_args, Enumerator, Kwargs, Object, ObjectRepr, Rest};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

use jielong_chat::chat::{Message, ToolSpec};
pub use jielong_chat::error::TemplateError;

/// The name the template is registered under; it shows in render error messages.
const TEMPLATE_NAME: &str = "chat_template";

/// How deep `tojson` descends before giving up (guards against self-referencing values).
const MAX_JSON_DEPTH: usize = 512;

/// The source of [`ChatTemplate::chatml`].
const CHATML_SOURCE: &str = r#"{#- Jielong's fallback chat template: ChatML, tools described Hermes-style in the system turn. -#}
{%- set has_system = messages | length > 0 and messages[0].role == 'system' %}
{%- if has_system or tools %}
    {{- '<|im_start|>system\n' }}
    {%- if has_system %}
        {{- messages[0].content }}
    {%- endif %}
    {%- if tools %}
        {%- if has_system %}
            {{- '\n\n' }}
        {%- endif %}
        {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
        {%- for tool in tools %}
            {{- '\n' + tool | tojson }}
        {%- endfor %}
        {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
    {%- endif %}
    {{- '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if not (loop.first and has_system) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content }}
        {%- for tool_call in message.tool_calls %}
            {%- if message.content or not loop.first %}
                {{- '\n' }}
            {%- endif %}
            {{- '<tool_call>\n{"name": "' + tool_call.function.name + '", "arguments": ' + tool_call.function.arguments | tojson + '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

/// A compiled chat template, rendered like Hugging Face transformers' `apply_chat_template`.
///
/// Cheap to clone; `Send + Sync`. See the [module docs](self) for the context it provides.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: Arc<str>,
    bos_token: String,
    eos_token: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles the Jinja `source` of a chat template (as stored in a GGUF's
    /// `tokenizer.chat_template`). `bos_token` and `eos_token` are the texts of the model's
    /// BOS/EOS tokens, which templates may print as `{{ bos_token }}` / `{{ eos_token }}`.
    ///
    /// Fails with [`TemplateError::Syntax`] (with the line) if the source does not parse.
    pub fn new(
        source: impl Into<String>,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, TemplateError> {
        let source: String = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_debug(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson_filter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|err| TemplateError::Syntax {
                line: err.line().unwrap_or(0),
                detail: one_line(
                    err.detail()
                        .map(str::to_owned)
                        .unwrap_or_else(|| err.kind().to_string()),
                ),
            })?;
        Ok(ChatTemplate {
            env,
            source: source.into(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Plain ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), the fallback for models whose
    /// GGUF has no chat template.
    ///
    /// Beyond plain ChatML it describes `tools` in the system turn and writes an assistant's
    /// tool calls as `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`, the way
    /// Qwen 2.5 and Hermes models do; tool results are turns of role `tool`. BOS is empty and
    /// EOS is `<|im_end|>`.
    pub fn chatml() -> Self {
        match Self::new(CHATML_SOURCE, "", "<|im_end|>") {
            Ok(template) => template,
            // The source is a constant that the tests compile.
            Err(err) => unreachable!("the built-in ChatML template does not compile: {err}"),
        }
    }

    /// The Jinja source the template was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The BOS token text given to [`ChatTemplate::new`].
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The EOS token text given to [`ChatTemplate::new`].
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders the conversation `messages`, offering `tools` (none when empty), and, when
    /// `add_generation_prompt` is set, ends with the header of the assistant's next turn.
    pub fn render(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with(
            messages,
            tools,
            add_generation_prompt,
            &serde_json::Map::new(),
        )
    }

    /// Like [`ChatTemplate::render`], with extra template variables, as `apply_chat_template`'s
    /// keyword arguments (e.g. `{"enable_thinking": false}` for Qwen 3). The standard variables
    /// (`messages`, `tools`, `documents`, `add_generation_prompt`, `bos_token`, `eos_token`)
    /// take precedence over extras of the same name.
    pub fn render_with(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let mut ctx: BTreeMap<String, Value> = extra
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect();
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| json_to_value(&m.to_template_json()))
            .collect();
        let tools = if tools.is_empty() {
            Value::from(())
        } else {
            Value::from(
                tools
                    .iter()
                    .map(|t| json_to_value(&t.to_template_json()))
                    .collect::<Vec<_>>(),
            )
        };
        ctx.insert("messages".into(), Value::from(messages));
        ctx.insert("tools".into(), tools);
        ctx.insert("documents".into(), Value::from(()));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        ctx.insert("bos_token".into(), Value::from(self.bos_token.as_str()));
        ctx.insert("eos_token".into(), Value::from(self.eos_token.as_str()));

        let template =
            self.env
                .get_template(TEMPLATE_NAME)
                .map_err(|err| TemplateError::Render {
                    detail: one_line(err.to_string()),
                })?;
        template.render(Value::from(ctx)).map_err(render_error)
    }
}

/// Turns a minijinja render error into a [`TemplateError`], finding `raise_exception` calls.
fn render_error(err: minijinja::Error) -> TemplateError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<Raised>() {
            return TemplateError::Raised(raised.0.clone());
        }
        source = e.source();
    }
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        let _ = write!(detail, ": {e}");
        source = e.source();
    }
    TemplateError::Render {
        detail: one_line(detail),
    }
}

/// Collapses line breaks so that error messages stay on one line.
fn one_line(s: String) -> String {
    if s.contains(['\n', '\r']) {
        s.split(['\n', '\r'])
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        s
    }
}

/// The marker attached to errors made by `raise_exception`.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// `raise_exception(msg)`: aborts rendering with [`TemplateError::Raised`].
fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(Raised(message)),
    )
}

/// `strftime_now(format)`: the current time formatted like Python's `datetime.strftime`.
///
/// Python's `datetime.now()` is the local time; this uses UTC (the local time of servers and
/// containers, as a rule), and like a naive Python datetime `%z` and `%Z` are empty.
fn strftime_now(format: String) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    strftime(
        &format,
        DateTime::from_unix(now.as_secs() as i64, now.subsec_micros()),
    )
}

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    micros: u32,
    /// 0 = Monday .. 6 = Sunday
    weekday: u32,
    /// 1..=366
    yday: u32,
    unix: i64,
}

impl DateTime {
    fn from_unix(secs: i64, micros: u32) -> Self {
        let offset = std::time::Duration::from_secs(secs.unsigned_abs());
        let at = if secs >= 0 {
            UNIX_EPOCH.checked_add(offset)
        } else {
            UNIX_EPOCH.checked_sub(offset)
        }
        .unwrap_or(UNIX_EPOCH);
        let t = jielong_util::date::utc(at);
        DateTime {
            year: i64::from(t.year()),
            month: u32::from(u8::from(t.month())),
            day: u32::from(t.day()),
            hour: u32::from(t.hour()),
            minute: u32::from(t.minute()),
            second: u32::from(t.second()),
            micros,
            weekday: u32::from(t.weekday().number_days_from_monday()),
            yday: u32::from(t.ordinal()),
            unix: secs,
        }
    }
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
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

/// Formats `t` like Python's `strftime` on glibc in the C locale, for the directives chat
/// templates use (`%d %b %Y`, `%B %-d, %Y`, `%Y-%m-%d`, ...). Unknown directives are kept as
/// written.
fn strftime(format: &str, t: DateTime) -> String {
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // glibc flags: '-' no padding, '_' pad with spaces, '0' pad with zeros.
        let flag = match chars.peek() {
            Some(&f @ ('-' | '_' | '0')) => {
                chars.next();
                Some(f)
            }
            _ => None,
        };
        let Some(d) = chars.next() else {
            out.push('%');
            if let Some(f) = flag {
                out.push(f);
            }
            break;
        };
        let num = |out: &mut String, value: i64, width: usize, pad: char| {
            let pad = match flag {
                Some('-') => None,
                Some('_') => Some(' '),
                Some('0') => Some('0'),
                _ => Some(pad),
            };
            let digits = value.abs().to_string();
            if value < 0 {
                out.push('-');
            }
            if let Some(pad) = pad {
                for _ in digits.len()..width {
                    out.push(pad);
                }
            }
            out.push_str(&digits);
        };
        let weekday = WEEKDAYS[t.weekday as usize % 7];
        let month = MONTHS[(t.month as usize + 11) % 12];
        let hour12 = match t.hour % 12 {
            0 => 12,
            h => h,
        };
        match d {
            'a' => out.push_str(&weekday[..3]),
            'A' => out.push_str(weekday),
            'b' | 'h' => out.push_str(&month[..3]),
            'B' => out.push_str(month),
            'd' => num(&mut out, t.day.into(), 2, '0'),
            'e' => num(&mut out, t.day.into(), 2, ' '),
            'm' => num(&mut out, t.month.into(), 2, '0'),
            'y' => num(&mut out, t.year.rem_euclid(100), 2, '0'),
            'Y' => num(&mut out, t.year, 1, '0'),
            'C' => num(&mut out, t.year.div_euclid(100), 2, '0'),
            'H' => num(&mut out, t.hour.into(), 2, '0'),
            'k' => num(&mut out, t.hour.into(), 2, ' '),
            'I' => num(&mut out, hour12.into(), 2, '0'),
            'l' => num(&mut out, hour12.into(), 2, ' '),
            'M' => num(&mut out, t.minute.into(), 2, '0'),
            'S' => num(&mut out, t.second.into(), 2, '0'),
            'f' => num(&mut out, t.micros.into(), 6, '0'),
            'j' => num(&mut out, t.yday.into(), 3, '0'),
            'u' => num(&mut out, (t.weekday + 1).into(), 1, '0'),
            'w' => num(&mut out, ((t.weekday + 1) % 7).into(), 1, '0'),
            's' => num(&mut out, t.unix, 1, '0'),
            'p' => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            'P' => out.push_str(if t.hour < 12 { "am" } else { "pm" }),
            'D' | 'x' => out.push_str(&strftime("%m/%d/%y", t)),
            'F' => out.push_str(&strftime("%Y-%m-%d", t)),
            'T' | 'X' => out.push_str(&strftime("%H:%M:%S", t)),
            'R' => out.push_str(&strftime("%H:%M", t)),
            'c' => out.push_str(&strftime("%a %b %e %H:%M:%S %Y", t)),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            '%' => out.push('%'),
            // A naive datetime (Python's datetime.now()) has no zone.
            'z' | 'Z' => {}
            other => {
                out.push('%');
                if let Some(f) = flag {
                    out.push(f);
                }
                out.push(other);
            }
        }
    }
    out
}

/// A JSON object as a template value: a map that keeps its keys in insertion order (minijinja's
/// own maps sort them unless its `preserve_order` feature is on).
#[derive(Debug)]
struct JsonMap(Vec<(Value, Value)>);

impl Object for JsonMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.iter().map(|(k, _)| k.clone()).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

/// Converts JSON to a template value, keeping the order of object keys.
fn json_to_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(json_to_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => Value::from_object(JsonMap(
            map.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_to_value(v)))
                .collect(),
        )),
    }
}

/// How `tojson` writes: the arguments of Python's `json.dumps` that transformers exposes.
struct JsonStyle {
    ensure_ascii: bool,
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

/// The `tojson` filter of transformers:
/// `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, i.e.
/// `json.dumps` with those arguments. Unlike minijinja's built-in it does not HTML-escape.
fn tojson_filter(value: &Value, args: Rest<Value>) -> Result<Value, minijinja::Error> {
    let (ensure_ascii, indent, separators, sort_keys, kwargs): (
        Option<Value>,
        Option<Value>,
        Option<Value>,
        Option<Value>,
        Kwargs,
    ) = from_args(&args)?;
    let arg = |positional: Option<Value>, name: &str| -> Result<Option<Value>, minijinja::Error> {
        let keyword: Option<Value> = kwargs.get(name)?;
        match (positional, keyword) {
            (Some(_), Some(_)) => Err(minijinja::Error::new(
                ErrorKind::TooManyArguments,
                format!("tojson() got multiple values for argument '{name}'"),
            )),
            (p, k) => Ok(p.or(k)),
        }
    };
    let ensure_ascii = arg(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match arg(indent, "indent")? {
        None => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_owned(),
            None => {
                let n = i64::try_from(v).map_err(|_| {
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be an integer or a string",
                    )
                })?;
                " ".repeat(usize::try_from(n).unwrap_or(0))
            }
        }),
    };
    let (item_separator, key_separator) = match arg(separators, "separators")? {
        None => (
            if indent.is_some() { "," } else { ", " }.to_owned(),
            ": ".to_owned(),
        ),
        Some(v) => {
            let parts: Vec<Value> = v.try_iter().map(|it| it.collect()).unwrap_or_default();
            match parts.as_slice() {
                [item, key] if item.as_str().is_some() && key.as_str().is_some() => (
                    item.as_str().unwrap_or_default().to_owned(),
                    key.as_str().unwrap_or_default().to_owned(),
                ),
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
    };
    let sort_keys = arg(sort_keys, "sort_keys")?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        ensure_ascii,
        indent,
        item_separator,
        key_separator,
        sort_keys,
    };
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(Value::from(out))
}

fn not_serializable(what: impl fmt::Display) -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("tojson: object of type {what} is not JSON serializable"),
    )
}

/// Writes `value` as Python's `json.dumps` would with `style`.
fn write_json(
    out: &mut String,
    value: &Value,
    style: &JsonStyle,
    level: usize,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    if level > MAX_JSON_DEPTH {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply (circular reference?)",
        ));
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, value)?,
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or_default(), style),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, '[', ']', &items, style, level, |out, item| {
                write_json(out, item, style, level + 1)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, '{', '}', &entries, style, level, |out, (key, item)| {
                write_json_string(out, key, style);
                out.push_str(&style.key_separator);
                write_json(out, item, style, level + 1)
            })?;
        }
        ValueKind::Undefined => return Err(not_serializable("Undefined")),
        other => return Err(not_serializable(other)),
    }
    Ok(())
}

/// Writes `[`…`]` or `{`…`}` with Python's layout: compact, or one item a line when indenting.
fn write_container<T>(
    out: &mut String,
    open: char,
    close: char,
    items: &[T],
    style: &JsonStyle,
    level: usize,
    mut write_item: impl FnMut(&mut String, &T) -> Result<(), minijinja::Error>,
) -> Result<(), minijinja::Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, depth: usize| {
        if let Some(indent) = &style.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_separator);
        }
        newline(out, level + 1);
        write_item(out, item)?;
    }
    newline(out, level);
    out.push(close);
    Ok(())
}

/// A dict key as JSON writes it: strings as they are; numbers, booleans and none converted.
fn json_key(key: &Value) -> Result<String, minijinja::Error> {
    use minijinja::value::ValueKind;
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
        ValueKind::None => "null".to_owned(),
        ValueKind::Bool => if key.is_true() { "true" } else { "false" }.to_owned(),
        ValueKind::Number => {
            let mut s = String::new();
            write_number(&mut s, key)?;
            s
        }
        other => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: keys must be str, int, float, bool or None, not {other}"),
            ))
        }
    })
}

fn write_number(out: &mut String, value: &Value) -> Result<(), minijinja::Error> {
    if value.is_integer() {
        let n = i128::try_from(value.clone())
            .map(|n| n.to_string())
            .or_else(|_| u128::try_from(value.clone()).map(|n| n.to_string()))?;
        out.push_str(&n);
    } else {
        out.push_str(&python_float_repr(f64::try_from(value.clone())?));
    }
    Ok(())
}

/// A float as Python's `repr` (and so `json.dumps`) writes it: shortest round-trip digits,
/// fixed notation for exponents -4..=15 with at least one decimal, otherwise `1e+16` style.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "-1.5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat('0').take(int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat('0').take((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    }
    out
}

/// Writes a JSON string literal as Python's `json.dumps` does.
fn write_json_string(out: &mut String, s: &str, style: &JsonStyle) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if style.ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr_matches_python() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789.0, "123456789.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e20, "1.2345e+20"),
            (1e100, "1e+100"),
            (3.125, "3.125"),
            (123.456, "123.456"),
            (f64::INFINITY, "Infinity"),
        ];
        for (f, want) in cases {
            assert_eq!(python_float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn strftime_formats_like_python() {
        // 2024-07-26 13:05:09.000042 UTC, a Friday, day 208 of a leap year.
        let t = DateTime::from_unix(1_721_999_109, 42);
        assert_eq!(t.year, 2024);
        assert_eq!(
            (t.month, t.day, t.hour, t.minute, t.second),
            (7, 26, 13, 5, 9)
        );
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(strftime("%B %-d, %Y", t), "July 26, 2024");
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S.%f", t),
            "2024-07-26 13:05:09.000042"
        );
        assert_eq!(
            strftime("%A %a %j %I%p %y %e|%Z%z|%%|%Q", t),
            "Friday Fri 208 01PM 24 26||%|%Q"
        );
        assert_eq!(
            strftime("%u %w %F %T %D", t),
            "5 5 2024-07-26 13:05:09 07/26/24"
        );
        let epoch = DateTime::from_unix(0, 0);
        assert_eq!(strftime("%c", epoch), "Thu Jan  1 00:00:00 1970");
        let leap_day = DateTime::from_unix(951_782_400, 0); // 2000-02-29, a Tuesday
        assert_eq!(strftime("%a %F %j", leap_day), "Tue 2000-02-29 060");
        let before = DateTime::from_unix(-1, 0);
        assert_eq!(strftime("%F %T %a", before), "1969-12-31 23:59:59 Wed");
    }

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(one_line("a\nb\r\nc".into()), "a b c");
        assert_eq!(one_line("abc".into()), "abc");
    }
}
