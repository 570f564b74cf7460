"""Start-up cost of what runs before any work: the .pth import hook at every interpreter start
(``python -X importtime -c pass``) and ``spiking-lm --help`` / ``tasks-dir`` / an argument error.
Median of repeated runs, as ratios to a bare ``python -c pass`` on the same machine.
    python bench/startup.py   ->  bench/results/startup.{json,md}"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 7
CLI = str(Path(sys.executable).with_name("spiking-lm"))


def wall(cmd: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hook_import_us() -> float:
    """The hook's cumulative import time as Python itself reports it."""
    values = []
    for _ in range(RUNS):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True).stderr
        match = re.search(r"\|\s*(\d+)\s*\|\s*spiking_lm_lmeval_hook", err)
        values.append(float(match.group(1)) if match else float("nan"))
    return statistics.median(values)


def main() -> None:
    bare = wall([sys.executable, "-S", "-c", "pass"])
    rows = [
        ("python -X importtime -c pass: the hook's import (ms)", hook_import_us() / 1000, None),
        ("python -c pass (s)", wall([sys.executable, "-c", "pass"]), bare),
        ("spiking-lm --help (s)", wall([CLI, "--help"]), bare),
        ("spiking-lm tasks-dir (s)", wall([CLI, "tasks-dir"]), bare),
        ("spiking-lm convert --out x -T 0 (argument error) (s)", wall([CLI, "convert", "--out", "x", "-T", "0"]), bare),
        ("spiking-lm convert ... --grains 2 --allocation 2,2,4 (recipe error) (s)",
         wall([CLI, "convert", "--out", "x", "--grains", "2", "--allocation", "2,2,4"]), bare),
    ]
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python bench/startup.py", "machine": f"{platform.machine()}, {platform.python_version()}",
            "runs": RUNS, "bare_python_s": bare}
    (out / "startup.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["| what | median | x bare `python -S -c pass` |", "|---|---|---|"]
    lines += [f"| {name} | {value:.3f} | {'' if ref is None else f'{value / ref:.1f}x'} |" for name, value, ref in rows]
    lines.append(f"\n`{meta['command']}`, {RUNS} runs each, {meta['machine']}.")
    (out / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()   # --help explains; no options
    main()
