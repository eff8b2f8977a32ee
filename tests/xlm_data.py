"""A tiny two-language XLM checkpoint with its native tokenizer files (vocab.json + merges.txt,
a BPE with </w> word ends trained here, no hub), and what the reference computes for a row in a
language, shared by the tokenize-stage tests and the job tests."""
from __future__ import annotations

import functools
import json
from pathlib import Path

LANG2ID = {"en": 0, "fr": 1}
ROWS = [("The dog's toy, isn't it?", "en"), ("L'homme qu'il a vu aujourd'hui.", "fr"), ("C'est « génial » !", "fr"),
        ("It's 3.14 -- really", "en"), ("Bonjour, l'ami", "fr"), ("don't stop", "en")]


def tiny_xlm(directory: Path) -> Path:
    """Save a random two-language XLMModel (fp32) and its tokenizer files under ``directory``."""
    import tokenizers
    import torch
    import transformers
    from tokenizers import pre_tokenizers, trainers
    from tokenizers.models import BPE

    directory.mkdir(parents=True, exist_ok=True)
    backend = tokenizers.Tokenizer(BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    specials = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]
    words = " ".join(text.lower() for text, _ in ROWS).replace("'", " ' ").split() * 3
    backend.train_from_iterator(words, trainers.BpeTrainer(vocab_size=120, special_tokens=specials,
                                                           end_of_word_suffix="</w>", show_progress=False))
    backend.model.save(str(directory))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMTokenizer",
                                                                 "lang2id": LANG2ID}))
    torch.manual_seed(0)
    config = transformers.XLMConfig(vocab_size=backend.get_vocab_size(), emb_dim=32, n_layers=2, n_heads=4,
                                    n_langs=2, lang2id=LANG2ID, id2lang={v: k for k, v in LANG2ID.items()},
                                    max_position_embeddings=64)
    model = transformers.XLMModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    model.save_pretrained(directory)
    return directory


@functools.lru_cache(maxsize=4)
def _reference(directory: Path):
    import transformers

    tokenizer = transformers.XLMTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                                          lang2id=LANG2ID)
    return tokenizer, transformers.XLMModel.from_pretrained(directory).eval()


def reference_ids(directory: Path, text: str, lang: str) -> list[int]:
    """The reference tokenizer's ids for ``text`` in ``lang`` (transformers 5.24's call drops
    ``lang=``; its ``_tokenize(text, lang=...)`` honours it)."""
    tokenizer = _reference(directory)[0]
    return tokenizer.build_inputs_with_special_tokens(tokenizer.convert_tokens_to_ids(tokenizer._tokenize(text,
                                                                                                          lang=lang)))


def reference_mean_state(directory: Path, text: str, lang: str):
    """Mean of the reference model's last states over :func:`reference_ids`, with ``langs``."""
    import torch

    model = _reference(directory)[1]
    ids = reference_ids(directory, text, lang)
    with torch.no_grad():
        states = model(torch.tensor([ids]), langs=torch.full((1, len(ids)), LANG2ID[lang])).last_hidden_state
    return states[0].mean(0).numpy()
