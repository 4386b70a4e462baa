"""`unimoe-audio convert --from-released DIR --out DIR2`: a released checkpoint folder as a project model folder."""

from __future__ import annotations

from pathlib import Path

import torch

from unimoe_audio.model.released import convert_released

DTYPES = {"stored": None, "float32": torch.float32, "bfloat16": torch.bfloat16}


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert the released UniMoE-Audio checkpoint folder (read only)")
    p.add_argument("--from-released", type=Path, required=True, dest="source", help="the released checkpoint folder")
    p.add_argument("--out", type=Path, required=True, help="new folder for the converted model")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="stored", help="weights' dtype (default: as stored, bf16)")
    p.set_defaults(func=run)


def run(args) -> int:
    out = convert_released(args.source, args.out, DTYPES[args.dtype])
    print(f"wrote {out} (load it with UniMoEAudio.from_pretrained or unimoe-audio generate --model {out})")
    return 0
