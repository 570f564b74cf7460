"""The ANN baseline from a config alone (meta device, no weights) under both conventions, against the
paper's published LLaMA-3-8B rows (Table 3: 3912.08 G MACs, 18.00 J; Table 14: read/write 38.47 J).
    python bench/energy_baseline.py
"""

from __future__ import annotations

import argparse
from spiking_lm_plugin.baseline_energy import ann_baseline

from _common import write

CONFIGS = {"LLaMA-3-8B": "tests/data/llama3_8b_config.json", "SmolLM2-135M": "smollm2-135m"}
PUBLISHED = {"LLaMA-3-8B": {"mac_g": 3912.08, "energy_j": 18.00, "read_write_j": 38.47}}


def main() -> None:
    rows = []
    for name, source in CONFIGS.items():
        for convention in ("ours", "paper"):
            r = ann_baseline(source, 512, convention)
            rows.append({"model": name, "convention": convention, "MAC (G)": r["mac_g"], "MAC & AC (J)": r["energy_j"],
                         "read/write (J)": r["read_write_j"], "total (J)": r["total_j"]})
            print(rows[-1], flush=True)
        if name in PUBLISHED:
            p = PUBLISHED[name]
            rows.append({"model": name, "convention": "published (paper)", "MAC (G)": p["mac_g"],
                         "MAC & AC (J)": p["energy_j"], "read/write (J)": p["read_write_j"],
                         "total (J)": p["energy_j"] + p["read_write_j"]})
    write("energy_baseline", rows, {"sample_tokens": 512})


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()   # --help explains; no options
    main()
