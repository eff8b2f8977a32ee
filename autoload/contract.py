"""What an architecture needs from the rest of the system, declared once at the bottom of its model file.

Each ``autoload/models/<model_type>.py`` exports ``CONTRACT = ModelContract(...)``; the registry
discovers it there. Nothing about an architecture (its inputs, padding side, length limit,
tokenizer recipe, name patterns) lives in shared tables, so adding one touches its model file
and its test file only.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
LANGS = "langs"  # per-token language ids (XLM, FlauBERT): the tokenize stage fills them from the row's language
PADDING_SIDES = ("right", "left")


def max_position_embeddings(config: Any) -> int:
    """The usual limit: one position-table slot per token."""
    return int(config.max_position_embeddings)


def positions_after_padding(config: Any) -> int:
    """RoBERTa-likes number positions from ``pad_token_id + 1`` (fairseq's numbering): the first
    ``pad_token_id + 1`` slots of the position table never hold a token."""
    pad = config.pad_token_id if config.pad_token_id is not None else 1
    return int(config.max_position_embeddings) - int(pad) - 1


@dataclass(frozen=True, eq=False)  # one instance per architecture: compared by identity
class ModelContract:
    """One architecture's declaration.

    ``rank`` places its name patterns in the seed document's fallback order (AutoTokenizer's
    list: t5, distilbert, albert, camembert, xlm-roberta, roberta, bert, openai-gpt, gpt2,
    transfo-xl, xlnet, xlm, ctrl, electra, in steps of 10; flaubert, absent from it, sits at 65
    so "flaubert-base" never resolves to bert). ``tokenizer`` names a recipe in
    ``autoload.tokenization.recipes``; ``tokenizer_class`` is the reference tokenizer class it
    stands for when the files name none (the seed's class for the family).
    """

    model_type: str  # as in config.json, e.g. "xlm-roberta"
    config_class: type
    heads: Mapping[str, type]  # registry head name → class
    name_patterns: tuple[str, ...]  # lower-case substrings for the name fallback
    input_names: tuple[str, ...]  # what forward takes, in the reference's order
    tokenizer: str
    tokenizer_class: str
    rank: int
    padding_side: str = "right"
    max_length_rule: Callable[[Any], int] = max_position_embeddings
    # An autoregressive language model (each token sees only those before it): what the score
    # and generate tasks need; encoders with an optional causal head are not.
    causal: bool = False
    # An encoder-decoder (T5): the source runs through an encoder once, a decoder produces the
    # target from it; score and generate take their encoder-decoder path, embed runs the encoder.
    encoder_decoder: bool = False
    # The job tasks (jobs/tasks/<name>.py) it serves, when fewer than its heads and flags would
    # allow (Transformer-XL: no token-level tasks); None: each task decides from the flags above.
    tasks: Optional[tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"{self.model_type}: padding_side must be one of {PADDING_SIDES}, got {self.padding_side!r}")
        if INPUT_IDS not in self.input_names:
            raise ValueError(f"{self.model_type}: input_names must include {INPUT_IDS!r}")
        if not self.name_patterns or any(p != p.lower() or not p for p in self.name_patterns):
            raise ValueError(f"{self.model_type}: name_patterns must be non-empty lower-case strings")
        # Read-only, so a caller can't change another caller's view of the architecture.
        object.__setattr__(self, "heads", MappingProxyType(dict(self.heads)))

    def max_input_length(self, config: Any) -> int:
        """Tokens (special ones included) one row may have."""
        return self.max_length_rule(config)

    @property
    def uses_token_types(self) -> bool:
        return TOKEN_TYPE_IDS in self.input_names
