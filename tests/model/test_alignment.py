"""Audio-to-text alignment: spans from the collator, the diagonal score, the guided-attention loss."""

import torch

from unimoe_audio.codec import DelayPattern
from unimoe_audio.model import FrontendPrompts, SequenceCollator, UniMoEAudioModel
from unimoe_audio.model.alignment import diagonal_mass, diagonal_prior, guided_attention_loss

from .conftest import tiny_config


def _collate(frontend, examples, cond_dropout=0.0):
    pattern = DelayPattern((0, 1, 2, 3), 64)
    return SequenceCollator(FrontendPrompts(frontend, pattern), cond_dropout)(examples)


def test_spans_cover_exactly_the_target_phonemes_and_the_frames_that_predict_the_target(frontend, examples):
    batch = _collate(frontend, examples)
    for i, ex in enumerate(examples):
        (t0, t1), (a0, a1) = batch["text_span"][i].tolist(), batch["audio_span"][i].tolist()
        if ex.meta["task"] == "t2m":
            assert (t0, t1, a0, a1) == (0, 0, 0, 0)
            continue
        assert batch["tokens"][i, t0 - 1] == frontend["<text>"] and batch["tokens"][i, t1] == frontend["</text>"]
        phonemes = frontend.speech_text(ex.meta["text"], ex.meta["language"])[1:-1]
        assert batch["tokens"][i, t0:t1].tolist() == phonemes  # the target text, not the clone prompt's
        assert a1 - a0 == ex.codes.shape[1]
        assert batch["targets"][i, 0, a0:a1].tolist() == ex.codes[0].tolist()  # codebook 0 is undelayed


def test_unconditional_rows_have_no_span(frontend, examples):
    import numpy as np

    pattern = DelayPattern((0, 1, 2, 3), 64)
    batch = SequenceCollator(FrontendPrompts(frontend, pattern), cond_dropout=0.999)(examples, np.random.default_rng(0))
    assert batch["text_span"].abs().sum() == 0 and batch["audio_span"].abs().sum() == 0


def test_a_diagonal_path_scores_higher_than_uniform_or_reversed_attention():
    t, n = 40, 12
    diagonal = torch.zeros(t, n)
    diagonal[torch.arange(t), (torch.arange(t) * n) // t] = 1.0
    uniform = torch.full((t, n), 1.0 / n)
    reversed_ = diagonal.flip(-1)
    attention = torch.zeros(3, 1, t + n, t + n)
    for i, a in enumerate((diagonal, uniform, reversed_)):
        attention[i, 0, n:, :n] = a
    spans_text = torch.tensor([[0, n]] * 3)
    spans_audio = torch.tensor([[n, n + t]] * 3)
    mass, has = diagonal_mass(attention, spans_text, spans_audio)
    assert has.all()
    assert mass[0, 0] > 0.9 and mass[0, 0] > mass[1, 0] + 0.3 and mass[1, 0] > mass[2, 0]
    assert torch.isclose(guided_attention_loss(attention[:1], spans_text[:1], spans_audio[:1], heads=1), 1 - mass[0, 0])
    assert diagonal_prior(5, 5, 0.2).diagonal().min() > 0.99


def test_the_guided_loss_trains_attention_toward_the_diagonal(frontend, examples):
    torch.manual_seed(0)
    model = UniMoEAudioModel(tiny_config(frontend, ffn="dense"))
    batch = _collate(frontend, examples)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(**batch, attention_layer=1)
        loss = guided_attention_loss(out.attention, batch["text_span"], batch["audio_span"], heads=2)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]


def test_the_explicit_attention_path_gives_the_same_outputs_as_sdpa(frontend, examples):
    torch.manual_seed(0)
    model = UniMoEAudioModel(tiny_config(frontend, ffn="dense")).eval()
    batch = _collate(frontend, examples)
    plain = model(**batch)
    with_weights = model(**batch, attention_layer=0)
    assert plain.attention is None and with_weights.attention.shape[1] == model.config.num_heads
    assert torch.allclose(plain.example_losses, with_weights.example_losses, atol=1e-5)
