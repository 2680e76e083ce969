"""Constrained decoding in the batched sampler: every output parses and validates, at any temperature."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from astrai.scheduler import GrammarError, SamplingParams, StructuredOutputsParams

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {"type": "object", "properties": {"city": {"type": "string"},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"]},
    },
    "required": ["name", "age", "tags", "address"],
    "additionalProperties": False,
}


def chat_ids(tok, text: str) -> list[int]:
    return list(tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True))


def test_json_schema_holds_in_one_mixed_batch_at_any_temperature(engine):
    tok = engine.tokenizer
    prompt = chat_ids(tok, "Describe a person as JSON.")
    schema = StructuredOutputsParams(json=PERSON)
    constrained = [SamplingParams(max_tokens=40, temperature=t, seed=i, structured_outputs=schema)
                   for i, t in enumerate([0.0, 0.7, 1.0, 1.5, 2.0, 2.0])]
    free = [SamplingParams(max_tokens=12, temperature=1.0, seed=9), SamplingParams(max_tokens=12, temperature=0.0)]
    outs = engine.generate([prompt] * 8, constrained + free)
    for out in outs[:6]:
        assert out.finish_reason == "stop", out
        jsonschema.validate(json.loads(out.text), PERSON)
    assert outs[7].text == engine.generate([prompt], free[1])[0].text  # unconstrained rows are untouched


def test_tight_budget_still_closes_the_json(engine):
    prompt = chat_ids(engine.tokenizer, "Write JSON.")
    params = SamplingParams(max_tokens=40, temperature=2.0, seed=3, structured_outputs=StructuredOutputsParams(json=PERSON))
    out = engine.generate([prompt], params)[0]
    assert out.finish_reason == "stop" and len(out.token_ids) <= 40
    jsonschema.validate(json.loads(out.text), PERSON)


def test_json_object_regex_choice_and_grammar(engine):
    tok = engine.tokenizer
    prompt = chat_ids(tok, "Answer.")
    specs = [
        StructuredOutputsParams(json_object=True),
        StructuredOutputsParams(regex=r"[A-Z][a-z]{2,6} [0-9]{3}"),
        StructuredOutputsParams(choice=["positive", "negative", "neutral"]),
        StructuredOutputsParams(grammar='start: "yes" | "no" | "maybe"'),
    ]
    outs = engine.generate([prompt] * 4, [SamplingParams(max_tokens=32, temperature=1.5, seed=1,
                                                          structured_outputs=s) for s in specs])
    assert isinstance(json.loads(outs[0].text), dict)
    assert re.fullmatch(r"[A-Z][a-z]{2,6} [0-9]{3}", outs[1].text), outs[1].text
    assert outs[2].text in ("positive", "negative", "neutral")
    assert outs[3].text in ("yes", "no", "maybe")
    assert all(o.finish_reason == "stop" for o in outs)


def test_streamed_constrained_output_equals_its_text(engine):
    prompt = chat_ids(engine.tokenizer, "Describe a person as JSON.")
    params = SamplingParams(max_tokens=48, temperature=1.0, seed=5, structured_outputs=StructuredOutputsParams(json=PERSON))
    text = "".join(d.text for d in engine.stream(prompt, params))
    assert text == engine.generate([prompt], params)[0].text
    jsonschema.validate(json.loads(text), PERSON)


@pytest.mark.parametrize(("spec", "needle"), [
    (dict(json={"type": "object", "properties": {"a": {"$ref": "#/defs/missing"}}}), "/defs/missing"),
    (dict(json={"type": "integer", "minimum": 5, "maximum": 2}), "minimum"),
    (dict(regex="a(b"), "regex"),
    (dict(grammar="start: undefined_rule"), "undefined_rule"),
])
def test_uncompilable_constraint_is_a_value_error_naming_it(engine, spec, needle):
    with pytest.raises(GrammarError, match=re.escape(needle)):
        engine.add_request([1, 2, 3], SamplingParams(structured_outputs=StructuredOutputsParams(**spec)))


def test_structured_outputs_params_validation():
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputsParams()
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputsParams(regex="a", choice=["b"])
    with pytest.raises(ValueError, match="choice"):
        StructuredOutputsParams(choice=[])
