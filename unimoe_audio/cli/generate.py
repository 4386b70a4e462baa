"""`unimoe-audio generate`: speech (tts, clone) or music from a trained model directory."""

from __future__ import annotations

import time
from pathlib import Path

from unimoe_audio.codec import save_audio
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import GenerationConfig, UniMoEAudio


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate speech or music with a trained model")
    p.add_argument("--model", type=Path, required=True, help="model directory (save_pretrained output)")
    p.add_argument("--task", choices=("tts", "clone", "music"), required=True)
    p.add_argument("--text", default="", help="what to say (tts, clone)")
    p.add_argument("--language", choices=("en", "zh"), default="en")
    p.add_argument("--speaker", help="built-in speaker (tts); see --list-speakers")
    p.add_argument("--prompt-audio", type=Path, help="voice to clone (clone)")
    p.add_argument("--prompt-text", default="", help="transcript of --prompt-audio (clone)")
    p.add_argument("--caption", default="", help="music description (music)")
    p.add_argument("--duration", type=float, default=10.0, help="music length in seconds")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: 1 speech, 3 music)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=45)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--moe-top-p", type=float, help="inference-time Top-P for the MoE routers (speed/quality)")
    p.add_argument("--seed", type=int)
    p.add_argument("--list-speakers", action="store_true", help="print the model's built-in speakers and exit")
    p.add_argument("-o", "--output", type=Path, help="output .wav")
    p.set_defaults(func=run)


def run(args) -> int:
    api = UniMoEAudio.from_pretrained(args.model)
    if args.list_speakers:
        print("\n".join(api.speakers))
        return 0
    if args.output is None:
        raise UniMoEError("give -o/--output FILE.wav")
    fps = api.codec.frame_rate
    if args.task == "music":
        frames = max(1, round(args.duration * fps))
        limits = dict(max_frames=frames, min_frames=frames)
    else:
        if not args.text.strip():
            raise UniMoEError("--text is required for speech")
        limits = dict(max_frames=api.speech_budget(args.text, args.language))
    config = GenerationConfig(**limits, guidance_scale=args.guidance, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed, moe_top_p=args.moe_top_p)
    start = time.perf_counter()
    if args.task == "music":
        wave, rate = api.music(args.caption, args.duration, config=config, progress=True)
    elif args.task == "tts":
        if not args.speaker:
            raise UniMoEError("--speaker is required for tts (see --list-speakers)")
        wave, rate = api.tts(args.text, args.language, speaker=args.speaker, config=config, progress=True)
    else:
        if args.prompt_audio is None or not args.prompt_text:
            raise UniMoEError("clone needs --prompt-audio and --prompt-text")
        wave, rate = api.tts(args.text, args.language, prompt_audio=args.prompt_audio, prompt_text=args.prompt_text,
                             config=config, progress=True)
    elapsed = time.perf_counter() - start
    save_audio(args.output, wave, rate)
    seconds = len(wave) / rate
    print(f"wrote {args.output} ({seconds:.2f} s of audio in {elapsed:.2f} s, real-time factor {elapsed / max(seconds, 1e-9):.2f})")
    return 0
