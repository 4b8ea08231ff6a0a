//! Whether a task needs the agent's tools: the judgement
//! [`Strategy::Route`](crate::Strategy::Route) goes by. Deterministic and cheap (no model call), so a
//! factual or verbal question to an agent that only has a code tool gets a written
//! answer, and any question to an agent with a search tool goes to the tools.

use jielong_chat::tool::ToolRegistry;

/// Words that ask for counting or arithmetic even without a digit. Not "how much",
/// "how long", "how old", "mean", "sort": without numbers those mostly ask for facts
/// or words ("How long do cats live?", "What does it mean?", "What sort of …?").
const COMPUTING: &[&str] = &[
    "how many",
    "calculate",
    "compute",
    "count",
    "sum",
    "total",
    "average",
    "median",
    "percent",
    "percentage",
    "prime",
    "primes",
    "factorial",
    "square root",
    "solve",
    "equation",
    "convert",
];

/// Number words ("one" is not among them: "in one word", "which one").
const NUMBERS: &[&str] = &[
    "zero",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
    "half",
    "twice",
    "double",
    "triple",
    "dozen",
    "quarter",
];

/// Whether `task` needs `tools`: always when they include a tool other than the code
/// interpreter (search, pages, documents: the model picks); with the interpreter
/// alone, when the task has a digit, a number word or a word that asks for counting
/// or arithmetic ("how many", "average", …); never without tools.
pub fn needs_tools(task: &str, tools: &ToolRegistry) -> bool {
    let interpreter = tools.interpreter().map(|code| code.name);
    let other = tools
        .specs()
        .iter()
        .any(|spec| Some(&spec.name) != interpreter.as_ref());
    if other {
        return true;
    }
    interpreter.is_some() && computes(task)
}

/// Whether `task` has numbers or asks for counting or arithmetic.
pub fn computes(task: &str) -> bool {
    if task.chars().any(|c| c.is_ascii_digit()) {
        return true;
    }
    let lower = task.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .collect();
    let joined = format!(" {} ", words.join(" "));
    NUMBERS.iter().any(|n| words.contains(n))
        || COMPUTING
            .iter()
            .any(|phrase| joined.contains(&format!(" {phrase} ")))
}

#[cfg(test)]
mod tests {
    use super::computes;

    #[test]
    fn tasks_with_numbers_or_counting_compute() {
        for (task, expected) in [
            ("What is 12345 * 6789?", true),
            (
                "A train leaves at 9:40 and arrives at 13:15. How long is the trip in minutes?",
                true,
            ),
            ("How many r's are in the word strawberry?", true),
            ("What is twice the age of a ten-year-old?", true),
            ("What is the average of these prices?", true),
            ("What is the capital of Australia?", false),
            ("Who wrote Pride and Prejudice?", false),
            ("Write a haiku about the sea.", false),
            ("Explain why the sky is blue.", false),
            // "someone" is not "one"; "counter" is not "count".
            ("Is someone at the counter?", false),
            ("What is the capital of France? Answer in one word.", false),
            ("How long do cats live?", false),
            ("What does the word 'serendipity' mean?", false),
        ] {
            assert_eq!(computes(task), expected, "{task}");
        }
    }
}
