"""Hypothesis strategies for bad inputs: manifest lines, JSON trees, mutated binary files."""

from __future__ import annotations

import json

from hypothesis import strategies as st

FIELDS = ("key", "task", "target", "path", "GT", "text", "voice", "conversations", "id")

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                                 max_size=3),
                           max_leaves=8)
field_values = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.just(""), st.just("   "),
                         st.just("ok.wav"), st.just("garbage.wav"), st.just("missing.wav"), st.just("x.ark:5"),
                         st.lists(st.just("ok.wav"), max_size=3), json_values)
turns = st.lists(st.fixed_dictionaries({}, optional={"from": st.sampled_from(["human", "gpt", "system", 3]),
                                                     "value": st.one_of(st.sampled_from(
                                                         ["<audio>", "say <audio>", "<audio> <audio>", "", "ok"]),
                                                         st.text(max_size=8), st.integers())}), max_size=4)
records = st.fixed_dictionaries({}, optional={**{f: field_values for f in FIELDS}, "conversations": turns})

# JSON texts that the standard library itself refuses in unusual ways (ValueError, RecursionError), plus
# values that are valid JSON but not valid text
nasty_json = st.sampled_from([
    '{"key": %s, "text": "x"}' % ("9" * 5000),             # int over the 4300-digit str->int limit: ValueError
    "[" * 50000 + "]" * 50000,                              # nesting deeper than the recursion limit
    '{"text": ' * 3000 + '"x"' + "}" * 3000,
    '{"key": "s\\ud800", "text": "x"}', '{"text": "\\udfff"}', '{"text": "\\u0000"}', "\ufeff",
    '{"text": NaN}', '{"text": "a", "text": 5}',
    '{"key": "k", "task": "ASR", "target": "t", "path": "\\u0000.wav", "GT": "t"}',
    '{"key": "k", "task": "ASR", "target": "t", "path": "%s.wav", "GT": "t"}' % ("a" * 5000),
    '{"voice": "ok.wav", "conversations": [{"from": "human", "value": "<audio>"}, {"from": "gpt", "value": " "}]}',
    '{"id": true, "voice": [], "conversations": {}}', "1e999999", "-", '"\\x"',
])

manifest_lines = st.one_of(
    records.map(json.dumps),
    json_values.map(json.dumps),
    nasty_json,
    st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=40),
    st.binary(max_size=24).map(lambda b: b.replace(b"\n", b"")),
    st.builds(lambda k, t: json.dumps({"key": k, "task": "ASR", "target": t, "path": "ok.wav", "GT": t}),
              st.text(max_size=6), st.text(max_size=6)),
    st.builds(lambda k, t: json.dumps({"key": k, "text": t}), st.text(max_size=6), st.text(max_size=6)),
)


def as_bytes(x: str | bytes) -> bytes:
    return x if isinstance(x, bytes) else x.encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw, seeds: list[bytes], header: int = 64) -> bytes:
    """A copy of one of `seeds` with a few bytes overwritten (mostly in the first `header` bytes, where the
    fields that size allocations live), possibly truncated or extended with junk."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        hi = min(len(data), header) if draw(st.booleans()) else len(data)
        if hi == 0:
            break
        pos = draw(st.integers(0, hi - 1))
        data[pos] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, max(0, len(data) - 1))))
    if cut is not None:
        data = data[:cut]
    data += draw(st.binary(max_size=16))
    return bytes(data)
