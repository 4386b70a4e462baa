"""`unimoe-audio generate`: speech (tts, clone), music or music for a video (v2m) from the shipped model,
a trained model directory or a released checkpoint folder (which defaults to the released prompts and decoding)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from unimoe_audio.codec import save_audio
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import DEFAULT_MODEL, GenerationConfig, UniMoEAudio
from unimoe_audio.model.generate import OUTPUTS


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate speech or music with a trained model")
    p.add_argument("--model", type=Path, default=Path(DEFAULT_MODEL),
                   help="model directory (save_pretrained output, a released checkpoint folder or a converted one); "
                        f"default: the shipped model, {DEFAULT_MODEL!r}")
    p.add_argument("--task", choices=("tts", "clone", "music", "v2m"), required=True)
    p.add_argument("--text", default="", help="what to say (tts, clone)")
    p.add_argument("--language", choices=("en", "zh"), default="en")
    p.add_argument("--speaker", help="built-in speaker (tts); see --list-speakers")
    p.add_argument("--prompt-audio", type=Path, help="voice to clone (clone)")
    p.add_argument("--prompt-text", default="", help="transcript of --prompt-audio (clone)")
    p.add_argument("--caption", default="", help="music description (music; optional for v2m)")
    p.add_argument("--video", type=Path, help="the video to make music for (v2m; any format FFmpeg reads)")
    p.add_argument("--video-fps", type=float,
                   help="frames per second read from --video (released checkpoints, default 1; a project model "
                        "reads at its own rate)")
    p.add_argument("--duration", type=float,
                   help="music length in seconds (default 10, v2m: the video's; released checkpoints' music: until EOS, "
                        "2 to 19.6 s)")
    p.add_argument("--guidance", type=float,
                   help="classifier-free guidance scale (default: 1 speech; music 3, released checkpoints 10)")
    p.add_argument("--temperature", type=float, help="default 1.0")
    p.add_argument("--top-k", type=int, help="default 45")
    p.add_argument("--top-p", type=float, help="default 1.0")
    p.add_argument("--decoding", choices=("project", "released"),
                   help="sampling and EOS rule (default: released for released checkpoints)")
    p.add_argument("--eos-factor", type=float, help="EOS logit factor, released decoding (default 0.6 music, 1 speech)")
    p.add_argument("--moe-top-p", type=float, help="inference-time Top-P for the MoE routers (speed/quality)")
    p.add_argument("--seed", type=int)
    p.add_argument("--audio-from", choices=OUTPUTS,
                   help="decode the sampled codes, or the model's expected codec frames, its mean prediction (spectral-"
                        "codec models; GenerationConfig.output; default: the model's own, else codes)")
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
    if args.task in ("tts", "clone") and not args.text.strip():
        raise UniMoEError("--text is required for speech")
    if (args.task == "v2m") != (args.video is not None):
        raise UniMoEError("--task v2m needs --video clip.mp4" if args.task == "v2m" else "--video is for --task v2m")
    if args.video_fps is not None and args.video is None:
        raise UniMoEError("--video-fps is for --task v2m --video")
    task = {"music": "t2m", "tts": "tts", "clone": "clone", "v2m": "v2m"}[args.task]
    config: GenerationConfig = api.default_config(task, args.text, args.language, args.duration)
    given = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, decoding=args.decoding,
                 eos_logit_factor=args.eos_factor)
    config = replace(config, **{k: v for k, v in given.items() if v is not None}, guidance_scale=args.guidance,
                     seed=args.seed, moe_top_p=args.moe_top_p, output=args.audio_from or config.output)
    start = time.perf_counter()
    if args.task in ("music", "v2m"):
        wave, rate = api.music(args.caption, args.duration, config=config, progress=True, video=args.video,
                               video_fps=args.video_fps)
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
