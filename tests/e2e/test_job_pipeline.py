"""The job through Ray Data on a local Ray: S3 in and out, shards and actors, reruns, bad rows,
classification.  One Ray instance and one S3 server serve every test here."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.common import BadRowError
from jobs import records
from jobs.infer import run_job
from jobs.spec import parse_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

WORDS = "the river carries water from a mountain to the ocean past quiet villages and old forests".split()


def sentences(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 30)))) for _ in range(count)]


def write_shards(directory: Path, sizes: list[int], row_group_size: int | None = None) -> dict[str, list[str]]:
    """Shards ``part-<i>.parquet`` with ``id``, ``text`` and ``lang``; returns name → texts."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = {}
    for i, size in enumerate(sizes):
        name = f"part-{i}.parquet"
        rows = sentences(size, seed=i)
        table = pa.table({"id": [f"doc-{i}-{n}" for n in range(size)], "text": rows, "lang": ["en"] * size})
        pq.write_table(table, directory / name, row_group_size=row_group_size)
        texts[name] = rows
    return texts


def job(*argv: str) -> dict[str, Any]:
    return run_job(parse_spec(list(argv)))


def reference_embeddings(model: str, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model, device="cpu").encode(texts, batch_size=32, convert_to_numpy=True)


def read_outputs(directory: Path) -> dict[str, pa.Table]:
    # Names starting with _ are the job's own files (_files.parquet), as Parquet readers skip them.
    return {str(p.relative_to(directory)): pq.read_table(p) for p in sorted(directory.rglob("*.parquet"))
            if not p.name.startswith("_")}


def test_s3_in_s3_out_equals_the_model_called_directly(s3_server, minilm: str, tmp_path: Path) -> None:
    """Input shards and the model on a real S3 server; output read back from it."""
    fs = s3_server.filesystem()
    texts = write_shards(tmp_path / "in", [30, 45])
    fs.put(str(tmp_path / "in") + "/", f"{s3_server.bucket}/s3job/in/", recursive=True)
    fs.put(minilm + "/", f"{s3_server.bucket}/models/minilm/", recursive=True)
    cache = tmp_path / "model-cache"
    manifest = job("--model", f"s3://{s3_server.bucket}/models/minilm/", "--input", f"s3://{s3_server.bucket}/s3job/in/",
                   "--output", f"s3://{s3_server.bucket}/s3job/out", "--storage-options", json.dumps(s3_server.storage_options),
                   "--cache-dir", str(cache), "--actors", "2", "--tokenize-pool")
    out = f"{s3_server.bucket}/s3job/out"
    assert fs.exists(f"{out}/_SUCCESS")
    stored = json.loads(fs.cat(f"{out}/_manifest.json"))
    assert stored["summary"]["rows"] == 75 and stored["model"]["weights_digest"] == manifest["model"]["weights_digest"]
    assert stored["resources"]["fused_tokenize"] is False  # --tokenize-pool: the GPU clusters' layout, on CPUs
    assert stored["job"]["storage_options"]["secret"] == "***"
    settings = stored["task"]["settings"]
    assert settings["pooling"] == "mean" and settings["normalize"] is True  # from the model's ST files
    assert stored["identity"]["pooling"] == "mean" and stored["identity"]["normalize"] is True
    reference = reference_embeddings(minilm, texts["part-0.parquet"] + texts["part-1.parquet"])
    tables = []
    for name, rows in texts.items():
        with fs.open(f"{out}/{name}", "rb") as handle:
            table = pq.read_table(handle)
        assert table["id"].to_pylist() == [f"{name}#{n}" for n in range(len(rows))]
        tables.append(table)
    ours = np.array(pa.concat_tables(tables)["embedding"].to_pylist())
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.99999
    # The remote model was downloaded once into the node's cache, completely.
    cached = [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert sorted(p.name for p in cached if p.suffix == ".safetensors") == ["model.safetensors"]
    assert not [p for p in cached if p.name.endswith(".incomplete")]


def test_shards_and_actors_rerun_keeps_the_same_files(minilm: str, tmp_path: Path) -> None:
    """Several shards (one split into units, one in row groups, one empty), two actors; a rerun
    keeps every committed file, a rerun with another split computes only the re-split shard and
    removes the old split's files, and --overwrite computes everything again."""
    sizes = [40, 7, 130, 0, 25]
    write_shards(tmp_path / "in", sizes, row_group_size=16)
    out = tmp_path / "out"
    argv = ["--model", minilm, "--input", str(tmp_path / "in"), "--output", str(out), "--id-column", "id",
            "--keep-columns", "lang", "--actors", "2", "--max-rows-per-file", "50", "--max-batch-tokens", "512"]
    first = job(*argv)
    files = read_outputs(out)
    assert sorted(files) == ["part-0.parquet", "part-1.parquet", "part-2-00000-of-00003.parquet",
                             "part-2-00001-of-00003.parquet", "part-2-00002-of-00003.parquet", "part-4.parquet"]
    part2 = pa.concat_tables([files[f"part-2-0000{k}-of-00003.parquet"] for k in range(3)])
    assert part2["id"].to_pylist() == [f"doc-2-{n}" for n in range(130)]
    assert files["part-0.parquet"].column_names == ["id", "lang", "embedding", "truncated"]
    shards = {s["name"]: s for s in first["shards"]}
    assert [shards[f"part-{i}.parquet"]["rows"] for i in range(5)] == sizes
    assert shards["part-3.parquet"]["outputs"] == []
    assert first["resources"]["max_actors"] == 2 and first["resources"]["fused_tokenize"] is True  # CPUs' default
    summary = first["summary"]
    assert summary["rows"] == sum(sizes) and summary["files"] == 6 and summary["bad_rows"] == 0
    assert 0 <= summary["padding_ratio"] < 0.5 and summary["tokens_per_second"] > 0
    assert set(summary["seconds"]["stages_busy"]) == {"read", "tokenize", "model", "write"}

    second = job(*argv)
    assert read_outputs(out).keys() == files.keys()
    for name, table in read_outputs(out).items():
        assert table.equals(files[name]), name
    assert second["model"]["weights_digest"] == first["model"]["weights_digest"]
    assert (second["summary"]["skipped_files"], second["summary"]["computed_files"], second["resources"]) == (6, 0, None)
    assert second["summary"]["rows"] == sum(sizes) and second["summary"]["tokens"] == summary["tokens"]

    third = job(*argv[:-4], "--max-rows-per-file", "1000")
    assert sorted(read_outputs(out)) == ["part-0.parquet", "part-1.parquet", "part-2.parquet", "part-4.parquet"]
    np.testing.assert_allclose(np.array(read_outputs(out)["part-2.parquet"]["embedding"].to_pylist()),
                               np.array(part2["embedding"].to_pylist()), atol=1e-5)
    assert (third["summary"]["skipped_files"], third["summary"]["computed_files"]) == (3, 1)
    assert (out / "_SUCCESS").exists()

    fourth = job(*argv[:-4], "--max-rows-per-file", "1000", "--overwrite")
    assert (fourth["summary"]["skipped_files"], fourth["summary"]["computed_files"]) == (0, 4)
    # Every file's commit record, folded into the side file when the run committed.
    assert sorted(records.decode((out / records.FILES).read_bytes())) == sorted(read_outputs(out))
    assert not list((out / "_commits").rglob("*.json"))


def _bad_rows_input(directory: Path) -> None:
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"text": ["good one", None, "good two"]}), directory / "a.parquet")
    pq.write_table(pa.table({"text": pa.array([b"fine", b"\xc3\x28 broken"], pa.binary())}), directory / "b.parquet")


def test_bad_rows_stop_the_job_naming_file_and_row(minilm: str, tmp_path: Path) -> None:
    _bad_rows_input(tmp_path / "in")
    with pytest.raises(BadRowError, match=r"a\.parquet row 1: column 'text' is null"):
        job("--model", minilm, "--input", str(tmp_path / "in" / "a.parquet"), "--output", str(tmp_path / "out"))
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_bad_rows_flagged_and_counted(minilm: str, tmp_path: Path) -> None:
    _bad_rows_input(tmp_path / "in")
    manifest = job("--model", minilm, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                   "--on-bad-row", "flag")
    a, b = pq.read_table(tmp_path / "out" / "a.parquet"), pq.read_table(tmp_path / "out" / "b.parquet")
    assert a["embedding"].is_null().to_pylist() == [False, True, False]
    assert a["error"].to_pylist() == [None, "column 'text' is null", None]
    assert b["error"][1].as_py().startswith("column 'text' is not valid UTF-8")
    assert manifest["summary"]["bad_rows"] == 2 and manifest["errors"]["bad_rows"] == 2
    assert {s["name"]: s["bad_rows"] for s in manifest["shards"]} == {"a.parquet": 1, "b.parquet": 1}
    assert "a.parquet row 1: column 'text' is null" in manifest["errors"]["examples"]


def test_classification_job_on_text_pairs_equals_the_reference(tiny_classifier: Path, reference_predictions,
                                                                tmp_path: Path) -> None:
    texts = write_shards(tmp_path / "in", [12, 9])
    spec = tmp_path / "job.yaml"
    spec.write_text(f"task: classify\nmodel: {tiny_classifier}\ninput: {tmp_path / 'in'}\noutput: {tmp_path / 'out'}\n"
                    "text_pair_column: lang\nreturn_probs: true\nactors: 1\n")
    manifest = job("--spec", str(spec))
    assert manifest["model"]["model_class"] == "BertForSequenceClassification"
    assert manifest["task"] == {"name": "classify", "settings": {"function": "softmax", "threshold": 0.5, "return_probs": True,
                                                                 "return_logits": False},
                                "output_schema": "label: string\nlabel_id: int32\nscore: float\nprobs: fixed_size_list<item: float>[3]\n  child 0, item: float"}
    for name, rows in texts.items():
        table = pq.read_table(tmp_path / "out" / name)
        label_ids, probs = reference_predictions(tiny_classifier, rows, ["en"] * len(rows))
        assert table.column_names == ["id", "label", "label_id", "score", "probs", "truncated"]
        assert table["label_id"].to_pylist() == label_ids
        np.testing.assert_allclose(table["score"].to_numpy(), probs.max(1), atol=1e-5)
        np.testing.assert_allclose(np.array(table["probs"].to_pylist()), probs, atol=1e-5)
