"""astrai.model: transformer, weight loading, tokenizer and chat templates for AstrAI."""

from .batch import ForwardBatch
from .chat_template import ChatTemplateError
from .config import PRESETS, ModelConfig, resolve_dtype
from .cpu_packing import fast_bf16_cpu
from .encoder import (
    BUNDLED_ENCODERS,
    DEFAULT_ENCODER,
    EncoderInputError,
    SentenceEncoder,
    bundled_encoder_path,
    load_encoder,
    locate_encoder,
)
from .errors import ModelLoadError
from .loader import bundled_gguf_path, is_low_bit_checkpoint, load_model, locate_model, model_id
from .native_forward import NativeForward
from .protocol import ForwardModel
from .sampling import sample_temperature, sample_temperature_torch
from .tokenizer import IncrementalDetokenizer, Tokenizer
from .transformer import Transformer

__all__ = [
    "BUNDLED_ENCODERS",
    "DEFAULT_ENCODER",
    "PRESETS",
    "ChatTemplateError",
    "EncoderInputError",
    "ForwardBatch",
    "ForwardModel",
    "IncrementalDetokenizer",
    "ModelConfig",
    "ModelLoadError",
    "NativeForward",
    "SentenceEncoder",
    "Tokenizer",
    "Transformer",
    "bundled_encoder_path",
    "bundled_gguf_path",
    "fast_bf16_cpu",
    "is_low_bit_checkpoint",
    "load_encoder",
    "load_model",
    "locate_encoder",
    "locate_model",
    "model_id",
    "resolve_dtype",
    "sample_temperature",
    "sample_temperature_torch",
]
