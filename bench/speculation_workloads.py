"""The speculation workload set, built offline and deterministically (no model, no network).

    python -m bench.speculation_workloads          # rewrites bench/speculation_workloads.json
    python -m bench.speculation_workloads --check  # fails if the checked-in file is stale

Five workloads of chat requests, four variants each, written from fixed seeds:

- `rag`: answer a question from three retrieved passages, quoting them;
- `code_edit`: a 200-line Python module in the prompt, one rename asked, the whole file back;
- `json_reformat`: a compact JSON document to pretty-print with 2-space indentation;
- `chat_repeat`: a multi-turn chat whose last turn asks to restate an earlier answer;
- `open_chat`: open-ended questions with nothing to copy (the control).

The first three are the copy-heavy ones (the output re-states text of the prompt).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

PATH = Path(__file__).resolve().parent / "speculation_workloads.json"
VARIANTS = 4
COPY_HEAVY = ("rag", "code_edit", "json_reformat")

_PLACES = ["Marlow", "Kestrel Bay", "Oakridge", "Veldt Harbor", "Ashcombe", "Linden Falls", "Corvin Point", "Brightwater"]
_THINGS = ["lighthouse", "salt marsh", "railway bridge", "observatory", "seed bank", "paper mill", "tide gauge",
           "clock tower", "wind farm", "public library"]
_VERBS = ["was built", "was restored", "was expanded", "was closed", "was reopened", "was surveyed"]
_REASONS = ["after a storm damaged the coast", "to serve the growing town", "with money raised by residents",
            "when the old one failed an inspection", "as part of a regional plan", "to protect migrating birds"]


def _sentence(rng: random.Random) -> str:
    year = rng.randint(1850, 2020)
    return (f"The {rng.choice(_THINGS)} of {rng.choice(_PLACES)} {rng.choice(_VERBS)} in {year} "
            f"{rng.choice(_REASONS)}.")


def _passage(rng: random.Random, sentences: int) -> str:
    return " ".join(_sentence(rng) for _ in range(sentences))


def rag(rng: random.Random) -> list[dict]:
    passages = [_passage(rng, 5) for _ in range(3)]
    place = rng.choice(_PLACES)
    context = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
    return [
        {"role": "system", "content": "You answer questions using only the passages given. Quote every "
                                      "passage you use word for word, in quotation marks, before you answer."},
        {"role": "user", "content": f"Passages:\n\n{context}\n\nQuestion: what happened to the buildings of "
                                    f"{place}? Quote passages [1], [2] and [3] in full, then answer."},
    ]


def _function(rng: random.Random, name: str) -> list[str]:
    a, b = rng.sample(["items", "values", "rows", "prices", "weights", "counts"], 2)
    k = rng.randint(2, 9)
    return [
        f"def {name}({a}, {b}=None):",
        f'    """Combine {a} with {b} and return the result."""',
        f"    if {b} is None:",
        f"        {b} = []",
        "    result = []",
        f"    for index, value in enumerate({a}):",
        f"        if index < len({b}):",
        f"            value = value + {b}[index] * {k}",
        "        result.append(value)",
        "    return result",
        "",
        "",
    ]


def code_edit(rng: random.Random) -> list[dict]:
    names = [f"{rng.choice(['load', 'merge', 'scale', 'clean', 'score', 'split'])}_{w}"
             for w in rng.sample(["records", "totals", "batches", "frames", "entries", "columns", "tables",
                                  "samples", "groups", "blocks", "ranges", "events", "orders", "points",
                                  "labels", "tokens", "series", "charts"], 16)]
    lines = ['"""Utilities for combining tabular data."""', "", "import math", "", ""]
    for name in names:
        lines += _function(rng, name)
    lines += ["def compute_total(values):", '    """Sum the values, skipping NaN."""',
              "    return sum(v for v in values if not math.isnan(v))", ""]
    lines = lines[:200] + [""] * max(0, 200 - len(lines))
    source = "\n".join(lines)
    old = names[rng.randrange(len(names))]
    new = old.replace("_", "_all_", 1)
    return [
        {"role": "user", "content": f"Here is a Python file:\n\n```python\n{source}\n```\n\nRename the function "
                                    f"`{old}` to `{new}`. Reply with the complete updated file and nothing else."},
    ]


def json_reformat(rng: random.Random) -> list[dict]:
    records = [{"id": i + 1, "name": f"{rng.choice(_PLACES)} {rng.choice(_THINGS)}",
                "year": rng.randint(1850, 2020), "open": rng.random() < 0.6,
                "tags": rng.sample(["coast", "history", "transport", "science", "nature", "industry"], 2)}
               for i in range(12)]
    doc = json.dumps({"region": rng.choice(_PLACES), "sites": records}, separators=(",", ":"))
    return [
        {"role": "user", "content": f"Reformat this JSON document with an indentation of 2 spaces. Keep every "
                                    f"key and value unchanged and output only the JSON.\n\n{doc}"},
    ]


def chat_repeat(rng: random.Random) -> list[dict]:
    thing, place = rng.choice(_THINGS), rng.choice(_PLACES)
    steps = [f"Step {i + 1}: {s}" for i, s in enumerate(rng.sample([
        "Check the weather forecast the evening before.", "Pack water, a map and a first-aid kit.",
        "Tell someone where you are going and when you will be back.", "Start early to avoid the midday heat.",
        "Stay on the marked paths.", "Take a photo of the notice board at the entrance.",
        "Turn back if the path is closed.", "Leave nothing behind."], 6))]
    answer = f"Here is how to plan a visit to the {thing} of {place}:\n" + "\n".join(steps)
    return [
        {"role": "user", "content": f"How should I plan a visit to the {thing} of {place}?"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "Thanks. What should I bring?"},
        {"role": "assistant", "content": "Water, a map, a first-aid kit and a charged phone."},
        {"role": "user", "content": "Please repeat your first answer exactly, word for word, so I can print it."},
    ]


def open_chat(rng: random.Random) -> list[dict]:
    topics = ["Write a short story about a lighthouse keeper who finds a message in a bottle.",
              "What are some good habits for staying focused while studying?",
              "Describe an imaginary city floating above the clouds.",
              "Why do some birds migrate and others stay all winter?",
              "Invent a new board game and explain how to play it.",
              "Write a letter from a cat to its owner."]
    return [{"role": "user", "content": rng.choice(topics)}]


BUILDERS = {"rag": rag, "code_edit": code_edit, "json_reformat": json_reformat, "chat_repeat": chat_repeat,
            "open_chat": open_chat}


def build() -> dict:
    workloads = {}
    for w, (name, builder) in enumerate(BUILDERS.items()):
        workloads[name] = [builder(random.Random(1000 * w + v)) for v in range(VARIANTS)]
    return {"format": "astrai-speculation-workloads", "version": 1, "copy_heavy": list(COPY_HEAVY),
            "workloads": workloads}


def load() -> dict:
    """The checked-in workload set."""
    return json.loads(PATH.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the checked-in file differs from a rebuild")
    args = ap.parse_args()
    text = json.dumps(build(), indent=1) + "\n"
    if args.check:
        if PATH.read_text() != text:
            print(f"{PATH} is stale: run python -m bench.speculation_workloads", file=sys.stderr)
            return 1
        return 0
    PATH.write_text(text)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
