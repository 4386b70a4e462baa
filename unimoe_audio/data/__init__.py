"""The corpus: its format (schema), token shards, mixing; building and importing (build, folder).

`unimoe_audio.data.build` (the offline corpus builder) and `unimoe_audio.data.folder` (import of a
plain folder) are imported where they are used, so reading a corpus never loads the builder.
"""

from unimoe_audio.data.sampler import MixtureSampler
from unimoe_audio.data.schema import LANGUAGES, SPLITS, TASK_GROUPS, TASKS, check_entry, read_manifest
from unimoe_audio.data.tokens import Example, TokenDataset, encode_corpus

__all__ = ["Example", "LANGUAGES", "MixtureSampler", "SPLITS", "TASKS", "TASK_GROUPS", "TokenDataset", "check_entry",
           "encode_corpus", "read_manifest"]
