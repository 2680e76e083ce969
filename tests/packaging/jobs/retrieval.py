"""astrai-retrieval's basic job, run inside its own venv: a durable hybrid store, reopened, and
the sentence encoder it re-exports from astrai-model.

    python retrieval.py ENCODER_FOLDER TEXT...

Passages with known vectors go into a store that switches to an HNSW graph past 200 passages;
after a reopen, hybrid, dense and sparse searches find them, a filter narrows them, and
cache-aware ordering (astrai-cache's count-min sketch) puts the popular passage first. None of
that loads torch; then `load_encoder(ENCODER_FOLDER)` embeds the texts.
"""

import json
import sys
import tempfile

import numpy as np
from astrai.retrieval import (
    Passage,
    PassagePopularity,
    PromptPassage,
    RankingOptions,
    StoreSettings,
    VectorStore,
    order_for_cache,
)

torch_at_import = "torch" in sys.modules

rng = np.random.default_rng(0)
vectors = rng.normal(size=(300, 24)).astype(np.float32)
settings = StoreSettings("packaging-test", 24, exact_max_passages=200, hnsw_ef_construction=64)
folder = tempfile.mkdtemp() + "/store"
with VectorStore.create(folder, settings) as store:
    store.upsert([Passage(f"p{i}", f"file{i % 3}", f"passage {i} about topic{i}", vectors[i], {"i": i})
                  for i in range(300)])
with VectorStore.open(folder, settings) as store:
    stats = store.stats()
    hybrid = store.search("topic42", vectors[42], k=3)[0]
    dense = store.search(None, vectors[7], k=1, options=RankingOptions(mode="dense"))[0].passage.id
    sparse = store.search("topic99", None, k=1, options=RankingOptions(mode="sparse"))[0].passage.id
    filtered = {h.passage.metadata["i"] for h in store.search("passage", vectors[0], k=50,
                                                              filter={"type": "lt", "key": "i", "value": 5})}
popularity = PassagePopularity(256)
popularity.record(["p9", "p9", "p3"])
order = [p.id for p in order_for_cache([PromptPassage(f"p{i}", (i,), i) for i in (3, 5, 9)], popularity=popularity)]
torch_after_popularity = "torch" in sys.modules

from astrai.retrieval import load_encoder  # noqa: E402  (after the index work: this one loads torch)

encoder = load_encoder(sys.argv[1])
embeddings = encoder.encode(sys.argv[2:]).tolist()
print(json.dumps({"passages": stats.passages, "dense_index": stats.dense_index, "native": stats.native,
                  "hybrid": [hybrid.passage.id, hybrid.dense_rank, hybrid.sparse_rank], "dense": dense,
                  "sparse": sparse, "filtered": sorted(filtered), "order": order,
                  "torch_at_import": torch_at_import, "torch_after_popularity": torch_after_popularity,
                  "embeddings": embeddings, "dimension": encoder.dimension}))
