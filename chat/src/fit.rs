//! Whether calls fit the request they answer — read from the request's own words, so
//! every backend and the agent judge the same way.
//!
//! Two questions small models answer badly on their own:
//! - **Does the tool fit at all?** A model offered one tool calls it whatever it is
//!   asked (a triangle's area through a body-mass-index tool). [`tool_fits`] asks
//!   whether the request names the tool's subject: a word of its name or of its
//!   description that is no parameter name and no generic verb (`calculate`, `get`,
//!   …), or the initials of its name (`bmi` for `body_mass_index`).
//! - **Is a further call another item of the request?** A model that made one call
//!   ends its reply there even when the request names several items; asked for one
//!   more, it writes either the next item's call or a copy. [`adds_item`] keeps a call
//!   that brings a value of the request no earlier call used, and whose numbers and
//!   free-text values all come from the request (or an earlier call): never a made-up
//!   item. [`names_several`] says whether asking is worth a generation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{ToolCall, ToolSpec};

/// Whether a reply's calls are fitted to the request before they go out.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CallFit {
    /// The calls as the model wrote them (the default).
    #[default]
    AsWritten,
    /// A call of a tool the request does not name is declined ([`tool_fits`]); a
    /// request that names several items is asked for one more call at a time while
    /// each adds an item ([`names_several`], [`uncovered`], [`adds_item`]).
    Fitted,
}

/// Words that name no subject: verbs every tool description uses, articles,
/// prepositions.
const GENERIC: &[&str] = &[
    "about",
    "according",
    "all",
    "also",
    "amount",
    "and",
    "any",
    "are",
    "based",
    "between",
    "by",
    "calculate",
    "calculates",
    "calculation",
    "calculator",
    "can",
    "certain",
    "compute",
    "computes",
    "data",
    "default",
    "details",
    "determine",
    "determines",
    "does",
    "each",
    "etc",
    "fetch",
    "fetches",
    "find",
    "finds",
    "for",
    "from",
    "function",
    "get",
    "gets",
    "give",
    "given",
    "gives",
    "has",
    "have",
    "how",
    "information",
    "info",
    "into",
    "its",
    "list",
    "make",
    "many",
    "much",
    "new",
    "not",
    "number",
    "numbers",
    "of",
    "off",
    "one",
    "optional",
    "other",
    "over",
    "per",
    "please",
    "provide",
    "provided",
    "provides",
    "required",
    "result",
    "results",
    "retrieve",
    "retrieves",
    "return",
    "returns",
    "some",
    "specific",
    "specified",
    "such",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "this",
    "those",
    "tool",
    "total",
    "two",
    "under",
    "use",
    "used",
    "uses",
    "using",
    "value",
    "values",
    "what",
    "when",
    "where",
    "which",
    "who",
    "will",
    "with",
    "would",
    "you",
    "your",
];

/// Whether `question` names what `tool` is for (see the module's notes). A tool whose
/// name and description say nothing beyond generic words and its parameters fits
/// anything: there is nothing to judge it by.
pub fn tool_fits(question: &str, tool: &ToolSpec) -> bool {
    let asked = words(question);
    let parameters: Vec<String> = tool
        .parameters
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().flat_map(|k| words(k)).collect())
        .unwrap_or_default();
    let name = words(&tool.name);
    let described: Vec<String> = words(&tool.description)
        .into_iter()
        .filter(|w| !parameters.contains(w))
        .collect();
    let subject: Vec<&String> = name
        .iter()
        .chain(&described)
        .filter(|w| !generic(w))
        .collect();
    if subject.is_empty() {
        return true;
    }
    let initials: String = name
        .iter()
        .filter(|w| !generic(w))
        .filter_map(|w| w.chars().next())
        .collect();
    let acronym = initials.chars().count() >= 2 && asked.contains(&initials);
    acronym
        || subject
            .iter()
            .any(|s| asked.iter().any(|a| same_word(s, a)))
}

/// The positions of the calls in `calls` whose tool (found in `tools` by name) the
/// question never names ([`tool_fits`]): the calls to decline. `judged` says which calls
/// are judged at all (the agent leaves a tool for any subject, a search, alone); a call
/// of a tool not in `tools` is not judged here (validation refuses it).
pub fn unfit_calls(
    question: &str,
    calls: &[ToolCall],
    tools: &[ToolSpec],
    judged: impl Fn(&ToolCall) -> bool,
) -> Vec<usize> {
    (0..calls.len())
        .filter(|&i| judged(&calls[i]))
        .filter(|&i| {
            tools
                .iter()
                .find(|t| t.name == calls[i].name)
                .is_some_and(|t| !tool_fits(question, t))
        })
        .collect()
}

/// Whether `question` may name several items (a list, a conjunction, "each", "both",
/// "respectively"): only then is a call beyond the first worth asking for.
pub fn names_several(question: &str) -> bool {
    let lower = question.to_lowercase();
    let listed = lower.contains(',') || lower.contains(';') || lower.contains('\n');
    let joined = words(&lower).iter().any(|w| {
        matches!(
            w.as_str(),
            "and" | "both" | "each" | "respectively" | "also" | "plus" | "versus" | "vs"
        )
    });
    listed || joined
}

/// The parts of `question` no call of `made` covers, in order: the request cut at
/// commas, semicolons and `and`, each part that names something (a number, a word that
/// is not generic) none of whose values an earlier call used. A request whose calls
/// cover every part has none; what a model that stops after its first call is asked
/// for next ([`ask_for_more`]).
pub fn uncovered(question: &str, made: &[ToolCall]) -> Vec<String> {
    let used: Vec<Leaf> = made
        .iter()
        .flat_map(|c| leaves(&c.arguments, None))
        .collect();
    parts(question)
        .into_iter()
        .filter(|part| {
            let numbers = numbers_in(part);
            let said = words(part);
            let names = !numbers.is_empty()
                || said
                    .iter()
                    .any(|w| !generic(w) && !QUESTION.contains(&w.as_str()));
            let covered = used.iter().any(|leaf| match leaf {
                Leaf::Number(n) => numbers.iter().any(|m| close(*m, *n)),
                Leaf::Text { text } => text_in(text, &said),
                Leaf::Choice => false,
            });
            names && !covered
        })
        .collect()
}

/// Words of a request that ask rather than name.
const QUESTION: &[&str] = &[
    "tell", "like", "right", "now", "also", "other", "please", "show", "want", "need", "know",
];

/// `question` cut at commas, semicolons, new lines and the word `and`.
fn parts(question: &str) -> Vec<String> {
    let mut out = Vec::new();
    for piece in question.split([',', ';', '\n']) {
        let mut rest = piece;
        while let Some(at) = rest.find(" and ") {
            out.push(rest[..at].to_string());
            rest = &rest[at + 5..];
        }
        out.push(rest.to_string());
    }
    out.into_iter()
        .map(|p| {
            p.trim()
                .trim_end_matches(['?', '.', '!'])
                .trim()
                .to_string()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// The request `question` asking for the call of `part` (one of [`uncovered`]): what
/// a model that stops after its first call is asked next. A copy of an earlier call or
/// a made-up item is then refused by [`adds_item`].
pub fn ask_for_more(question: &str, part: &str) -> String {
    format!(
        "{}\n\nMake the call for this part of the request: \"{part}\"",
        question.trim_end()
    )
}

/// Whether `call` adds an item of `question` to the `earlier` calls of the reply: it
/// differs from each of them, one of its values comes from the question and no earlier
/// call of the same tool used it, and each of its numbers and free-text strings comes
/// from the question or from an earlier call (strings a schema enumerates are choices,
/// not items).
pub fn adds_item(call: &ToolCall, earlier: &[ToolCall], question: &str, tool: &ToolSpec) -> bool {
    if earlier
        .iter()
        .any(|c| c.name == call.name && c.arguments == call.arguments)
    {
        return false;
    }
    let numbers = numbers_in(question);
    let asked = words(question);
    let used: Vec<Leaf> = earlier
        .iter()
        .flat_map(|c| leaves(&c.arguments, None))
        .collect();
    let used_here: Vec<Leaf> = earlier
        .iter()
        .filter(|c| c.name == call.name)
        .flat_map(|c| leaves(&c.arguments, None))
        .collect();
    let properties = tool.parameters.get("properties");
    let mut new_item = false;
    for leaf in leaves(&call.arguments, properties) {
        let from_question = match &leaf {
            Leaf::Number(n) => numbers.iter().any(|q| close(*q, *n)),
            Leaf::Text { text, .. } => text_in(text, &asked),
            Leaf::Choice => continue,
        };
        let seen = used.iter().any(|u| u.same(&leaf));
        if !from_question && !seen {
            return false;
        }
        if from_question && !used_here.iter().any(|u| u.same(&leaf)) {
            new_item = true;
        }
    }
    new_item
}

/// A value of a call's arguments.
#[derive(Debug, Clone)]
enum Leaf {
    Number(f64),
    Text {
        text: String,
    },
    /// A string the schema enumerates, or a boolean: a choice, not an item.
    Choice,
}

impl Leaf {
    fn same(&self, other: &Leaf) -> bool {
        match (self, other) {
            (Leaf::Number(a), Leaf::Number(b)) => close(*a, *b),
            (Leaf::Text { text: a }, Leaf::Text { text: b }) => normal(a) == normal(b),
            _ => false,
        }
    }
}

/// The values of `value` (arrays and objects flattened); `properties`: the schema's
/// properties at this level, which say which strings are enumerated choices.
fn leaves(value: &Value, properties: Option<&Value>) -> Vec<Leaf> {
    let mut out = Vec::new();
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let schema = properties.and_then(|p| p.get(key));
                let enumerated = schema.and_then(|s| s.get("enum")).is_some();
                match value {
                    Value::String(_) if enumerated => out.push(Leaf::Choice),
                    _ => out.extend(leaves(value, schema.and_then(|s| s.get("properties")))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                out.extend(leaves(item, None));
            }
        }
        Value::Number(n) => out.extend(n.as_f64().map(Leaf::Number)),
        Value::String(text) if !text.trim().is_empty() => {
            // A number written as a string is a number.
            match text.trim().replace(',', "").parse::<f64>() {
                Ok(n) => out.push(Leaf::Number(n)),
                Err(_) => out.push(Leaf::Text { text: text.clone() }),
            }
        }
        Value::Bool(_) => out.push(Leaf::Choice),
        _ => {}
    }
    out
}

/// Whether a string value comes from the question: its words (or most of them, for
/// long values) are the question's.
fn text_in(text: &str, asked: &[String]) -> bool {
    let own = words(text);
    if own.is_empty() {
        return true;
    }
    let found = own
        .iter()
        .filter(|w| asked.iter().any(|a| same_word(w, a)))
        .count();
    // Short values entirely; longer ones (a sentence to translate, a query) mostly.
    if own.len() <= 3 {
        found == own.len()
    } else {
        found * 3 >= own.len() * 2
    }
}

/// The numbers in `text`: digits (with thousands separators, decimals, signs and
/// fractions' parts) and the number words up to twenty and the tens; a percentage
/// also as its fraction.
fn numbers_in(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let in_number = c.is_ascii_digit()
            || (c == '.' || c == ',')
                && !current.is_empty()
                && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())
            || c == '-'
                && current.is_empty()
                && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if in_number {
            current.push(c);
            continue;
        }
        push_number(&mut out, &current, c == '%');
        current.clear();
    }
    push_number(&mut out, &current, false);
    const WORDS: &[(&str, f64)] = &[
        ("zero", 0.0),
        ("one", 1.0),
        ("two", 2.0),
        ("three", 3.0),
        ("four", 4.0),
        ("five", 5.0),
        ("six", 6.0),
        ("seven", 7.0),
        ("eight", 8.0),
        ("nine", 9.0),
        ("ten", 10.0),
        ("eleven", 11.0),
        ("twelve", 12.0),
        ("thirteen", 13.0),
        ("fourteen", 14.0),
        ("fifteen", 15.0),
        ("sixteen", 16.0),
        ("seventeen", 17.0),
        ("eighteen", 18.0),
        ("nineteen", 19.0),
        ("twenty", 20.0),
        ("thirty", 30.0),
        ("forty", 40.0),
        ("fifty", 50.0),
        ("sixty", 60.0),
        ("seventy", 70.0),
        ("eighty", 80.0),
        ("ninety", 90.0),
        ("hundred", 100.0),
        ("thousand", 1000.0),
        ("million", 1e6),
        ("billion", 1e9),
        ("dozen", 12.0),
        ("half", 0.5),
        ("twice", 2.0),
        ("double", 2.0),
        ("triple", 3.0),
    ];
    for word in words(text) {
        if let Some((_, n)) = WORDS.iter().find(|(w, _)| *w == word) {
            out.push(*n);
        }
    }
    // "5 million": the product too.
    let scaled: Vec<f64> = out
        .windows(2)
        .filter(|w| matches!(w[1], 1e3 | 1e6 | 1e9))
        .map(|w| w[0] * w[1])
        .collect();
    out.extend(scaled);
    out
}

fn push_number(out: &mut Vec<f64>, digits: &str, percent: bool) {
    if let Ok(n) = digits.replace(',', "").parse::<f64>() {
        out.push(n);
        if percent {
            out.push(n / 100.0);
        }
    }
}

/// Equal numbers, up to rounding.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Text compared without case, spaces and punctuation.
fn normal(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of `text`, lowercase: letters and digits, split at everything else and
/// at camelCase humps (`getWeather` → `get`, `weather`).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && previous_lower && !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            previous_lower = c.is_lowercase();
            word.extend(c.to_lowercase());
        } else {
            previous_lower = false;
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn generic(word: &str) -> bool {
    word.chars().count() < 3 || word.chars().all(|c| c.is_ascii_digit()) || GENERIC.contains(&word)
}

/// Two words that are one up to an ending: the same, or sharing their first five
/// letters (all of the shorter one's when it has fewer, at least three).
fn same_word(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (short, long) = if a.chars().count() <= b.chars().count() {
        (a, b)
    } else {
        (b, a)
    };
    let n = short.chars().count();
    if n < 3 {
        return false;
    }
    let prefix = n.min(5);
    short.chars().take(prefix).eq(long.chars().take(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, description: &str, properties: Value) -> ToolSpec {
        ToolSpec::new(
            name,
            description,
            json!({"type": "object", "properties": properties}),
        )
    }

    fn bmi() -> ToolSpec {
        tool(
            "determine_body_mass_index",
            "Calculate body mass index given weight and height.",
            json!({"weight": {"type": "number"}, "height": {"type": "number"}}),
        )
    }

    fn weather() -> ToolSpec {
        tool(
            "get_current_weather",
            "Get the current weather in a given location",
            json!({"location": {"type": "string"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}),
        )
    }

    fn check_fit(question: &str, tool: &ToolSpec, want: bool) {
        assert_eq!(
            tool_fits(question, tool),
            want,
            "{question} / {}",
            tool.name
        );
    }

    #[test]
    fn a_tool_fits_a_request_that_names_its_subject() {
        check_fit("What is the BMI of a man of 80 kg and 1.8 m?", &bmi(), true);
        check_fit("Body mass index for weight 60, height 1.6", &bmi(), true);
        check_fit(
            "Find the area of a triangle with base 10 and height 5.",
            &bmi(),
            false,
        );
        check_fit("What's the weather like in Paris?", &weather(), true);
        check_fit("Who wrote Pride and Prejudice?", &weather(), false);
        // Only generic words and parameters: nothing to judge by.
        let vague = tool(
            "calculate",
            "Calculate a value.",
            json!({"x": {"type": "number"}}),
        );
        check_fit("Anything at all", &vague, true);
        // camelCase and dotted names.
        let area = tool(
            "geometry.areaCircle",
            "",
            json!({"radius": {"type": "number"}}),
        );
        check_fit("the area of a circle of radius 3", &area, true);
        check_fit("translate hello to French", &area, false);
    }

    fn check_item(
        question: &str,
        earlier: &[ToolCall],
        call: ToolCall,
        tool: &ToolSpec,
        want: bool,
    ) {
        assert_eq!(
            adds_item(&call, earlier, question, tool),
            want,
            "{question}: {} {}",
            call.name,
            call.arguments
        );
    }

    #[test]
    fn a_further_call_is_kept_when_it_is_another_item_of_the_request() {
        let q = "What's the weather in Paris and in New York, in celsius?";
        let paris = ToolCall::new(
            "get_current_weather",
            json!({"location": "Paris", "unit": "celsius"}),
        );
        let york = ToolCall::new(
            "get_current_weather",
            json!({"location": "New York", "unit": "celsius"}),
        );
        let rome = ToolCall::new("get_current_weather", json!({"location": "Rome"}));
        check_item(
            q,
            std::slice::from_ref(&paris),
            york.clone(),
            &weather(),
            true,
        );
        // A copy, a made-up item, an item already called.
        check_item(
            q,
            std::slice::from_ref(&paris),
            paris.clone(),
            &weather(),
            false,
        );
        check_item(q, std::slice::from_ref(&paris), rome, &weather(), false);
        check_item(q, &[paris.clone(), york.clone()], york, &weather(), false);
        // Numbers: new ones from the question only; shared ones may repeat.
        let q = "Areas of circles with radius 5, 10 and 15 cm";
        let circle = tool(
            "circle_area",
            "",
            json!({"radius": {"type": "number"}, "unit": {"type": "string"}}),
        );
        let r = |x: f64| ToolCall::new("circle_area", json!({"radius": x, "unit": "cm"}));
        check_item(q, &[r(5.0)], r(10.0), &circle, true);
        check_item(q, &[r(5.0), r(10.0)], r(15.0), &circle, true);
        check_item(q, &[r(5.0), r(10.0), r(15.0)], r(20.0), &circle, false);
        // The same numbers swapped are no new item.
        let q = "Area of a triangle with base 10 and height 5";
        let tri = tool(
            "triangle_area",
            "",
            json!({"base": {"type": "number"}, "height": {"type": "number"}}),
        );
        let first = ToolCall::new("triangle_area", json!({"base": 10, "height": 5}));
        let swapped = ToolCall::new("triangle_area", json!({"base": 5, "height": 10}));
        check_item(q, &[first], swapped, &tri, false);
        // Another tool for another part of the request.
        let q = "Weather in Oslo, and the BMI of someone 70 kg and 1.75 m tall";
        let oslo = ToolCall::new("get_current_weather", json!({"location": "Oslo"}));
        let body = ToolCall::new(
            "determine_body_mass_index",
            json!({"weight": 70, "height": 1.75}),
        );
        check_item(q, &[oslo], body, &bmi(), true);
        // Number words, percentages, thousands.
        let q = "Interest on 1,500 dollars at 5% for two years, and for three years";
        let interest = tool(
            "interest",
            "",
            json!({"principal": {"type": "number"}, "rate": {"type": "number"}, "years": {"type": "integer"}}),
        );
        let i = |years: u32| {
            ToolCall::new(
                "interest",
                json!({"principal": 1500, "rate": 0.05, "years": years}),
            )
        };
        check_item(q, &[i(2)], i(3), &interest, true);
        check_item(q, &[i(2), i(3)], i(4), &interest, false);
    }

    #[test]
    fn the_parts_no_call_covers_are_asked_for() {
        let weather = |city: &str| {
            ToolCall::new(
                "get_current_weather",
                json!({"location": city, "unit": "celsius"}),
            )
        };
        let check = |question: &str, made: &[ToolCall], want: &[&str]| {
            assert_eq!(uncovered(question, made), want, "{question}");
        };
        check(
            "What's the weather in Oslo and Paris?",
            &[weather("Oslo")],
            &["Paris"],
        );
        check(
            "What's the weather in Oslo and Paris?",
            &[weather("Oslo"), weather("Paris")],
            &[],
        );
        check(
            "Tell me the current weather in Cairo, Oslo and Denver.",
            &[weather("Cairo")],
            &["Oslo", "Denver"],
        );
        check(
            "What's the weather like in Paris right now?",
            &[weather("Paris")],
            &[],
        );
        let tri = ToolCall::new("triangle_area", json!({"base": 10, "height": 5}));
        check(
            "Find the area of a triangle with base 10 and height 5.",
            std::slice::from_ref(&tri),
            &[],
        );
        check(
            "Find the areas of two triangles: one with base 10 and height 5, the other with base 12 and height 9.",
            &[tri],
            &["the other with base 12", "height 9"],
        );
        let f8 = ToolCall::new("factorial", json!({"n": 8}));
        check("What are the factorials of 8 and 3?", &[f8], &["3"]);
    }

    #[test]
    fn several_items_are_named_by_lists_and_conjunctions() {
        assert!(names_several("Weather in Paris and Rome"));
        assert!(names_several("radius 5, 10, 15"));
        assert!(names_several("Do both"));
        assert!(!names_several("What is the weather in Paris?"));
        assert!(!names_several("Factorial of 5"));
    }
}
