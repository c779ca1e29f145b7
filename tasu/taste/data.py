"""TASTE data: audio records -> frozen-encoder states, text tokens with word ids, speech units; padded batches.

Per utterance (`Utterance`), computed once at the start of a run by the frozen encoder (model.encoder):
    text_ids [L] long        transcript (GT, else target) in the text tokenizer: the LLM's, so TASLM shares it
    word_ids [L] long        word index of each token (the tokens of one word share it: word pooling)
    keys [T, D]              encoder hidden state taste.key_layer   (T encoder frames, 50 / s for Whisper)
    values [T, D]            encoder hidden state taste.value_layer
    unit_states [T, D]       encoder hidden state taste.unit_layer (what the unit k-means clusters)
    units [T] long           nearest unit centroid of each frame (set by `assign_units`)
    seconds                  audio duration
    codes [L, N] long        TASTE codes of the trained tokenizer (set before TASLM stages)

Every state is held in memory (fp32, 3 x T x D per utterance): sized for small corpora (Whisper-base states of
one hour of audio take ~1 GB). Records come through the same sources as the rest of tasu (manifests or shards,
split by rank with `part_range`); bad audio is counted and skipped, or fails the run, per data.on_error. With
taste.freq_shifts_hz each clip is used once per shift (`frequency_shift`), key suffix `~<shift>Hz`.

Batch (`TasteBatch`, B utterances, padded): text_ids [B, L] (pad = the tokenizer's pad id), word_ids [B, L] (-1 on
padding), keys / values [B, T, D] (0 on padding), units [B, T] (0 on padding), lengths [B] each, codes [B, L, N]
(PAD_CODE on padding) when set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from tasu.config.fields import ConfigError
from tasu.config.loader import resolve_path
from tasu.data.audio_io import AudioError, decode_audio_bytes, read_audio, resample
from tasu.data.faults import FaultCounter
from tasu.data.features import compute_features
from tasu.data.sources import read_part, resolve_source
from tasu.data.tar_io import TarFault
from tasu.taste.taslm import PAD_CODE
from tasu.taste.units import assign

log = logging.getLogger("tasu.taste")


@dataclass
class Utterance:
    key: str
    text: str
    text_ids: Tensor
    word_ids: Tensor
    keys: Tensor
    values: Tensor
    unit_states: Tensor
    seconds: float
    units: Tensor | None = None
    codes: Tensor | None = None


@dataclass
class TasteBatch:
    """A padded batch (see the module doc for shapes)."""

    keys_: list[str]
    text_ids: Tensor
    text_lengths: Tensor
    word_ids: Tensor
    keys: Tensor
    values: Tensor
    frame_lengths: Tensor
    units: Tensor
    unit_lengths: Tensor
    seconds: Tensor
    codes: Tensor | None = None

    def __len__(self) -> int:
        return len(self.keys_)

    def to(self, device, dtype: torch.dtype | None = None) -> TasteBatch:
        """Move every tensor; `dtype` (the model's) applies to the encoder states only."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), Tensor)}
        if dtype is not None:
            moved["keys"], moved["values"] = moved["keys"].to(dtype), moved["values"].to(dtype)
        return replace(self, **moved)

    def tokenizer_inputs(self) -> dict:
        """Keyword arguments of `TasteAutoencoder.forward` (all but `mode`)."""
        return dict(text_ids=self.text_ids, text_lengths=self.text_lengths, keys=self.keys, values=self.values,
                    frame_lengths=self.frame_lengths, units=self.units, unit_lengths=self.unit_lengths,
                    word_ids=self.word_ids)


def text_tokenizer(llm_cfg):
    """The LLM's tokenizer without loading the LLM (tiny: the same deterministic BPE `load_llm` builds)."""
    if llm_cfg.type == "tiny":
        from tasu.model.llm import build_tiny_tokenizer

        if llm_cfg.tokenizer_text is None:
            raise ConfigError("config key 'model.llm.tokenizer_text': the tiny LLM needs a text file for its tokenizer")
        return build_tiny_tokenizer(resolve_path(llm_cfg.tokenizer_text), llm_cfg.vocab_size)
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": llm_cfg.gguf_file} if llm_cfg.gguf_file else {}
    tok = AutoTokenizer.from_pretrained(resolve_path(llm_cfg.path), **kwargs)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenize(tokenizer, text: str, key: str) -> tuple[Tensor, Tensor]:
    """(ids [L], word ids [L]) of `text` without special tokens; word ids need a fast (Rust) tokenizer."""
    enc = tokenizer(text, add_special_tokens=False)
    ids = list(enc["input_ids"])
    if not ids:
        raise ValueError(f"utterance {key!r}: its transcript {text!r} has no text token")
    try:
        words = enc.word_ids()
    except (ValueError, AttributeError):
        raise ConfigError("config key 'model.llm': TASTE needs word ids from the tokenizer (a fast tokenizer); "
                          "this one gives none (set taste.word_pooling=false to train without word pooling)") from None
    # tokens outside any word (None) each form their own word, numbered after the real ones
    nxt = max([w for w in words if w is not None], default=-1) + 1
    out = []
    for w in words:
        if w is None:
            w, nxt = nxt, nxt + 1
        out.append(w)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(out, dtype=torch.long)


def frequency_shift(audio: np.ndarray, hz: float, sample_rate: int) -> np.ndarray:
    """[N] audio with every frequency moved by `hz` (single-sideband modulation of the analytic signal): the
    length and the timing stay, the voice changes."""
    if hz == 0.0:
        return audio
    from scipy.signal import hilbert

    t = np.arange(len(audio)) / sample_rate
    return np.real(hilbert(audio.astype(np.float64)) * np.exp(2j * np.pi * hz * t)).astype(np.float32)


def read_records(sources, data_cfg, rank: int, world: int, section: str,
                 freq_shifts: list[float] = (0.0,)) -> Iterator[tuple[str, str, np.ndarray]]:
    """(key, transcript, 16 kHz audio [N]) of this rank's share (`part_range` split) of every source, once per
    frequency shift (key suffix `~<shift>Hz` for non-zero shifts). Bad samples go through the loader's
    `FaultCounter`: each is logged with its key and counted by reason, data.on_error=fail stops at the first, and
    the run stops once they exceed data.max_skip_ratio of the samples read. Text-only records are skipped (TASTE
    needs speech) and counted apart: they are not faults."""
    faults = FaultCounter(data_cfg.max_skip_ratio, data_cfg.skip_check_after, data_cfg.on_error,
                          f"{section} rank {rank}")
    text_only = 0
    for i, cfg in enumerate(sources):
        src = resolve_source(cfg, i, f"{section}.{i}", data_cfg.on_error)
        for reason, n in sorted(src.bad.items()) if rank == 0 else ():   # manifest records already logged one by one
            faults.skip(reason, None, "bad manifest record(s), see the warnings above", f"{section}.{i}", count=n)
        for s in read_part(src, epoch=0, part=rank, num_parts=world, seed=0, shuffle=False, as_text=False):
            if isinstance(s, TarFault):
                faults.skip(s.reason, None, s.detail, s.where, count=s.count)
                continue
            if s["__input__"] != "audio":
                text_only += 1
                continue
            try:
                text = s["meta"].get("GT") or s["meta"].get("target") or ""
                if not text.strip():
                    raise AudioError("no_transcript", "the record has neither a non-empty GT nor target")
                if "audio_bytes" in s:
                    audio, sr = decode_audio_bytes(s["audio_bytes"], s["__where__"])
                else:
                    audio, sr = read_audio(s["audio_path"])
            except AudioError as e:
                faults.skip(e.reason, s["__key__"], str(e), s["__where__"])
                continue
            faults.ok()
            audio = resample(audio, sr, data_cfg.sample_rate)
            for hz in freq_shifts:
                key = s["__key__"] if hz == 0.0 else f"{s['__key__']}~{hz:g}Hz"
                yield key, text.strip(), frequency_shift(audio, hz, data_cfg.sample_rate)
    if text_only:
        log.warning("%s: skipped %d text-only record(s) (TASTE needs speech)", section, text_only)
    if faults.skipped:
        log.warning("%s: skipped bad samples %s of %d read", section, dict(faults.skipped), faults.read)


def stack_frames(feats: Tensor, frames: int) -> Tensor:
    """feats [F, M] -> [frames, s * M], s = ceil(F / frames): the feature frames each encoder frame covers, side by
    side (the last ones zero-padded)."""
    s = -(-feats.shape[0] // frames)
    padded = torch.nn.functional.pad(feats, (0, 0, 0, frames * s - feats.shape[0]))
    return padded.reshape(frames, s * feats.shape[1])


@torch.no_grad()
def encode_utterances(records, encoder, tokenizer, data_cfg, layers: tuple[int, int, int | None], device,
                      batch_size: int = 16) -> list[Utterance]:
    """Run the frozen encoder over records (key, text, audio); layers = (key, value, unit) hidden-state indices,
    unit None = the unit states are the input features stacked to the encoder's frame rate (`stack_frames`).
    Clips outside data.min/max_sample_frames are skipped (counted in the log)."""
    items, skipped = [], 0
    for key, text, audio in records:
        feats = compute_features(audio, data_cfg.features, data_cfg.n_mels)                  # [F, M]
        if not data_cfg.min_sample_frames <= feats.shape[0] <= data_cfg.max_sample_frames:
            skipped += 1
            continue
        ids, words = tokenize(tokenizer, text, key)
        items.append((key, text, ids, words, feats, len(audio) / data_cfg.sample_rate))
    if skipped:
        log.warning("skipped %d clips outside data.min/max_sample_frames", skipped)
    out = []
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        lengths = torch.tensor([c[4].shape[0] for c in chunk])
        feats = torch.zeros(len(chunk), int(lengths.max()), data_cfg.n_mels)
        for b, c in enumerate(chunk):
            feats[b, : c[4].shape[0]] = c[4]
        wanted = [i for i in layers if i is not None]
        enc = encoder(feats.to(device), lengths.to(device), hidden_layers=wanted)
        hidden = [h.float().cpu() for h in enc.hidden]
        k, v = hidden[0], hidden[1]
        for b, (key, text, ids, words, f, sec) in enumerate(chunk):
            t = int(enc.lengths[b])
            units = hidden[2][b, :t].clone() if layers[2] is not None else stack_frames(f, t)
            out.append(Utterance(key, text, ids, words, k[b, :t].clone(), v[b, :t].clone(), units, sec))
    return out


def assign_units(utts: list[Utterance], centroids: Tensor) -> None:
    """utt.units [T] = nearest centroid of each frame of utt.unit_states."""
    for u in utts:
        u.units = assign(u.unit_states, centroids)


def collate(utts: list[Utterance], pad_id: int) -> TasteBatch:
    b = len(utts)
    lt = torch.tensor([len(u.text_ids) for u in utts])
    lf = torch.tensor([u.keys.shape[0] for u in utts])
    text = torch.full((b, int(lt.max())), pad_id, dtype=torch.long)
    words = torch.full((b, int(lt.max())), -1, dtype=torch.long)
    keys = torch.zeros(b, int(lf.max()), utts[0].keys.shape[1])
    values = torch.zeros(b, int(lf.max()), utts[0].values.shape[1])
    units = torch.zeros(b, int(lf.max()), dtype=torch.long)
    has_codes = all(u.codes is not None for u in utts)
    codes = torch.full((b, int(lt.max()), utts[0].codes.shape[1]), PAD_CODE) if has_codes else None
    for i, u in enumerate(utts):
        n, t = len(u.text_ids), u.keys.shape[0]
        text[i, :n], words[i, :n] = u.text_ids, u.word_ids
        keys[i, :t], values[i, :t] = u.keys, u.values
        if u.units is not None:
            units[i, :t] = u.units
        if codes is not None:
            codes[i, :n] = u.codes
    return TasteBatch([u.key for u in utts], text, lt, words, keys, values, lf, units, lf.clone(),
                      torch.tensor([u.seconds for u in utts]), codes)


def train_batches(utts: list[Utterance], batch_size: int, pad_id: int, seed: int) -> Iterator[TasteBatch]:
    """Infinite: epoch after epoch, a permutation seeded by (seed, epoch) cut into batches of `batch_size` (the
    last one of an epoch may be smaller). Every rank's stream is infinite, so all ranks take the same steps."""
    if not utts:
        raise ValueError("TASTE: no training utterance on this rank (data.train holds no usable audio sample)")
    epoch = 0
    while True:
        order = torch.randperm(len(utts), generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
        for s in range(0, len(order), batch_size):
            yield collate([utts[i] for i in order[s:s + batch_size]], pad_id)
        epoch += 1


def eval_batches(utts: list[Utterance], batch_size: int, pad_id: int) -> Iterator[TasteBatch]:
    """Each utterance once, in order."""
    for s in range(0, len(utts), batch_size):
        yield collate(utts[s:s + batch_size], pad_id)
