"""The retrieval numbers of a live `astrai serve` (rag extra), read from its /metrics.

Promo imports neither the server nor astrai.retrieval: a running server's own Prometheus
counters say how big its vector stores are and how much of its RAG prompts came from the
prefix cache. `astrai-promo record --retrieval-from URL` stores them as the trace's optional
`retrieval` section.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Any

# trace key -> the server's metric (a sample without labels)
METRICS = {
    "vector_stores": "astrai:vector_stores",
    "passages": "astrai:vector_store_passages",
    "rag_requests": "astrai:rag_requests_total",
    "rag_prompt_tokens": "astrai:rag_prompt_tokens_total",
    "rag_cached_tokens": "astrai:rag_cached_prompt_tokens_total",
}
KEYS = (*METRICS, "cache_hit_share")


class RetrievalStatsError(ValueError):
    """The server could not be read, or serves no vector stores."""


def parse_metrics(text: str) -> dict[str, Any]:
    """The retrieval section from Prometheus text; `cache_hit_share` = cached / prompt tokens of RAG requests."""
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^([\w:]+) (\S+)$", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    missing = [name for name in METRICS.values() if name not in samples]
    if missing:
        raise RetrievalStatsError(f"the server exports no {missing[0]}: it serves no vector stores (start it with "
                                  "the rag extra, an embedding model and --data-dir)")
    out: dict[str, Any] = {key: int(samples[name]) for key, name in METRICS.items()}
    prompt = out["rag_prompt_tokens"]
    out["cache_hit_share"] = round(out["rag_cached_tokens"] / prompt, 4) if prompt else 0.0
    return out


def scrape(base_url: str, api_key: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """GET {base_url}/metrics and parse it (base_url without /v1)."""
    url = base_url.rstrip("/").removesuffix("/v1") + "/metrics"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise RetrievalStatsError(f"cannot read {url}: {exc}") from None
    return {**parse_metrics(text), "source": url}
