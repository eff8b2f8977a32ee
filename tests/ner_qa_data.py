"""Tiny token-classification models for the ner tests (stage and job): a WordPiece BERT and a
byte-level BPE RoBERTa, tokenizers made here (no hub), random weights whose labels fire
(O only somewhat more likely than the B-/I- labels, so texts have entities of every shape)."""
from __future__ import annotations

import re
from pathlib import Path

CORPUS = [
    "Marie Curie worked in Paris with Pierre Curie at the Sorbonne.",
    "The river Seine runs through Paris and Rouen to the sea.",
    "Jean-Luc Picard met Zoë Saldaña in São Paulo, Brazil, last Tuesday.",
    "Émile Durkheim taught at Bordeaux; later he moved to the university in Paris.",
    "New York City and Los Angeles are far apart, said Barack Obama.",
    "unbelievably microscopic internationalisation of hyperparameters",
]
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "MISC"]
# Crafted texts: multi-word entities, sub-word splits, emoji and accents before an entity.
TEXTS = [
    "Marie Curiedorf worked in Parisville with Pierre Curie.",
    "unbelievably microscopic Zoë Saldañas visited São Pauloberg",
    "🙂🎉 Émile Durkheimian met Jean-Luc Picardine in New York City",
    "The river Seinemouth runs through Rouen",
]
MAX_LENGTH = 32


def long_text() -> str:
    """A text about three times the models' length (in tokens)."""
    return " ".join(TEXTS + TEXTS[:2])


def tokenizer_files(directory: Path, family: str, max_length: int = MAX_LENGTH):
    """Train and save a tokenizer of ``family`` ("bert": WordPiece, "roberta": byte-level BPE)
    with the reference's fast class; return it."""
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    directory.mkdir(parents=True, exist_ok=True)
    if family == "bert":
        # Written, not trained: the WordPiece trainer numbers its alphabet in hash order, so ids
        # (and what the random model predicts) would change from run to run.
        text = " ".join(CORPUS)
        chars = sorted(set(text) - {" "})
        words = sorted(set(re.findall(r"\w+", text)) - set(chars))
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars), *words]
        (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = transformers.BertTokenizerFast(str(directory / "vocab.txt"), do_lower_case=False,
                                                   strip_accents=False, model_max_length=max_length)
    else:
        trainer = ByteLevelBPETokenizer()
        trainer.train_from_iterator(CORPUS * 10, vocab_size=700, show_progress=False,
                                    special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        trainer.save_model(str(directory))
        tokenizer = transformers.RobertaTokenizerFast(str(directory / "vocab.json"), str(directory / "merges.txt"),
                                                      model_max_length=max_length)
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_token_classifier(directory: Path, family: str, seed: int = 0) -> Path:
    """A random ``<Family>ForTokenClassification`` (hidden 32, 2 layers) over ``LABELS``, saved
    with its tokenizer under ``directory``."""
    import torch
    import transformers

    tokenizer = tokenizer_files(directory, family)
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, id2label=dict(enumerate(LABELS)), label2id={v: k for k, v in enumerate(LABELS)},
                  initializer_range=0.2)
    if family == "bert":
        model = transformers.BertForTokenClassification(
            transformers.BertConfig(max_position_embeddings=MAX_LENGTH + 8, **common))
    else:
        model = transformers.RobertaForTokenClassification(transformers.RobertaConfig(
            max_position_embeddings=MAX_LENGTH + 2, pad_token_id=1, bos_token_id=0, eos_token_id=2, **common))
    with torch.no_grad():
        # Labels that vary token by token (random classifier weights), O a little ahead.
        model.classifier.weight.normal_(0.0, 0.5)
        model.classifier.bias.zero_()
        model.classifier.bias[0] = 1.0
    model.eval().save_pretrained(directory)
    return directory
