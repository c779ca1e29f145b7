"""Input manifests -> `Record`s, or `BadRecord`s naming file, line, key and reason. Nothing is dropped silently.

Formats (detected per record, so one file may mix them):
    plain text (.txt)     one sentence per line -> text record (task = the default task, target = GT = line)
    text JSON lines       {"text": str, optional "key", "task", "target", "GT"} without audio -> text record
    ps-slm JSON lines     {"key", "task", "target", "path", "GT"}; path = wav / flac / `file.ark:offset`
    LLaSO JSON / JSONL    {"voice": [paths] | path, "conversations": [{"from": "human", "value": "... <audio>"},
                          {"from": "gpt", "value": answer}], optional "id", "task"}
A .json file holds one record or a list of records; .jsonl and other suffixes hold one JSON record per line.
Blank lines are not records. Audio is not opened here (the shard writer and the loader read it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tasu.data.kaldi_ark import ARK_SPEC

AUDIO_TAG = "<audio>"
PSSLM_FIELDS = ("key", "task", "target", "path", "GT")

# LLaSO modality configurations, named by where the audio sits in the human turn
MODALITY_TEXT_AUDIO = "text_instruction+audio"  # "Transcribe this. <audio>"
MODALITY_AUDIO_TEXT = "audio_instruction+text"  # "<audio> some text input"
MODALITY_PURE_AUDIO = "pure_audio"  # "<audio>" alone


@dataclass
class Record:
    """One good input record (audio not yet checked)."""

    key: str
    task: str
    target: str
    gt: str  # transcript used for simulation ("" when the record has none, e.g. LLaSO non-ASR)
    audio: list[str] = field(default_factory=list)  # audio paths; empty for text records
    file: str = ""
    line: int = 0
    modality: str | None = None  # LLaSO only
    instruction: str | None = None  # LLaSO only: the human turn's text without the <audio> tags
    fmt: str = "text"  # text | ps-slm | llaso
    human: str | None = None  # LLaSO only: the human turn as written, <audio> tags in place (the prompt)

    @property
    def kind(self) -> str:
        return "audio" if self.audio else "text"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def meta(self) -> dict:
        """The JSON metadata stored per sample (see data_shards/FORMAT.md)."""
        m = {"key": self.key, "task": self.task, "target": self.target, "GT": self.gt, "kind": self.kind,
             "format": self.fmt}
        if self.modality is not None:
            m["modality"] = self.modality
            m["instruction"] = self.instruction
            m["human"] = self.human
        return m


@dataclass
class BadRecord:
    """A rejected record: where it is, its key if known, why."""

    file: str
    line: int
    key: str | None
    reason: str
    detail: str

    def message(self) -> str:
        key = f" key={self.key!r}" if self.key is not None else ""
        return f"{self.file}:{self.line}:{key} {self.reason}: {self.detail}"


def _s(v) -> bool:
    return isinstance(v, str)


def _text_record(obj: dict, file: str, line: int, default_task: str) -> Record | BadRecord:
    key = obj.get("key", f"{Path(file).stem}-{line}")
    if not _s(key) or not key:
        return BadRecord(file, line, None, "bad_field_type", "'key' must be a non-empty string")
    text = obj["text"]
    task = obj.get("task", default_task)
    target = obj.get("target", text)
    gt = obj.get("GT", text)
    for name, v in (("text", text), ("task", task), ("target", target), ("GT", gt)):
        if not _s(v):
            return BadRecord(file, line, key, "bad_field_type", f"'{name}' must be a string, got {type(v).__name__}")
    if not task:
        return BadRecord(file, line, key, "missing_field", "'task' is empty")
    if not text.strip() or not target.strip() or not gt.strip():
        return BadRecord(file, line, key, "empty_text", "text / target / GT is empty")
    return Record(key, task, target.strip(), gt.strip(), [], file, line, fmt="text")


def _psslm_record(obj: dict, file: str, line: int) -> Record | BadRecord:
    key = obj.get("key")
    key = key if _s(key) and key else None
    missing = [f for f in PSSLM_FIELDS if f not in obj or obj[f] is None]
    if missing:
        return BadRecord(file, line, key, "missing_field", f"missing {', '.join(missing)} (ps-slm needs "
                                                            f"{', '.join(PSSLM_FIELDS)})")
    for f in PSSLM_FIELDS:
        if not _s(obj[f]):
            return BadRecord(file, line, key, "bad_field_type", f"'{f}' must be a string, got {type(obj[f]).__name__}")
    if key is None:
        return BadRecord(file, line, None, "missing_field", "'key' is empty")
    if not obj["task"]:
        return BadRecord(file, line, key, "missing_field", "'task' is empty")
    if not obj["path"].strip():
        return BadRecord(file, line, key, "missing_field", "'path' is empty")
    if not obj["target"].strip():
        return BadRecord(file, line, key, "empty_text", "'target' is empty")
    if not obj["GT"].strip():
        return BadRecord(file, line, key, "empty_text", "'GT' is empty")
    return Record(key, obj["task"], obj["target"].strip(), obj["GT"].strip(), [obj["path"].strip()], file, line,
                  fmt="ps-slm")


def llaso_modality(human_value: str) -> str:
    """Which LLaSO modality configuration a human turn is, from where `<audio>` sits."""
    rest = human_value.replace(AUDIO_TAG, "").strip()
    if not rest:
        return MODALITY_PURE_AUDIO
    if human_value.lstrip().startswith(AUDIO_TAG):
        return MODALITY_AUDIO_TEXT
    return MODALITY_TEXT_AUDIO


def _llaso_record(obj: dict, file: str, line: int, default_task: str) -> Record | BadRecord:
    key = obj.get("id", obj.get("key", f"{Path(file).stem}-{line}"))
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not _s(key) or not key:
        return BadRecord(file, line, None, "bad_field_type", "'id' must be a non-empty string")
    voice = obj.get("voice")
    convs = obj.get("conversations")
    if voice is None or convs is None:
        return BadRecord(file, line, key, "missing_field", "LLaSO records need 'voice' and 'conversations'")
    voices = [voice] if _s(voice) else voice
    if not isinstance(voices, list) or not voices or not all(_s(v) and v.strip() for v in voices):
        return BadRecord(file, line, key, "bad_field_type", "'voice' must be a path or a non-empty list of paths")
    if not isinstance(convs, list) or not all(isinstance(t, dict) for t in convs):
        return BadRecord(file, line, key, "bad_field_type", "'conversations' must be a list of {from, value} turns")
    human = next((i for i, t in enumerate(convs) if t.get("from") == "human" and _s(t.get("value"))
                  and AUDIO_TAG in t["value"]), None)
    if human is None:
        return BadRecord(file, line, key, "bad_conversation", f"no human turn holds {AUDIO_TAG}")
    answer = next((t for t in convs[human + 1:] if t.get("from") == "gpt"), None)
    if answer is None or not _s(answer.get("value")):
        return BadRecord(file, line, key, "bad_conversation", "no gpt answer after the human turn")
    value = convs[human]["value"]
    n_tags = sum(t["value"].count(AUDIO_TAG) for t in convs if _s(t.get("value")))
    if n_tags != len(voices):
        return BadRecord(file, line, key, "audio_count_mismatch",
                         f"{n_tags} {AUDIO_TAG} placeholder(s) but {len(voices)} voice file(s)")
    task = obj.get("task", default_task)
    if not _s(task) or not task:
        return BadRecord(file, line, key, "bad_field_type", "'task' must be a non-empty string")
    target = answer["value"].strip()
    if not target:
        return BadRecord(file, line, key, "empty_text", "the gpt answer is empty")
    gt = obj.get("GT", "")
    if not _s(gt):
        return BadRecord(file, line, key, "bad_field_type", "'GT' must be a string")
    instruction = " ".join(value.replace(AUDIO_TAG, " ").split())
    return Record(key, task, target, gt.strip(), [v.strip() for v in voices], file, line,
                  modality=llaso_modality(value), instruction=instruction, fmt="llaso", human=value)


def _encodable(rec: Record) -> bool:
    """False when a field holds a lone surrogate (valid JSON escape, invalid Unicode text)."""
    try:
        for v in (rec.key, rec.task, rec.target, rec.gt, rec.instruction or "", rec.human or "", *rec.audio):
            v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_record(obj, file: str, line: int, default_task: str = "ASR") -> Record | BadRecord:
    """One decoded JSON value -> Record or BadRecord (format detected from its fields)."""
    if not isinstance(obj, dict):
        return BadRecord(file, line, None, "not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    # a ps-slm record may carry a `voice` field of its own (the TTS voice of tasu.tts manifests): with a `path` and
    # no `conversations` it is not LLaSO
    if "conversations" in obj or ("voice" in obj and "path" not in obj):
        rec = _llaso_record(obj, file, line, default_task)
    elif "text" in obj and "path" not in obj:
        rec = _text_record(obj, file, line, default_task)
    else:
        rec = _psslm_record(obj, file, line)
    if isinstance(rec, Record) and not _encodable(rec):
        return BadRecord(file, line, rec.key.encode("utf-8", "backslashreplace").decode(), "invalid_text",
                         "a field holds a lone surrogate (\\ud800-\\udfff escape), which is not text")
    if isinstance(rec, Record) and file:
        rec.audio = [resolve_audio_path(p, file) for p in rec.audio]
    return rec


def resolve_audio_path(path: str, manifest: str) -> str:
    """A relative audio path (or `file.ark:offset`) is taken relative to the manifest's folder when the file
    exists there, else left as is (relative to the working directory); errors later name the path."""
    m = ARK_SPEC.match(path)
    file = m.group("path") if m else path
    if os.path.isabs(file) or "://" in file:
        return path
    alt = os.path.join(os.path.dirname(manifest), file)
    if os.path.exists(alt) or not os.path.exists(file):
        return f"{alt}:{m.group('offset')}" if m else alt
    return path


def _json_file(path: Path, default_task: str) -> Iterator[Record | BadRecord]:
    """A .json file: one record or a list of records; line numbers point at each record's start.

    The list is parsed element by element (to know each one's line), as strictly as json.loads: a missing or
    doubled comma, or anything after the closing value, is an `invalid_json` bad record, never skipped silently.
    """
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        yield BadRecord(file, 0, None, "unreadable_file", f"cannot open ({e.strerror or e})")
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        yield BadRecord(file, data.count(b"\n", 0, e.start) + 1, None, "invalid_utf8",
                        f"{e.reason} at byte {e.start}: the JSON file is unreadable")
        return
    dec = json.JSONDecoder()

    def value_at(pos: int, what: str):
        """(obj, end) of the JSON value at pos, or a BadRecord. json raises ValueError beyond JSONDecodeError
        (an int over the 4300-digit limit) and RecursionError (deep nesting)."""
        try:
            return dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            return BadRecord(file, e.lineno, None, "invalid_json", f"{e.msg}{what}")
        except (ValueError, RecursionError) as e:
            return BadRecord(file, text.count("\n", 0, pos) + 1, None, "invalid_json", f"{str(e)[:200]}{what}")

    def skip_ws(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    def trailing(pos: int) -> BadRecord | None:
        pos = skip_ws(pos)
        if pos < len(text):
            return BadRecord(file, text.count("\n", 0, pos) + 1, None, "invalid_json",
                             "extra data after the JSON value")
        return None

    pos = skip_ws(0)
    if pos == len(text):
        return  # empty file: no records
    if text[pos] != "[":
        got = value_at(pos, "")
        if isinstance(got, BadRecord):
            yield got
            return
        yield parse_record(got[0], file, text.count("\n", 0, pos) + 1, default_task)
        extra = trailing(got[1])
        if extra is not None:
            yield extra
        return
    pos = skip_ws(pos + 1)
    if pos < len(text) and text[pos] == "]":
        extra = trailing(pos + 1)
        if extra is not None:
            yield extra
        return
    while True:
        if pos >= len(text):
            yield BadRecord(file, text.count("\n") + 1, None, "invalid_json", "unterminated JSON list")
            return
        line = text.count("\n", 0, pos) + 1
        got = value_at(pos, " (the rest of the list is unreadable)")
        if isinstance(got, BadRecord):
            yield got
            return
        yield parse_record(got[0], file, line, default_task)
        pos = skip_ws(got[1])
        if pos < len(text) and text[pos] == "]":
            extra = trailing(pos + 1)
            if extra is not None:
                yield extra
            return
        if pos < len(text) and text[pos] != ",":
            yield BadRecord(file, text.count("\n", 0, pos) + 1, None, "invalid_json",
                            "expected ',' or ']' after a list element (the rest of the list is unreadable)")
            return
        pos = skip_ws(pos + 1)


def read_manifest(path: str | Path, default_task: str = "ASR") -> Iterator[Record | BadRecord]:
    """All records of one input file, in order (see the module docstring for the formats)."""
    path = Path(path)
    file = str(path)
    if path.suffix == ".json":
        yield from _json_file(path, default_task)
        return
    try:
        f = open(path, "rb")
    except OSError as e:
        yield BadRecord(file, 0, None, "unreadable_file", f"cannot open ({e.strerror or e})")
        return
    with f:
        # binary lines split on \n only, decoded one by one: a bad byte costs its line, not the rest of the file
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield BadRecord(file, line_no, None, "invalid_utf8", f"{e.reason} at byte {e.start}")
                continue
            if not line.strip():
                continue
            if path.suffix == ".txt":
                text = " ".join(line.split())
                yield Record(f"{path.stem}-{line_no}", default_task, text, text, [], file, line_no, fmt="text")
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, ints over 4300 digits
                yield BadRecord(file, line_no, None, "invalid_json", str(e)[:200])
                continue
            yield parse_record(obj, file, line_no, default_task)
