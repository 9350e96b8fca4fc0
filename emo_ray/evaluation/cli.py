"""``emo-ray-eval``: the same as ``emo-ray eval`` (kept for existing scripts).

    emo-ray-eval configs/eval/quick.yaml model=smollm2-135m
    emo-ray-eval --print-config configs/eval/quick.yaml icl.num_items=10   # = emo-ray show-config --kind eval
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from emo_ray.cli import main as emo_ray

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--print-config" in argv:
        argv.remove("--print-config")
        return emo_ray(["show-config", "--kind", "eval", *argv])
    return emo_ray(["eval", *argv])


if __name__ == "__main__":
    sys.exit(main())
