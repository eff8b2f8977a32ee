"""A tiny T5 checkpoint (fp32, random weights) with a Unigram tokenizer trained here (no hub), as
transformers' T5Tokenizer saves it (tokenizer.json), shared by the T5 stage and job tests."""
from __future__ import annotations

from pathlib import Path

CORPUS = ["translate English to German: the house is small", "summarize: the quick brown fox jumps over the dog",
          "das haus ist klein", "a quiet village by the old stone bridge", "hello world, rivers run to the sea"]
EXTRA_IDS = 4


def tiny_t5(directory: Path, seed: int = 0, **config: object) -> Path:
    """Save a random T5ForConditionalGeneration and its tokenizer under ``directory``; return it.
    The vocabulary is trained on CORPUS; ids 0-2 are <pad>, </s>, <unk> as in T5's files."""
    import torch
    import transformers
    from tokenizers import SentencePieceUnigramTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    trainer = SentencePieceUnigramTokenizer()
    trainer.train_from_iterator(CORPUS * 20, vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"],
                                unk_token="<unk>", show_progress=False)
    vocab = [(piece, score) for piece, score in trainer._tokenizer.get_vocab_scores()] \
        if hasattr(trainer._tokenizer, "get_vocab_scores") else None
    if vocab is None:
        import json
        model = json.loads(trainer._tokenizer.to_str())["model"]
        vocab = [tuple(entry) for entry in model["vocab"]]
    tokenizer = transformers.T5Tokenizer(vocab=vocab, extra_ids=EXTRA_IDS)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    settings = dict(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
                    decoder_start_token_id=0, initializer_factor=1.0)
    settings.update(config)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**settings)).eval()
    model.generation_config.decoder_start_token_id = 0
    model.save_pretrained(directory)
    return directory
