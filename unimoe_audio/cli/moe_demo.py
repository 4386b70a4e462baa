"""`unimoe-audio moe-demo`: route random tokens through a DCMoE layer and report the routing."""

from __future__ import annotations

from pathlib import Path

import torch

from unimoe_audio.io import write_json
from unimoe_audio.moe import DCMoE, DCMoEConfig, RoutingStats


def register(subparsers) -> None:
    p = subparsers.add_parser("moe-demo", help="route random tokens through a DCMoE layer; print and plot the statistics")
    p.add_argument("--hidden-size", type=int, default=512, help="model width (paper: 2048; default scaled by 1/4)")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--layers", type=int, default=4, help="independent layers to route through (one plot bar each)")
    p.add_argument("--top-p", type=float, default=DCMoEConfig.top_p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/moe-demo"))
    p.set_defaults(func=run)


def run(args) -> int:
    torch.manual_seed(args.seed)
    scale = args.hidden_size / DCMoEConfig.hidden_size  # keep the paper's proportions
    config = DCMoEConfig(
        hidden_size=args.hidden_size,
        routed_size=max(1, round(DCMoEConfig.routed_size * scale)),
        shared_size=max(1, round(DCMoEConfig.shared_size * scale)),
        top_p=args.top_p,
    )
    stats = RoutingStats()
    x = torch.randn(args.tokens, args.hidden_size)
    with torch.no_grad():
        for layer_idx in range(args.layers):
            layer = DCMoE(config).eval()
            out = layer(x)
            stats.update(layer_idx, out.expert_mask, config.num_routed)
            x = x + out.hidden_states
    report = stats.to_dict()
    print(f"DCMoE: {config.num_routed} routed x {config.routed_size}, {config.num_null} null, "
          f"{config.num_shared} shared x {config.shared_size}, hidden {config.hidden_size}, top_p {config.top_p}")
    print(f"{'layer':>5}  {'mean experts':>12}  {'null rate':>9}  experts-per-token histogram (0..{config.num_routed})")
    for layer, entry in report["layers"].items():
        s = entry["all"]
        hist = " ".join(f"{h:.2f}" for h in s["experts_per_token_hist"])
        print(f"{layer:>5}  {s['mean_experts']:>12.2f}  {s['null_rate']:>9.2f}  {hist}")
        print(f"{'':>5}  per-expert load: " + " ".join(f"{v:.2f}" for v in s["expert_load"]))
    write_json(args.out / "routing.json", {"config": config.to_dict(), **report})
    png = stats.plot(args.out / "routing.png")
    print(f"wrote {args.out / 'routing.json'} and {png}")
    return 0
