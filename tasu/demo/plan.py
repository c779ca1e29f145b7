"""The two demo presets: `--quick` (a slow test, <= 15 min on 2 CPU cores) and the default (<= 60 min, the real
comparison). Every number that shapes the demo's data, CTC head and TASU systems lives here."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasu.demo.ctc_head import HeadTraining

#: voices held out from CTC and projector training (test speakers), in order of preference; the demo takes the
#: first two that are installed. Each is a speaker no training voice shares (kal is in both flite and festival).
HELDOUT_VOICE_PREFERENCE = ("flite-awb", "festival-ked_diphone", "flite-rms", "espeak-en-gb-scotland+m4")


@dataclass
class DemoPlan:
    """What one demo run builds and trains."""

    name: str                           # preset name (recorded in the report)
    train_sentences: int                # Botchan sentences the training voices read (the TTS pool)
    per_voice: int                      # pool sentences each training voice reads (its own seeded sample)
    dev_sentences: int                  # sentences each training voice reads for CTC model selection
    heldout_sentences: int              # sentences the held-out voices read (the held-out test set)
    text_only_sentences: int            # sentences for text-only training, never synthesised (0: all the rest)
    perturb: bool                       # add a pitch-shifted / reverberated copy of every training clip
    unit_min_count: int                 # LLM tokens used by >= this many training sentences become CTC units
    head: str = "conformer"             # CTC head on the frozen encoder: linear | mlp | bigru | conformer
    head_hidden: int = 192              # its width
    head_training: HeadTraining = field(default_factory=HeadTraining)   # the head, on cached encoder states
    steps: int = 100                    # optimizer steps of each TASU stage (text-only, audio)
    batch_size: int = 8                 # samples per step
    lr: float = 3e-4                    # projector learning rate (peak, warmup then cosine)
    max_new_tokens: int = 48            # generation budget per utterance at evaluation
    seed: int = 0                       # sentence split, voice samples, training


PLANS = {
    "quick": DemoPlan(name="quick", train_sentences=300, per_voice=120, dev_sentences=6, heldout_sentences=12,
                      text_only_sentences=600, perturb=False, unit_min_count=2,
                      head_training=HeadTraining(epochs=5, batch_size=32, lr=3e-3), steps=12, lr=3e-4),
    # 1300 training sentences x 11 voices x 350 each: every sentence is heard ~3 times; units used by >= 2
    # sentences (~1400 SmolLM2 tokens; ~25 % of the tokens of unseen text are then single letters)
    "default": DemoPlan(name="default", train_sentences=1300, per_voice=350, dev_sentences=8, heldout_sentences=40,
                        text_only_sentences=0, perturb=False, unit_min_count=2,
                        head_training=HeadTraining(epochs=8, batch_size=64, lr=2e-3), steps=100, lr=3e-4),
}
