"""Start a run's first stage from a trained dense model (a recipe's `init:`), on a corpus that may
speak more than it did.

A new language or task needs new text tokens, so the run's front-end is fitted on its own corpus
and its vocabulary can grow: every token the trained model knew keeps its embedding row (matched
by the token, not by its id), and tokens it never saw start from the usual initialisation. All
other weights are taken as they are, so the transformer's shape, its delay pattern and its codec
must be the run's: codes of another codec would mean other sounds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.frontend import TextFrontend
from unimoe_audio.model.pipeline import load_model
from unimoe_audio.model.transformer import UniMoEAudioModel

TEXT_EMBEDDING = "embed_text.weight"


def same_codec(a: Path, b: Path) -> bool:
    """Whether two codec directories hold the same files, byte for byte."""
    files = sorted(p.name for p in a.iterdir() if p.is_file()) if a.is_dir() else []
    return bool(files) and files == sorted(p.name for p in b.iterdir() if p.is_file()) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files)


@torch.no_grad()
def warm_start(model: UniMoEAudioModel, frontend: TextFrontend, init: str | Path, codec_dir: Path) -> UniMoEAudioModel:
    """`model` (fresh, the run's shape, for `frontend`) with the weights of the model saved at `init`."""
    init = Path(init)
    source, known = load_model(init)
    if not same_codec(init / "codec", codec_dir):
        raise UniMoEError(f"init: the model at {init} was trained with the codec in {init / 'codec'}, not with this corpus's "
                          f"codec at {codec_dir}; copy its codec there before the corpus's tokens are made")
    if source.config.ffn != "dense":
        raise UniMoEError(f"init: the model at {init} is a DCMoE; a run starts from a dense model (a backbone or specialist)")
    if source.config.delays != model.config.delays:
        raise UniMoEError(f"init: the model at {init} predicts with delays {list(source.config.delays)}, this run with "
                          f"{list(model.config.delays)}")
    theirs, ours = source.state_dict(), model.state_dict()
    wrong = [f"{k} {list(v.shape)} (the run's {list(ours[k].shape)})" for k, v in theirs.items()
             if k in ours and k != TEXT_EMBEDDING and v.shape != ours[k].shape]
    if wrong:
        raise UniMoEError(f"init: the model at {init} has another shape than the recipe's model: {'; '.join(wrong[:4])}")
    ours.update({k: v for k, v in theirs.items() if k in ours and k != TEXT_EMBEDDING})
    rows = [(i, known.ids[token]) for i, token in enumerate(frontend.vocab) if token in known.ids]
    new, old = (torch.tensor(ix) for ix in zip(*rows))
    ours[TEXT_EMBEDDING][new] = theirs[TEXT_EMBEDDING][old]
    model.load_state_dict(ours)
    fresh = [k for k in ours if k not in theirs] + ([f"{len(frontend) - len(rows)} new text tokens"]
                                                    if len(rows) < len(frontend) else [])
    dropped = [k for k in theirs if k not in ours]
    if fresh or dropped:
        print(f"note: init from {init}: starting afresh: {', '.join(fresh) or 'nothing'}; "
              f"not used: {', '.join(dropped) or 'nothing'}", file=sys.stderr)
    return model
