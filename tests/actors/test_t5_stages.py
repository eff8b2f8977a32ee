"""The score, generate and embed stages on an encoder-decoder (a tiny random T5): generate equals
transformers' generate() token for token (greedy, beams), seeded sampling repeats whatever the
batch; score equals the reference loss x target tokens; embed mean-pools the encoder's states."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from actors.common import ROW, SOURCE
from actors.embed import Embed
from actors.generate import Generate
from actors.score import Score
from actors.tokenize import Tokenize
from t5_data import tiny_t5

transformers = pytest.importorskip("transformers")

CONTEXT = 64
SOURCES = ["translate English to German: the house is small", "summarize: the quick brown fox jumps", "hello",
           "a quiet village by the old stone bridge, rivers run"]
TARGETS = ["das haus ist klein", "the fox", "zz", "a village"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_t5(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def reference(model_dir: Path):
    return (transformers.AutoTokenizer.from_pretrained(model_dir),
            transformers.T5ForConditionalGeneration.from_pretrained(model_dir).eval())


def tokenized(model_dir: Path, texts: list, pairs: list | None = None) -> pa.Table:
    columns = {"text": texts, **({"pair": pairs} if pairs else {})}
    table = Tokenize(str(model_dir), text_column="text", text_pair_column="pair" if pairs else None,
                     max_length=1 << 20, prompt_boundary=True)(pa.table(columns))
    return table.append_column(SOURCE, pa.array(["in.parquet"] * len(texts))).append_column(
        ROW, pa.array(range(len(texts)), type=pa.int64()))


def _reference_generate(reference, text: str, new: int, **kwargs) -> list[int]:
    tokenizer, model = reference
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new, do_sample=False, **kwargs)
    return out[0, 1:].tolist()  # after the decoder's start token (one row: no padding after an EOS)


@pytest.mark.parametrize("num_beams, max_batch_tokens", [(1, 10_000), (1, 12), (3, 10_000)])
def test_generate_equals_the_reference_token_for_token(model_dir: Path, reference, num_beams: int,
                                                       max_batch_tokens: int) -> None:
    """Greedy (one micro-batch, or several: rows leave as they end) and beam search; the EOS
    is the model's (T5's </s>, id 1)."""
    tokenizer, model = reference
    stage = Generate(str(model_dir), context=CONTEXT, max_new_tokens=8, threads=1, num_beams=num_beams,
                     eos_token_id=model.config.eos_token_id, max_batch_tokens=max_batch_tokens)
    assert type(stage.model).__name__ == "T5ForConditionalGeneration"
    out = stage(tokenized(model_dir, SOURCES))
    for row, text in enumerate(SOURCES):
        expected = _reference_generate(reference, text, 8, num_beams=num_beams)
        assert out["generated_tokens"][row].as_py() == len(expected), row
        assert out["generated_text"][row].as_py() == tokenizer.decode(expected, skip_special_tokens=True)
        reason = "eos" if expected[-1] == model.config.eos_token_id else "length"
        assert out["finish_reason"][row].as_py() == reason


def test_generate_stops_at_an_eos_the_greedy_text_reaches(model_dir: Path, reference) -> None:
    free = _reference_generate(reference, SOURCES[1], 8, eos_token_id=None)
    eos = free[2]
    out = Generate(str(model_dir), context=CONTEXT, max_new_tokens=8, threads=1, eos_token_id=eos)(
        tokenized(model_dir, SOURCES[:2]))
    assert out["finish_reason"][1].as_py() == "eos" and out["generated_tokens"][1].as_py() == free.index(eos) + 1
    assert out["generated_tokens"][0].as_py() == len(_reference_generate(reference, SOURCES[0], 8, eos_token_id=eos))


def test_seeded_sampling_is_the_same_across_runs_and_batches(model_dir: Path) -> None:
    table = tokenized(model_dir, SOURCES)
    stage = Generate(str(model_dir), context=CONTEXT, max_new_tokens=6, threads=1, do_sample=True, temperature=1.5,
                     top_k=50, seed=5)
    first = stage(table)["generated_text"].to_pylist()
    assert stage(table.slice(1, 2))["generated_text"].to_pylist() == first[1:3]
    stage.max_batch_tokens = 12
    assert stage(table)["generated_text"].to_pylist() == first
    assert Generate(str(model_dir), context=CONTEXT, max_new_tokens=6, threads=1, do_sample=True, temperature=1.5,
                    top_k=50, seed=6)(table)["generated_text"].to_pylist() != first


@pytest.mark.parametrize("max_batch_tokens", [10_000, 12])
def test_score_is_the_reference_loss_times_target_tokens(model_dir: Path, reference, max_batch_tokens: int) -> None:
    """logprob_sum of each (source, target) row = -loss x target tokens, labels = the target and
    its EOS; token_logprobs are the target's."""
    tokenizer, model = reference
    stage = Score(str(model_dir), context=CONTEXT, threads=1, return_token_logprobs=True,
                  max_batch_tokens=max_batch_tokens)
    out = stage(tokenized(model_dir, SOURCES, TARGETS))
    for row, (source, target) in enumerate(zip(SOURCES, TARGETS)):
        ids = tokenizer(source, return_tensors="pt")["input_ids"]
        labels = tokenizer(target, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = float(model(input_ids=ids, labels=labels).loss)
        count = labels.shape[1]
        assert out["scored_tokens"][row].as_py() == count
        np.testing.assert_allclose(out["logprob_sum"][row].as_py(), -loss * count, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["perplexity"][row].as_py(), np.exp(loss), rtol=1e-5)
        assert len(out["token_logprobs"][row].as_py()) == count


def test_score_without_a_target_column_is_refused(model_dir: Path) -> None:
    stage = Score(str(model_dir), context=CONTEXT, threads=1)
    with pytest.raises(ValueError, match="--text-pair-column"):
        stage(tokenized(model_dir, SOURCES))


def test_embed_mean_pools_the_encoder_alone(model_dir: Path, reference, tmp_path: Path) -> None:
    """Embed loads the encoder-only model (an encoder-only checkpoint, as sentence-T5 ships, has
    no decoder weights) and runs it unpadded; = the reference encoder's masked mean."""
    tokenizer, model = reference
    encoder = transformers.T5EncoderModel.from_pretrained(model_dir).eval()
    encoder.save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    for directory in (model_dir, tmp_path / "encoder"):
        stage = Embed(str(directory), threads=1)
        assert type(stage.model).__name__ == "T5EncoderModel" and stage.flat
        got = np.stack(stage(tokenized(model_dir, SOURCES))["embedding"].to_numpy(zero_copy_only=False))
        batch = tokenizer(SOURCES, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_beam_hypotheses_of_different_lengths_rank_as_the_reference(tmp_path: Path) -> None:
    """With an EOS the beams reach early, hypotheses end at different lengths (scored by
    sum / new tokens, the start token not counted, as the reference's encoder-decoder path).
    Larger initial weights: the default tiny model repeats one token, and no beam would end."""
    model_dir = tiny_t5(tmp_path / "varied", initializer_factor=5.0)
    reference = (transformers.AutoTokenizer.from_pretrained(model_dir),
                 transformers.T5ForConditionalGeneration.from_pretrained(model_dir).eval())
    tokenizer, _ = reference
    free = [_reference_generate(reference, text, 8, num_beams=3, eos_token_id=None) for text in SOURCES]
    # A token the best beam of some row reaches early (the pad id excluded: a random tiny model
    # may favour it, and an EOS equal to the pad id ends nothing the test can see).
    eos = next(token for beam in free for token in beam[1:4] if token != tokenizer.pad_token_id)
    stage = Generate(str(model_dir), context=CONTEXT, max_new_tokens=8, threads=1, num_beams=3, eos_token_id=eos)
    out = stage(tokenized(model_dir, SOURCES))
    ended = 0
    for row, text in enumerate(SOURCES):
        expected = _reference_generate(reference, text, 8, num_beams=3, eos_token_id=eos)
        assert out["generated_tokens"][row].as_py() == len(expected), row
        assert out["generated_text"][row].as_py() == tokenizer.decode(expected, skip_special_tokens=True)
        ended += expected[-1] == eos and len(expected) < 8
    assert ended >= 1  # some beam search did end on the EOS
