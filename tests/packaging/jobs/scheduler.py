"""astrai-scheduler's basic job, run inside its own venv: greedy generation on a tiny model."""

import json
import sys

from astrai.scheduler import Engine, SamplingParams

prompts = [[int(t) for t in p.split(",")] for p in sys.argv[2:]]
params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
with Engine.from_pretrained(sys.argv[1], dtype="float32", num_pages=64, page_size=4) as engine:
    outputs = engine.generate(prompts, params)
print(json.dumps({"tokens": [list(o.token_ids) for o in outputs], "finish": [o.finish_reason for o in outputs]}))
