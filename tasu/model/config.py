"""Config of the model components: CTC encoder, projector, LLM, LoRA, freezing."""

from __future__ import annotations

from dataclasses import dataclass

from tasu.config.fields import check, doc_field
from tasu.text.ctc_tokenizer import CTCTokenizerConfig

ENCODER_TYPES = ("tiny", "whisper", "none")
HEAD_TYPES = ("linear", "mlp", "bigru", "conformer")
PROJECTOR_TYPES = ("linear-silu", "linear", "conv1d", "qformer", "cross-attention", "lego")
LLM_TYPES = ("tiny", "hf")
ACTIVATIONS = ("relu", "gelu", "silu")


@dataclass
class EncoderConfig:
    """The CTC speech encoder: acoustic body + CTC head over the CTC tokenizer's units."""

    type: str = doc_field("tiny", "tiny (transformer built from this config) | whisper | none (text-only runs)")
    path: str | None = doc_field(None, "whisper weights: HF folder, openai .pt, or CTranslate2 model.bin")
    weights_format: str = doc_field("auto", "auto | hf | openai | ct2: format of `path`")
    whisper_size: str = doc_field("tiny", "shape preset when whisper is built without weights (tests): tiny|base|...")
    n_mels: int = doc_field(80, "log-mel bins of the input features (80, or 128 for large-v3)")
    true_length: bool = doc_field(True, "run Whisper on the clip's true length instead of 30 s padding")
    head: str = doc_field("linear", "CTC head: linear | mlp (LN+MLP) | bigru | conformer")
    head_hidden: int = doc_field(256, "hidden size of the mlp / bigru / conformer head")
    d_model: int = doc_field(64, "tiny encoder: model width")
    n_layers: int = doc_field(2, "tiny encoder: transformer layers")
    n_heads: int = doc_field(4, "tiny encoder: attention heads")
    subsample: int = doc_field(2, "tiny encoder: frame subsampling factor of the conv front end")
    feature_layers: list[int] = doc_field(None, "hidden layers returned for `features` mode (-1 = last)",
                                          factory=lambda: [-1])
    ctc_weight: float = doc_field(0.0, "weight of a joint CTC loss on the encoder in audio modes (0 = off)")

    def __post_init__(self) -> None:
        check(self.type in ENCODER_TYPES, "model.encoder.type", f"unknown encoder '{self.type}' {ENCODER_TYPES}")
        check(self.head in HEAD_TYPES, "model.encoder.head", f"unknown head '{self.head}' {HEAD_TYPES}")
        check(self.weights_format in ("auto", "hf", "openai", "ct2"), "model.encoder.weights_format",
              f"unknown format '{self.weights_format}'")
        check(self.ctc_weight >= 0.0, "model.encoder.ctc_weight", f"must be >= 0, got {self.ctc_weight}")
        check(self.n_mels in (80, 128), "model.encoder.n_mels", f"must be 80 or 128, got {self.n_mels}")
        check(self.n_heads > 0, "model.encoder.n_heads", f"must be > 0, got {self.n_heads}")
        check(self.d_model > 0 and self.d_model % self.n_heads == 0, "model.encoder.d_model",
              "must be positive and divisible by n_heads")


@dataclass
class ProjectorConfig:
    """Maps posteriors (or encoder features) into the LLM's embedding space; output size = LLM hidden size."""

    type: str = doc_field("linear-silu", f"one of {PROJECTOR_TYPES}")
    hidden: int = doc_field(2048, "hidden width (linear-silu / conv1d / linear)")
    stack: int = doc_field(1, "frame stacking factor k for `linear` / `conv1d` (downsamples frames by k)")
    activation: str | None = doc_field(None, f"hidden activation of `linear` / `conv1d`: {' | '.join(ACTIVATIONS)}; "
                                             "None: the type's own (linear: relu, conv1d: gelu)")
    num_queries: int = doc_field(32, "qformer: number of learned queries")
    num_layers: int = doc_field(2, "qformer: Q-Former layers")
    num_heads: int = doc_field(4, "qformer / cross-attention heads")
    lego_top1: bool = doc_field(False, "lego: use only the argmax token's embedding per frame")
    init: str = doc_field("random", "random | embedding: init so each CTC unit lands on the LLM embedding of it")

    def __post_init__(self) -> None:
        check(self.type in PROJECTOR_TYPES, "model.projector.type",
              f"unknown projector '{self.type}' {PROJECTOR_TYPES}")
        check(self.hidden > 0, "model.projector.hidden", "must be > 0")
        check(self.stack >= 1, "model.projector.stack", "must be >= 1")
        check(self.init in ("random", "embedding"), "model.projector.init", f"unknown init '{self.init}'")
        if self.activation is not None:
            check(self.activation in ACTIVATIONS, "model.projector.activation",
                  f"unknown activation '{self.activation}' {ACTIVATIONS}")
            check(self.type in ("linear", "conv1d"), "model.projector.activation",
                  f"is used by type linear / conv1d only, not '{self.type}' (leave it null)")


@dataclass
class LLMConfig:
    """The causal LLM."""

    type: str = doc_field("tiny", "tiny (a Llama built from this config, BPE tokenizer trained on tokenizer_text) | hf")
    path: str | None = doc_field(None, "hf: local folder with config, weights and tokenizer")
    gguf_file: str | None = doc_field(None, "hf: a GGUF file inside `path` to load instead of safetensors")
    hidden_size: int = doc_field(64, "tiny: hidden size")
    num_layers: int = doc_field(2, "tiny: decoder layers")
    num_heads: int = doc_field(4, "tiny: attention heads")
    intermediate_size: int = doc_field(128, "tiny: MLP width")
    vocab_size: int = doc_field(64, "tiny: BPE vocabulary size (specials included)")
    tokenizer_text: str | None = doc_field(None, "tiny: text file the BPE tokenizer is trained on")
    pretrain_steps: int = doc_field(0, "tiny: steps of LM pretraining on tokenizer_text before use (tests)")
    dtype: str = doc_field("float32", "weight dtype of the loaded LLM: float32 | bfloat16 | float16")
    random_init: bool = doc_field(False, "hf: build the model from `path`/config.json with random weights, reading "
                                         "no weight file (speed benchmarks of a model's shape)")
    compile: bool = doc_field(False, "torch.compile each decoder layer (fuses norms, rotary, activations; the first "
                                     "steps of each new sequence shape pay the compile time)")

    def __post_init__(self) -> None:
        check(self.type in LLM_TYPES, "model.llm.type", f"unknown llm '{self.type}' {LLM_TYPES}")
        if self.type == "hf":
            check(self.path is not None, "model.llm.path", "is required for type=hf")
        check(not self.random_init or self.type == "hf", "model.llm.random_init", "is for type=hf only")
        check(self.dtype in ("float32", "bfloat16", "float16"), "model.llm.dtype", f"unknown dtype '{self.dtype}'")


@dataclass
class LoRAConfig:
    """PEFT LoRA on the LLM (off when r == 0)."""

    r: int = doc_field(0, "LoRA rank; 0 disables LoRA")
    alpha: int = doc_field(16, "LoRA alpha")
    dropout: float = doc_field(0.0, "LoRA dropout")
    target_modules: list[str] = doc_field(None, "module names to adapt",
                                          factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        check(self.r >= 0, "model.lora.r", "must be >= 0")


@dataclass
class ModelConfig:
    """SpeechLLM = CTC encoder -> projector -> LLM."""

    ctc_tokenizer: CTCTokenizerConfig = doc_field(None, "the CTC unit inventory", factory=CTCTokenizerConfig)
    encoder: EncoderConfig = doc_field(None, "the CTC speech encoder", factory=EncoderConfig)
    projector: ProjectorConfig = doc_field(None, "the projector", factory=ProjectorConfig)
    llm: LLMConfig = doc_field(None, "the causal LLM", factory=LLMConfig)
    lora: LoRAConfig = doc_field(None, "LoRA on the LLM", factory=LoRAConfig)
