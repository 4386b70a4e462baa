"""`unimoe-audio serve`: the HTTP API of `unimoe_audio.serve` on uvicorn, with the web page at `/`;
`unimoe-audio demo`: the web page alone (README, "Serving")."""

from __future__ import annotations

from pathlib import Path

from unimoe_audio.model import DEFAULT_MODEL

SHUTDOWN_SECONDS = 30  # on Ctrl-C / SIGTERM in-flight requests get this long to finish, then are cancelled
COMMANDS = {  # name: (help, default port)
    "serve": ("serve the model over HTTP (OpenAI-compatible speech API, music, cloning) and the web page at /", 8000),
    "demo": ("the web page alone (Gradio): speech, voice cloning and music in a browser", 7860),
}


def register(subparsers) -> None:
    for command, (help_, port) in COMMANDS.items():
        p = subparsers.add_parser(command, help=help_)
        p.add_argument("--model", type=Path, default=Path(DEFAULT_MODEL),
                       help="model directory (save_pretrained output, a released checkpoint folder or a converted one); "
                            f"default: the shipped model, {DEFAULT_MODEL!r}")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=port)
        p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
        p.add_argument("--batch-wait-ms", type=float, default=10.0,
                       help="how long a request waits for others to share its batch (default 10)")
        p.add_argument("--queue-size", type=int, default=64, help="waiting requests before 429 (default 64)")
        p.add_argument("--max-text", type=int, default=1000, help="characters of input, prompt_text or caption")
        p.add_argument("--max-duration", type=float, default=30.0, help="seconds of music")
        p.add_argument("--max-upload-mb", type=float, default=10.0, help="size of a voice prompt upload")
        p.set_defaults(func=run)


def run(args) -> int:
    import uvicorn

    from unimoe_audio.errors import UniMoEError
    from unimoe_audio.model import UniMoEAudio
    from unimoe_audio.serve import Limits, ServeSettings, create_app
    from unimoe_audio.serve.webui import create_demo_app

    if args.max_batch < 1 or args.queue_size < 1 or args.batch_wait_ms < 0:
        raise UniMoEError("need --max-batch >= 1, --queue-size >= 1 and --batch-wait-ms >= 0")
    api = UniMoEAudio.from_pretrained(args.model)
    limits = Limits(max_text_chars=args.max_text, max_duration=args.max_duration,
                    max_upload_bytes=int(args.max_upload_mb * 2 ** 20))
    settings = ServeSettings(max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, queue_size=args.queue_size,
                             limits=limits)
    url = f"http://{args.host}:{args.port}"
    if args.command == "demo":
        app = create_demo_app(api, settings)
        print(f"serving the web page for {args.model} on {url}", flush=True)
    else:
        app = create_app(api, settings, name=Path(args.model).name)
        print(f"serving {args.model} on {url} (web page at /, API docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, timeout_graceful_shutdown=SHUTDOWN_SECONDS, log_level="info")
    return 0
