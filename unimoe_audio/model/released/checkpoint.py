"""The released checkpoint folder (REFERENCE.md §10): recognise it, map every tensor, load, convert.

A released folder holds `config.json` (model_type "uni_audio_rvq_qwen2_5vl_moe"; the backbone's
shape is in `text_config`, the top-level copies are stale), safetensors shards with
`model.safetensors.index.json`, the Qwen2.5 tokenizer files and `dac_model/`. Tensors map onto
`UniMoEAudioModel` as follows (released name -> project name):

    model.embed_tokens.weight                              -> embed_text.weight
    codec_embed_tokens.{c}.weight            [1027, D]     -> embed_audio.weight rows [c·1027, (c+1)·1027)
    model.layers.{i}.self_attn.{q,k,v,o}_proj.*            -> layers.{i}.attn.{q,k,v,o}_proj.*
    model.layers.{i}.input_layernorm.weight                -> layers.{i}.attn_norm.weight
    model.layers.{i}.post_attention_layernorm.weight       -> layers.{i}.ffn_norm.weight
    model.layers.{i}.mlp.gate.weight         [11, D]       -> layers.{i}.ffn.gate.weight (routed, null, shared rows)
    ….mlp.dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts.{e}.{gate,up,down}_proj.weight
                                                           -> layers.{i}.ffn.experts.w_{gate,up,down}[e]
    ….mlp.fixed_real_moe.{s}.{gate,up}_proj.weight         -> layers.{i}.ffn.shared_gate_up.weight rows (gate block, up block)
    ….mlp.fixed_real_moe.{s}.down_proj.weight              -> layers.{i}.ffn.shared_down.weight columns
    model.norm.weight                                      -> norm.weight
    codec_head.weight                        [12·1027, D]  -> head.weight
    lm_head.weight, visual.*                               -> kept as they are (lm_head unused; visual.* read by vision.py for video)

Shards are read one at a time and tensors one by one, so loading needs the weights once in their
stored dtype (bf16 stays bf16 unless a dtype is asked for) plus one layer's experts in flight.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.config import UniMoEAudioConfig
from unimoe_audio.model.transformer import UniMoEAudioModel
from unimoe_audio.moe import DCMoEConfig

MODEL_TYPE = "uni_audio_rvq_qwen2_5vl_moe"
INDEX = "model.safetensors.index.json"
MAX_POSITIONS = 16_384  # RoPE table rows kept; the released demo needs ~1000 frames + the prompt
EXTRA = re.compile(r"^(visual\..+|lm_head\.weight)$")  # kept in a converted folder, not loaded


@dataclass(frozen=True)
class ReleasedSpec:
    """What the released folder says beyond the transformer's shape: the text side's ids, the video side."""

    placeholder_id: int  # <|AUDIO_PLACEHOLDER|>: positions that carry a codec frame
    codec_values: tuple[int, int, int]  # EOS, PAD, BOS as the config names them
    video_ids: tuple[int, int, int] | None = None  # <|vision_start|>, <|video_pad|>, <|vision_end|>
    vision_config: dict | None = None  # config.json vision_config: the Qwen2.5-VL vision tower


def is_released(directory: str | Path) -> bool:
    path = Path(directory) / "config.json"
    try:
        return path.is_file() and json.loads(path.read_text()).get("model_type") == MODEL_TYPE
    except ValueError:
        return False


def released_config(raw: dict, where: str) -> tuple[UniMoEAudioConfig, ReleasedSpec]:
    """The project config and text-side facts of a released config.json (its `text_config`)."""
    if raw.get("model_type") != MODEL_TYPE:
        raise UniMoEError(f"{where} is not a released UniMoE-Audio checkpoint (config.json model_type is "
                          f"{raw.get('model_type')!r}, expected {MODEL_TYPE!r})")
    t = raw.get("text_config")
    if not isinstance(t, dict):
        raise UniMoEError(f"{where}: config.json has no text_config")
    try:
        k, vocab = int(raw["codec_channels"]), int(raw["codec_vocab_size"])
        eos, pad, bos = int(raw["codec_eos_value"]), int(raw["codec_pad_value"]), int(raw["codec_bos_value"])
        size = vocab - 3
        sections = (t.get("rope_scaling") or {}).get("mrope_section")
        if (eos, pad, bos) != (size, size + 1, size + 2):
            raise UniMoEError(f"{where}: codec EOS/PAD/BOS {eos}/{pad}/{bos} are not {size}/{size + 1}/{size + 2}")
        if t.get("hidden_act", "silu") != "silu" or t.get("token_drop", False):
            raise UniMoEError(f"{where}: only silu experts without token dropping are supported")
        if float(t.get("router_jitter_noise", 0.01)) != 0.01:
            raise UniMoEError(f"{where}: router_jitter_noise {t['router_jitter_noise']} (the released rule's gap is 2 × 0.01)")
        moe = DCMoEConfig(hidden_size=int(t["hidden_size"]), num_routed=int(t["mlp_dynamic_expert_num"]),
                          routed_size=int(t["dynamic_intermediate_size"]),
                          num_null=int(t["mlp_dynamic_null_expert_num"]), num_shared=int(t["mlp_fixed_expert_num"]),
                          shared_size=int(t["shared_intermediate_size"]), top_p=float(t["mlp_dynamic_top_p"]),
                          weighting="official", router_jitter=float(t.get("input_jitter_noise", 0.01)))
        config = UniMoEAudioConfig(
            hidden_size=int(t["hidden_size"]), num_layers=int(t["num_hidden_layers"]),
            num_heads=int(t["num_attention_heads"]), num_kv_heads=int(t["num_key_value_heads"]), qkv_bias=True,
            ffn="moe", moe=moe, text_vocab_size=int(t["vocab_size"]), num_codebooks=k, codebook_size=size,
            delays=tuple(raw["codec_delay_pattern"]), rope_theta=float(t["rope_theta"]),
            rope_sections=tuple(sections) if sections else None, norm_eps=float(t["rms_norm_eps"]),
            max_positions=min(int(t.get("max_position_embeddings", MAX_POSITIONS)), MAX_POSITIONS))
        video = [raw.get(n) for n in ("vision_start_token_id", "video_token_id", "vision_end_token_id")]
        spec = ReleasedSpec(int(raw["codec_placeholder_value"]), (eos, pad, bos),
                            tuple(int(i) for i in video) if None not in video else None, raw.get("vision_config"))
    except KeyError as err:
        raise UniMoEError(f"{where}: config.json lacks {err.args[0]!r}") from None
    return config, spec


# ---------------------------------------------------------------- tensor names
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_ATTN = re.compile(r"^self_attn\.([qkvo])_proj\.(weight|bias)$")
_EXPERT = re.compile(r"^mlp\.dynamic_real_moe\.deepspeed_moe\.experts\.deepspeed_experts\.(\d+)\.(gate|up|down)_proj\.weight$")
_SHARED = re.compile(r"^mlp\.fixed_real_moe\.(\d+)\.(gate|up|down)_proj\.weight$")
_CODEC_EMBED = re.compile(r"^codec_embed_tokens\.(\d+)\.weight$")


@dataclass(frozen=True)
class Target:
    """Where one released tensor goes: `name` whole, or part `index` of `parts` joined by `join`."""

    name: str
    index: int = 0
    parts: int = 1
    join: str = ""  # "stack" (new dim 0), "rows" (cat dim 0), "cols" (cat dim 1)


def target(name: str, config: UniMoEAudioConfig) -> Target | None:
    """The project tensor a released tensor maps onto; None for names that are not the model's."""
    fixed = {"model.embed_tokens.weight": "embed_text.weight", "model.norm.weight": "norm.weight",
             "codec_head.weight": "head.weight"}
    if name in fixed:
        return Target(fixed[name])
    if m := _CODEC_EMBED.match(name):
        c = int(m[1])
        return Target("embed_audio.weight", c, config.num_codebooks, "rows") if c < config.num_codebooks else None
    m = _LAYER.match(name)
    if m is None or int(m[1]) >= config.num_layers:
        return None
    layer, rest = f"layers.{m[1]}", m[2]
    moe = config.moe
    if a := _ATTN.match(rest):
        return None if (a[1], a[2]) == ("o", "bias") else Target(f"{layer}.attn.{a[1]}_proj.{a[2]}")
    if rest in ("input_layernorm.weight", "post_attention_layernorm.weight"):
        return Target(f"{layer}.{'attn' if rest.startswith('input') else 'ffn'}_norm.weight")
    if rest == "mlp.gate.weight":
        return Target(f"{layer}.ffn.gate.weight")
    if (e := _EXPERT.match(rest)) and int(e[1]) < moe.num_routed:
        return Target(f"{layer}.ffn.experts.w_{e[2]}", int(e[1]), moe.num_routed, "stack")
    if (s := _SHARED.match(rest)) and int(s[1]) < moe.num_shared:
        i, n = int(s[1]), moe.num_shared
        if s[2] == "down":
            return Target(f"{layer}.ffn.shared_down.weight", i, n, "cols")
        return Target(f"{layer}.ffn.shared_gate_up.weight", i + (n if s[2] == "up" else 0), 2 * n, "rows")
    return None


def released_names(config: UniMoEAudioConfig) -> list[str]:
    """Every model tensor name a released checkpoint of this shape holds (lm_head and visual.* aside)."""
    moe = config.moe
    names = ["model.embed_tokens.weight", "model.norm.weight", "codec_head.weight"]
    names += [f"codec_embed_tokens.{c}.weight" for c in range(config.num_codebooks)]
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        names += [p + f"self_attn.{x}_proj.{w}" for x in "qkv" for w in ("weight", "bias")]
        names += [p + "self_attn.o_proj.weight", p + "input_layernorm.weight", p + "post_attention_layernorm.weight",
                  p + "mlp.gate.weight"]
        names += [p + f"mlp.dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts.{e}.{w}_proj.weight"
                  for e in range(moe.num_routed) for w in ("gate", "up", "down")]
        names += [p + f"mlp.fixed_real_moe.{s}.{w}_proj.weight" for s in range(moe.num_shared) for w in ("gate", "up", "down")]
    return names


# ---------------------------------------------------------------- reading
def weight_files(directory: str | Path) -> dict[str, Path]:
    """tensor name -> shard file, from the index (or the single model.safetensors)."""
    directory = Path(directory)
    index = directory / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as err:
            raise UniMoEError(f"{index} is not a safetensors index: {err}") from None
        files = {name: directory / file for name, file in weight_map.items()}
    elif (directory / "model.safetensors").is_file():
        with safe_open(str(directory / "model.safetensors"), "pt") as f:
            files = {name: directory / "model.safetensors" for name in f.keys()}
    else:
        raise UniMoEError(f"{directory} has neither {INDEX} nor model.safetensors")
    for path in sorted(set(files.values())):
        if not path.is_file():
            raise UniMoEError(f"missing shard {path} (listed in {INDEX}); download the whole checkpoint folder")
    return files


def iter_released(directory: str | Path, config: UniMoEAudioConfig, dtype: torch.dtype | None = None,
                  extras: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(project name, tensor) for every model tensor, shard by shard; with `extras`, also
    (released name, tensor) for lm_head.weight and visual.*, unchanged.

    Checks names before reading anything (missing or unknown tensors) and shapes as it reads.
    """
    files = weight_files(directory)
    expected = released_names(config)
    missing = [n for n in expected if n not in files]
    if missing:
        raise UniMoEError(f"{directory}: tensor {missing[0]} is missing from the checkpoint"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    known = set(expected)
    unknown = [n for n in files if n not in known and not EXTRA.match(n)]
    if unknown:
        raise UniMoEError(f"{directory}: unexpected tensor {unknown[0]} in {files[unknown[0]].name}: this checkpoint "
                          "does not have the released UniMoE-Audio layout")
    shapes = {k: tuple(v.shape) for k, v in UniMoEAudioModel.empty(config).state_dict().items()}
    pending: dict[str, list[torch.Tensor | None]] = {}
    for path in sorted(set(files.values())):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                if name not in known and not (extras and EXTRA.match(name)):
                    continue
                tensor = f.get_tensor(name)
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                if name not in known:
                    yield name, tensor
                    continue
                t = target(name, config)
                full = shapes[t.name]
                part = _part_shape(full, t)
                if tuple(tensor.shape) != part:
                    raise UniMoEError(f"{path.name}: tensor {name} has shape {list(tensor.shape)}, config.json implies "
                                      f"{list(part)}")
                if t.parts == 1:
                    yield t.name, tensor
                    continue
                slots = pending.setdefault(t.name, [None] * t.parts)
                slots[t.index] = tensor
                if all(s is not None for s in slots):
                    del pending[t.name]
                    yield t.name, (torch.stack(slots) if t.join == "stack"
                                   else torch.cat(slots, dim=0 if t.join == "rows" else 1))


def _part_shape(full: tuple[int, ...], t: Target) -> tuple[int, ...]:
    if t.join == "stack":
        return full[1:]
    if t.join == "rows":
        return (full[0] // t.parts, *full[1:])
    if t.join == "cols":
        return (full[0], full[1] // t.parts)
    return full


def load_released_model(directory: str | Path, config: UniMoEAudioConfig, dtype: torch.dtype | None = None,
                        device: str = "cpu") -> UniMoEAudioModel:
    """The transformer with the released weights (stored dtype unless `dtype`), in eval mode."""
    model = UniMoEAudioModel.empty(config)
    model.load_state_dict(dict(iter_released(directory, config, dtype)), assign=True)
    return model.to(device).eval()
