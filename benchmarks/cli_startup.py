"""How long `okv` commands take from start to exit, against `python -c pass` measured in
the same run (the interpreter's own start-up: what no change to okv can remove).

Each command runs `--rounds` times in a fresh process on a data directory a dev server
has prepared (no server needs to run: the commands read storage directly). Reported per
command: the median wall time and the median CPU time (user + system: less sensitive to
other work on a shared machine), and the CPU time as a multiple of the reference's.

    .venv/bin/python benchmarks/cli_startup.py [--rounds 7] [--src DIR]

`--src` runs another checkout's code (its `src` directory) for a before/after figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (
    ("--help",),
    ("vault", "list"),
    ("vault", "show", "dev"),
    ("principal", "list"),
    ("role", "list"),
)


def _prepared(data_dir: Path, env: dict[str, str]) -> None:
    """What `okv server --dev` does before serving (TLS files, dev vault, records)."""
    code = ("import sys; from pathlib import Path; from openkeyvault.config import Settings;"
            "from openkeyvault.cli.server import prepare;"
            "prepare(Settings(data_dir=Path(sys.argv[1]), port=18443))")
    subprocess.run([sys.executable, "-c", code, str(data_dir)], env=env, check=True,
                   capture_output=True, timeout=120)


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _median(argv: list[str], env: dict[str, str], rounds: int) -> tuple[float, float]:
    runs = [_once(argv, env) for _ in range(rounds)]
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--src", type=Path, help="run this source tree's openkeyvault")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 50))
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    with tempfile.TemporaryDirectory(prefix="okv-cli-bench-") as tmp:
        data = Path(tmp) / "data"
        _prepared(data, env)
        ref_wall, ref_cpu = _median([sys.executable, "-c", "pass"], env, rounds)
        print(f"reference (python -c pass): wall {ref_wall * 1000:.0f} ms, "
              f"cpu {ref_cpu * 1000:.0f} ms")
        for command in COMMANDS:
            argv = [sys.executable, "-m", "openkeyvault", *command]
            if command != ("--help",):
                argv += ["--data-dir", str(data)]
            wall, cpu = _median(argv, env, rounds)
            print(f"okv {' '.join(command):<20} wall {wall * 1000:5.0f} ms  "
                  f"cpu {cpu * 1000:5.0f} ms  ({cpu / ref_cpu:4.1f}x reference)")


if __name__ == "__main__":
    main()
