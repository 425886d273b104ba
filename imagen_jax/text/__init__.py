"""Text conditioning: SentencePiece tokenizer, frozen T5 encoder, HF T5 conversion (the
safetensors reader it shares with CLIP is imagen_jax/hf_checkpoint.py)."""

from imagen_jax.text.encoder import TextEncoder
from imagen_jax.text.t5_convert import convert_t5_encoder, load_t5_encoder
from imagen_jax.text.tokenizer import (TokenizedBatch, Tokenizer, check_prompts,
                                      train_sentencepiece)

__all__ = [
    "TextEncoder",
    "TokenizedBatch",
    "Tokenizer",
    "check_prompts",
    "convert_t5_encoder",
    "load_t5_encoder",
    "train_sentencepiece",
]
