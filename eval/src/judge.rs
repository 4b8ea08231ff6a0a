//! LLM-as-judge: judge prompts in MT-Bench's `judge_prompts.jsonl` format
//! ([`JudgePrompt`]), single grading of a run's answers against a rubric
//! ([`single_examples`], [`apply_grades`]), and the pairwise comparison of two runs
//! in both orders ([`pair_examples`], [`PairwiseReport`]).
//!
//! A judge pass is itself an evaluation: every prompt the judge must answer becomes
//! an [`Example`] whose input is the filled prompt, and the judge (any [`System`],
//! typically a model with the prompt's system text) answers them through [`Eval`],
//! so judging is cached per prompt, resumable and cancellable like any run; the
//! judge's texts are then read here ([`read_rating`], [`read_verdict`]). This crate
//! still knows no model.
//!
//! Position bias (judges prefer the answer they see first, MT-Bench §3.3): every pair
//! is judged twice, each run's answer shown first once. Only a verdict both orders
//! agree on counts as a win; one that changes sides with the order is a tie and is
//! counted as a *flip* ([`PairwiseReport::flip_share`]).
//!
//! [`System`]: crate::System
//! [`Eval`]: crate::Eval

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dataset::{mt_bench_turns, Example};
use crate::error::{io_err, EvalError};
use crate::report::Report;
use crate::run::Row;

/// The judge prompts shipped with Jielong (`prompts/judge_prompts.jsonl`), in
/// MT-Bench's format: `single`, `single-ref`, `single-multi-turn`,
/// `single-ref-multi-turn`, `pair`, `pair-ref`, `pair-multi-turn`,
/// `pair-ref-multi-turn`.
pub const BUILTIN_JUDGE_PROMPTS: &str = include_str!("../../prompts/judge_prompts.jsonl");

/// What a judge prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JudgeKind {
    /// A rating of one answer (`Rating: [[5]]`).
    Single,
    /// A verdict between two answers (`[[A]]`, `[[B]]`, `[[C]]` for a tie).
    Pairwise,
}

/// One judge prompt, as a line of MT-Bench's `judge_prompts.jsonl`:
/// `{"name", "type", "system_prompt", "prompt_template", "description", "category",
/// "output_format"}`. Templates use `{question}`, `{answer}`, `{answer_a}`,
/// `{answer_b}`, `{ref_answer_1}`, and for two turns `{question_1}`,
/// `{question_2}`, `{answer_1}`, `{answer_2}`, `{answer_a_1}`, … `{ref_answer_2}`;
/// Jielong's own add `{rubric}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgePrompt {
    /// The prompt's name (`single-v1`, `pair`).
    pub name: String,
    /// `single` or `pairwise`.
    #[serde(rename = "type")]
    pub kind: JudgeKind,
    /// The judge's system message.
    pub system_prompt: String,
    /// The user message, with placeholders.
    pub prompt_template: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// MT-Bench's category (`general`, `math`).
    #[serde(default)]
    pub category: String,
    /// The verdict's shape (`[[rating]]`, `[[A]]`, `[[rating_a,rating_b]]`).
    #[serde(default)]
    pub output_format: String,
}

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 16] = [
    "question",
    "answer",
    "answer_a",
    "answer_b",
    "ref_answer_1",
    "ref_answer_2",
    "question_1",
    "question_2",
    "answer_1",
    "answer_2",
    "answer_a_1",
    "answer_a_2",
    "answer_b_1",
    "answer_b_2",
    "rubric",
    "reference",
];

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{([a-z_0-9]+)\}").expect("placeholder pattern"));

impl JudgePrompt {
    /// Reads a `judge_prompts.jsonl` file (MT-Bench's, or one written like it).
    pub fn load(path: &Path) -> Result<Vec<JudgePrompt>, EvalError> {
        let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
        JudgePrompt::parse(&text, path)
    }

    /// Parses the JSONL `text` (errors name `path` and the line); every prompt's
    /// placeholders are checked.
    pub fn parse(text: &str, path: &Path) -> Result<Vec<JudgePrompt>, EvalError> {
        let mut prompts = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let prompt: JudgePrompt = serde_json::from_str(line)
                .map_err(|e| EvalError::line(path, line_no, format!("not a judge prompt: {e}")))?;
            if let Some(unknown) = prompt.unknown_placeholder() {
                return Err(EvalError::line(
                    path,
                    line_no,
                    format!(
                        "judge prompt `{}` uses an unknown placeholder {{{unknown}}} (known: {})",
                        prompt.name,
                        PLACEHOLDERS.join(", ")
                    ),
                ));
            }
            prompts.push(prompt);
        }
        if prompts.is_empty() {
            return Err(EvalError::file(path, "no judge prompts"));
        }
        Ok(prompts)
    }

    /// The built-in prompts ([`BUILTIN_JUDGE_PROMPTS`]).
    pub fn builtin() -> Vec<JudgePrompt> {
        JudgePrompt::parse(
            BUILTIN_JUDGE_PROMPTS,
            Path::new("prompts/judge_prompts.jsonl"),
        )
        .unwrap_or_default()
    }

    fn placeholders(&self) -> impl Iterator<Item = &str> {
        PLACEHOLDER
            .captures_iter(&self.prompt_template)
            .filter_map(|c| c.get(1).map(|m| m.as_str()))
    }

    fn unknown_placeholder(&self) -> Option<&str> {
        self.placeholders().find(|p| !PLACEHOLDERS.contains(p))
    }

    /// Whether the template shows two turns (`{question_2}`).
    pub fn multi_turn(&self) -> bool {
        self.placeholders().any(|p| p == "question_2")
    }

    /// Whether the template shows a reference answer.
    pub fn needs_reference(&self) -> bool {
        self.placeholders()
            .any(|p| p.starts_with("ref_answer") || p == "reference")
    }

    /// The system message with `rubric`: in place of `{rubric}` when the template has
    /// it (then the system message is as written), else appended to the system
    /// message.
    pub fn system(&self, rubric: Option<&str>) -> String {
        match rubric {
            Some(rubric) if !self.placeholders().any(|p| p == "rubric") => {
                format!("{}\n\n{}", self.system_prompt.trim_end(), rubric.trim())
            }
            _ => self.system_prompt.clone(),
        }
    }

    /// The template with every placeholder replaced from `values`; a placeholder
    /// without a value is an error naming it.
    pub fn fill(&self, values: &BTreeMap<&str, String>) -> Result<String, String> {
        let mut missing = None;
        let filled = PLACEHOLDER.replace_all(&self.prompt_template, |c: &regex::Captures| {
            let name = c.get(1).map_or("", |m| m.as_str());
            match values.get(name) {
                Some(value) => value.clone(),
                None => {
                    missing.get_or_insert_with(|| name.to_owned());
                    String::new()
                }
            }
        });
        match missing {
            Some(name) => Err(format!(
                "judge prompt `{}` needs {{{name}}}, which this example does not have",
                self.name
            )),
            None => Ok(filled.into_owned()),
        }
    }

    /// The first of `prompts` that is `name`, or for `auto` the first of `kind` whose
    /// turns and reference match what the transcript has.
    pub fn choose<'a>(
        prompts: &'a [JudgePrompt],
        name: &str,
        kind: JudgeKind,
        transcript: &Transcript,
    ) -> Result<&'a JudgePrompt, String> {
        if name != "auto" {
            let prompt = prompts.iter().find(|p| p.name == name).ok_or_else(|| {
                let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
                format!("no judge prompt `{name}` (there are: {})", names.join(", "))
            })?;
            if prompt.kind != kind {
                return Err(format!(
                    "judge prompt `{name}` is a {} prompt, not a {} one",
                    kind_name(prompt.kind),
                    kind_name(kind)
                ));
            }
            return Ok(prompt);
        }
        let multi = transcript.turns.len() > 1;
        // A reference prompt shows one reference per turn.
        let reference = transcript.references.len() >= transcript.turns.len();
        prompts
            .iter()
            .find(|p| p.kind == kind && p.multi_turn() == multi && p.needs_reference() == reference)
            .or_else(|| {
                // No prompt with a reference: grade without one.
                prompts
                    .iter()
                    .find(|p| p.kind == kind && p.multi_turn() == multi && !p.needs_reference())
            })
            .ok_or_else(|| {
                format!(
                    "no {} judge prompt for {} turn(s){}",
                    kind_name(kind),
                    transcript.turns.len(),
                    if reference { " with a reference" } else { "" }
                )
            })
    }
}

fn kind_name(kind: JudgeKind) -> &'static str {
    match kind {
        JudgeKind::Single => "single",
        JudgeKind::Pairwise => "pairwise",
    }
}

/// One turn of a conversation a judge reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// What the user asked.
    pub question: String,
    /// What the system answered.
    pub answer: String,
}

/// What a judge reads of one example: its turns and reference answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// The example's id.
    pub id: String,
    /// The turns, at least one.
    pub turns: Vec<Turn>,
    /// Reference answers, one per turn where known.
    pub references: Vec<String>,
}

impl Transcript {
    /// The transcript of `row`: the turns a multi-turn system kept in its outcome's
    /// `detail.turns` (`[{"question", "answer"}]`), else the input and the answer;
    /// the expected answer as the reference. `None` when the row has no answer.
    pub fn of_row(row: &Row) -> Option<Transcript> {
        let answer = row.outcome.answer.clone()?;
        let kept: Option<Vec<Turn>> = row
            .outcome
            .detail
            .get("turns")
            .and_then(|t| serde_json::from_value(t.clone()).ok())
            .filter(|t: &Vec<Turn>| !t.is_empty());
        let turns = kept.unwrap_or_else(|| {
            vec![Turn {
                question: row.input.clone(),
                answer,
            }]
        });
        Some(Transcript {
            id: row.id.clone(),
            turns,
            references: row.expected.iter().cloned().collect(),
        })
    }

    /// The transcript with `example`'s references (all of an MT-Bench `reference`
    /// list, or its expected answer).
    pub fn with_references(mut self, example: &Example) -> Transcript {
        let listed: Option<Vec<String>> = mt_bench_turns(&example.record).and_then(|_| {
            example.record.get("reference")?.as_array().map(|refs| {
                refs.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
        });
        self.references = listed
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| example.expected.iter().cloned().collect());
        self
    }

    /// The questions and references a template may show (the answers are added by
    /// the caller, as `answer…` or `answer_a…`/`answer_b…`).
    fn common_values(&self, rubric: Option<&str>) -> BTreeMap<&'static str, String> {
        let mut values = BTreeMap::new();
        let first = &self.turns[0];
        values.insert("question", first.question.clone());
        values.insert("question_1", first.question.clone());
        if let Some(second) = self.turns.get(1) {
            values.insert("question_2", second.question.clone());
        }
        if let Some(reference) = self.references.first() {
            values.insert("ref_answer_1", reference.clone());
            values.insert("reference", reference.clone());
        }
        if let Some(reference) = self.references.get(1) {
            values.insert("ref_answer_2", reference.clone());
        }
        if let Some(rubric) = rubric {
            values.insert("rubric", rubric.trim().to_owned());
        }
        values
    }
}

/// The judge's inputs for single grading of `transcripts` with `prompt`: one example
/// per transcript (same id), its input the filled template.
pub fn single_examples(
    prompt: &JudgePrompt,
    rubric: Option<&str>,
    transcripts: &[Transcript],
) -> Result<Vec<Example>, EvalError> {
    transcripts
        .iter()
        .map(|t| {
            let mut values = t.common_values(rubric);
            values.insert("answer", t.turns[0].answer.clone());
            values.insert("answer_1", t.turns[0].answer.clone());
            if let Some(second) = t.turns.get(1) {
                values.insert("answer_2", second.answer.clone());
            }
            let input = prompt.fill(&values).map_err(|message| EvalError::Example {
                id: t.id.clone(),
                message,
            })?;
            Ok(Example::new(t.id.clone(), input, None))
        })
        .collect()
}

/// A judge's verdict on one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The rating read from the judge's text (`None`: none could be read).
    pub score: Option<f64>,
    /// The judge prompt used.
    pub prompt: String,
    /// What the judge wrote (or why it wrote nothing).
    pub text: String,
}

/// Sets each of `rows`' [`Row::judgement`] from the judge's `judged` report (rows
/// paired by id, judged with `prompt`): a rating of at least `pass` is right, a
/// lower one wrong, an unreadable one (or a failed judge) leaves the row ungraded.
/// Rows the judge did not see are left as they are.
pub fn apply_grades(rows: &mut [Row], prompt: &str, judged: &Report, pass: f64) {
    let by_id: HashMap<&str, &Row> = judged.rows.iter().map(|r| (r.id.as_str(), r)).collect();
    for row in rows.iter_mut() {
        let Some(verdict) = by_id.get(row.id.as_str()) else {
            continue;
        };
        let text = match (&verdict.outcome.answer, &verdict.outcome.error) {
            (Some(text), _) => text.clone(),
            (None, Some(error)) => format!("(the judge failed: {error})"),
            (None, None) => "(the judge gave no answer)".to_owned(),
        };
        let score = verdict.outcome.answer.as_deref().and_then(read_rating);
        row.correct = score.map(|s| s >= pass);
        row.extracted = score.map(|s| format!("{s}"));
        row.judgement = Some(Judgement {
            score,
            prompt: prompt.to_owned(),
            text,
        });
    }
}

static RATING_DOUBLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]").expect("rating pattern"));
static RATING_SINGLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[\s*(\d+(?:\.\d+)?)\s*\]").expect("rating pattern"));
static RATING_WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)rating\s*[:=]\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?").expect("rating pattern")
});

/// The rating in a judge's text, as MT-Bench reads it: the last `[[N]]`, else the
/// last `[N]`, else `Rating: N`; only 0 to 10 counts.
pub fn read_rating(text: &str) -> Option<f64> {
    [&*RATING_DOUBLE, &*RATING_SINGLE, &*RATING_WORD]
        .iter()
        .find_map(|pattern| {
            pattern
                .captures_iter(text)
                .filter_map(|c| c.get(1)?.as_str().parse::<f64>().ok())
                .filter(|r| (0.0..=10.0).contains(r))
                .last()
        })
}

/// A pairwise verdict, by the position the answer was shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The answer shown first (`[[A]]`).
    First,
    /// The answer shown second (`[[B]]`).
    Second,
    /// Neither (`[[C]]`, `[[tie]]`, or equal ratings).
    Tie,
    /// No verdict could be read.
    Unreadable,
}

static VERDICT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\[\[\s*(A|B|C|tie)\s*\]\]").expect("verdict pattern"));
static VERDICT_RATINGS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[\[\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\]\]").expect("ratings pattern")
});

/// The verdict in a pairwise judge's text: the last `[[A]]`, `[[B]]`, `[[C]]` (or
/// `[[tie]]`), else MT-Bench's `pair-v1` ratings `[[8, 7]]` compared.
pub fn read_verdict(text: &str) -> Verdict {
    if let Some(letter) = VERDICT
        .captures_iter(text)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_ascii_uppercase()))
        .last()
    {
        return match letter.as_str() {
            "A" => Verdict::First,
            "B" => Verdict::Second,
            _ => Verdict::Tie,
        };
    }
    let ratings = VERDICT_RATINGS.captures_iter(text).last().and_then(|c| {
        let a = c.get(1)?.as_str().parse::<f64>().ok()?;
        let b = c.get(2)?.as_str().parse::<f64>().ok()?;
        Some((a, b))
    });
    match ratings {
        Some((a, b)) if a > b => Verdict::First,
        Some((a, b)) if a < b => Verdict::Second,
        Some(_) => Verdict::Tie,
        None => Verdict::Unreadable,
    }
}

/// Which run a pair went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Winner {
    /// The first run (`a`).
    A,
    /// The second run (`b`).
    B,
    /// Neither: the judge said so in both orders, or the orders disagreed.
    Tie,
    /// At least one order gave no readable verdict.
    Unreadable,
}

/// How the two orders of one pair relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agreement {
    /// Both orders chose the same run, or both said tie.
    Consistent,
    /// The orders chose different runs: whichever was shown in one position won
    /// both times (a tie).
    Flipped,
    /// One order chose a run, the other said tie (a tie).
    Partial,
    /// A verdict could not be read.
    Unreadable,
}

/// One example judged in both orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// The example's id.
    pub id: String,
    /// The question (first turn).
    pub question: String,
    /// The verdict with `a`'s answer shown first.
    pub a_first: Verdict,
    /// The verdict with `b`'s answer shown first.
    pub b_first: Verdict,
    /// Who won.
    pub winner: Winner,
    /// How the two orders relate.
    pub agreement: Agreement,
    /// The judge's texts, `a` first then `b` first.
    pub texts: [String; 2],
}

/// The ids of the judge's two inputs for one pair.
fn order_ids(id: &str) -> [String; 2] {
    [format!("{id}#a-first"), format!("{id}#b-first")]
}

/// What [`pair_examples`] makes: the judge's inputs by the prompt that fills them.
#[derive(Debug, Clone, Default)]
pub struct PairInputs {
    /// The name of each judge prompt used, with its inputs (two per pair, `a`'s
    /// answer first then `b`'s), in the order the prompts were first needed.
    pub groups: Vec<(String, Vec<Example>)>,
    /// Examples of `a` that `b` did not answer (or answered another question).
    pub unmatched: usize,
}

/// The judge's inputs for comparing runs `a` and `b`: for every example both runs
/// answered (same id and first question), the template filled twice, `a`'s answer as
/// Assistant A and then `b`'s. The references shown are `a`'s ([`Transcript::with_references`] sets
/// them from the dataset).
pub fn pair_examples(
    prompts: &[JudgePrompt],
    prompt_name: &str,
    a: &[Transcript],
    b: &[Transcript],
) -> Result<PairInputs, EvalError> {
    let by_id: HashMap<&str, &Transcript> = b.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut unmatched = 0;
    let mut groups: Vec<(String, Vec<Example>)> = Vec::new();
    for ta in a {
        let Some(tb) = by_id.get(ta.id.as_str()) else {
            unmatched += 1;
            continue;
        };
        if ta.turns[0].question != tb.turns[0].question || ta.turns.len() != tb.turns.len() {
            unmatched += 1;
            continue;
        }
        let prompt = JudgePrompt::choose(prompts, prompt_name, JudgeKind::Pairwise, ta).map_err(
            |message| EvalError::Example {
                id: ta.id.clone(),
                message,
            },
        )?;
        let mut inputs = Vec::with_capacity(2);
        for (first, second) in [(ta, *tb), (*tb, ta)] {
            let mut values = ta.common_values(None);
            values.insert("answer_a", first.turns[0].answer.clone());
            values.insert("answer_b", second.turns[0].answer.clone());
            values.insert("answer_a_1", first.turns[0].answer.clone());
            values.insert("answer_b_1", second.turns[0].answer.clone());
            if let (Some(x), Some(y)) = (first.turns.get(1), second.turns.get(1)) {
                values.insert("answer_a_2", x.answer.clone());
                values.insert("answer_b_2", y.answer.clone());
            }
            inputs.push(prompt.fill(&values).map_err(|message| EvalError::Example {
                id: ta.id.clone(),
                message,
            })?);
        }
        let [id_a, id_b] = order_ids(&ta.id);
        let examples = vec![
            Example::new(id_a, inputs[0].clone(), None),
            Example::new(id_b, inputs[1].clone(), None),
        ];
        match groups.iter_mut().find(|(name, _)| *name == prompt.name) {
            Some((_, group)) => group.extend(examples),
            None => groups.push((prompt.name.clone(), examples)),
        }
    }
    Ok(PairInputs { groups, unmatched })
}

/// Two runs compared by a judge, every pair in both orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairwiseReport {
    /// The first run's name.
    pub a: String,
    /// The second run's name.
    pub b: String,
    /// The judge system's name.
    pub judge: String,
    /// Every judged pair, in `a`'s order.
    pub pairs: Vec<Pair>,
    /// Pairs `a` won (both orders).
    pub a_wins: usize,
    /// Pairs `b` won (both orders).
    pub b_wins: usize,
    /// Pairs tied, for whatever reason (said in both orders, flipped, partial).
    pub ties: usize,
    /// Pairs whose verdict changed sides with the order.
    pub flipped: usize,
    /// Pairs with a run chosen in one order and a tie in the other.
    pub partial: usize,
    /// Pairs with an unreadable verdict (left out of the shares).
    pub unreadable: usize,
    /// Examples only one run answered (or whose questions differ).
    pub unmatched: usize,
    /// `flipped / readable pairs`.
    pub flip_share: f64,
    /// `(flipped + partial) / readable pairs`: verdicts that depended on the order.
    pub inconsistent_share: f64,
    /// `a`'s win rate with ties as half: `(a_wins + ties/2) / readable pairs`.
    pub a_win_rate: f64,
    /// How often the judge chose the answer shown first, of its decisive verdicts
    /// (0.5 is no position bias).
    pub first_position_share: f64,
}

impl PairwiseReport {
    /// Reads the judge's verdicts from `judged` (the rows of every [`pair_examples`]
    /// group, in any order) for the pairs of runs `a` and `b`; `transcripts` (`a`'s)
    /// give each pair its question.
    pub fn new(
        a: &str,
        b: &str,
        judge: &str,
        transcripts: &[Transcript],
        judged: &[Row],
        unmatched: usize,
    ) -> PairwiseReport {
        let questions: HashMap<&str, &str> = transcripts
            .iter()
            .map(|t| (t.id.as_str(), t.turns[0].question.as_str()))
            .collect();
        let by_id: HashMap<&str, &Row> = judged.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut report = PairwiseReport {
            a: a.to_owned(),
            b: b.to_owned(),
            judge: judge.to_owned(),
            pairs: Vec::new(),
            a_wins: 0,
            b_wins: 0,
            ties: 0,
            flipped: 0,
            partial: 0,
            unreadable: 0,
            unmatched,
            flip_share: 0.0,
            inconsistent_share: 0.0,
            a_win_rate: 0.0,
            first_position_share: 0.0,
        };
        let (mut first, mut decisive) = (0usize, 0usize);
        let mut seen = std::collections::HashSet::new();
        for row in judged {
            let Some(id) = row.id.strip_suffix("#a-first") else {
                continue;
            };
            if !seen.insert(id.to_owned()) {
                continue;
            }
            let [id_a, id_b] = order_ids(id);
            let (Some(ra), Some(rb)) = (by_id.get(id_a.as_str()), by_id.get(id_b.as_str())) else {
                continue;
            };
            let text = |r: &Row| {
                r.outcome
                    .answer
                    .clone()
                    .or_else(|| {
                        r.outcome
                            .error
                            .clone()
                            .map(|e| format!("(the judge failed: {e})"))
                    })
                    .unwrap_or_default()
            };
            let verdict = |r: &Row| {
                r.outcome
                    .answer
                    .as_deref()
                    .map_or(Verdict::Unreadable, read_verdict)
            };
            let (a_first, b_first) = (verdict(ra), verdict(rb));
            for v in [a_first, b_first] {
                if matches!(v, Verdict::First | Verdict::Second) {
                    decisive += 1;
                    first += usize::from(v == Verdict::First);
                }
            }
            let (winner, agreement) = decide(a_first, b_first);
            match winner {
                Winner::A => report.a_wins += 1,
                Winner::B => report.b_wins += 1,
                Winner::Tie => report.ties += 1,
                Winner::Unreadable => report.unreadable += 1,
            }
            match agreement {
                Agreement::Flipped => report.flipped += 1,
                Agreement::Partial => report.partial += 1,
                _ => {}
            }
            report.pairs.push(Pair {
                id: id.to_owned(),
                question: questions.get(id).copied().unwrap_or_default().to_owned(),
                a_first,
                b_first,
                winner,
                agreement,
                texts: [text(ra), text(rb)],
            });
        }
        let readable = report.pairs.len() - report.unreadable;
        let share = |n: f64| {
            if readable == 0 {
                0.0
            } else {
                n / readable as f64
            }
        };
        report.flip_share = share(report.flipped as f64);
        report.inconsistent_share = share((report.flipped + report.partial) as f64);
        report.a_win_rate = share(report.a_wins as f64 + report.ties as f64 / 2.0);
        report.first_position_share = if decisive == 0 {
            0.0
        } else {
            first as f64 / decisive as f64
        };
        report
    }

    /// The pairs as JSON lines.
    pub fn write_pairs(&self, path: &Path) -> Result<(), EvalError> {
        let mut text = String::new();
        for pair in &self.pairs {
            let line = serde_json::to_string(pair)
                .map_err(|e| EvalError::file(path, format!("cannot encode a pair: {e}")))?;
            text.push_str(&line);
            text.push('\n');
        }
        jielong_util::write_atomic(path, text.as_bytes())?;
        Ok(())
    }

    /// The counts and shares (everything but the pairs) as pretty JSON.
    pub fn write_summary(&self, path: &Path) -> Result<(), EvalError> {
        let mut value = serde_json::to_value(self)
            .map_err(|e| EvalError::file(path, format!("cannot encode the report: {e}")))?;
        if let Some(map) = value.as_object_mut() {
            map.remove("pairs");
        }
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| EvalError::file(path, format!("cannot encode the report: {e}")))?;
        jielong_util::write_atomic(path, format!("{text}\n").as_bytes())?;
        Ok(())
    }
}

/// The winner of a pair from its two verdicts (`a` shown first, then `b` first).
pub fn decide(a_first: Verdict, b_first: Verdict) -> (Winner, Agreement) {
    use Verdict::*;
    // Each verdict in terms of the runs.
    let run = |v: Verdict, shown_first: Winner, shown_second: Winner| match v {
        First => shown_first,
        Second => shown_second,
        Tie => Winner::Tie,
        Unreadable => Winner::Unreadable,
    };
    let x = run(a_first, Winner::A, Winner::B);
    let y = run(b_first, Winner::B, Winner::A);
    match (x, y) {
        (Winner::Unreadable, _) | (_, Winner::Unreadable) => {
            (Winner::Unreadable, Agreement::Unreadable)
        }
        (x, y) if x == y => (x, Agreement::Consistent),
        (Winner::Tie, _) | (_, Winner::Tie) => (Winner::Tie, Agreement::Partial),
        _ => (Winner::Tie, Agreement::Flipped),
    }
}

impl fmt::Display for PairwiseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = |x: f64| format!("{:.1}%", 100.0 * x);
        let readable = self.pairs.len() - self.unreadable;
        writeln!(f, "A: {}", self.a)?;
        writeln!(f, "B: {}", self.b)?;
        writeln!(f, "judge: {} (each pair in both orders)", self.judge)?;
        writeln!(
            f,
            "pairs     {} judged, {} readable, {} unreadable, {} unmatched",
            self.pairs.len(),
            readable,
            self.unreadable,
            self.unmatched
        )?;
        writeln!(
            f,
            "verdicts  A wins {}, B wins {}, ties {} (A's win rate {}, ties as half)",
            self.a_wins,
            self.b_wins,
            self.ties,
            percent(self.a_win_rate)
        )?;
        writeln!(
            f,
            "order     flipped {} ({}), one order a tie {}, depended on the order {}",
            self.flipped,
            percent(self.flip_share),
            self.partial,
            percent(self.inconsistent_share)
        )?;
        write!(
            f,
            "position  the answer shown first won {} of decisive verdicts",
            percent(self.first_position_share)
        )
    }
}
