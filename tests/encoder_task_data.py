"""Tiny encoder checkpoints for the fill-mask, classify and embed-for-retrieval tests, saved by
the reference libraries with the packaged MiniLM's WordPiece tokenizer (no hub), shared by the
stage tests (tests/actors/test_encoder_tasks.py) and the job tests (tests/e2e/test_job_encoder_tasks.py)."""
from __future__ import annotations

from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
LABELS = {0: "sports", 1: "politics", 2: "science", 3: "art"}


def _tokenizer(directory: Path, minilm: str) -> None:
    for name in TOKENIZER_FILES:
        (directory / name).write_bytes((Path(minilm) / name).read_bytes())


def _config(**config: object):
    import transformers

    # Large random weights, so rows get different predictions.
    base = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                max_position_embeddings=64)
    return transformers.BertConfig(**{**base, **config})


def tiny_mlm(directory: Path, minilm: str) -> Path:
    """A tiny BertForMaskedLM (fp32, random)."""
    import torch
    import transformers

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    transformers.BertForMaskedLM(_config(initializer_range=0.3)).eval().save_pretrained(directory)
    _tokenizer(directory, minilm)
    return directory


def tiny_classifier(directory: Path, minilm: str, **config: object) -> Path:
    """A tiny BertForSequenceClassification (fp32, random) with ``config`` (num_labels, problem_type...)."""
    import torch
    import transformers

    torch.manual_seed(1)
    directory.mkdir(parents=True, exist_ok=True)
    transformers.BertForSequenceClassification(_config(initializer_range=0.4, **config)).eval().save_pretrained(directory)
    _tokenizer(directory, minilm)
    return directory


def multi_label_classifier(directory: Path, minilm: str) -> Path:
    return tiny_classifier(directory, minilm, problem_type="multi_label_classification", id2label=LABELS,
                           label2id={v: k for k, v in LABELS.items()})


def dense_sentence_model(directory: Path, body: Path) -> Path:
    """A sentence-transformers model saved by sentence-transformers: ``body`` (a BERT checkpoint)
    → mean pooling → Dense(32 → 20, tanh) → Dense(20 → 12, identity) → Normalize, with prompts
    query / passage (default: query)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

    torch.manual_seed(2)
    modules = [Transformer(str(body)), Pooling(32, "mean"), Dense(32, 20),
               Dense(20, 12, activation_function=torch.nn.Identity()), Normalize()]
    SentenceTransformer(modules=modules, device="cpu", prompts={"query": "query: ", "passage": "passage: "},
                        default_prompt_name="query").save(str(directory))
    return directory


def tiny_roberta_mlm(directory: Path) -> Path:
    """A tiny RobertaForMaskedLM (fp32, random) with a byte-level BPE tokenizer trained here
    (mask token ``<mask>``, which takes the space before it)."""
    import torch
    import transformers

    from ner_qa_data import tokenizer_files

    tokenizer = tokenizer_files(directory, "roberta", max_length=40)
    torch.manual_seed(3)
    config = transformers.RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=48, max_position_embeddings=42,
                                        pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=0.3)
    transformers.RobertaForMaskedLM(config).eval().save_pretrained(directory)
    return directory
