"""Which head a stage loads, read from the architecture's contract rather than fixed per stage.

Most stages name one Auto class (classify: sequence classification).  The embedding and
language-model stages serve two kinds of architecture each: an encoder's body or an
encoder-decoder's encoder alone (T5EncoderModel: a sentence-T5 / GTR checkpoint has no decoder
weights at all), a decoder's causal LM or an encoder-decoder's text-to-text head.  These classes
resolve like the Auto classes (``model_class(config)``, ``from_pretrained``), so the job's
checkpoint check and the stage's loading see the same class.
"""
from __future__ import annotations

from autoload import registry
from autoload.auto import _AutoModel
from autoload.configuration import PretrainedConfig


class EncoderModel(_AutoModel):
    """The body that gives token states for embeddings: the base model, or for an
    encoder-decoder its encoder alone (``registry.ENCODER``)."""

    @classmethod
    def model_class(cls, config: PretrainedConfig) -> type:
        contract = registry.contract(config.model_type)
        head = registry.ENCODER if contract.encoder_decoder and registry.ENCODER in contract.heads else registry.BASE
        return registry.head_class(config.model_type, head)


class LanguageModel(_AutoModel):
    """What score and generate run: a causal LM, or an encoder-decoder's LM head (the seed's
    AutoModelWithLMHead, T5ForConditionalGeneration), whose decoder reads the encoded source."""

    @classmethod
    def model_class(cls, config: PretrainedConfig) -> type:
        contract = registry.contract(config.model_type)
        head = registry.WITH_LM_HEAD if contract.encoder_decoder else registry.CAUSAL_LM
        return registry.head_class(config.model_type, head)


class SpanQuestionAnswering(_AutoModel):
    """What the qa stage runs: start and end logits per token.  That is the seed's
    AutoModelForQuestionAnswering for most types; XLNet, XLM and FlauBERT map that class to the
    SQuAD beam-search head (its top-k spans, not logits per token) and declare the span head
    (``...ForQuestionAnsweringSimple``) beside it."""

    @classmethod
    def model_class(cls, config: PretrainedConfig) -> type:
        heads = registry.contract(config.model_type).heads
        head = registry.SPAN_QUESTION_ANSWERING if registry.SPAN_QUESTION_ANSWERING in heads else registry.QUESTION_ANSWERING
        return registry.head_class(config.model_type, head)


def is_encoder_decoder(config: PretrainedConfig) -> bool:
    return registry.contract(config.model_type).encoder_decoder
