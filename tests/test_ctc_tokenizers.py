"""The `list` CTC tokenizer: greedy longest match over the listed tokens (unknown characters dropped)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tasu.text.ctc_tokenizer import ListCTCTokenizer


def longest_match_by_slices(tokens: list[str], text: str) -> list[int]:
    """The definition: at each position the longest listed token that starts there, else skip one character."""
    index = {t: i + 1 for i, t in enumerate(tokens)}
    longest = max(map(len, tokens))
    out, i = [], 0
    while i < len(text):
        for n in range(min(longest, len(text) - i), 0, -1):
            if text[i:i + n] in index:
                out.append(index[text[i:i + n]])
                i += n
                break
        else:
            i += 1
    return out


def test_longest_token_wins_and_unknown_characters_are_dropped():
    tok = ListCTCTokenizer(["a", "ab", "abc", " the", "t", "h", "e", " "])
    assert tok.encode("abcab? the") == [3, 2, 4]
    assert tok.encode("ABX") == [2]                       # lowercased; x is not listed
    assert tok.decode(tok.encode("abc the")) == "abc the"


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.text(alphabet="abc ", min_size=1, max_size=4), min_size=1, max_size=12, unique=True),
       text=st.text(alphabet="abcd ", max_size=40))
def test_trie_walk_equals_the_slice_definition(tokens, text):
    assert ListCTCTokenizer(tokens).encode(text) == longest_match_by_slices(tokens, text)
