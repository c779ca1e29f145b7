"""Samples (after their stages) -> `tasu.types.SpeechBatch`.

Text samples carry `sim` (CPS frames) and become sparse `Posteriors` [B, T] via `collate_simulated`; audio samples
carry `feats` [F, M] and become `feats` [B, F_max, M] zero-padded with `feat_lengths` [B], plus `ctc_targets`
(CTC unit ids of each transcript) when every sample has one. A batch is one or the other, never both.

Multi-voice samples (LLaSO, several `<audio>`) also carry `extra_feats` and `prompt_middle`: then every voice is a
row of `feats` [N, F_max, M] (sample after sample, N = total voices) and the batch gets `speech_counts` [B] and
`prompt_middle`; CTC targets (one transcript per sample, not per voice) are left out.
"""

from __future__ import annotations

import torch

from tasu.types import SpeechBatch


def collate(samples: list[dict], vocab_size: int | None = None, blank_id: int = 0) -> SpeechBatch:
    """One SpeechBatch; `vocab_size` (CTC classes) is needed for text (simulated) samples."""
    if not samples:
        raise ValueError("collate: empty batch")
    has_sim = ["sim" in s for s in samples]
    has_feats = ["feats" in s for s in samples]
    if not (all(has_sim) or all(has_feats)) or any(a and b for a, b in zip(has_sim, has_feats)):
        raise ValueError("collate: a batch must be all text (sim) or all audio (feats) samples; keys "
                         f"{[s.get('__key__') for s in samples][:8]}")
    batch = SpeechBatch(
        keys=[s["__key__"] for s in samples],
        tasks=[s["task"] for s in samples],
        prompt_prefix=[list(s["prompt_prefix"]) for s in samples],
        prompt_suffix=[list(s["prompt_suffix"]) for s in samples],
        answer=[list(s["answer"]) for s in samples],
        references=[s["reference"] for s in samples],
        audio_seconds=float(sum(s.get("audio_seconds", 0.0) for s in samples if "feats" in s)),
    )
    if all(has_sim):
        if vocab_size is None:
            raise ValueError("collate: text samples need the CTC vocab_size")
        from tasu.align.cps import collate_simulated

        batch.posteriors = collate_simulated([s["sim"] for s in samples], vocab_size, blank_id)
    else:
        multi = any(s.get("extra_feats") for s in samples)
        segs = [[s["feats"], *s.get("extra_feats", ())] for s in samples]
        for s, seg in zip(samples, segs):
            if len(s.get("prompt_middle", ())) != len(seg) - 1:
                raise ValueError(f"collate: sample {s['__key__']!r} has {len(seg)} voices but "
                                 f"{len(s.get('prompt_middle', ()))} text pieces between them")
        feats = [torch.as_tensor(f, dtype=torch.float32) for seg in segs for f in seg]  # each [F_i, M]
        n_mels = {f.shape[1] for f in feats}
        if len(n_mels) != 1:
            raise ValueError(f"collate: feature sizes differ within a batch: {sorted(n_mels)}")
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        out = torch.zeros(len(feats), int(lengths.max()), n_mels.pop())  # [N, F_max, M], N = B unless multi-voice
        for i, f in enumerate(feats):
            out[i, : f.shape[0]] = f
        batch.feats, batch.feat_lengths = out, lengths
        if multi:
            batch.speech_counts = [len(seg) for seg in segs]
            batch.prompt_middle = [[list(m) for m in s.get("prompt_middle", ())] for s in samples]
            return batch
        targets = [s.get("ctc_targets") for s in samples]
        if all(targets):  # a joint CTC loss needs every transcript; one missing -> no targets for the batch
            batch.ctc_targets = [list(t) for t in targets]
    return batch
