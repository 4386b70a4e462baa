"""The training loop shared by every curriculum stage and baseline.

AdamW + linear warm-up + cosine decay; gradient accumulation and clipping; fp32 on CPU, bf16
autocast on GPU; DDP (or FSDP with `parallel: fsdp`, train/sharding.py, or expert parallelism with
`parallel: ep`, train/expert_parallel.py) when launched by torchrun / accelerate. Logs go to
TensorBoard, `metrics.jsonl` and a tqdm bar; a loss-curve PNG is drawn at the end. Checkpoints are single files written atomically and hold everything an exact resume needs: model, optimizer, scheduler,
RNG states of every process (torch, numpy, python), sampler position, aux-weight schedule step.
A stage that starts afresh seeds its RNGs from (seed, stage name), so its losses do not depend on
what ran before it in the same process. A run whose estimated memory per process exceeds what the
device has is refused at construction (train/memory.py), before the model moves or a step runs.
Under FSDP a checkpoint is a directory of shards (step-N.dcp/), also renamed into place when complete;
under expert parallelism it is the single-process file, the experts gathered from every process.

Data order does not depend on the process layout: optimizer step s consumes the global
micro-batches s·A·W … s·A·W + A·W − 1 of the sampler (A = accumulation, W = processes), and
process r computes micro-batches r, r + W, … of them. So one process with A = 2 and two processes
with A = 1 see the same global batch and take the same step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import re
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from unimoe_audio.data import Example, MixtureSampler, TokenDataset
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path, save_figure, write_json
from unimoe_audio.model.alignment import alignment, diagonal_mass, guided_attention_loss
from unimoe_audio.moe import AuxLossSchedule
from unimoe_audio.moe.parallel import expert_parameter_names, unshard_experts
from unimoe_audio.train import expert_parallel, sharding
from unimoe_audio.train.config import StageConfig
from unimoe_audio.train.distributed import DistInfo, all_sum, all_sum_named, gather_objects
from unimoe_audio.train.memory import check_training_memory
from unimoe_audio.train.self_feed import fed_own_predictions

CHECKPOINT_RE = re.compile(r"step-(\d+)\.(pt|dcp)$")  # a single file (DDP, one process) or FSDP's shards


def lr_factor(step: int, config: StageConfig) -> float:
    """Multiplier of the peak LR at optimizer step `step`: linear warm-up, then cosine to min_lr_ratio."""
    warmup = int(config.warmup_ratio * config.steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


def build_optimizer(model: nn.Module, config: StageConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on vectors (norms, biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UniMoEError("the model has no trainable parameters")
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas)


def subset_indices(groups: Sequence[str], fraction: float, seed: int) -> set[int]:
    """A seeded `fraction` of each task group's items (at least one per group)."""
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for g in sorted(set(groups)):
        items = [i for i, x in enumerate(groups) if x == g]
        n = max(1, round(len(items) * fraction))
        keep.update(int(i) for i in rng.choice(items, n, replace=False))
    return keep


def reversed_words(ex: Example) -> Example:
    """`ex` with its target text's words in reverse order (its characters, for a text of one word
    such as Mandarin): the same symbols and length, saying something else. Items without a text
    are returned as they are."""
    text = ex.meta.get("text") or ""
    if not text:
        return ex
    words = text.split()
    return replace(ex, meta={**ex.meta, "text": " ".join(reversed(words)) if len(words) > 1 else text[::-1]})


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(directory).glob("step-*") if (m := CHECKPOINT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_stage(seed: int, name: str) -> None:
    """Seed torch, numpy and python from (recipe seed, stage name): a stage draws the same random
    numbers (router jitter) whether it follows another in one process or starts in a fresh one."""
    key = int.from_bytes(hashlib.sha256(f"{seed}|{name}".encode()).digest()[:8], "little")
    torch.manual_seed(key)
    np.random.seed(key % 2**32)
    random.seed(key)


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Train `model` on `train_set` for one stage; `fit()` returns the trained (unwrapped) model.

    `collate(examples, rng=None, conditional=True) -> dict` builds the model's keyword batch (rng
    drives condition dropout; evaluation passes none, and conditional=False for the unconditional
    form); `model(**batch, aux_weight=w)`
    returns an output with `loss`, `codec_loss`, `codebook_losses`, `aux_loss`, `example_losses`
    and `experts_per_token`. `only` restricts training and evaluation to some task groups (the
    specialists). Outputs go to `out_dir`: checkpoints/, metrics.jsonl, tensorboard/, loss.png.
    """

    def __init__(self, model: nn.Module, config: StageConfig, train_set: TokenDataset, collate: Callable,
                 out_dir: str | Path, val_set: TokenDataset | None = None, only: tuple[str, ...] | None = None,
                 seed: int = 0, dist: DistInfo | None = None, progress: bool = True, name: str = "train"):
        self.config, self.seed, self.name, self.progress = config, seed, name, progress
        self.dist = dist or DistInfo()
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.train_set, self.val_set, self.collate, self.only = train_set, val_set, collate, only
        world = self.dist.world_size
        if config.batch_size % (config.grad_accum * world):
            raise UniMoEError(f"batch_size {config.batch_size} must be divisible by grad_accum × processes "
                              f"= {config.grad_accum} × {world}")
        self.micro_batch = config.batch_size // (config.grad_accum * world)

        groups = list(train_set.groups)
        if config.subset < 1:
            keep = subset_indices(groups, config.subset, seed)
            groups = [g if i in keep else "" for i, g in enumerate(groups)]
        wanted = tuple(sorted({g for g in groups if g and (only is None or g in only)}))
        if not wanted:
            raise UniMoEError(f"no training items for task groups {only}; check the corpus at {train_set}")
        # One sampler for the whole job (rank 0's stream); see the module docstring for the split.
        lengths = [r["frames"] + r.get("prompt_frames", 0) for r in train_set.index]
        self.sampler = MixtureSampler(groups, self.micro_batch, mix=config.mix, seed=seed, only=wanted,
                                      lengths=lengths, bucket=config.length_bucket)

        shape = getattr(model, "config", None)
        if shape is not None and (config.align_layer >= shape.num_layers or config.align_heads > shape.num_heads):
            raise UniMoEError(f"align_layer {config.align_layer} / align_heads {config.align_heads} do not fit a model of "
                              f"{shape.num_layers} layers and {shape.num_heads} heads")
        if config.self_feed and not hasattr(shape, "codebook_size"):
            raise UniMoEError("self_feed needs one of the project's UniMoEAudioModels (it predicts their codes); "
                              f"this model is a {type(model).__name__}")
        self.device = self.dist.device
        self.fsdp = config.parallel == "fsdp" and self.dist.enabled  # one process: nothing to shard
        self.ep = config.parallel == "ep" and self.dist.enabled
        if self.ep:  # before anything else: a layout the processes or experts do not divide is refused here
            expert_parallel.shard(model, config.expert_parallel, self.dist)
        longest = max((i for i, g in enumerate(groups) if g in wanted), key=lambda i: lengths[i])
        length = collate([train_set[longest]])["tokens"].shape[-1]
        check_training_memory(model, self.micro_batch, length, self.device, world, self.fsdp,
                              config.activation_checkpointing)
        if self.fsdp:  # fully_shard moves each block to the device as it shards it: the whole model never is there
            self.skeleton = sharding.shard(model, self.dist.world_size, self.device, config.activation_checkpointing)
        else:
            model = model.to(self.device)
        self.model = model
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, config))
        self.aux = AuxLossSchedule(config.aux_start, config.aux_end, config.aux_steps)
        self.step = 0
        self.bad_steps = 0
        self.ddp = self.model
        if self.dist.enabled and not self.fsdp:
            if self.ep:  # each process's expert shard is its own: DDP must not average it with the others'
                nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                    self.model, expert_parameter_names(self.model))
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)  # routed experts nobody chose get no gradient

    # ---------------------------------------------------------------- batches
    def _examples(self, indices: list[int], dataset: TokenDataset):
        return [dataset[i] for i in indices]

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @staticmethod
    def _tokens(examples) -> int:
        """Audio frames the codec loss covers (target plus voice prompt)."""
        return sum(e.codes.shape[-1] + (0 if e.prompt_codes is None else e.prompt_codes.shape[-1]) for e in examples)

    # ---------------------------------------------------------------- one optimizer step
    def train_step(self) -> dict:
        c, world = self.config, self.dist.world_size
        self.ddp.train()
        per_step = c.grad_accum * world
        sums = dict.fromkeys(("loss", "codec_loss", "aux_loss", "experts_per_token", "align_loss"), 0.0)
        task_sum, task_count = defaultdict(float), defaultdict(int)
        codebook = None
        tokens, finite = 0, True
        weight = self.aux.weight()
        for m in range(c.grad_accum):
            k = self.step * per_step + m * world + self.dist.rank
            examples = self._examples(self.sampler.batch(k), self.train_set)
            tokens += self._tokens(examples)
            # Condition dropout draws from a generator keyed by the global micro-batch: resumable, layout-free.
            batch = self._to_device(self.collate(examples, np.random.default_rng([self.seed, k, 1])))
            sync = m == c.grad_accum - 1 or not self.dist.enabled or self.fsdp  # FSDP reduce-scatters every micro-batch
            with (contextlib.nullcontext() if sync else self.ddp.no_sync()), self._autocast():
                if c.self_feed and self.step >= c.self_feed_start * c.steps:  # frames keyed by the global micro-batch
                    key = int(np.random.default_rng([self.seed, k, 2]).integers(2 ** 62))
                    frames = torch.Generator(self.device).manual_seed(key)
                    batch = fed_own_predictions(self.ddp, batch, self.model.config.codebook_size, c.self_feed, frames)
                out = self.ddp(**batch, aux_weight=weight, attention_layer=c.align_layer if c.align_weight else None)
                loss = out.loss.float()
                if c.align_weight:
                    align = guided_attention_loss(out.attention.float(), batch["text_span"], batch["audio_span"],
                                                  c.align_heads, c.align_sigma)
                    loss = loss + c.align_weight * align
                    sums["align_loss"] += align.item()
            finite = finite and bool(torch.isfinite(loss))
            (loss / per_step * world).backward()  # DDP averages over processes; this averages micro-batches
            sums["loss"] += loss.item()
            sums["codec_loss"] += out.codec_loss.item()
            sums["aux_loss"] += out.aux_loss.item()
            if out.experts_per_token is not None:
                sums["experts_per_token"] += float(out.experts_per_token)
            cb = out.codebook_losses.detach().float().cpu()
            codebook = cb if codebook is None else codebook + cb
            for e, l in zip(examples, out.example_losses.detach().float().cpu().tolist()):
                task_sum[e.meta["group"]] += l
                task_count[e.meta["group"]] += 1
        self.sampler.step = (self.step + 1) * per_step

        # Every process must agree on skipping, or DDP would deadlock on the next step.
        finite = bool(all_sum(torch.tensor([0.0 if finite else 1.0], device=self.device), self.dist).item() == 0)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if finite:
            limit = c.clip_norm if c.clip_norm > 0 else float("inf")
            norm = (expert_parallel.clip_grad_norm_(self.model, params, limit) if self.ep
                    else nn.utils.clip_grad_norm_(params, limit))
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: a DTensor
            self.optimizer.step()
        else:
            grad_norm = float("nan")
            self.bad_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.aux.step()
        self.step += 1
        if self.bad_steps > c.max_bad_steps:
            raise UniMoEError(f"{self.name}: the loss was NaN/inf on {self.bad_steps} steps (limit max_bad_steps="
                              f"{c.max_bad_steps}); lower the learning rate or check the data, then resume")

        # Reduce the logged numbers over processes.
        groups = sorted(set(task_sum) | set(self.train_set.groups))
        totals = all_sum_named({**sums, **{f"sum/{g}": task_sum[g] for g in groups},
                                **{f"count/{g}": task_count[g] for g in groups},
                                **{f"codebook/{i}": v for i, v in enumerate(codebook.tolist())}, "tokens": tokens},
                               self.dist, self.device)
        metrics = {k: totals[k] / per_step for k in sums if totals[k] or k in ("loss", "codec_loss", "aux_loss")}
        metrics.update({f"loss/{g}": totals[f"sum/{g}"] / totals[f"count/{g}"] for g in groups if totals[f"count/{g}"]})
        metrics.update({k: v / per_step for k, v in totals.items() if k.startswith("codebook/")})
        metrics.update(step=self.step, lr=lr, aux_weight=weight, grad_norm=grad_norm, tokens=totals["tokens"],
                       skipped=0 if finite else 1)
        return metrics

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean per-example loss on the validation split, per task group and overall (mean of groups),
        per codebook (`val_codebook/<k>`, over all groups), and for speech groups the alignment
        score `align/<group>`: the diagonal mass of the best head of `align_layer`
        (model/alignment.py). `cond_gain/<group>` is what the condition is worth: the loss of the
        same items in the unconditional form (no target text, caption or video) minus their loss,
        in nats per frame summed over codebooks. A model that continues the audio it is fed and
        ignores the text scores near 0 however low its loss. Part of that can be the text's length
        alone (where the speech ends); `read_gain/<group>` (speech groups) is what its words are worth:
        the loss with the target text's words in reverse order (`reversed_words`: the same symbols and
        length) minus the loss. The first speech item's attention map
        is kept under attention/ for the picture drawn at the end.

        The same fixed items every time: the first eval_batches × batch items of each group. Under FSDP
        and expert parallelism every forward is a collective, so every process runs as many batches: one
        out of items runs one more (discarded) batch."""
        if self.val_set is None:
            return {}
        self.ddp.eval()
        c = self.config
        groups = sorted(g for g in set(self.val_set.groups) if self.only is None or g in self.only)
        n = c.eval_batches * self.micro_batch * self.dist.world_size
        # Per group: summed example loss (and unconditional, reversed-words loss), items, alignment score, speech items;
        # codebook losses item-weighted.
        sums = {f"{what}/{g}": 0.0 for g in groups for what in ("loss", "items", "align", "speech", "uncond", "reversed")}
        sums.update({f"codebook/{i}": 0.0 for i in range(self.model.config.num_codebooks)})
        snapshot = None
        for g in groups:
            items = [i for i, x in enumerate(self.val_set.groups) if x == g][:n]
            mine = items[self.dist.rank:: self.dist.world_size]
            collective = self.fsdp or self.ep
            batches = math.ceil(len(items) / self.dist.world_size / self.micro_batch) if collective else None
            for start in range(0, len(mine) if batches is None else batches * self.micro_batch, self.micro_batch):
                chosen = mine[start: start + self.micro_batch]
                examples = self._examples(chosen or items[:1], self.val_set)
                batch = self._to_device(self.collate(examples))
                with self._autocast():
                    out = self.model(**batch, aux_weight=0.0, attention_layer=c.align_layer)
                    uncond = self.model(**self._to_device(self.collate(examples, conditional=False)), aux_weight=0.0)
                    reversed_text = self.model(**self._to_device(self.collate([reversed_words(e) for e in examples])),
                                               aux_weight=0.0) if g.startswith("speech") else None
                if not chosen:
                    continue
                sums[f"loss/{g}"] += float(out.example_losses.float().sum())
                sums[f"uncond/{g}"] += float(uncond.example_losses.float().sum())
                if reversed_text is not None:
                    sums[f"reversed/{g}"] += float(reversed_text.example_losses.float().sum())
                sums[f"items/{g}"] += len(examples)
                for i, v in enumerate(out.codebook_losses.float().tolist()):
                    sums[f"codebook/{i}"] += v * len(examples)
                mass, has = diagonal_mass(out.attention.float(), batch["text_span"], batch["audio_span"], c.align_sigma)
                sums[f"align/{g}"] += float(mass.max(dim=1).values[has].sum())
                sums[f"speech/{g}"] += int(has.sum())
                if snapshot is None and bool(has.any()):
                    i = int(torch.nonzero(has)[0])
                    maps = alignment(out.attention.float(), batch["text_span"], batch["audio_span"], i)  # [H, T, N]
                    snapshot = maps[: c.align_heads].mean(0) if c.align_weight else maps[mass[i].argmax()]
        sums = all_sum_named(sums, self.dist, self.device)
        items = sum(sums[f"items/{g}"] for g in groups)
        result = {f"eval/{g}": sums[f"loss/{g}"] / sums[f"items/{g}"] for g in groups if sums[f"items/{g}"]}
        if result:
            result["eval/loss"] = sum(result.values()) / len(result)
        result.update({f"cond_gain/{g}": (sums[f"uncond/{g}"] - sums[f"loss/{g}"]) / sums[f"items/{g}"]
                       for g in groups if sums[f"items/{g}"]})
        result.update({f"read_gain/{g}": (sums[f"reversed/{g}"] - sums[f"loss/{g}"]) / sums[f"items/{g}"]
                       for g in groups if sums[f"speech/{g}"]})
        result.update({f"align/{g}": sums[f"align/{g}"] / sums[f"speech/{g}"] for g in groups if sums[f"speech/{g}"]})
        if result:
            result.update({f"val_codebook/{i}": sums[f"codebook/{i}"] / items
                           for i in range(self.model.config.num_codebooks)})
        if snapshot is not None and self.dist.is_main:
            path = self.out_dir / "attention" / f"step-{self.step:07d}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, snapshot.cpu().numpy().astype(np.float16))
        return result

    # ---------------------------------------------------------------- checkpoints
    def progress_state(self) -> dict:
        """Everything but the model and optimizer (the part FSDP does not shard)."""
        return {"step": self.step, "bad_steps": self.bad_steps, "scheduler": self.scheduler.state_dict(),
                "aux": self.aux.state_dict(), "sampler": self.sampler.state_dict()}

    def state_dict(self) -> dict:
        """The single-process checkpoint (under expert parallelism a collective: the experts are gathered)."""
        if self.ep:
            model, optimizer = expert_parallel.full_state(self.model, self.optimizer)
        else:
            model, optimizer = self.model.state_dict(), self.optimizer.state_dict()
        return {**self.progress_state(), "model": model, "optimizer": optimizer}

    def save_checkpoint(self) -> Path | None:
        """Write checkpoints/step-N.pt (FSDP: step-N.dcp/) atomically, then drop all but the newest
        keep_checkpoints.

        A failing write (full disk) leaves the previous checkpoints intact and raises UniMoEError."""
        rngs = gather_objects(rng_state(), self.dist)  # every process's RNG: router jitter differs by rank
        path = self.ckpt_dir / f"step-{self.step:07d}.{'dcp' if self.fsdp else 'pt'}"
        state = None if self.fsdp else self.state_dict()  # every process: under EP it gathers the experts
        if not (self.dist.is_main or self.fsdp):
            return None
        try:
            if self.fsdp:
                sharding.save(path, self.model, self.optimizer, {**self.progress_state(), "rng": rngs}, self.dist.is_main)
            else:
                with atomic_path(path) as tmp:
                    torch.save({**state, "rng": rngs}, tmp)
        except (UniMoEError, OSError) as err:  # unwritable folder or full disk
            previous = list_checkpoints(self.ckpt_dir)
            kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
            reason = err if isinstance(err, UniMoEError) else f"could not write checkpoint {path} ({err.strerror or err})"
            raise UniMoEError(f"{reason}; {kept}. Free disk space and run again with --resume") from None
        if not self.dist.is_main:
            return None
        for old in list_checkpoints(self.ckpt_dir)[: -self.config.keep_checkpoints]:
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path: Path) -> None:
        if path.is_dir() != self.fsdp:
            raise UniMoEError(f"checkpoint {path} was written {'with' if path.is_dir() else 'without'} FSDP; resume "
                              f"with the same `parallel` setting and number of processes")
        try:
            if self.fsdp:
                state = sharding.load(path, self.model, self.optimizer)
            else:  # onto the CPU: torch.set_rng_state takes CPU tensors only; the weights are copied over
                state = torch.load(path, map_location="cpu", weights_only=False)
                if self.ep:  # the single-process format: every process takes its experts' part
                    expert_parallel.load_state(self.model, self.optimizer, state["model"], state["optimizer"])
                else:
                    self.model.load_state_dict(state["model"])
                    self.optimizer.load_state_dict(state["optimizer"])
        except (OSError, RuntimeError, EOFError) as err:
            raise UniMoEError(f"checkpoint {path} cannot be read ({err}); delete it to resume from an earlier one") from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.aux.load_state_dict(state["aux"])
        self.sampler.load_state_dict(state["sampler"])
        self.step, self.bad_steps = int(state["step"]), int(state["bad_steps"])
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            raise UniMoEError(f"checkpoint {path} was written by {len(rngs)} processes; resume with the same number "
                              f"(now {self.dist.world_size}) for an exact resume")
        set_rng_state(rngs[self.dist.rank])

    # ---------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> nn.Module:
        c = self.config
        metrics_path = self.out_dir / "metrics.jsonl"
        if resume and (found := list_checkpoints(self.ckpt_dir)):
            self.load_checkpoint(found[-1])
        elif not resume and self.dist.is_main and list_checkpoints(self.ckpt_dir):
            raise UniMoEError(f"{self.ckpt_dir} already holds checkpoints; pass --resume to continue the run "
                              f"or choose another --out")
        else:
            seed_stage(self.seed, self.name)
        if self.dist.is_main and hasattr(self.model, "config"):  # what workflows/checkpoints.py needs to rebuild a checkpoint
            write_json(self.out_dir / "stage.json", {"model": self.model.config.to_dict(), "groups": sorted(self.sampler.by_group)})
        log = MetricsLog(metrics_path, self.out_dir / "tensorboard", self.step, enabled=self.dist.is_main)
        bar = tqdm(total=c.steps, initial=self.step, desc=self.name, unit="step",
                   disable=not (self.progress and self.dist.is_main))
        start, start_step, tokens = time.perf_counter(), self.step, 0.0
        try:
            while self.step < c.steps:
                metrics = self.train_step()
                tokens += metrics["tokens"]
                metrics["tokens_per_s"] = tokens / max(time.perf_counter() - start, 1e-9)
                done = self.step == c.steps
                if self.step % c.eval_every == 0 or done:
                    metrics.update(self.evaluate())
                if self.step % c.log_every == 0 or done or "eval/loss" in metrics or metrics["skipped"]:
                    log.write(metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.1e}")
                bar.update(1)
                if self.step % c.checkpoint_every == 0 or done:
                    self.save_checkpoint()
        finally:
            bar.close()
            log.close()
        if self.dist.is_main and self.step > start_step:
            plot_losses(metrics_path, self.out_dir / "loss.png", self.name)
            plot_attention(self.out_dir / "attention", self.out_dir / "attention.png", self.name)
        if self.fsdp:
            return sharding.gather(self.model, self.skeleton)
        return unshard_experts(self.model) if self.ep else self.model


class MetricsLog:
    """metrics.jsonl (truncated to `resume_step` on resume, so it matches the restored state) + TensorBoard."""

    def __init__(self, path: Path, tb_dir: Path, resume_step: int, enabled: bool = True):
        self.path, self.enabled, self.writer = path, enabled, None
        if not enabled:
            return
        kept = [row for row in read_metrics(path) if row["step"] <= resume_step] if path.is_file() else []
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(tb_dir), purge_step=resume_step + 1 if resume_step else None)

    def write(self, metrics: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        for key, value in metrics.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key if "/" in key else f"train/{key}", value, metrics["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl. A last line cut short (the process was killed while writing it)
    is left out with a warning; a damaged line before it is an error naming the line."""
    lines = [(n, line) for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    rows = []
    for i, (n, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise UniMoEError(f"{path}:{n} is not valid JSON; delete the line (or the file) and run again") from None
            print(f"warning: {path}:{n} was cut short (an interrupted write); it is left out", file=sys.stderr)
            continue
        rows.append(row)
    return rows


def plot_losses(metrics_path: Path, png: Path, title: str) -> Path:
    """Training loss and per-task validation loss against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["loss"]) for r in rows if math.isfinite(r["loss"])]
    if train:
        ax.plot(*zip(*train), label="train loss", color="black", lw=1)
    for key in sorted({k for r in rows for k in r if k.startswith("eval/")}):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*pts), marker="o", ms=3, label=key.replace("eval/", "val "))
    ax.set(xlabel="optimizer step", ylabel="loss", title=title)
    ax.legend(fontsize=8)
    return save_figure(fig, png)


def plot_attention(snapshots: Path, png: Path, title: str, panels: int = 6) -> Path | None:
    """Audio-to-text attention of one validation item at up to `panels` evaluations across training."""
    found = sorted((int(m.group(1)), p) for p in Path(snapshots).glob("step-*.npy")
                   if (m := re.search(r"step-(\d+)\.npy$", p.name)))
    if not found:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [found[round(i * (len(found) - 1) / max(1, panels - 1))] for i in range(min(panels, len(found)))]
    fig, axes = plt.subplots(1, len(chosen), figsize=(max(5.0, 2.6 * len(chosen)), 2.8), squeeze=False)
    for ax, (step, path) in zip(axes[0], dict(chosen).items()):
        ax.imshow(np.load(path).astype(np.float32).T, origin="lower", aspect="auto", cmap="magma")
        ax.set(title=f"step {step}", xlabel="audio frame")
    axes[0][0].set_ylabel("text symbol")
    fig.suptitle(f"{title}: audio-to-text attention of one validation item", fontsize=9)
    return save_figure(fig, png, dpi=100)
