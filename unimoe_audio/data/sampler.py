"""Task mixing: batches drawn from the natural mix or balanced across task groups, optionally
length-bucketed, exactly resumable."""

from __future__ import annotations

import numpy as np

from unimoe_audio.errors import UniMoEError

MIXES = ("natural", "balanced")


class MixtureSampler:
    """Infinite iterator of index batches over a dataset's items.

    natural: items uniformly (so groups appear in their data proportions); balanced: a group
    uniformly first, then an item within it (the paper's answer to speech/music imbalance).
    Batch i depends only on (seed, i, rank), so `state_dict()` is just the batch counter and a
    resumed run sees exactly the batches the uninterrupted run would have. With several
    processes, each rank draws its own share of the global batch (its own stream, from `rank`).
    Length bucketing (`bucket` > 1, with `lengths`): draw `bucket` batches' worth of items by the
    mix rule, sort them by length and keep one of the `bucket` runs of neighbours, chosen
    uniformly, so every drawn item is equally likely to be kept (the mix is unchanged) while a
    batch holds items of similar length (less padding).
    """

    def __init__(self, groups: list[str], batch_size: int, mix: str = "balanced", seed: int = 0,
                 rank: int = 0, only: tuple[str, ...] | None = None,
                 lengths: list[int] | None = None, bucket: int = 1):
        if mix not in MIXES:
            raise UniMoEError(f"mix must be one of {MIXES}, got {mix!r}")
        if batch_size < 1:
            raise UniMoEError(f"batch_size must be at least 1, got {batch_size}")
        if bucket < 1 or (bucket > 1 and (lengths is None or len(lengths) != len(groups))):
            raise UniMoEError(f"length bucketing needs bucket >= 1 and one length per item (bucket={bucket})")
        keep = [i for i, g in enumerate(groups) if only is None or g in only]
        if not keep:
            raise UniMoEError(f"no items for task groups {only}")
        self.by_group = {g: np.array([i for i in keep if groups[i] == g]) for g in sorted({groups[i] for i in keep})}
        self.items = np.array(keep)
        self.batch_size, self.mix, self.seed = batch_size, mix, seed
        self.rank = rank
        self.lengths, self.bucket = (np.asarray(lengths) if lengths is not None else None), bucket
        self.step = 0

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.mix == "natural":
            return rng.choice(self.items, n)
        names = list(self.by_group)
        return np.array([rng.choice(self.by_group[names[g]]) for g in rng.integers(len(names), size=n)])

    def batch(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.seed, step, self.rank])
        if self.bucket == 1:
            return self._draw(rng, self.batch_size).tolist()
        pool = self._draw(rng, self.batch_size * self.bucket)
        pool = pool[np.argsort(self.lengths[pool], kind="stable")]
        start = int(rng.integers(self.bucket)) * self.batch_size
        return pool[start: start + self.batch_size].tolist()

    def __iter__(self):
        return self

    def __next__(self) -> list[int]:
        out = self.batch(self.step)
        self.step += 1
        return out

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed, "mix": self.mix}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
