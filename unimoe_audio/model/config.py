"""UniMoEAudioConfig: the transformer's shape, its FFN kind and the codec-token layout.

Presets: `tiny` (CPU tests and the quick start), `small` (the small recipe on 2 CPU cores) and
`paper` (the released model's backbone, REFERENCE.md §2: hidden 2048, 36 layers, 16/2 heads,
8 routed + 1 null + 2 shared experts, 12 codebooks × 1024 codes, delays [0, 8, …, 18]).
`vision` (a VisionConfig) gives the model a vision encoder for video-to-music; None (the default,
and what a config.json written before it existed means) is a model without one. `rope_sections`
(released checkpoints, whose Qwen2.5-VL vision tower lives outside the transformer) splits the rotary
channels between a video token's time, height and width positions (M-RoPE).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.vision import VisionConfig
from unimoe_audio.moe import DCMoEConfig

FFN_KINDS = ("dense", "moe")


@dataclass
class UniMoEAudioConfig:
    hidden_size: int = 2048
    num_layers: int = 36
    num_heads: int = 16
    num_kv_heads: int = 2
    qkv_bias: bool = True  # Qwen2.5 backbone: q/k/v with bias, o without
    ffn: str = "moe"  # "dense" (SwiGLU of width intermediate_size) or "moe" (DCMoE)
    intermediate_size: int = 11008
    moe: DCMoEConfig | None = field(default_factory=DCMoEConfig)
    text_vocab_size: int = 512  # set from the text front-end when a model is built for a corpus
    num_codebooks: int = 12
    codebook_size: int = 1024
    delays: tuple[int, ...] = (0, *range(8, 19))
    rope_theta: float = 1e6
    # M-RoPE (released checkpoints): how many rotary frequencies follow the time, height and width
    # position of a video token (sum = head_dim / 2); None = ordinary 1-D RoPE only
    rope_sections: tuple[int, int, int] | None = None
    norm_eps: float = 1e-6
    max_positions: int = 4096
    init_std: float = 0.02
    cond_dropout: float = 0.1  # probability of training on the unconditional form (for CFG)
    # probability that a code of the generated audio's input frames is replaced by a random code in
    # training (Tacotron's pre-net dropout for codec tokens): continuing the audio it is fed pays less,
    # so the model leans more on the text (docs/pretrained.md, session 6: for a while)
    audio_noise: float = 0.0
    vision: VisionConfig | None = None  # the vision encoder (video-to-music), or none

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):
            self.moe = DCMoEConfig(**self.moe)
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        self.delays = tuple(int(d) for d in self.delays)
        if self.rope_sections is not None:
            self.rope_sections = tuple(int(s) for s in self.rope_sections)

        def bad(msg: str) -> UniMoEError:
            return UniMoEError(f"invalid UniMoEAudioConfig: {msg}")

        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "text_vocab_size",
                     "num_codebooks", "codebook_size", "max_positions"):
            if getattr(self, name) <= 0:
                raise bad(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise bad(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise bad(f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise bad("the head dimension must be even for RoPE")
        if self.rope_sections is not None and (len(self.rope_sections) != 3 or min(self.rope_sections) < 0
                                               or sum(self.rope_sections) != self.head_dim // 2):
            raise bad(f"rope_sections must be 3 non-negative counts summing to head_dim / 2 = {self.head_dim // 2}, "
                      f"got {list(self.rope_sections)}")
        if self.ffn not in FFN_KINDS:
            raise bad(f"ffn must be one of {FFN_KINDS}, got {self.ffn!r}")
        if self.ffn == "moe":
            if self.moe is None:
                raise bad("ffn='moe' needs a moe config")
            if self.moe.hidden_size != self.hidden_size:
                raise bad(f"moe.hidden_size {self.moe.hidden_size} differs from hidden_size {self.hidden_size}")
        elif self.intermediate_size <= 0:
            raise bad(f"intermediate_size must be positive for a dense FFN, got {self.intermediate_size}")
        if len(self.delays) != self.num_codebooks or min(self.delays) < 0:
            raise bad(f"delays must list {self.num_codebooks} non-negative steps, got {list(self.delays)}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise bad(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if not 0.0 <= self.audio_noise < 1.0:
            raise bad(f"audio_noise must be in [0, 1), got {self.audio_noise}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def audio_vocab_size(self) -> int:
        """Per-codebook vocabulary: codes, EOS, PAD, BOS."""
        return self.codebook_size + 3

    def to_dict(self) -> dict:
        out = asdict(self)
        out["delays"] = list(self.delays)
        if self.rope_sections is not None:
            out["rope_sections"] = list(self.rope_sections)
        for name in ("vision", "rope_sections"):  # unused, they stay out: a config reads as it did before they existed
            if out[name] is None:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "UniMoEAudioConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UniMoEError(f"unknown UniMoEAudioConfig keys: {', '.join(unknown)}")
        return cls(**data)

    def dense(self, intermediate_size: int | None = None) -> "UniMoEAudioConfig":
        """The same model with dense SwiGLU FFNs (a specialist or a dense baseline)."""
        return replace(self, ffn="dense", intermediate_size=intermediate_size or self.intermediate_size)

    def with_moe(self, **changes) -> "UniMoEAudioConfig":
        """The same model with DCMoE FFNs; `changes` edit the DCMoE config."""
        return replace(self, ffn="moe", moe=replace(self.moe or DCMoEConfig(self.hidden_size), **changes))

    @classmethod
    def preset(cls, name: str, **changes) -> "UniMoEAudioConfig":
        if name not in PRESETS:
            raise UniMoEError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(PRESETS[name](), **changes)


def _tiny() -> UniMoEAudioConfig:
    # 3 specialists (en, zh, music) of FFN width 256, each split into 2 experts of width 128.
    moe = DCMoEConfig(hidden_size=128, num_routed=6, routed_size=128, num_null=1, num_shared=2, shared_size=64)
    return UniMoEAudioConfig(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=256,
                             moe=moe, num_codebooks=12, codebook_size=1024, max_positions=1024)


def _small() -> UniMoEAudioConfig:
    moe = DCMoEConfig(hidden_size=256, num_routed=6, routed_size=256, num_null=1, num_shared=2, shared_size=128)
    return UniMoEAudioConfig(hidden_size=256, num_layers=6, num_heads=8, num_kv_heads=2, intermediate_size=512,
                             moe=moe, max_positions=2048)


PRESETS = {"tiny": _tiny, "small": _small, "paper": UniMoEAudioConfig}
