"""The top-level tasu config. Each section is a typed dataclass; every field has a one-line doc."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasu.align.config import PSDConfig, SimulationConfig
from tasu.config.fields import ConfigError, check, doc_field
from tasu.config.loader import resolve_path
from tasu.data.config import DataConfig, SourceConfig
from tasu.kernels.config import KernelsConfig
from tasu.model.config import ModelConfig
from tasu.taste.config import TASLM_GROUPS, TASTE_MODES, TOKENIZER_GROUPS, TasteConfig

MODES = ("simulated", "posterior", "lego", "features", "ctc") + TASTE_MODES
CTC_GROUPS = ("encoder", "ctc_head")  # what a ctc stage (CTCModel: no projector, no LLM) can train
GROUPS = ("encoder", "ctc_head", "projector", "llm", "lora", "audio_tokens", *TOKENIZER_GROUPS, "speech_lm")


@dataclass
class StageConfig:
    """One stage of the curriculum; unset fields inherit from `train`."""

    name: str = doc_field("main", "stage name (used in logs and checkpoints)")
    mode: str = doc_field("simulated", f"input mode: {' | '.join(MODES)}")
    train_data: list[SourceConfig] = doc_field(None, "training sources of this stage (empty: data.train)", factory=list)
    trainable: list[str] = doc_field(None, f"trainable groups among {GROUPS}", factory=lambda: ["projector"])
    trainable_regex: list[str] = doc_field(None, "extra parameter-name regexes made trainable", factory=list)
    frozen_regex: list[str] = doc_field(None, "parameter-name regexes frozen (applied last)", factory=list)
    lr: float | None = doc_field(None, "peak learning rate (None: train.lr)")
    max_steps: int | None = doc_field(None, "optimizer steps of this stage (None: train.max_steps)")
    warmup_steps: int | None = doc_field(None, "LR warmup steps (None: train.warmup_steps)")
    encoder_lr: float | None = doc_field(None, "peak LR of the encoder body's trainable parameters (None: the "
                                               "stage LR); the CTC head and the rest keep the stage LR")
    encoder_top_layers: int = doc_field(0, "also train the encoder body's top k layers and its final LayerNorm "
                                           "(k of L; with `encoder` not in trainable: partial fine-tuning)")

    def __post_init__(self) -> None:
        check(self.mode in MODES, f"stages[{self.name}].mode", f"unknown mode '{self.mode}' {MODES}")
        for g in self.trainable:
            check(g in GROUPS, f"stages[{self.name}].trainable", f"unknown group '{g}' {GROUPS}")
        if self.lr is not None:
            check(self.lr > 0, f"stages[{self.name}].lr", "must be > 0")
        if self.max_steps is not None:
            check(self.max_steps > 0, f"stages[{self.name}].max_steps", "must be > 0")
        if self.encoder_lr is not None:
            check(self.encoder_lr > 0, f"stages[{self.name}].encoder_lr", "must be > 0")
        check(self.encoder_top_layers >= 0, f"stages[{self.name}].encoder_top_layers", "must be >= 0")
        if self.mode == "ctc":
            check(set(self.trainable) <= set(CTC_GROUPS), f"stages[{self.name}].trainable",
                  f"a ctc stage trains {CTC_GROUPS} only (no projector or LLM is built), got {self.trainable}: "
                  "e.g. [ctc_head] (frozen encoder) or [encoder, ctc_head] (full fine-tuning)")
        if self.mode in TASTE_MODES:  # TASTE stages (tasu.taste.recipe): the encoder is frozen
            allowed = TASLM_GROUPS if self.mode == "taslm" else ("unit_decoder",) if self.mode == "taste_text" \
                else TOKENIZER_GROUPS
            check(set(self.trainable) <= set(allowed), f"stages[{self.name}].trainable",
                  f"a {self.mode} stage trains {allowed} only, got {self.trainable}")


@dataclass
class TrainConfig:
    """Optimisation, precision, distribution and checkpointing."""

    max_steps: int = doc_field(100, "optimizer steps per stage (unless the stage sets its own)")
    lr: float = doc_field(1e-3, "peak learning rate")
    min_lr_ratio: float = doc_field(0.1, "cosine schedule floor as a fraction of the peak LR")
    warmup_steps: int = doc_field(10, "linear warmup steps")
    schedule: str = doc_field("warmup_cosine", "warmup_cosine | constant | warmup_linear")
    weight_decay: float = doc_field(0.0, "AdamW weight decay")
    adam_eps: float = doc_field(1e-6, "AdamW epsilon (the reference uses 1e-6)")
    adam_betas: list[float] = doc_field(None, "AdamW betas", factory=lambda: [0.9, 0.999])
    grad_accum: int = doc_field(1, "gradient accumulation steps")
    global_batch: int | None = doc_field(None, "if set: checked == data.batch_size x grad_accum x world size")
    grad_clip: float = doc_field(1.0, "gradient norm clipping (0 = off)")
    precision: str = doc_field("fp32", "fp32 | bf16 | fp16")
    zero_stage: int = doc_field(0, "DeepSpeed ZeRO stage 0-3")
    ds_config: str | None = doc_field(None, "DeepSpeed JSON with ZeRO/offload/precision only (ds_configs/)")
    offload_optimizer: bool = doc_field(False, "ZeRO-Offload of optimizer states to CPU")
    offload_params: bool = doc_field(False, "ZeRO-3 parameter offload to CPU")
    save_every: int = doc_field(0, "checkpoint every N steps (0: only at the end of each stage)")
    keep_last: int = doc_field(2, "keep the last K checkpoints")
    resume: str = doc_field("auto", "auto (newest complete checkpoint in output_dir) | none | a checkpoint path")
    init_from: str | None = doc_field(None, "start the first stage from another run's trained weights: its run dir "
                                            "(last finished stage) or a stages/<name>/carry.safetensors file")
    seed: int = doc_field(1234, "global seed (model init, data order, simulation noise)")
    log_every: int = doc_field(10, "console line every N steps (metrics.jsonl gets every step)")
    nan_policy: str = doc_field("fail", "fail | skip: what a NaN/inf loss does")
    max_nan_skips: int = doc_field(10, "with nan_policy=skip: fail after this many skipped steps")
    tensorboard: bool = doc_field(True, "write TensorBoard scalars under output_dir/tb")
    progress_bar: bool = doc_field(True, "tqdm bar on rank 0")
    export_at_end: bool = doc_field(True, "export an HF-style folder to output_dir/export after the last stage")
    timeout_minutes: int = doc_field(10, "collective timeout: a lost rank fails the run after this")

    def __post_init__(self) -> None:
        check(self.max_steps > 0, "train.max_steps", f"must be > 0, got {self.max_steps}")
        check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        check(self.grad_accum >= 1, "train.grad_accum", "must be >= 1")
        check(self.precision in ("fp32", "bf16", "fp16"), "train.precision", f"unknown precision '{self.precision}'")
        check(self.zero_stage in (0, 1, 2, 3), "train.zero_stage", f"must be 0, 1, 2 or 3, got {self.zero_stage}")
        check(self.schedule in ("warmup_cosine", "constant", "warmup_linear"), "train.schedule",
              f"unknown schedule '{self.schedule}'")
        check(self.nan_policy in ("fail", "skip"), "train.nan_policy", f"must be fail or skip, got '{self.nan_policy}'")
        check(self.save_every >= 0, "train.save_every", "must be >= 0")
        check(self.keep_last >= 1, "train.keep_last", "must be >= 1")
        check(len(self.adam_betas) == 2, "train.adam_betas", "needs two values")
        check(self.offload_params is False or self.zero_stage == 3, "train.offload_params", "needs train.zero_stage=3")


@dataclass
class PromptConfig:
    """Prompt file and chat setup."""

    file: str | None = doc_field(None, "JSON lines {task, prompt}; None: the shipped prompts")
    system: str | None = doc_field(None, "optional system message")
    audio_bos: str | None = doc_field(None, "token put before every speech segment, e.g. <|audio_bos|> (added to "
                                            "the LLM tokenizer as a special token when missing); None: no wrapper")
    audio_eos: str | None = doc_field(None, "token put after every speech segment, e.g. <|audio_eos|>")

    def __post_init__(self) -> None:
        for name in ("audio_bos", "audio_eos"):
            v = getattr(self, name)
            check(v is None or (v.strip() == v and v != ""), f"prompts.{name}",
                  f"must be a non-empty token string without surrounding spaces, got {v!r}")
        check(self.audio_bos is None or self.audio_bos != self.audio_eos, "prompts.audio_eos",
              "must differ from prompts.audio_bos")


@dataclass
class EvalConfig:
    """Decoding and scoring."""

    beam: int = doc_field(1, "beam size (1 = greedy)")
    max_new_tokens: int = doc_field(64, "generation limit")
    batch_size: int = doc_field(8, "evaluation batch size")
    max_samples: int = doc_field(0, "evaluate at most this many samples (0 = all)")
    at_end: bool = doc_field(False, "decode and score data.eval after training -> output_dir/eval/ (results.jsonl, "
                                    "report.json, report.md)")
    repetition_penalty: float = doc_field(1.0, "penalty on tokens already in the answer (HF semantics; 1.0 = off)")
    no_repeat_ngram_size: int = doc_field(0, "forbid any n-gram of this size twice in an answer (0 = off)")

    def __post_init__(self) -> None:
        check(self.beam >= 1, "eval.beam", "must be >= 1")
        check(self.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1")
        check(self.repetition_penalty > 0, "eval.repetition_penalty", "must be > 0 (1.0 = off)")
        check(self.no_repeat_ngram_size >= 0, "eval.no_repeat_ngram_size", "must be >= 0 (0 = off)")


@dataclass
class Config:
    """A complete tasu run."""

    output_dir: str = doc_field("runs/default", "run directory: config, metrics, checkpoints, export")
    model: ModelConfig = doc_field(None, "encoder, projector, LLM", factory=ModelConfig)
    simulation: SimulationConfig = doc_field(None, "CPS noise model", factory=SimulationConfig)
    psd: PSDConfig = doc_field(None, "PSD compression", factory=PSDConfig)
    data: DataConfig = doc_field(None, "data sources and batching", factory=DataConfig)
    prompts: PromptConfig = doc_field(None, "prompts", factory=PromptConfig)
    train: TrainConfig = doc_field(None, "optimisation and distribution", factory=TrainConfig)
    stages: list[StageConfig] = doc_field(None, "curriculum stages, run in order", factory=lambda: [StageConfig()])
    eval: EvalConfig = doc_field(None, "decoding and scoring", factory=EvalConfig)
    kernels: KernelsConfig = doc_field(None, "fused kernel selection", factory=KernelsConfig)
    taste: TasteConfig = doc_field(None, "TASTE tokenizer / TASLM settings (taste-* configs)", factory=TasteConfig)

    def __post_init__(self) -> None:
        check(len(self.stages) > 0, "stages", "at least one stage is needed")
        names = [s.name for s in self.stages]
        check(len(set(names)) == len(names), "stages", f"stage names must be unique, got {names}")
        taste = [s.mode in TASTE_MODES for s in self.stages]
        check(all(taste) or not any(taste), "stages", f"TASTE stages {TASTE_MODES} cannot be mixed with SpeechLLM "
              f"stages in one run, got {[s.mode for s in self.stages]}")
        if self.eval.at_end:
            check(bool(self.data.eval), "eval.at_end", "needs data.eval sources to evaluate")
            check(any(s.mode not in ("ctc",) + TASTE_MODES for s in self.stages), "eval.at_end",
                  "needs a SpeechLLM stage to decode with (ctc stages: `tasu ctc eval`; TASTE: its stage eval)")
        check(not (self.model.llm.compile and self.train.zero_stage == 3), "model.llm.compile",
              "is not supported with train.zero_stage=3 (ZeRO-3 gathers parameters in module hooks that compiled "
              "layers would trace)")
        for s in self.stages:
            if s.mode != "simulated":
                check(self.model.encoder.type != "none", "model.encoder.type",
                      f"stage '{s.name}' is in {s.mode} mode and needs an encoder")
            if s.mode == "lego":
                check(self.model.projector.type == "lego", "model.projector.type",
                      f"stage '{s.name}' is in lego mode: the projector must be 'lego'")
            if s.mode == "ctc" or s.mode in TASTE_MODES:
                check(self.data.n_mels == self.model.encoder.n_mels, "data.n_mels",
                      f"is {self.data.n_mels} but model.encoder.n_mels is {self.model.encoder.n_mels} (stage "
                      f"'{s.name}' feeds the data's features to the encoder)")
            if "lora" in s.trainable:
                check(self.model.lora.r > 0, "model.lora.r", f"stage '{s.name}' trains lora but model.lora.r is 0")
            if "audio_tokens" in s.trainable:
                check(bool(self.prompts.audio_bos or self.prompts.audio_eos), "prompts.audio_bos",
                      f"stage '{s.name}' trains audio_tokens but no audio wrapper token is set")

    def stage_steps(self, stage: StageConfig) -> int:
        return stage.max_steps if stage.max_steps is not None else self.train.max_steps

    def validate_files(self) -> None:
        """Every referenced file must exist before any compute starts (errors name the key)."""
        def need(key: str, value: str | None, kind: str = "file") -> None:
            if value is None:
                return
            p = Path(resolve_path(value))
            try:
                ok = p.exists() if kind == "path" else p.is_file()
            except OSError as e:  # e.g. a name too long for the file system
                raise ConfigError(f"config key '{key}': cannot check {value[:200]!r}: {e.strerror or e}") from None
            if not ok:
                raise ConfigError(f"config key '{key}': {kind} not found: {value}")

        m = self.model
        need("model.llm.tokenizer_text", m.llm.tokenizer_text)
        need("model.llm.path", m.llm.path, "path")
        need("model.encoder.path", m.encoder.path, "path")
        need("model.ctc_tokenizer.path", m.ctc_tokenizer.path, "path")
        need("prompts.file", self.prompts.file)
        need("train.ds_config", self.train.ds_config)
        need("train.init_from", self.train.init_from, "path")
        need("taste.units_path", self.taste.units_path)
        for i, s in enumerate(self.stages):
            for j, src in enumerate(s.train_data):
                _check_source(f"stages.{i}.train_data.{j}.path", src.path)
        for section in ("train", "eval"):
            for j, src in enumerate(getattr(self.data, section)):
                _check_source(f"data.{section}.{j}.path", src.path)


def _check_source(key: str, path: str) -> None:
    """A local source must exist; URLs (`pipe:`, `http`), brace and glob patterns are checked at read time."""
    if any(t in path for t in ("pipe:", "://", "{", "*", "?")) and not path.startswith("pkg://"):
        return
    try:
        found = Path(resolve_path(path)).exists()
    except OSError as e:  # e.g. a name too long for the file system
        raise ConfigError(f"config key '{key}': cannot check {path[:200]!r}: {e.strerror or e}") from None
    if not found:
        raise ConfigError(f"config key '{key}': data source not found: {path}")
