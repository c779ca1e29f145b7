"""TASTE end to end on a synthetic task: aggregator + RVQ + unit decoder learn units that need the speech.

Synthetic "speech": each text token is spoken for 2-4 frames. Key-layer frames carry the token's identity (plus a
position signal, as real encoder states do); value-layer frames carry a hidden per-token style s in {0, 1} that the
text does not reveal. Each token yields R = 2 units = TABLE[token, style]. From text alone at most
P(TABLE rows agree) + P(differ) / 2 of the units are predictable; beating that ceiling needs the style to travel
frames -> aggregator -> RVQ codes -> unit decoder. 300 steps take ~6 s on one idle CPU thread.
"""

import torch

from tasu.taste.config import TasteConfig
from tasu.taste.layers import lengths_to_mask, sinusoid
from tasu.taste.metrics import unit_accuracy
from tasu.taste.model import TasteAutoencoder
from tasu.taste.taslm import PAD_CODE

V, STYLES, D_ENC, U, R = 10, 2, 16, 16, 2
_g = torch.Generator().manual_seed(123)
E_KEY = torch.randn(V, D_ENC, generator=_g)
E_VAL = torch.randn(STYLES, D_ENC, generator=_g)
TABLE = torch.randint(0, U, (V, STYLES, R), generator=_g)


def _batch(b: int, g: torch.Generator):
    text_len = torch.randint(3, 7, (b,), generator=g)
    lm = int(text_len.max())
    text = torch.randint(0, V, (b, lm), generator=g)
    style = torch.randint(0, STYLES, (b, lm), generator=g)
    dur = torch.randint(2, 5, (b, lm), generator=g) * lengths_to_mask(text_len, lm, "text_len")
    frames = dur.sum(1)
    tm = int(frames.max())
    keys, values = torch.zeros(b, tm, D_ENC), torch.zeros(b, tm, D_ENC)
    units = torch.zeros(b, lm * R, dtype=torch.long)
    for i in range(b):
        f = 0
        for j in range(int(text_len[i])):
            d = int(dur[i, j])
            keys[i, f:f + d] = E_KEY[text[i, j]]
            values[i, f:f + d] = E_VAL[style[i, j]]
            units[i, j * R:(j + 1) * R] = TABLE[text[i, j], style[i, j]]
            f += d
    keys += 0.1 * torch.randn(keys.shape, generator=g) + 0.5 * sinusoid(torch.arange(tm), D_ENC)
    values += 0.1 * torch.randn(values.shape, generator=g)
    word_ids = torch.arange(lm).expand(b, -1).clone()                    # one token per word here
    return dict(text_ids=text, text_lengths=text_len, keys=keys, values=values, frame_lengths=frames,
                units=units, unit_lengths=text_len * R, word_ids=word_ids)


def _accuracy(model: TasteAutoencoder, batch: dict) -> float:
    with torch.no_grad():
        out = model(**batch)
    mask = lengths_to_mask(batch["unit_lengths"], batch["units"].shape[1], "unit_lengths")
    return unit_accuracy(out.logits.argmax(-1), batch["units"], mask)


def test_taste_learns_units_that_need_the_speech():
    torch.manual_seed(0)
    cfg = TasteConfig(codebooks=2, codebook_size=8, dim=32, heads=4, aggregator_layers=1, decoder_layers=1,
                      unit_vocab=U, kmeans_iters=5, kmeans_init_vectors=256, quantizer_dropout=0.5)
    model = TasteAutoencoder(cfg, text_vocab=V, encoder_dim=D_ENC)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(300):
        out = model(**_batch(16, g))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.unit_loss.item())
    assert model.rvq.is_initialised
    assert sum(losses[-10:]) / 10 < 0.4 * sum(losses[:10]) / 10, (losses[:10], losses[-10:])

    model.eval()
    held_out = _batch(64, torch.Generator().manual_seed(99))
    acc = _accuracy(model, held_out)
    same = float((TABLE[:, 0] == TABLE[:, 1]).float().mean())
    text_only_ceiling = same + (1 - same) / 2
    assert acc > text_only_ceiling + 0.1, (acc, text_only_ceiling)
    # destroy the style (values shuffled across the batch): accuracy falls back toward the text-only ceiling
    shuffled = dict(held_out, values=held_out["values"][torch.randperm(64, generator=torch.Generator().manual_seed(0))])
    assert _accuracy(model, shuffled) < acc - 0.1

    # tokenize: codes per text token, PAD_CODE on padding, codebooks untouched even in training mode
    model.train()
    embed = model.rvq.embed.clone()
    codes = model.tokenize(held_out["text_ids"], held_out["text_lengths"], held_out["keys"], held_out["values"],
                           held_out["frame_lengths"], held_out["word_ids"])
    assert torch.equal(model.rvq.embed, embed) and model.training
    assert codes.shape == (*held_out["text_ids"].shape, 2)
    valid = lengths_to_mask(held_out["text_lengths"], codes.shape[1], "text_lengths")
    assert (codes[valid] >= 0).all() and (codes[~valid] == PAD_CODE).all()
