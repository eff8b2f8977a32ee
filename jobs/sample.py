"""The demo's sample dataset: short English-like sentences in a few Parquet shards."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

_WORDS = (
    "the a of to and in is was for on that with as by at from it an be this are or which have has had not but "
    "data model river city music science history language light water energy system market player team season "
    "study report design network garden winter summer island mountain engine library museum village forest "
    "computer student teacher country century company research planet ocean storm bridge railway festival "
    "builds carries describes opens follows grows changes measures records explains shows moves improves "
    "quickly slowly often rarely early late together alone nearby across under over between during after before "
    "bright quiet ancient modern large small heavy simple complex public private local global northern southern"
).split()


def write_sample_dataset(directory: Path, rows: int = 2000, shards: int = 4, seed: int = 0) -> list[Path]:
    """``shards`` files of sentences of 20–61 words (ids ``s<n>``), the same every time."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, rows, shards + 1).astype(int)
    paths = []
    for shard in range(shards):
        ids, texts = [], []
        for n in range(bounds[shard], bounds[shard + 1]):
            words = rng.choice(_WORDS, size=int(rng.integers(20, 62)))
            ids.append(f"s{n:06d}")
            texts.append(" ".join(words).capitalize() + ".")
        path = directory / f"part-{shard:04d}.parquet"
        pq.write_table(pa.table({"id": ids, "text": texts}), path)
        paths.append(path)
    logger.info("wrote a sample dataset: %d rows in %d files under %s", rows, shards, directory)
    return paths
