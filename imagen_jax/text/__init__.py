"""Text conditioning: SentencePiece tokenizer, frozen T5 encoder, HF checkpoint loading."""

from imagen_jax.text.checkpoint import Checkpoint, SafetensorsFile, open_checkpoint, take
from imagen_jax.text.encoder import TextEncoder
from imagen_jax.text.t5_convert import convert_t5_encoder, load_t5_encoder
from imagen_jax.text.tokenizer import (TokenizedBatch, Tokenizer, check_prompts,
                                      train_sentencepiece)

__all__ = [
    "Checkpoint",
    "SafetensorsFile",
    "TextEncoder",
    "TokenizedBatch",
    "Tokenizer",
    "check_prompts",
    "convert_t5_encoder",
    "load_t5_encoder",
    "open_checkpoint",
    "take",
    "train_sentencepiece",
]
