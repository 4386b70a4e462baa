"""`unimoe-audio analyze-routing`: how a trained DCMoE routes each task's tokens (paper Fig. 4).

Runs the model over a split's encoded examples (teacher forcing, no condition dropout) and
collects, per layer and task group (speech-en, speech-zh, music and, when the corpus has it, v2m), the share of tokens using 0, 1, 2, … routed experts, each
expert's activation rate and the null-expert rate.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from unimoe_audio.codec import DelayPattern
from unimoe_audio.data import TASK_GROUPS, TokenDataset
from unimoe_audio.errors import UniMoEError
from unimoe_audio.eval.suite import corpus_of
from unimoe_audio.io import write_json
from unimoe_audio.model import FrontendPrompts, SequenceCollator, load_model
from unimoe_audio.moe import RoutingStats


@torch.no_grad()
def analyze_routing(model_dir: str | Path, split: str = "validation", corpus: str | Path | None = None,
                    out: str | Path | None = None, batch_size: int = 8, progress: bool = True) -> dict:
    model_dir = Path(model_dir)
    model, frontend = load_model(model_dir)
    layers = model.moe_layers()
    if not layers:
        raise UniMoEError(f"{model_dir} is a dense model: it has no routers to analyse")
    corpus = Path(corpus) if corpus else corpus_of(model_dir)
    dataset = TokenDataset(corpus / "tokens", split)
    c = model.config
    collate = SequenceCollator(FrontendPrompts(frontend, DelayPattern(c.delays, c.codebook_size), c.vision))
    stats = RoutingStats(dict(enumerate(TASK_GROUPS)))
    for start in tqdm(range(0, len(dataset), batch_size), desc="routing", unit="batch", disable=not progress):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        output = model(**batch)
        tasks = batch["task_ids"][:, None].expand_as(batch["pad_mask"])
        for i, mask in enumerate(output.expert_masks):
            stats.update(i, mask, layers[i].config.num_routed, valid=~batch["pad_mask"], task_ids=tasks)
    out = Path(out) if out else model_dir.parent / "routing"
    result = {"model": str(model_dir), "split": split, **stats.to_dict()}
    write_json(out / "routing.json", result)
    stats.plot(out / "routing.png")
    result["output"] = str(out)
    return result
