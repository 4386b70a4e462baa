"""The packages import only downward: each may import only from lower layers (peers never import
each other), so a reader can take the architecture from the folder names."""

import ast
from pathlib import Path

import unimoe_audio

LAYERS = [{"errors"}, {"io"}, {"codec", "moe", "video"}, {"data"}, {"model"}, {"train", "eval"}, {"workflows", "serve"},
          {"cli"}]
ROOT = Path(unimoe_audio.__file__).parent


def level(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found |= {n.split(".")[1] for n in names if n.startswith("unimoe_audio.")}
    return found


def test_every_package_imports_only_from_lower_layers():
    packages = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
                if p.suffix == ".py" and p.stem != "__init__" or (p / "__init__.py").is_file()}
    assert packages == set().union(*LAYERS), "a package is missing from LAYERS"
    upward = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts == ("__init__",):
            continue
        for other in imported_packages(path) - {parts[0]}:
            if level(other) >= level(parts[0]):
                upward.append(f"{path.relative_to(ROOT)} imports unimoe_audio.{other}")
    assert not upward, "\n".join(upward)
