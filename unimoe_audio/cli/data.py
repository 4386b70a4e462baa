"""`unimoe-audio data build|encode`: make the offline corpus and its codec tokens."""

from __future__ import annotations

import os
from pathlib import Path

from unimoe_audio.codec import load_codec
from unimoe_audio.data import encode_corpus
from unimoe_audio.data.build import SIZES, build
from unimoe_audio.eval.ceiling import judge_report
from unimoe_audio.data.folder import import_folder


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="build the offline speech + music corpus; encode it to codec tokens")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="synthesize speech (flite/festival/espeak-ng) and render music (music21 + FluidSynth)")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--size", choices=sorted(SIZES), default="tiny")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    b.add_argument("--extra-voices", action="store_true",
                   help="add the RHVoice, MBROLA and Pico English voices (Debian contrib/non-free; see the README)")
    b.set_defaults(func=run_build)
    i = sub.add_parser("import", help="a folder of audio files with same-named .txt transcripts or captions -> manifests")
    i.add_argument("--folder", type=Path, required=True, help="audio files (sub-folders = speakers) with .txt beside them")
    i.add_argument("--out", type=Path, required=True, help="corpus folder for the manifests and report")
    i.add_argument("--task", choices=("tts", "t2m", "v2m"), required=True,
                   help="tts: .txt are transcripts; t2m: captions; v2m: video files, each with its audio and .txt caption")
    i.add_argument("--language", choices=("en", "zh"), help="language of the speech (tts)")
    i.add_argument("--held-out", type=float, default=0.1, help="share of items in validation and in test (each)")
    i.add_argument("--seed", type=int, default=0)
    i.set_defaults(func=run_import)
    e = sub.add_parser("encode", help="encode every split with a codec into <corpus>/tokens/")
    e.add_argument("--corpus", type=Path, required=True)
    e.add_argument("--codec", type=Path, required=True)
    e.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    e.set_defaults(func=run_encode)


def run_build(args) -> int:
    build(args.out, args.size, args.seed, args.workers, extra_voices=args.extra_voices)
    report = judge_report(args.out, SIZES[args.size].judged)  # the judges' ceiling, in the report
    print(f"{report['items']} items, hours {report['hours']}, speakers {report['speakers']}, "
          f"{len(report['skipped'])} skipped; report: {args.out / 'report.md'}")
    return 0


def run_import(args) -> int:
    report = import_folder(args.folder, args.out, args.task, args.language, args.held_out, args.seed)
    print(f"{report['items']} items, hours {report['hours']}, {len(report['skipped'])} skipped; "
          f"report: {args.out / 'report.md'}")
    return 0


def run_encode(args) -> int:
    counts = encode_corpus(args.corpus, load_codec(args.codec), workers=args.workers)
    print(f"encoded {counts} into {args.corpus / 'tokens'}")
    return 0
