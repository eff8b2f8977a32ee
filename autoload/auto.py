"""The Auto classes: pick the configuration / model class from ``model_type`` or the name."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import registry
from .configuration import PretrainedConfig, load_config_dict, read_config_json
from .sources import FetchOptions, open_source


def _config_from_dict(config_dict: dict[str, Any], reference: str) -> PretrainedConfig:
    model_type = config_dict.get("model_type") or registry.model_type_from_name(reference)
    return registry.config_class(model_type)(**config_dict)


class AutoConfig:
    """Instantiates the configuration class of the architecture a checkpoint names."""

    def __init__(self) -> None:
        raise EnvironmentError("AutoConfig is designed to be instantiated with AutoConfig.from_pretrained(path) "
                               "or AutoConfig.for_model(model_type).")

    @classmethod
    def for_model(cls, model_type: str, **kwargs: Any) -> PretrainedConfig:
        return registry.config_class(model_type)(**kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        """Directory with config.json, path/URL of a JSON file, fsspec URL, or cached name.

        Keyword arguments that are config attributes override the loaded values; with
        ``return_unused_kwargs=True`` the others come back as ``(config, unused)``.
        """
        options = FetchOptions.pop_from(kwargs)
        return_unused = kwargs.pop("return_unused_kwargs", False)
        config = _config_from_dict(load_config_dict(open_source(pretrained_model_name_or_path, options)),
                                   os.fspath(pretrained_model_name_or_path))
        unused = config.update_known(kwargs)
        return (config, unused) if return_unused else config

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> PretrainedConfig:
        return _config_from_dict(read_config_json(Path(path)), os.fspath(path))


class _AutoModel:
    """Base of the model Auto classes; ``head`` names the registry head they build."""

    head: str = registry.BASE

    def __init__(self) -> None:
        raise EnvironmentError(f"{type(self).__name__} is designed to be instantiated with "
                               f"{type(self).__name__}.from_pretrained(path) or {type(self).__name__}.from_config(config).")

    @classmethod
    def model_class(cls, config: PretrainedConfig) -> type:
        return registry.head_class(config.model_type, cls.head)

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs: Any):
        return cls.model_class(config).from_config(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any):
        """Config-attribute ``kwargs`` override the config (a copy of ``config=``); the rest go
        to the model's ``__init__``."""
        from .modeling import refuse_tf  # here, not at import: AutoConfig alone must not import torch

        refuse_tf(kwargs)  # before the source is opened: a TF checkpoint path has no config.json
        config = kwargs.pop("config", None)
        source = pretrained_model_name_or_path
        if config is None:
            # Opened once here; the model loader reuses the source (one download, one listing).
            source = open_source(pretrained_model_name_or_path, FetchOptions.pop_from(kwargs))
            config = _config_from_dict(load_config_dict(source), source.reference)
        return cls.model_class(config).from_pretrained(source, *model_args, config=config, **kwargs)


class AutoModel(_AutoModel):
    head = registry.BASE


class AutoModelForPreTraining(_AutoModel):
    head = registry.PRETRAINING


class AutoModelWithLMHead(_AutoModel):
    """The reference's (deprecated) LM-head class: each contract declares which head it is (masked
    LM for encoders, causal LM for decoders)."""

    head = registry.WITH_LM_HEAD


class AutoModelForMaskedLM(_AutoModel):
    head = registry.MASKED_LM


class AutoModelForCausalLM(_AutoModel):
    head = registry.CAUSAL_LM


class AutoModelForSequenceClassification(_AutoModel):
    head = registry.SEQUENCE_CLASSIFICATION


class AutoModelForQuestionAnswering(_AutoModel):
    head = registry.QUESTION_ANSWERING


class AutoModelForTokenClassification(_AutoModel):
    head = registry.TOKEN_CLASSIFICATION
