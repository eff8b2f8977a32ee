"""PretrainedConfig: a model's hyper-parameters, read from and written to config.json."""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

from .sources import FetchOptions, ModelSource, open_source

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"

# Attributes every config has, whatever the architecture (the reference's common defaults).
COMMON_DEFAULTS: dict[str, Any] = {
    "output_hidden_states": False,
    "output_attentions": False,
    "return_dict": True,
    "is_decoder": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
    "architectures": None,
    "torch_dtype": None,
    "problem_type": None,
    "classifier_dropout": None,
}


def _alias(target: str) -> property:
    """Another name for a config attribute, read and written through."""
    return property(lambda self: getattr(self, target), lambda self, value: setattr(self, target, value))


class PretrainedConfig:
    """Base configuration.  Subclasses set ``model_type``, ``defaults`` and ``attribute_map``.

    Unknown keys from a config.json are kept as attributes (as the reference does), so a
    config round-trips through ``save_pretrained`` without loss.
    """

    model_type: str = ""
    defaults: dict[str, Any] = {}
    # Generic name → this architecture's own attribute (DistilBERT: hidden_size → dim), so
    # generic code reads hidden_size, num_attention_heads, num_hidden_layers and
    # max_position_embeddings on every config.  Aliases are not serialised.
    attribute_map: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for alias, target in cls.attribute_map.items():
            setattr(cls, alias, _alias(target))

    def __init__(self, **kwargs: Any):
        for key, value in {**COMMON_DEFAULTS, **self.defaults}.items():
            setattr(self, key, copy.deepcopy(value))
        kwargs.pop("model_type", None)
        kwargs.pop("transformers_version", None)
        if "dtype" in kwargs:  # newer reference releases write `dtype`
            kwargs.setdefault("torch_dtype", kwargs.pop("dtype"))
        id2label = kwargs.pop("id2label", None)
        num_labels = kwargs.pop("num_labels", None)
        kwargs.pop("label2id", None)  # always derived from id2label
        for key, value in kwargs.items():
            setattr(self, key, value)
        if id2label is not None:
            self.id2label = {int(k): v for k, v in id2label.items()}
            if num_labels is not None and num_labels != len(self.id2label):
                logger.warning("num_labels=%d disagrees with id2label (%d labels); using id2label",
                               num_labels, len(self.id2label))
        else:
            self.num_labels = 2 if num_labels is None else num_labels

    # -- labels ---------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        if getattr(self, "id2label", None) is None or len(self.id2label) != n:
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.id2label.items()}

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {k: copy.deepcopy(v) for k, v in vars(self).items() if not k.startswith("_")}
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = self.label2id
        out["model_type"] = self.model_type
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json_string())

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(f"save_pretrained needs a directory, but {directory} is a file")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        self.to_json_file(path)
        return path

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """Build a config; ``kwargs`` override; ``return_unused_kwargs`` as in from_pretrained."""
        return_unused = kwargs.pop("return_unused_kwargs", False)
        config = cls(**config_dict)
        unused = config.update_known(kwargs)
        return (config, unused) if return_unused else config

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        return cls(**read_config_json(Path(path)))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        options = FetchOptions.pop_from(kwargs)
        config_dict = load_config_dict(open_source(pretrained_model_name_or_path, options))
        found = config_dict.get("model_type")
        if cls.model_type and found and found != cls.model_type:
            logger.warning("loading a %r config into %s", found, cls.__name__)
        return cls.from_dict(config_dict, **kwargs)

    def update_known(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Set the overrides that are config attributes; return the ones that are not."""
        unused = {}
        for key, value in overrides.items():
            if hasattr(self, key):
                setattr(self, key, value)
            else:
                unused[key] = value
        return unused

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PretrainedConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


def read_config_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the config file must be a JSON object") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}")
    if "auto_map" in data:
        # The reference would import the model repository's Python files (trust_remote_code); a
        # model file is data and must never be able to run code on the machine that loads it.
        classes = ", ".join(sorted(map(str, data["auto_map"]))) if isinstance(data["auto_map"], dict) else data["auto_map"]
        raise ValueError(
            f"{path} has 'auto_map' ({classes}): this model needs Python code from its own repository, and "
            "autoload never runs code from a model repository. Use a model whose architecture autoload implements "
            "natively (its config.json names a known model_type and has no auto_map)."
        )
    return data


def load_config_dict(source: ModelSource) -> dict[str, Any]:
    """config.json of a source, or the single JSON file the source was given as."""
    if source.single_file is not None and source.single_file.suffix == ".json":
        return read_config_json(source.single_file)
    if not source.has(CONFIG_NAME):
        raise OSError(f"No {CONFIG_NAME} found in {source.where()}: a model directory needs a "
                      f"{CONFIG_NAME} (or pass config=... / a path to a config JSON file)")
    return read_config_json(source.fetch(CONFIG_NAME))
