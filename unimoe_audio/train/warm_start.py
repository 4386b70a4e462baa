"""Start a run's first stage from a trained dense model (a recipe's `init:`), on a corpus that may
speak more than it did.

A new language or task needs new text tokens, so the run's front-end is fitted on its own corpus
and its vocabulary can grow: every token the trained model knew keeps its embedding row (matched
by the token, not by its id), and tokens it never saw start from the usual initialisation. Music
may need new sounds as well: the run's codec may be the model's grown by more codes per codebook
(`SpectralCodec.extended`), whose audio embedding and output rows start fresh while the old codes
and EOS/PAD/BOS keep theirs. Codes of any other codec would mean other sounds and are refused.
All other weights are taken as they are, so the transformer's shape and delay pattern must be
the run's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from unimoe_audio.codec import Codec, load_codec
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.frontend import TextFrontend
from unimoe_audio.model.pipeline import load_model
from unimoe_audio.model.transformer import UniMoEAudioModel

TEXT_EMBEDDING = "embed_text.weight"
AUDIO_ROWS = ("embed_audio.weight", "head.weight")  # [K · V, D]: codebook k's codes, then EOS, PAD, BOS
MATCHED = (TEXT_EMBEDDING, *AUDIO_ROWS)


def audio_rows(codebooks: int, before: int, after: int, specials: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows in the grown layout, rows in the old) of every code and special of a model whose
    codebooks had `before` codes and have `after`: code c keeps id c, the specials move up."""
    ids = torch.arange(before + specials)
    moved = torch.where(ids < before, ids, ids + after - before)
    new = torch.cat([k * (after + specials) + moved for k in range(codebooks)])
    return new, torch.cat([k * (before + specials) + ids for k in range(codebooks)])


@torch.no_grad()
def warm_start(model: UniMoEAudioModel, frontend: TextFrontend, init: str | Path, codec: Codec) -> UniMoEAudioModel:
    """`model` (fresh, the run's shape, for `frontend` and `codec`, the corpus's) with the weights
    of the model saved at `init`."""
    init = Path(init)
    source, known = load_model(init)
    if not codec.extends(load_codec(init / "codec")):
        raise UniMoEError(f"init: the model at {init} was trained with the codec in {init / 'codec'}, and the corpus's "
                          "codec is neither that codec nor one grown from it (`unimoe-audio codec extend`); copy or "
                          "grow that codec into the corpus (or corpus.codec) before the corpus's tokens are made")
    if source.config.ffn != "dense":
        raise UniMoEError(f"init: the model at {init} is a DCMoE; a run starts from a dense model (a backbone or specialist)")
    if source.config.delays != model.config.delays:
        raise UniMoEError(f"init: the model at {init} predicts with delays {list(source.config.delays)}, this run with "
                          f"{list(model.config.delays)}")
    theirs, ours = source.state_dict(), model.state_dict()
    wrong = [f"{k} {list(v.shape)} (the run's {list(ours[k].shape)})" for k, v in theirs.items()
             if k in ours and k not in MATCHED and v.shape != ours[k].shape]
    if wrong:
        raise UniMoEError(f"init: the model at {init} has another shape than the recipe's model: {'; '.join(wrong[:4])}")
    ours.update({k: v for k, v in theirs.items() if k in ours and k not in MATCHED})
    rows = [(i, known.ids[token]) for i, token in enumerate(frontend.vocab) if token in known.ids]
    new, old = (torch.tensor(ix) for ix in zip(*rows))
    ours[TEXT_EMBEDDING][new] = theirs[TEXT_EMBEDDING][old]
    before, after = source.config.codebook_size, model.config.codebook_size
    new, old = audio_rows(model.config.num_codebooks, before, after, source.config.audio_vocab_size - before)
    for key in AUDIO_ROWS:
        ours[key][new] = theirs[key][old]
    model.load_state_dict(ours)
    fresh = [k for k in ours if k not in theirs] + ([f"{len(frontend) - len(rows)} new text tokens"]
                                                    if len(rows) < len(frontend) else [])
    fresh += [f"{after - before} new codes per codebook"] if after > before else []
    dropped = [k for k in theirs if k not in ours]
    if fresh or dropped:
        print(f"note: init from {init}: starting afresh: {', '.join(fresh) or 'nothing'}; "
              f"not used: {', '.join(dropped) or 'nothing'}", file=sys.stderr)
    return model
