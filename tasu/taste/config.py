"""Config of TASTE (text-aligned speech tokenization) and of the TASLM joint text/speech LM heads.

Every check names its key as `taste.<field>`. Defaults follow the TASTE paper where it fixes a value (RVQ 4 x 512,
EMA codebooks, k-means init, quantizer dropout, keys from the last encoder layer, values from a shallow one,
word-level pooling); the remaining sizes are small defaults for tasu's CPU-first tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasu.config.fields import check, doc_field

#: Stage modes of a TASTE run (`stages[*].mode`), in the paper's order: the unit decoder from text alone, then with
#: the aggregator's continuous speech vectors, then with them quantised by the RVQ (the full tokenizer); then the
#: joint text/speech LM over the tokenizer's codes.
TASTE_MODES = ("taste_text", "taste_novq", "taste_vq", "taslm")
TOKENIZER_GROUPS = ("aggregator", "unit_decoder")  # what a taste_* stage can train (RVQ codebooks are EMA buffers)
TASLM_GROUPS = ("llm", "lora", "speech_lm")  # what a taslm stage can train (speech_lm: speech embedding + heads)


@dataclass
class TasteConfig:
    """TASTE tokenizer (aggregator + RVQ), unit decoder, unit discovery and TASLM heads."""

    # residual vector quantiser
    codebooks: int = doc_field(4, "RVQ: number of residual codebooks N")
    codebook_size: int = doc_field(512, "RVQ: codes per codebook K")
    dim: int = doc_field(256, "width D of the aggregator output, the RVQ codes and the unit decoder")
    decay: float = doc_field(0.99, "RVQ: EMA decay of the codebook statistics")
    epsilon: float = doc_field(1e-5, "RVQ: Laplace smoothing of the EMA cluster sizes")
    beta: float = doc_field(0.25, "RVQ: commitment loss weight beta * ||r - sg(q)||^2")
    kmeans_init: bool = doc_field(True, "RVQ: initialise each codebook by k-means on the first training batch")
    kmeans_iters: int = doc_field(10, "RVQ: Lloyd iterations of the k-means initialisation")
    kmeans_init_vectors: int = doc_field(4096, "RVQ: vectors collected (passed through unquantised) before the "
                                               "k-means init; keep it well above codebook_size")
    dead_code_threshold: float = doc_field(0.0, "RVQ: replace codes whose EMA cluster size falls below this (0 = off)")
    quantizer_dropout: float = doc_field(0.5, "RVQ: probability that a training sample uses only the first n ~ U{1..N} "
                                              "codebooks")
    seed: int = doc_field(0, "seed of the k-means init, quantizer dropout and dead-code replacement")
    # aggregator
    key_layer: int = doc_field(-1, "encoder hidden-state index giving the attention keys (-1 = last layer)")
    value_layer: int = doc_field(1, "encoder hidden-state index giving the attention values (a shallow layer)")
    aggregator_layers: int = doc_field(2, "aggregator: cross-attention layers (the last one pools the speech vector)")
    heads: int = doc_field(4, "attention heads of the aggregator and the unit decoder")
    word_pooling: bool = doc_field(True, "aggregator: average the outputs of the tokens of each word")
    # unit decoder
    unit_vocab: int = doc_field(500, "number of discrete speech units (k of the unit k-means)")
    unit_kmeans_iters: int = doc_field(20, "Lloyd iterations of the unit k-means")
    unit_source: str = doc_field("encoder", "what the unit k-means clusters: encoder (hidden state taste.unit_layer: "
                                            "HuBERT-style units of a trained encoder) | features (the input log-mel "
                                            "frames stacked to the encoder's frame rate: HuBERT's first-iteration "
                                            "targets; the choice for a random-weight encoder, whose states mostly "
                                            "encode the frame position)")
    unit_layer: int = doc_field(-1, "encoder hidden-state index whose frames are clustered into units (-1 = last; "
                                    "unit_source=encoder)")
    units_path: str | None = doc_field(None, "unit centroids written by `tasu units fit` (safetensors); None: "
                                             "fitted on the training audio at the start of the run")
    unit_fit_max_frames: int = doc_field(200000, "at most this many encoder frames feed the unit k-means")
    freq_shifts_hz: list[float] = doc_field(None, "every clip is used once per value: all its frequencies moved by "
                                                  "this many Hz (single sideband, length kept), a voice variation "
                                                  "neither the transcript nor the duration reveals",
                                            factory=lambda: [0.0])
    decoder_layers: int = doc_field(2, "unit decoder: layers of the text/speech memory encoder and of the unit decoder")
    align_prior_width: float = doc_field(1.0, "unit decoder: width (in text tokens) of the diagonal attention "
                                              "prior; 0 = off")
    speaker_dim: int = doc_field(0, "unit decoder: size of an optional speaker embedding vector (0 = none)")
    length_loss_weight: float = doc_field(0.1, "unit decoder: weight of the unit-count regression loss")
    dropout: float = doc_field(0.0, "dropout inside the aggregator and the unit decoder")
    # TASLM
    delay: int = doc_field(1, "TASLM: speech codes are shifted this many text positions to the right")
    text_loss_weight: float = doc_field(1.0, "TASLM: weight of the text cross-entropy")
    speech_loss_weight: float = doc_field(1.0, "TASLM: weight of the mean per-codebook speech cross-entropy")
    selection_candidates: int = doc_field(2, "TASLM eval: candidates per next-speech selection item (1 true)")

    def __post_init__(self) -> None:
        for name in ("codebooks", "dim", "aggregator_layers", "heads", "decoder_layers"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 1, f"taste.{name}", f"must be an integer >= 1, got {v!r}")
        check(self.codebook_size >= 2, "taste.codebook_size", f"must be >= 2, got {self.codebook_size}")
        check(self.unit_vocab >= 2, "taste.unit_vocab", f"must be >= 2, got {self.unit_vocab}")
        check(self.dim % self.heads == 0, "taste.dim", f"{self.dim} must be divisible by taste.heads ({self.heads})")
        check(0.0 < self.decay < 1.0, "taste.decay", f"must be in (0, 1), got {self.decay}")
        check(self.epsilon > 0.0, "taste.epsilon", f"must be > 0, got {self.epsilon}")
        check(self.beta >= 0.0, "taste.beta", f"must be >= 0, got {self.beta}")
        check(self.kmeans_iters >= 0, "taste.kmeans_iters", f"must be >= 0, got {self.kmeans_iters}")
        check(self.kmeans_init_vectors >= 0, "taste.kmeans_init_vectors",
              f"must be >= 0, got {self.kmeans_init_vectors}")
        check(self.unit_kmeans_iters >= 1, "taste.unit_kmeans_iters", f"must be >= 1, got {self.unit_kmeans_iters}")
        check(self.unit_source in ("encoder", "features"), "taste.unit_source",
              f"must be encoder or features, got {self.unit_source!r}")
        check(self.unit_fit_max_frames >= self.unit_vocab, "taste.unit_fit_max_frames",
              f"must be >= taste.unit_vocab ({self.unit_vocab}), got {self.unit_fit_max_frames}")
        check(len(self.freq_shifts_hz) > 0 and len(set(self.freq_shifts_hz)) == len(self.freq_shifts_hz),
              "taste.freq_shifts_hz", f"must be a non-empty list of distinct values, got {self.freq_shifts_hz}")
        check(self.selection_candidates >= 2, "taste.selection_candidates",
              f"must be >= 2, got {self.selection_candidates}")
        check(self.dead_code_threshold >= 0.0, "taste.dead_code_threshold",
              f"must be >= 0, got {self.dead_code_threshold}")
        check(0.0 <= self.quantizer_dropout <= 1.0, "taste.quantizer_dropout",
              f"must be in [0, 1], got {self.quantizer_dropout}")
        check(0.0 <= self.dropout < 1.0, "taste.dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.align_prior_width >= 0.0, "taste.align_prior_width", f"must be >= 0, got {self.align_prior_width}")
        check(self.speaker_dim >= 0, "taste.speaker_dim", f"must be >= 0, got {self.speaker_dim}")
        check(self.length_loss_weight >= 0.0, "taste.length_loss_weight",
              f"must be >= 0, got {self.length_loss_weight}")
        check(self.delay >= 0, "taste.delay", f"must be >= 0, got {self.delay}")
        check(self.text_loss_weight >= 0.0, "taste.text_loss_weight", f"must be >= 0, got {self.text_loss_weight}")
        check(self.speech_loss_weight >= 0.0, "taste.speech_loss_weight",
              f"must be >= 0, got {self.speech_loss_weight}")
        check(self.text_loss_weight + self.speech_loss_weight > 0.0, "taste.speech_loss_weight",
              "taste.text_loss_weight and taste.speech_loss_weight cannot both be 0")
