"""The UniMoE-Audio transformer (paper Fig. 2): decoder-only, pre-norm, RoPE, GQA, DCMoE FFNs.

A sequence mixes text positions (token embeddings), audio positions (the sum of K per-codebook
embeddings of one frame) and video positions: the tokens of the model's own vision encoder
(model/vision.py), or for released checkpoints the features of their Qwen2.5-VL vision tower, with
3-D (time, height, width) M-RoPE positions (model/released/vision.py); every other position uses
ordinary 1-D RoPE. One head predicts all K codebooks of the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.config import UniMoEAudioConfig
from unimoe_audio.model.vision import VisionEncoder
from unimoe_audio.moe import DCMoE, SwiGLU

IGNORE = -100


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x · rsqrt(mean(x²) + eps) in fp32, cast back, then the weight (one fused kernel for the norm)
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)


def rope_tables(head_dim: int, max_positions: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv)  # [P, hd/2]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, hd]; cos/sin [B, 1, L, hd] (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class KVCache:
    """Preallocated keys/values for every layer: [B, H_kv, max_len, hd]; `length` filled so far."""

    def __init__(self, config: UniMoEAudioConfig, batch: int, max_len: int, device, dtype):
        shape = (batch, config.num_kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.key_valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.length = 0
        self.max_len = max_len

    def select(self, rows: torch.Tensor) -> "KVCache":
        """Keep the rows `rows` (a [B] bool mask, or indices in their new order); returns self."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]
        self.key_valid = self.key_valid[rows]
        return self

    def live(self) -> int:
        """The first position some row still attends to (`length` if none): the keys before it
        belonged to rows that have left."""
        used = self.key_valid[:, :self.length].any(0)
        return int(used.int().argmax()) if bool(used.any()) else self.length

    @staticmethod
    def joined(first: "KVCache", second: "KVCache | None", room: int) -> "KVCache":
        """One cache holding `first`'s rows then `second`'s (if any), and `room` free positions.
        Only the live positions of each are kept (from `live()` on), so the cache of a batch that
        requests keep joining does not grow with its age; they are right-aligned so that both end at
        the same index: keys carry their own rotary positions and `key_valid` moves with them, so
        where a row's keys sit in the cache does not matter."""
        caches = [c for c in (first, second) if c is not None]
        spans = [(c.live(), c.length) for c in caches]
        length = max(stop - start for start, stop in spans)
        out = object.__new__(KVCache)
        out.length, out.max_len = length, length + room

        def cat(tensors) -> torch.Tensor:
            return torch.cat([_right_aligned(t, *span, length, out.max_len) for t, span in zip(tensors, spans)])

        out.key_valid = cat([c.key_valid for c in caches])
        out.keys = [cat([c.keys[i] for c in caches]) for i in range(len(first.keys))]
        out.values = [cat([c.values[i] for c in caches]) for i in range(len(first.values))]
        return out


def _right_aligned(t: torch.Tensor, start: int, stop: int, end: int, size: int) -> torch.Tensor:
    """`t`'s positions [start, stop) (its last axis but one for keys, the last for masks) moved to
    end at `end`, in a zero tensor of `size` positions."""
    axis = 1 if t.dim() == 2 else 2
    shape = list(t.shape)
    shape[axis] = size
    out = t.new_zeros(shape)
    out.narrow(axis, end - (stop - start), stop - start).copy_(t.narrow(axis, start, stop - start))
    return out


class Attention(nn.Module):
    def __init__(self, c: UniMoEAudioConfig):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, c.num_heads * hd, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_kv_heads * hd, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_kv_heads * hd, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.num_heads * hd, c.hidden_size, bias=False)

    def forward(self, x, cos, sin, layer: int, cache: KVCache | None, attn_mask: torch.Tensor | None,
                need_weights: bool = False):
        """-> (output [B, n, D], attention probabilities [B, H, n, n] when `need_weights`, else None)."""
        b, n, _ = x.shape
        hd = self.c.head_dim
        q = self.q_proj(x).view(b, n, -1, hd).transpose(1, 2)  # [B, H, n, hd]
        k = self.k_proj(x).view(b, n, -1, hd).transpose(1, 2)  # [B, H_kv, n, hd]
        v = self.v_proj(x).view(b, n, -1, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start:start + n] = k
            cache.values[layer][:, :, start:start + n] = v
            k = cache.keys[layer][:, :, :start + n]
            v = cache.values[layer][:, :, :start + n]
        probs = None
        if need_weights:  # explicit softmax, for the alignment loss and pictures (training only, no cache)
            groups = q.shape[1] // k.shape[1]
            scores = q @ k.repeat_interleave(groups, 1).transpose(-1, -2) / hd ** 0.5  # [B, H, n, n]
            causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            out = probs @ v.repeat_interleave(groups, 1)
        elif attn_mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1)), probs


class Block(nn.Module):
    def __init__(self, c: UniMoEAudioConfig):
        super().__init__()
        self.attn_norm = RMSNorm(c.hidden_size, c.norm_eps)
        self.attn = Attention(c)
        self.ffn_norm = RMSNorm(c.hidden_size, c.norm_eps)
        self.ffn = DCMoE(c.moe) if c.ffn == "moe" else SwiGLU(c.hidden_size, c.intermediate_size)

    def forward(self, x, cos, sin, layer, cache, attn_mask, pad_mask, need_weights: bool = False):
        """-> (x, the DCMoE's output or None, attention probabilities or None)."""
        a, probs = self.attn(self.attn_norm(x), cos, sin, layer, cache, attn_mask, need_weights)
        x = x + a
        h = self.ffn_norm(x)
        if isinstance(self.ffn, DCMoE):
            out = self.ffn(h, pad_mask=pad_mask)
            return x + out.hidden_states, out, probs
        return x + self.ffn(h), None, probs


@dataclass
class ModelOutput:
    loss: torch.Tensor  # codec_loss + aux_weight · aux_loss
    codec_loss: torch.Tensor  # sum over codebooks of the mean cross-entropy (REFERENCE.md §4)
    codebook_losses: torch.Tensor  # [K]
    aux_loss: torch.Tensor  # mean over MoE layers (0 for dense)
    example_losses: torch.Tensor  # [B] codec loss of each example (summed over codebooks)
    experts_per_token: float | None  # mean routed experts per non-padding token (None if dense)
    expert_masks: list[torch.Tensor]  # per MoE layer [N, N_r + N_n] (empty for dense)
    attention: torch.Tensor | None = None  # [B, H, L, L] probabilities of `attention_layer`, if asked for
    logits: torch.Tensor | None = None  # [N, K, V] at the N positions with a target, if asked for


class UniMoEAudioModel(nn.Module):
    def __init__(self, config: UniMoEAudioConfig):
        super().__init__()
        self.config = c = config
        v = c.audio_vocab_size
        self.embed_text = nn.Embedding(c.text_vocab_size, c.hidden_size)
        self.embed_audio = nn.Embedding(c.num_codebooks * v, c.hidden_size)  # codebook k uses rows [k·V, (k+1)·V)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.num_layers))
        self.norm = RMSNorm(c.hidden_size, c.norm_eps)
        self.head = nn.Linear(c.hidden_size, c.num_codebooks * v, bias=False)
        self.vision = VisionEncoder(c.vision, c.hidden_size) if c.vision is not None else None
        for name in ("codebook_offsets", "rope_cos", "rope_sin", "rope_axis"):
            self.register_buffer(name, None, persistent=False)
        self.reset_buffers()
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=c.init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    @classmethod
    def empty(cls, config: UniMoEAudioConfig) -> "UniMoEAudioModel":
        """The model with parameters on the meta device (no memory, no init), to be filled with
        `load_state_dict(..., assign=True)`; buffers are real (CPU)."""
        with torch.device("meta"):
            model = cls(config)
        model.reset_buffers("cpu")
        return model

    def reset_buffers(self, device=None) -> None:
        """(Re)compute the non-persistent buffers: codebook offsets, RoPE tables, M-RoPE channel axes."""
        c = self.config
        self.codebook_offsets = torch.arange(c.num_codebooks, device=device) * c.audio_vocab_size
        self.rope_cos, self.rope_sin = (t.to(device) for t in rope_tables(c.head_dim, c.max_positions, c.rope_theta))
        if c.rope_sections is not None:  # rotary channel j follows position axis rope_axis[j] (0 t, 1 h, 2 w)
            axis = [a for a, n in enumerate(c.rope_sections) for _ in range(n)] * 2  # both halves of rotate-half
            self.rope_axis = torch.tensor(axis, device=device)  # [hd]

    def embed(self, tokens: torch.Tensor, audio: torch.Tensor, is_audio: torch.Tensor, video: torch.Tensor | None = None,
              video_frames: torch.Tensor | None = None, is_video: torch.Tensor | None = None,
              video_features: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, L], audio [B, K, L], is_audio [B, L] -> [B, L, D]. The positions where is_video
        [B, L] is set hold video tokens, in row-major order: `video_features` [N, D] made outside the
        model (a released checkpoint's vision tower), else this model's vision encoder's tokens of
        `video` [B, T, S, S, 3] (row i's first video_frames[i] frames are real)."""
        text = self.embed_text(tokens)
        codes = audio.clamp_min(0) + self.codebook_offsets[None, :, None]  # [B, K, L]
        frames = self.embed_audio(codes).sum(dim=1)  # [B, L, D]
        x = torch.where(is_audio[..., None], frames, text)
        if is_video is None:
            return x
        if video_features is None:
            if self.vision is None:
                raise UniMoEError("this model has no vision encoder, so it cannot take a video")
            seen = self.vision(video)  # [B, T·P, D]
            per_frame = self.vision.config.tokens_per_frame
            video_features = seen[torch.arange(seen.shape[1], device=x.device)[None] < video_frames[:, None] * per_frame]
        if video_features.shape[0] != int(is_video.sum()):
            raise UniMoEError(f"{int(is_video.sum())} video positions for {video_features.shape[0]} video tokens")
        return x.masked_scatter(is_video[..., None], video_features.to(x.dtype))

    def rope(self, positions: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, L, hd] for positions [B, L], or for M-RoPE positions [3, B, L] (time,
        height, width; Qwen2.5-VL's split of the rotary channels by `config.rope_sections`)."""
        if positions.dim() == 2:
            return self.rope_cos[positions][:, None].to(dtype), self.rope_sin[positions][:, None].to(dtype)
        if self.rope_axis is None:
            raise UniMoEError("3-D (M-RoPE) positions need a model with rope_sections (a released checkpoint)")
        axis = self.rope_axis.view(1, 1, 1, -1).expand(1, *positions.shape[1:], -1)  # [1, B, L, hd]
        cos = self.rope_cos[positions].gather(0, axis)[0]  # channel j from axis rope_axis[j]
        sin = self.rope_sin[positions].gather(0, axis)[0]
        return cos[:, None].to(dtype), sin[:, None].to(dtype)

    def hidden(self, tokens, audio, is_audio, positions=None, pad_mask=None, cache=None, attn_mask=None,
               attention_layer: int | None = None, video=None, video_frames=None, is_video=None,
               video_features=None):
        """Final hidden states [B, L, D], the MoE outputs of every layer and the attention
        probabilities of `attention_layer` (None unless asked for). positions: [B, L] (1-D RoPE) or
        [3, B, L] (M-RoPE); the video arguments as in `embed`."""
        b, n = tokens.shape
        if positions is None:
            positions = torch.arange(n, device=tokens.device).expand(b, n)
        if int(positions.max()) >= self.config.max_positions:
            raise UniMoEError(f"sequence of {int(positions.max()) + 1} positions exceeds max_positions "
                              f"{self.config.max_positions}; shorten the text or the requested duration")
        x = self.embed(tokens, audio, is_audio, video, video_frames, is_video, video_features)
        cos, sin = self.rope(positions, x.dtype)  # [B, 1, L, hd]
        moe_outputs, attention = [], None
        for i, layer in enumerate(self.layers):
            x, moe, probs = layer(x, cos, sin, i, cache, attn_mask, pad_mask, need_weights=i == attention_layer)
            attention = probs if probs is not None else attention
            if moe is not None:
                moe_outputs.append(moe)
        return self.norm(x), moe_outputs, attention

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., D] -> logits [..., K, V]."""
        c = self.config
        return self.head(hidden).unflatten(-1, (c.num_codebooks, c.audio_vocab_size))

    def forward(self, tokens, audio, is_audio, targets, pad_mask, aux_weight: float = 0.0,
                attention_layer: int | None = None, video=None, video_frames=None, is_video=None,
                return_logits: bool = False, **_) -> ModelOutput:
        """Training forward. targets [B, K, L]: the code position i must predict (IGNORE elsewhere).
        `attention_layer` also returns that layer's attention probabilities (for the alignment loss);
        `return_logits` the logits of the positions that carry a target, in row-major order."""
        c = self.config
        if attention_layer is not None and not 0 <= attention_layer < c.num_layers:
            raise UniMoEError(f"attention_layer {attention_layer} is not a layer of this {c.num_layers}-layer model")
        hidden, moe_outputs, attention = self.hidden(tokens, audio, is_audio, pad_mask=pad_mask,
                                                     attention_layer=attention_layer, video=video,
                                                     video_frames=video_frames, is_video=is_video)
        predicts = (targets != IGNORE).any(dim=1)  # [B, L] positions that carry a loss
        logits = self.logits(hidden[predicts]).float()  # [N, K, V] only where needed
        tgt = targets.permute(0, 2, 1)[predicts]  # [N, K]
        ce = F.cross_entropy(logits.reshape(-1, c.audio_vocab_size), tgt.reshape(-1),
                             ignore_index=IGNORE, reduction="none").view(tgt.shape)  # [N, K]
        valid = (tgt != IGNORE).float()
        codebook_losses = (ce * valid).sum(0) / valid.sum(0).clamp_min(1)
        codec_loss = codebook_losses.sum()
        rows = torch.nonzero(predicts)[:, 0]
        per_example = torch.zeros(tokens.shape[0], c.num_codebooks, device=ce.device).index_add_(0, rows, ce * valid)
        counts = torch.zeros_like(per_example).index_add_(0, rows, valid)
        example_losses = (per_example / counts.clamp_min(1)).sum(-1)
        if moe_outputs:
            aux = torch.stack([m.aux_loss for m in moe_outputs]).mean()
            flat_valid = ~pad_mask.reshape(-1)
            experts = torch.stack([m.num_experts[flat_valid].float().mean() for m in moe_outputs]).mean().item()
        else:
            aux, experts = codec_loss.new_zeros(()), None
        return ModelOutput(
            loss=codec_loss + aux_weight * aux, codec_loss=codec_loss, codebook_losses=codebook_losses.detach(),
            aux_loss=aux, example_losses=example_losses.detach(), experts_per_token=experts,
            expert_masks=[m.expert_mask for m in moe_outputs], attention=attention,
            logits=logits.detach() if return_logits else None)

    def moe_layers(self) -> list[DCMoE]:
        return [layer.ffn for layer in self.layers if isinstance(layer.ffn, DCMoE)]

    def set_top_p(self, top_p: float | None) -> None:
        """Inference-time Top-P override for every DCMoE layer (None restores the trained value)."""
        for moe in self.moe_layers():
            moe.top_p = moe.config.top_p if top_p is None else top_p
