"""A tiny GPT-2 checkpoint with a byte-level BPE tokenizer trained here (no hub), shared by the
score / generate stage tests and the job tests."""
from __future__ import annotations

from pathlib import Path

CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, rivers and seas run to the ocean",
          "a quiet village by the old stone bridge"]


def tiny_gpt2(directory: Path, n_positions: int = 32, seed: int = 0, **config: object) -> Path:
    """Save a random GPT2LMHeadModel (fp32) and its tokenizer under ``directory``; return it."""
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    directory.mkdir(parents=True, exist_ok=True)
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(CORPUS * 40, vocab_size=320, special_tokens=["<|endoftext|>"], show_progress=False)
    trainer.save_model(str(directory))
    tokenizer = transformers.GPT2TokenizerFast(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    settings = dict(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=4,
                    bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.2)
    settings.update(config)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**settings)).eval().save_pretrained(directory)
    return directory
