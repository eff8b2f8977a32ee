"""``--task score``: each row's log-likelihood under a causal language model (perplexity
filtering, log-likelihood features, reranking by LM score)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pyarrow as pa

from actors.score import Score
from autoload import registry
from jobs.options import SWITCH, Option, SpecError, boolean, choice, positive
from jobs.task import CausalLMTask

if TYPE_CHECKING:
    from jobs.model import ResolvedModel

LONG_TEXT = ("window", "truncate")
# With windows, texts are tokenized up to this many tokens (longer ones are cut and marked).
WINDOWED_TEXT_TOKENS = 1 << 20


class ScoreTask(CausalLMTask):
    name = "score"
    help = ("log-likelihood of each row's text under a causal LM: logprob_sum, logprob_mean, perplexity, "
            "scored_tokens; with --text-pair-column the first text is a prompt and only the second is scored")
    stage = Score
    options = (
        Option("return_token_logprobs", "also write 'token_logprobs', the log-probability of each scored token",
               boolean, default=False, flag=SWITCH),
        Option("long_text", "a text longer than the model's context: 'window' scores it in sliding windows "
               "(each token once, see --stride), 'truncate' cuts it to the context and marks it (default: window)",
               choice(LONG_TEXT), default="window", flag={"choices": LONG_TEXT}),
        Option("stride", "windows start every N tokens, so each token keeps at least context - N tokens "
               "of left context (the reference perplexity recipe); default: half the context", positive(int),
               flag={"metavar": "N"}),
        Option("add_bos", "put the model's BOS token before each text, so its first token is scored too "
               "(default: off; the first token has no left context and is not scored)", boolean, default=False,
               flag=SWITCH),
    )

    def check(self, spec: Any, model: "ResolvedModel") -> None:
        """An encoder-decoder scores a target given a source: without the target column there is
        nothing to score (a causal LM scores the text itself)."""
        if registry.contract(model.model_type).encoder_decoder and not spec.text_pair_column:
            raise SpecError(f"--task score on {model.model_type} (an encoder-decoder) scores a target given a source: "
                            "name the target column with --text-pair-column (the source is --text-column)")

    def model_defaults(self, model: "ResolvedModel") -> dict[str, Any]:
        return {"stride": max(1, model.max_length // 2)}

    def settings(self, model: "ResolvedModel") -> dict[str, Any]:
        settings = super().settings(model)
        if settings["stride"] > model.max_length:
            raise SpecError(f"--stride {settings['stride']} is longer than the model's context ({model.max_length})")
        if settings["add_bos"] and model.config.bos_token_id is None:
            raise SpecError(f"--add-bos: {model.reference} has no BOS token (config.json bos_token_id)")
        return settings

    def tokenize_kwargs(self, settings: Mapping[str, Any], model: "ResolvedModel") -> dict[str, Any]:
        # One token of the context goes to the BOS token when it is added.
        context = model.max_length - bool(settings["add_bos"])
        return {"max_length": WINDOWED_TEXT_TOKENS if settings["long_text"] == "window" else context,
                "prompt_boundary": True}

    def stage_kwargs(self, settings: Mapping[str, Any], model: "ResolvedModel") -> dict[str, Any]:
        return {"context": model.max_length, "stride": settings["stride"] if settings["long_text"] == "window" else None,
                "bos_token_id": model.config.bos_token_id if settings["add_bos"] else None,
                "return_token_logprobs": settings["return_token_logprobs"]}

    def output_schema(self, settings: Mapping[str, Any], model: "ResolvedModel") -> pa.Schema:
        fields = [("logprob_sum", pa.float64()), ("logprob_mean", pa.float64()), ("perplexity", pa.float64()),
                  ("scored_tokens", pa.int32())]
        if settings["return_token_logprobs"]:
            fields.append(("token_logprobs", pa.list_(pa.float32())))
        return pa.schema(fields)


TASK = ScoreTask
