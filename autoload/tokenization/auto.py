"""AutoTokenizer: pick the family as the seed document says, then build it from the files.

The class comes from tokenizer_config.json's (or config.json's) ``tokenizer_class``, else from
config.json's ``model_type`` (the model file's contract names its tokenizer class), else from
the first name pattern the reference contains, in the seed's order. Files the family's recipe
cannot build exactly are refused, naming the family and what is supported; a seed family not
implemented yet is refused as such, whatever its files.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Union

import tokenizers

from .. import registry
from ..sources import FetchOptions, ModelSource, open_source
from . import files as tokenizer_files
from .api import EXTRA_SPECIAL_KEYS, SPECIAL_TOKEN_NAMES, Tokenizer
from .encode import VERY_LARGE_INTEGER
from .files import CONVERT_HINT, PICKLED_VOCAB, SENTENCEPIECE, TOKENIZER_JSON, WORDPIECE_FILES, Layout
from .recipes import Recipe, model_input_names, native_layouts, recipe_for_class

logger = logging.getLogger(__name__)

GENERIC_CLASS = "PreTrainedTokenizerFast"  # a tokenizer.json used exactly as saved
# Download and hub options that have no meaning for local or fsspec sources.
_IGNORED_OPTIONS = ("use_fast", "token", "use_auth_token", "trust_remote_code", "_from_auto", "_from_pipeline",
                    "_commit_hash")


class AutoTokenizer:
    """Builds a :class:`Tokenizer` from a model directory, file, fsspec URL or cached name."""

    def __init__(self) -> None:
        raise EnvironmentError(
            "AutoTokenizer is designed to be instantiated using the "
            "`AutoTokenizer.from_pretrained(pretrained_model_name_or_path)` method."
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *inputs: Any,
                        **kwargs: Any) -> Tokenizer:
        """Load a tokenizer from tokenizer.json, vocab.txt, vocab.json + merges.txt, or a SentencePiece .model.

        Fetch options (cache_dir, force_download, revision, storage_options, ...) choose where
        files come from; special-token kwargs (pad_token=..., additional_special_tokens=[...])
        and tokenizer options (model_max_length, do_lower_case, add_prefix_space, ...) override
        tokenizer_config.json. ``use_fast`` is accepted; the tokenizer is always the fast one.
        """
        if inputs:
            raise TypeError("AutoTokenizer.from_pretrained takes no positional inputs besides the model "
                            "reference; pass tokenizer options as keyword arguments")
        if kwargs.get("subfolder"):
            raise ValueError("subfolder is not supported: pass the path of the subfolder itself")
        options = FetchOptions.pop_from(kwargs)
        for name in _IGNORED_OPTIONS + ("subfolder",):
            kwargs.pop(name, None)
        source = open_source(pretrained_model_name_or_path, options)
        return _load(source, str(pretrained_model_name_or_path), kwargs)


def _load(source: ModelSource, name_or_path: str, user_kwargs: dict[str, Any]) -> Tokenizer:
    settings = tokenizer_files.read_settings(source)
    settings.update(user_kwargs)
    named = _named_class(settings, tokenizer_files.read_json(source, tokenizer_files.MODEL_CONFIG_FILE), name_or_path)
    layout, paths = tokenizer_files.detect(source)
    tokenizer_class = named or _class_of_layout(layout, paths, source)
    recipe = recipe_for_class(tokenizer_class)
    _check_buildable(tokenizer_class, recipe, layout, paths, source)
    settings["tokenizer_class"] = tokenizer_class
    logger.info("loading tokenizer from %s (%s, as %s)", source.where(), layout.name, tokenizer_class)
    if layout is TOKENIZER_JSON:
        backend = tokenizers.Tokenizer.from_file(str(paths[TOKENIZER_JSON.files[0]]))
        rebuilt = recipe is not None and recipe.applies_to(backend)
    else:
        backend = recipe.build(paths, settings)
        rebuilt = True
    if rebuilt and recipe.prepare is not None:
        recipe.prepare(backend, settings)
    if layout is not TOKENIZER_JSON:
        tokenizer_files.add_saved_tokens(backend, settings, source)
    tokenizer = _make_tokenizer(backend, settings, name_or_path, recipe if rebuilt else None)
    if rebuilt:
        recipe.finish(tokenizer, settings)
    return tokenizer


def _named_class(settings: dict[str, Any], model_config: dict[str, Any], name_or_path: str) -> Optional[str]:
    """The reference class the files or the name ask for (None: let the file layout decide)."""
    named = settings.get("tokenizer_class") or model_config.get("tokenizer_class")
    if named:
        named = named if named == GENERIC_CLASS else named.removesuffix("Fast")
        pending = next((s for s in registry.NOT_IMPLEMENTED if s.tokenizer_class == named), None)
        if pending is not None:
            raise registry.NotImplementedModelType(pending.model_type, f" (tokenizer class {named})")
        return named
    model_type = model_config.get("model_type")
    if model_type:
        # A type autoload has no model file for (e.g. mpnet): its tokenizer.json is used as saved.
        known = model_type in registry.known_model_types() or registry.pending(model_type) is not None
        return registry.contract(model_type).tokenizer_class if known else None
    try:
        model_type = registry.model_type_from_name(name_or_path)
    except registry.NotImplementedModelType:  # a ValueError too, but one to pass on
        raise
    except ValueError:  # no pattern in the name
        return None
    return registry.contract(model_type).tokenizer_class


def _class_of_layout(layout: Layout, paths: dict[str, Path], source: ModelSource) -> str:
    """With nothing naming the family: a tokenizer.json is used as saved, a lone vocab.txt is
    BERT's (the seed's single-vocabulary-file case); other layouts serve several families."""
    if layout is TOKENIZER_JSON:
        return GENERIC_CLASS
    if layout is WORDPIECE_FILES:
        return "BertTokenizer"
    if layout is PICKLED_VOCAB:  # only Transformer-XL saves its vocabulary pickled
        return "TransfoXLTokenizer"
    if layout is SENTENCEPIECE:
        found = ", ".join(sorted(p.name for p in paths.values()))
        fix = ("Pass tokenizer_class=\"AlbertTokenizer\" (or T5Tokenizer, XLNetTokenizer, ...), or the directory with "
               "the model's config.json" if source.single_file is not None else
               "Add \"model_type\" to config.json or \"tokenizer_class\" to tokenizer_config.json")
        raise OSError(f"{source.where()} has only a SentencePiece model ({found}), which T5, ALBERT, XLNet, CamemBERT "
                      f"and XLM-R all use, each with its own special tokens and ids. {fix} (or use a saved "
                      f"tokenizer.json).")
    raise OSError(f"{source.where()}: {layout.describe()} alone does not say which tokenizer family it is "
                  f"(RoBERTa, GPT-2, OpenAI GPT, XLM and CTRL all save it, and tokenize differently). Add "
                  f"\"tokenizer_class\" to tokenizer_config.json or \"model_type\" to config.json.")


def _check_buildable(tokenizer_class: str, recipe: Optional[Recipe], layout: Layout, paths: dict[str, Path],
                     source: ModelSource) -> None:
    if layout is TOKENIZER_JSON or (recipe is not None and layout in (recipe.native, *recipe.also_reads)):
        return
    family = f"{tokenizer_class} ({recipe.name} family)" if recipe is not None else tokenizer_class
    if layout is SENTENCEPIECE:
        raise OSError(_sentencepiece_message(paths, source, family))
    raise OSError(f"{source.where()}: can't build tokenizer class {family} from {layout.describe()}: "
                  f"{_supported()}. {CONVERT_HINT}")


def _sentencepiece_message(paths: dict[str, Path], source: ModelSource, family: str) -> str:
    found = ", ".join(sorted(p.name for p in paths.values()))
    return (f"{source.where()} has only a SentencePiece model ({found}); autoload can't build {family} from it: "
            f"{_supported()}. {CONVERT_HINT}")


def _supported() -> str:
    return f"autoload builds {'; '.join(native_layouts())}, and any family from a saved {TOKENIZER_JSON.describe()}"


def _make_tokenizer(backend: tokenizers.Tokenizer, settings: dict[str, Any], name_or_path: str,
                    recipe: Optional[Recipe]) -> Tokenizer:
    defaults = recipe.special_defaults if recipe is not None else {}
    special = {name: settings.get(name, defaults.get(name)) for name in SPECIAL_TOKEN_NAMES}
    extras = next((settings[key] for key in EXTRA_SPECIAL_KEYS if settings.get(key)), [])
    if isinstance(extras, dict):  # model-specific named tokens: kept as extra special tokens
        extras = list(extras.values())
    tokenizer_class = settings["tokenizer_class"]
    init_kwargs = {k: v for k, v in settings.items() if k not in SPECIAL_TOKEN_NAMES}
    api_class = recipe.api_class if recipe is not None and recipe.api_class is not None else Tokenizer
    return api_class(
        backend,
        special_tokens=special,
        extra_special_tokens=extras,
        model_input_names=settings.get("model_input_names") or model_input_names(tokenizer_class),
        model_max_length=settings.get("model_max_length") or settings.get("max_len") or VERY_LARGE_INTEGER,
        padding_side=settings.get("padding_side") or _family_padding_side(tokenizer_class),
        truncation_side=settings.get("truncation_side", "right"),
        clean_up_tokenization_spaces=settings.get("clean_up_tokenization_spaces", False),
        name_or_path=name_or_path,
        init_kwargs=init_kwargs,
    )


def _family_padding_side(tokenizer_class: str) -> str:
    """The padding side the family's model file declares (XLNet-likes pad left); right otherwise."""
    contract = next((c for c in registry.contracts() if c.tokenizer_class == tokenizer_class), None)
    return contract.padding_side if contract is not None else "right"
