"""The offline corpus: sentence and composition sources, synthesis, manifests, tokens, mixing."""

from unimoe_audio.data.build import SIZES, SPLITS, TASK_GROUPS, build, read_manifest
from unimoe_audio.data.sampler import MixtureSampler
from unimoe_audio.data.tokens import Example, TokenDataset, encode_corpus

__all__ = ["Example", "MixtureSampler", "SIZES", "SPLITS", "TASK_GROUPS", "TokenDataset", "build",
           "encode_corpus", "read_manifest"]
