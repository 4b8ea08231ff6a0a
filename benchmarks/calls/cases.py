"""Writes `cases.jsonl`: function-calling requests of our own for the call-fit policy of
`jielong serve` (issue 29, step 5) — requests naming one item, several items of one tool
(parallel), items of two tools (parallel-multiple), and requests no offered tool fits
(irrelevant). Deterministic (fixed seed); run again to regenerate.

    python3 benchmarks/calls/cases.py

Each tool family belongs to a split: `tune` families were looked at while the policy was
written, `held_out` families were not (their figures are the ones to trust).
"""

import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))


def fn(name, description, properties, required):
    return {"type": "function", "function": {"name": name, "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required}}}


S = {"type": "string"}
N = {"type": "number"}
I = {"type": "integer"}

# family: (split, tool, items: list of (phrase, args), templates for one item, for several)
FAMILIES = {
    "weather": ("tune",
        fn("get_current_weather", "Get the current weather in a given location.",
           {"location": S, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["location"]),
        [("Paris", {"location": "Paris"}), ("Tokyo", {"location": "Tokyo"}),
         ("Cairo", {"location": "Cairo"}), ("Lima", {"location": "Lima"}),
         ("Oslo", {"location": "Oslo"}), ("Denver", {"location": "Denver"})],
        ["What's the weather like in {0} right now?", "How is the weather in {0}?"],
        ["What's the weather in {0} and {1}?", "Tell me the current weather in {0}, {1} and {2}."]),
    "triangle": ("tune",
        fn("calculate_triangle_area", "Calculate the area of a triangle from its base and height.",
           {"base": N, "height": N}, ["base", "height"]),
        [("base 10 and height 5", {"base": 10, "height": 5}), ("base 7 and height 3", {"base": 7, "height": 3}),
         ("base 12 and height 9", {"base": 12, "height": 9}), ("base 4 and height 6", {"base": 4, "height": 6})],
        ["Find the area of a triangle with {0}.", "What is the area of a triangle with {0}?"],
        ["Find the areas of two triangles: one with {0}, the other with {1}.",
         "Compute the area of a triangle with {0}, and of one with {1}."]),
    "currency": ("tune",
        fn("convert_currency", "Convert an amount of money from one currency to another.",
           {"amount": N, "from_currency": S, "to_currency": S}, ["amount", "from_currency", "to_currency"]),
        [("100 USD to EUR", {"amount": 100, "from_currency": "USD", "to_currency": "EUR"}),
         ("250 GBP to JPY", {"amount": 250, "from_currency": "GBP", "to_currency": "JPY"}),
         ("40 EUR to CHF", {"amount": 40, "from_currency": "EUR", "to_currency": "CHF"}),
         ("75 CAD to USD", {"amount": 75, "from_currency": "CAD", "to_currency": "USD"})],
        ["Convert {0}.", "How much is {0}?"],
        ["Convert {0} and {1}.", "Please convert {0}, {1} and {2}."]),
    "factorial": ("tune",
        fn("factorial", "Compute the factorial of a non-negative integer.", {"n": I}, ["n"]),
        [("5", {"n": 5}), ("8", {"n": 8}), ("12", {"n": 12}), ("3", {"n": 3})],
        ["What is the factorial of {0}?", "Calculate {0} factorial."],
        ["What are the factorials of {0} and {1}?", "Compute the factorial of {0}, {1} and {2}."]),
    "stock": ("tune",
        fn("get_stock_price", "Get the latest share price of a company by its ticker symbol.",
           {"ticker": S}, ["ticker"]),
        [("AAPL", {"ticker": "AAPL"}), ("MSFT", {"ticker": "MSFT"}), ("TSLA", {"ticker": "TSLA"}),
         ("NVDA", {"ticker": "NVDA"})],
        ["What is the stock price of {0}?", "Look up the share price for {0}."],
        ["Get the stock prices of {0} and {1}.", "What are the share prices of {0}, {1} and {2}?"]),
    "bmi": ("held_out",
        fn("determine_body_mass_index", "Calculate body mass index given weight and height.",
           {"weight": N, "height": N}, ["weight", "height"]),
        [("70 kg and 1.75 m", {"weight": 70, "height": 1.75}), ("82 kg and 1.8 m", {"weight": 82, "height": 1.8}),
         ("55 kg and 1.6 m", {"weight": 55, "height": 1.6}), ("95 kg and 1.9 m", {"weight": 95, "height": 1.9})],
        ["What is the body mass index of a person with {0}?", "Compute the BMI for {0}."],
        ["Compute the BMI for {0} and for {1}.", "Body mass index for three people: {0}; {1}; {2}."]),
    "circle": ("held_out",
        fn("circle_area", "Area of a circle from its radius.", {"radius": N}, ["radius"]),
        [("3", {"radius": 3}), ("5", {"radius": 5}), ("10", {"radius": 10}), ("2.5", {"radius": 2.5})],
        ["What is the area of a circle with radius {0}?", "Find the area of a circle of radius {0}."],
        ["Find the areas of circles with radius {0} and {1}.", "Circle areas for radii {0}, {1} and {2}."]),
    "translate": ("held_out",
        fn("translate_text", "Translate text into a target language.",
           {"text": S, "target_language": S}, ["text", "target_language"]),
        [("'good morning' into Spanish", {"text": "good morning", "target_language": "Spanish"}),
         ("'thank you' into German", {"text": "thank you", "target_language": "German"}),
         ("'where is the station' into French", {"text": "where is the station", "target_language": "French"}),
         ("'happy birthday' into Italian", {"text": "happy birthday", "target_language": "Italian"})],
        ["Translate {0}.", "Please translate {0}."],
        ["Translate {0} and {1}.", "Translate {0}, {1} and {2}."]),
    "interest": ("held_out",
        fn("compound_interest", "Compound interest earned on a principal at a yearly rate over years.",
           {"principal": N, "rate": N, "years": I}, ["principal", "rate", "years"]),
        [("1000 dollars at 5% for 3 years", {"principal": 1000, "rate": [5, 0.05], "years": 3}),
         ("2500 dollars at 4% for 10 years", {"principal": 2500, "rate": [4, 0.04], "years": 10}),
         ("500 dollars at 7% for 2 years", {"principal": 500, "rate": [7, 0.07], "years": 2}),
         ("8000 dollars at 3% for 5 years", {"principal": 8000, "rate": [3, 0.03], "years": 5})],
        ["How much compound interest do {0} earn?", "Compute the compound interest on {0}."],
        ["Compute the compound interest on {0} and on {1}.", "Compound interest for {0}; {1}; and {2}."]),
    "timezone": ("held_out",
        fn("get_local_time", "Get the current local time in a city.", {"city": S}, ["city"]),
        [("Sydney", {"city": "Sydney"}), ("London", {"city": "London"}), ("Chicago", {"city": "Chicago"}),
         ("Mumbai", {"city": "Mumbai"})],
        ["What time is it in {0} now?", "Tell me the local time in {0}."],
        ["What time is it in {0} and {1}?", "Local time in {0}, {1} and {2}, please."]),
}

# Questions that no tool above answers.
OFF_TOPIC = {
    "tune": ["Who wrote the novel Pride and Prejudice?", "Write a haiku about autumn leaves.",
             "What is the capital of Canada?", "Summarise the plot of Hamlet in two sentences."],
    "held_out": ["How many legs does a spider have?", "Suggest a name for a black cat.",
                 "Explain what photosynthesis is.", "What language is spoken in Brazil?"],
}


def main():
    rng = random.Random(29)
    cases = []
    names = list(FAMILIES)
    for family in names:
        split, tool, items, single, several = FAMILIES[family]
        for k, template in enumerate(single):
            for item in items[k::2][:2]:
                cases.append({"kind": "single", "split": split, "family": family,
                              "question": template.format(item[0]), "tools": [tool],
                              "expected": [{"name": tool["function"]["name"], "arguments": item[1]}]})
        for template in several:
            count = template.count("{")
            picks = rng.sample(items, count)
            cases.append({"kind": "parallel", "split": split, "family": family,
                          "question": template.format(*[p[0] for p in picks]), "tools": [tool],
                          "expected": [{"name": tool["function"]["name"], "arguments": p[1]} for p in picks]})
        # Irrelevant: this family's single question offered another family's tool.
        other = names[(names.index(family) + 3) % len(names)]
        for item in items[:2]:
            cases.append({"kind": "irrelevant", "split": split, "family": family,
                          "question": single[0].format(item[0]), "tools": [FAMILIES[other][1]],
                          "expected": []})
    # Two families in one request (parallel-multiple), each split with its own.
    for split in ("tune", "held_out"):
        fams = [f for f in names if FAMILIES[f][0] == split]
        for a, b in zip(fams, fams[1:] + fams[:1]):
            ia, ib = FAMILIES[a][2][0], FAMILIES[b][2][1]
            question = (FAMILIES[a][3][0].format(ia[0]).rstrip("?.") + ", and also "
                        + FAMILIES[b][3][1].format(ib[0])[0].lower() + FAMILIES[b][3][1].format(ib[0])[1:])
            cases.append({"kind": "multiple", "split": split, "family": a + "+" + b,
                          "question": question, "tools": [FAMILIES[a][1], FAMILIES[b][1]],
                          "expected": [{"name": FAMILIES[a][1]["function"]["name"], "arguments": ia[1]},
                                       {"name": FAMILIES[b][1]["function"]["name"], "arguments": ib[1]}]})
        for question in OFF_TOPIC[split]:
            offered = [FAMILIES[f][1] for f in rng.sample(fams, 2)]
            cases.append({"kind": "irrelevant", "split": split, "family": "off-topic",
                          "question": question, "tools": offered, "expected": []})
    with open(os.path.join(HERE, "cases.jsonl"), "w") as out:
        for i, case in enumerate(cases):
            out.write(json.dumps({"id": f"c{i:03d}", **case}) + "\n")
    kinds = {}
    for case in cases:
        key = (case["split"], case["kind"])
        kinds[key] = kinds.get(key, 0) + 1
    print(len(cases), "cases:", ", ".join(f"{s}/{k} {n}" for (s, k), n in sorted(kinds.items())))


if __name__ == "__main__":
    main()
