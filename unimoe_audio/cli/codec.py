"""`unimoe-audio codec train|encode|decode`: the built-in codec from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from unimoe_audio.codec import SpectralCodec, SpectralCodecConfig, load_audio, load_codec, save_audio
from unimoe_audio.codec.audio import AUDIO_SUFFIXES
from unimoe_audio.codec.spectral import QUANTIZERS
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path


def register(subparsers) -> None:
    p = subparsers.add_parser("codec", help="train the built-in codec; encode audio to codes and back")
    sub = p.add_subparsers(dest="codec_command", metavar="ACTION", required=True)

    t = sub.add_parser("train", help="learn a spectral RVQ codec from a folder of audio or a JSONL manifest")
    t.add_argument("--audio", type=Path, required=True, help="folder of audio files, or a JSONL manifest with an 'audio' field")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--codebooks", type=int, default=SpectralCodecConfig.num_codebooks)
    t.add_argument("--codebook-size", type=int, default=SpectralCodecConfig.codebook_size)
    t.add_argument("--quantizer", choices=QUANTIZERS, default="residual",
                   help="residual codebooks, or one codebook per band of mel bins (more predictable codes)")
    t.add_argument("--frames-per-step", type=int, default=1,
                   help="mel frames stacked into one code step (50/N steps per second; a model predicts N frames at once)")
    t.add_argument("--max-minutes", type=float, default=60.0, help="use at most this much audio")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=train)

    x = sub.add_parser("extend", help="grow a trained codec: more codes per codebook, learnt on other audio "
                                      "(music, another language); its own codes keep their meaning")
    x.add_argument("--codec", type=Path, required=True, help="the trained codec to grow")
    x.add_argument("--audio", type=Path, required=True, help="folder of audio files, or a JSONL manifest with an 'audio' field")
    x.add_argument("--codes", type=int, required=True, help="codes to add to every codebook")
    x.add_argument("--out", type=Path, required=True)
    x.add_argument("--max-minutes", type=float, default=60.0, help="use at most this much audio")
    x.set_defaults(func=extend)

    e = sub.add_parser("encode", help="audio file -> codes .npy [K, T]")
    e.add_argument("--codec", type=Path, required=True)
    e.add_argument("input", type=Path)
    e.add_argument("-o", "--output", type=Path, required=True)
    e.set_defaults(func=encode)

    d = sub.add_parser("decode", help="codes .npy [K, T] -> wav")
    d.add_argument("--codec", type=Path, required=True)
    d.add_argument("input", type=Path)
    d.add_argument("-o", "--output", type=Path, required=True)
    d.set_defaults(func=decode)


def audio_files(source: Path) -> list[Path]:
    """Audio paths from a folder (recursive, sorted) or a JSONL manifest ('audio' relative to it)."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    elif source.is_file():
        files = []
        for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                files.append(source.parent / json.loads(line)["audio"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UniMoEError(f"{source}:{n}: each manifest line must be a JSON object with an 'audio' field") from None
    else:
        raise UniMoEError(f"--audio {source} is neither a folder nor a manifest file")
    if not files:
        raise UniMoEError(f"no audio files found in {source}")
    return files


def train(args) -> int:
    config = SpectralCodecConfig(num_codebooks=args.codebooks, codebook_size=args.codebook_size, seed=args.seed,
                                 quantizer=args.quantizer, frames_per_step=args.frames_per_step)
    codec = SpectralCodec.train_on_files(audio_files(args.audio), config, args.max_minutes)
    codec.save_pretrained(args.out)
    print(f"codec saved to {args.out}")
    return 0


def extend(args) -> int:
    codec = load_codec(args.codec)
    if not isinstance(codec, SpectralCodec):
        raise UniMoEError(f"only the built-in spectral codec can grow; {args.codec} holds a {codec.codec_type} codec")
    grown = codec.extended_on_files(audio_files(args.audio), args.codes, args.max_minutes)
    grown.save_pretrained(args.out)
    print(f"codec with {grown.codebook_size} codes per codebook ({codec.codebook_size} + {args.codes}) saved to {args.out}")
    return 0


def encode(args) -> int:
    codec = load_codec(args.codec)
    wave, rate = load_audio(args.input)
    codes = codec.encode(wave, rate)[0].numpy()  # [K, T]
    with atomic_path(args.output) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, codes)
    print(f"{args.output}: {codes.shape[0]} codebooks x {codes.shape[1]} frames")
    return 0


def decode(args) -> int:
    codec = load_codec(args.codec)
    try:
        codes = np.load(args.input)
    except (OSError, ValueError) as err:
        raise UniMoEError(f"cannot read codes from {args.input}: {err}") from None
    wave = codec.decode(torch.from_numpy(codes))
    if wave.shape[-1] == 0:
        raise UniMoEError(f"{args.input} holds {codes.shape[-1]} frame(s), which decode to no audio with this codec "
                          "(T frames span T - 1 hops); give at least 2 frames")
    save_audio(args.output, wave[0], codec.sample_rate)
    print(f"wrote {args.output}")
    return 0
