"""``--task generate``: continue each row's prompt with a causal language model, in bulk."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pyarrow as pa

from actors.generate import LONG_PROMPTS, Generate
from jobs.options import SWITCH, Option, SpecError, boolean, choice, csv, non_negative_float, positive, whole
from jobs.task import CausalLMTask

if TYPE_CHECKING:
    from jobs.model import ResolvedModel

# Prompts are tokenized up to this many tokens; the stage then refuses or cuts a long one.
LONG_PROMPT_TOKENS = 1 << 20


class GenerateTask(CausalLMTask):
    name = "generate"
    help = ("continue each prompt with a causal LM (greedy, beam search with --num-beams, or sampling with "
            "--do-sample): generated_text, generated_tokens, finish_reason (eos, stop, length)")
    stage = Generate
    takes_pairs = False
    options = (
        Option("max_new_tokens", "most new tokens per row (default: 64)", positive(int), default=64,
               flag={"metavar": "N"}),
        Option("do_sample", "sample instead of greedy decoding (default: off)", boolean, default=False,
               flag=SWITCH),
        Option("temperature", "sampling temperature (default: 1.0)", positive(float), default=1.0,
               flag={"metavar": "T"}),
        Option("top_k", "sample among the K likeliest tokens; 0 = all (default: 0)", whole, default=0,
               flag={"metavar": "K"}),
        Option("top_p", "sample within the smallest set of tokens whose probability reaches P "
               "(default: 1.0)", non_negative_float, default=1.0, flag={"metavar": "P"}),
        Option("seed", "the job's sampling seed; each row's generator is seeded from it and the row's "
               "id, so reruns and retries write the same text (default: 0)", whole, default=0, flag={"metavar": "S"}),
        Option("stop", "comma-separated stop strings: the text ends before the first one "
               "(finish_reason stop)", csv, default=(), flag={"metavar": "A,B"}),
        Option("num_beams", "beam search with N beams, as transformers' generate(num_beams=N, do_sample=False): "
               "the best beam's text; a prompt runs as N rows, so a micro-batch holds 1/N of the prompts; "
               "1 = no beam search (default: 1)", positive(int), default=1, flag={"metavar": "N"}),
        Option("long_prompt", "a prompt leaving no room for --max-new-tokens in the context: 'error' "
               "stops naming the row (default), 'truncate' keeps its end and marks it truncated",
               choice(LONG_PROMPTS), default="error", flag={"choices": LONG_PROMPTS}),
    )

    def settings(self, model: "ResolvedModel") -> dict[str, Any]:
        settings = super().settings(model)
        if settings["max_new_tokens"] >= model.max_length:
            raise SpecError(f"--max-new-tokens {settings['max_new_tokens']} leaves no room for a prompt in the "
                            f"model's context of {model.max_length} tokens")
        if settings["num_beams"] > 1 and settings["do_sample"]:
            raise SpecError(f"--num-beams {settings['num_beams']} is beam search, which samples nothing: drop "
                            "--do-sample, or use --num-beams 1 to sample")
        if not 0 < settings["top_p"] <= 1:
            raise SpecError(f"--top-p must be in (0, 1], got {settings['top_p']}")
        settings["stop"] = list(settings["stop"])
        return settings

    def tokenize_kwargs(self, settings: Mapping[str, Any], model: "ResolvedModel") -> dict[str, Any]:
        # Long prompts reach the stage whole: it refuses them or keeps their end.
        return {"max_length": LONG_PROMPT_TOKENS}

    def stage_kwargs(self, settings: Mapping[str, Any], model: "ResolvedModel") -> dict[str, Any]:
        return {**settings, "context": model.max_length, "eos_token_id": model.config.eos_token_id}

    def output_schema(self, settings: Mapping[str, Any], model: "ResolvedModel") -> pa.Schema:
        return pa.schema([("generated_text", pa.string()), ("generated_tokens", pa.int32()),
                          ("finish_reason", pa.string())])


TASK = GenerateTask
