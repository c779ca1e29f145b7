"""Speech units for TASTE: k-means over frozen-encoder frames, and the `tasu units fit | assign` commands.

    tasu units fit CONFIG [key=value ...] --out UNITS.safetensors [--data SOURCE ...]
    tasu units assign CONFIG [key=value ...] --units UNITS.safetensors --out UNITS.jsonl [--data SOURCE ...]

The original TASTE unit tokenizer is not available, so units are k-means clusters (k = taste.unit_vocab) of the
frames of one encoder layer (taste.unit_layer), as HuBERT-style units are. The encoder is built exactly as a
`tasu train` run of the same config builds it (`build_frozen_encoder`): model.encoder, random weights seeded by
train.seed unless model.encoder.path names real Whisper weights, and encoder weights from train.init_from when that
run trained one (e.g. a whisper-ctc-tiny run). Data: --data sources (manifests or shards), else data.train.
`fit` writes the centroids [k, D] with metadata (k, layer, encoder); a run reads them through taste.units_path
(without it, the run fits its own the same way at its start). `assign` writes one JSON line per utterance:
{"key", "units": [T ints], "frames_per_second"}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from torch import Tensor

from tasu.config.fields import ConfigError
from tasu.taste.units import fit_kmeans, load_centroids, save_centroids

log = logging.getLogger("tasu.taste")


def build_frozen_encoder(cfg, weights: dict[str, Tensor] | None = None, device=None):
    """The config's encoder, frozen and in eval mode. `weights`: a carry dict; its `encoder.*` tensors (a ctc or
    SpeechLLM stage's encoder) replace the built ones."""
    from tasu.model.encoders.build import build_encoder
    from tasu.text.ctc_tokenizer import LLM_TOKENIZER_TYPES, build_ctc_tokenizer

    m = cfg.model
    if m.encoder.type == "none":
        raise ConfigError("config key 'model.encoder.type': TASTE needs a speech encoder (e.g. whisper), got 'none'")
    llm_tok = None
    if m.ctc_tokenizer.type in LLM_TOKENIZER_TYPES:       # llm / llm-units: built over the LLM's tokenizer
        from tasu.taste.data import text_tokenizer

        llm_tok = text_tokenizer(m.llm)
    vocab = build_ctc_tokenizer(m.ctc_tokenizer, llm_tokenizer=llm_tok).vocab_size
    torch.manual_seed(cfg.train.seed)                    # the same random encoder in every command and rank
    enc = build_encoder(m.encoder, vocab)
    own = {f"encoder.{k}" for k in enc.state_dict()}
    found = {k: v for k, v in (weights or {}).items() if k in own}
    if found:
        enc.load_state_dict({k[len("encoder."):]: v for k, v in found.items()}, strict=False)
        log.info("TASTE encoder: %d tensors from the carried weights", len(found))
    enc.requires_grad_(False)
    return enc.eval().to(device or "cpu")


def encoder_layers(cfg, encoder) -> tuple[int, int, int | None]:
    """(key, value, unit) hidden-state indices, checked against the encoder (errors name the taste.* key); unit
    is None with taste.unit_source=features."""
    n = encoder.num_layers + 1
    out = []
    names = ("key_layer", "value_layer", "unit_layer") if cfg.taste.unit_source == "encoder" else \
        ("key_layer", "value_layer")
    for name in names:
        i = getattr(cfg.taste, name)
        if not -n <= i < n:
            raise ConfigError(f"config key 'taste.{name}': {i} is out of range for an encoder with {n} hidden "
                              f"states (0 = front end, {n - 1} or -1 = final output)")
        out.append(i)
    return out[0], out[1], out[2] if len(out) == 3 else None


def load_utterances(cfg, encoder, tokenizer, sources, rank: int = 0, world: int = 1, section: str = "data.train",
                    device=None) -> list:
    """This rank's share of `sources` as `Utterance`s (encoder states, text tokens; no units yet)."""
    from tasu.taste.data import encode_utterances, read_records

    records = read_records(sources, cfg.data, rank, world, section, cfg.taste.freq_shifts_hz)
    return encode_utterances(records, encoder, tokenizer, cfg.data, encoder_layers(cfg, encoder), device or "cpu")


def fit_unit_centroids(states: list[Tensor], k: int, iters: int, seed: int, max_frames: int) -> Tensor:
    """Centroids [k, D] of the frames of `states` (each [T_i, D]); at most `max_frames` frames, evenly spaced over
    the whole set when there are more (deterministic)."""
    x = torch.cat(states) if states else torch.zeros(0, 1)
    if x.shape[0] < k:
        raise ValueError(f"unit k-means: {x.shape[0]} frames for taste.unit_vocab = {k} units; give more audio or "
                         "fewer units")
    if x.shape[0] > max_frames:
        x = x[torch.linspace(0, x.shape[0] - 1, max_frames).round().long()]
    return fit_kmeans(x, k, iters, seed)


def centroid_metadata(cfg) -> dict[str, str]:
    e = cfg.model.encoder
    layer = str(cfg.taste.unit_layer) if cfg.taste.unit_source == "encoder" else "features"
    return {"k": str(cfg.taste.unit_vocab), "layer": layer, "encoder": e.type,
            "whisper_size": e.whisper_size if e.path is None else "", "encoder_path": e.path or "",
            "features": cfg.data.features, "n_mels": str(cfg.data.n_mels)}


def read_units_file(path: str, cfg, unit_dim: int, key: str = "config key 'taste.units_path'") -> Tensor:
    """Centroids from `tasu units fit`, checked against the config (errors name the key that disagrees; `key`
    names where the path came from)."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    with safe_open(str(p), "pt") as f:
        meta = f.metadata() or {}
    c = load_centroids(p)
    if c.shape[0] != cfg.taste.unit_vocab:
        raise ConfigError(f"config key 'taste.unit_vocab': is {cfg.taste.unit_vocab} but {path} holds "
                          f"{c.shape[0]} units")
    if c.shape[1] != unit_dim:
        raise ConfigError(f"{key}: {path} holds centroids of dim {c.shape[1]}, the unit states have dim {unit_dim} "
                          "(fitted with another encoder or features?)")
    layer = centroid_metadata(cfg)["layer"]
    if "layer" in meta and meta["layer"] != layer:
        raise ConfigError(f"config key 'taste.unit_layer': units of layer {layer} asked (taste.unit_source="
                          f"{cfg.taste.unit_source}), but {path} was fitted on {meta['layer']}")
    return c


# -- the command line ------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tasu units", description="k-means speech units over frozen-encoder frames")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, doc in (("fit", "fit taste.unit_vocab centroids on taste.unit_layer frames"),
                      ("assign", "write the units of every utterance (JSON lines)")):
        s = sub.add_parser(name, help=doc)
        s.add_argument("config", help="preset name or YAML path (model.encoder, taste.*, data.*)")
        s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. taste.unit_vocab=64")
        s.add_argument("--data", nargs="+", default=None, help="sources (manifests or shards); default data.train")
        s.add_argument("--out", required=True, help="output file (.safetensors for fit, .jsonl for assign)")
        if name == "assign":
            s.add_argument("--units", required=True, help="centroids written by `tasu units fit`")
    return p


def units_main(argv: list[str]) -> int:
    from tasu.config.loader import load_config
    from tasu.data.config import SourceConfig
    from tasu.taste.data import assign_units, text_tokenizer

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = load_config(args.config, args.overrides)
    sources = [SourceConfig(path=d, kind="audio") for d in args.data] if args.data else cfg.data.train
    if not sources:
        raise ConfigError("config key 'data.train': no data source (give --data)")
    weights = None
    if cfg.train.init_from:
        from tasu.train.init_from import load_init_weights

        weights, _ = load_init_weights(cfg.train.init_from)
    encoder = build_frozen_encoder(cfg, weights)
    utts = load_utterances(cfg, encoder, text_tokenizer(cfg.model.llm), sources,
                           section="--data" if args.data else "data.train")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.cmd == "fit":
        t = cfg.taste
        c = fit_unit_centroids([u.unit_states for u in utts], t.unit_vocab, t.unit_kmeans_iters, t.seed,
                               t.unit_fit_max_frames)
        save_centroids(out, c, centroid_metadata(cfg))
        log.info("%d units of dim %d from %d utterances -> %s", c.shape[0], c.shape[1], len(utts), out)
        return 0
    c = read_units_file(args.units, cfg, utts[0].unit_states.shape[1], key="--units")
    assign_units(utts, c)
    with out.open("w", encoding="utf-8") as f:
        for u in utts:
            f.write(json.dumps({"key": u.key, "units": u.units.tolist(),
                                "frames_per_second": encoder.frame_rate_hz}) + "\n")
    log.info("units of %d utterances -> %s", len(utts), out)
    return 0


if __name__ == "__main__":
    sys.exit(units_main(sys.argv[1:]))
