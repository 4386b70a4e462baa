"""Fine-tuning a released-format checkpoint on your own corpus: full, or LoRA through `peft`.

The checkpoint brings everything the model was trained with: its tokenizer and ChatML prompts
(`ReleasedPrompts`, the same ones generation writes), its DAC codec (the corpus must be encoded
with it) and the released loss (per-codebook cross-entropy summed + the annealed balancing loss,
`Trainer` with its optimizer-step-counted, checkpointed `AuxLossSchedule`). What it writes:

    OUT/finetune.json   the settings (a re-run with other settings into the same OUT is refused)
    OUT/checkpoints/    Trainer checkpoints: re-running the same command resumes exactly
    OUT/metrics.jsonl, tensorboard/, loss.png
    OUT/adapter/        LoRA only: adapter_config.json + adapter_model.safetensors (peft format)
    OUT/model/          the fine-tuned model (LoRA merged in) as a converted released folder:
                        UniMoEAudio.from_pretrained(OUT/model) loads it, `generate` runs it

LoRA targets (`LORA_TARGETS`): `attention` (q/k/v/o projections), `gates` (the router), `shared`
(the fused shared-expert projections) are nn.Linear modules and get peft's lora.Linear. `routed`
targets the stacked expert weights w_gate/w_up/w_down [E, out, in], which are parameters, not
Linear modules: peft's `target_parameters` wraps each in a ParamWrapper holding one rank-r
adapter per expert (lora_A [r·E, in], lora_B [out, r·E]) and re-parametrises the stack as
W + B_e·A_e while `RoutedExperts.forward` runs, so the token dispatch is unchanged.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import nn

from unimoe_audio.data import TokenDataset, encode_corpus
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import write_json
from unimoe_audio.model import SequenceCollator
from unimoe_audio.model.released import (ReleasedUniMoEAudio, is_released_or_converted, iter_extras,
                                         write_converted)
from unimoe_audio.train.config import StageConfig
from unimoe_audio.train.distributed import DistInfo
from unimoe_audio.train.trainer import Trainer

# Module-name patterns (peft `target_modules`, one regex) and parameter names (`target_parameters`).
LORA_TARGETS = {
    "attention": r"layers\.\d+\.attn\.[qkvo]_proj",
    "gates": r"layers\.\d+\.ffn\.gate",
    "shared": r"layers\.\d+\.ffn\.shared_(gate_up|down)",
    "routed": ("experts.w_gate", "experts.w_up", "experts.w_down"),
}
RELEASED_TASKS = ("clone", "t2m")  # what the released prompts express: a voice prompt is always given


@dataclass
class LoRASettings:
    targets: tuple[str, ...] = ("attention", "routed", "shared", "gates")
    rank: int = 8
    alpha: float = 16.0

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets:
            raise UniMoEError(f"unknown LoRA target(s) {unknown or '(none given)'}; choose from {list(LORA_TARGETS)}")
        if self.rank <= 0 or self.alpha <= 0:
            raise UniMoEError(f"LoRA rank and alpha must be positive, got {self.rank} and {self.alpha}")


def _finetune_stage() -> StageConfig:
    """Full fine-tuning defaults: the joint stage's LR (REFERENCE §7); the released aux schedule."""
    return StageConfig(steps=1000, lr=1e-5, batch_size=8, warmup_ratio=0.05, eval_every=100, checkpoint_every=200)


@dataclass
class FinetuneConfig:
    model: str  # released or converted folder
    corpus: str  # corpus folder; its tokens/ encoded with the model's codec (encoded here if missing)
    out: str
    lora: LoRASettings | None = None  # None: full fine-tuning
    stage: StageConfig = field(default_factory=_finetune_stage)
    cond_dropout: float = 0.1  # unconditional rows for classifier-free guidance ("Low quality." / empty text)
    max_music_frames: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.cond_dropout < 1.0:
            raise UniMoEError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.max_music_frames <= 0:
            raise UniMoEError(f"max_music_frames must be positive, got {self.max_music_frames}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def apply_lora(model: nn.Module, settings: LoRASettings):
    """`model` wrapped by peft with adapters on the chosen targets (everything else frozen).

    A target that matches nothing in this model (say `shared` on a model without shared experts)
    is an error before anything is wrapped."""
    from peft import LoraConfig, get_peft_model

    names = [n for n, _ in model.named_modules()]
    params = [n for n, _ in model.named_parameters()]
    modules, parameters = [], []
    for target in settings.targets:
        spec = LORA_TARGETS[target]
        if isinstance(spec, tuple):
            found = [n for n in params if any(n.endswith("." + s) for s in spec)]
            parameters += list(spec)
        else:
            found = [n for n in names if re.fullmatch(spec, n)]
            modules.append(spec)
        if not found:
            raise UniMoEError(f"LoRA target {target!r} matches nothing in this model "
                              f"({'parameters ' + ', '.join(spec) if isinstance(spec, tuple) else 'modules ' + spec}); "
                              f"drop it from --lora-targets")
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0,
                        target_modules=f"^({'|'.join(modules)})$" if modules else None,
                        target_parameters=parameters or None)
    return get_peft_model(model, config)


def check_corpus_codec(dataset: TokenDataset, codec, where: str) -> None:
    """The corpus tokens must come from the checkpoint's codec: other codes mean other sounds."""
    info = dataset.info
    have = (info.get("codec_type"), info.get("num_codebooks"), info.get("codebook_size"))
    want = (codec.codec_type, codec.num_codebooks, codec.codebook_size)
    if have != want:
        raise UniMoEError(f"{where} was encoded with a {have[0]} codec of {have[1]}×{have[2]} codes, but the checkpoint's "
                          f"codec is {want[0]} with {want[1]}×{want[2]}: its tokens mean other sounds. Move {where} "
                          f"aside and run finetune again (it encodes the corpus with the checkpoint's codec)")


def released_items(dataset: TokenDataset) -> TokenDataset:
    return dataset.select([i for i, r in enumerate(dataset.index) if r["task"] in RELEASED_TASKS])


def load_corpus(corpus: Path, codec, dist: DistInfo, progress: bool) -> tuple[TokenDataset, TokenDataset | None]:
    """Train / validation items the released prompts express, tokens checked against (or made with) `codec`."""
    tokens = corpus / "tokens"
    if dist.is_main and not (tokens / "train" / "info.json").is_file():
        if not (corpus / "train.jsonl").is_file():
            raise UniMoEError(f"no corpus at {corpus} (train.jsonl is missing); see 'Bring your own data' in the README")
        encode_corpus(corpus, codec, splits=[s for s in ("train", "validation") if (corpus / f"{s}.jsonl").is_file()],
                      progress=progress, workers=os.cpu_count() or 1)
    if dist.enabled:
        tdist.barrier()
    train = TokenDataset(tokens, "train")
    check_corpus_codec(train, codec, str(tokens))
    chosen = released_items(train)
    if not len(chosen):
        raise UniMoEError(f"{corpus} has no items the released model can learn from: it speaks only in a given voice, so "
                          f"speech items need a voice prompt (task 'clone'); music items are task 't2m'")
    val = None
    if (tokens / "validation" / "info.json").is_file():
        val = released_items(TokenDataset(tokens, "validation"))
        val = val if len(val) else None
    return chosen, val


def finetune(config: FinetuneConfig, dist: DistInfo | None = None, progress: bool = True) -> Path:
    """Fine-tune `config.model` on `config.corpus`; returns OUT/model (see the module docstring)."""
    dist = dist or DistInfo()
    source, out = Path(config.model), Path(config.out)
    if not is_released_or_converted(source):
        raise UniMoEError(f"{source} is not a released UniMoE-Audio checkpoint (or a folder converted from one)")
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        saved = out / "finetune.json"
        if saved.is_file() and json.loads(saved.read_text()) != config.to_dict():
            raise UniMoEError(f"{out} holds a fine-tuning run with other settings; choose another --out (or delete {out})")
        write_json(saved, config.to_dict())
    api = ReleasedUniMoEAudio.load(source, dtype=torch.float32)
    train, val = load_corpus(Path(config.corpus), api.codec, dist, progress)
    model = api.model if config.lora is None else apply_lora(api.model, config.lora)
    collate = SequenceCollator(api.generator.prompts, config.cond_dropout, config.max_music_frames)
    trainer = Trainer(model, config.stage, train, collate, out, val_set=val, seed=config.seed, dist=dist,
                      progress=progress, name="finetune")
    trained = trainer.fit(resume=True)
    final = out / "model"
    if dist.is_main:
        if config.lora is not None:
            trained.save_pretrained(str(out / "adapter"))
            trained = trained.merge_and_unload()
        state = ((name, tensor) for name, tensor in trained.state_dict().items())
        write_converted(final, itertools.chain(state, iter_extras(source)), api.model.config, api.spec, source, api.codec)
    if dist.enabled:
        tdist.barrier()
    return final
