"""Print a pip constraints file pinning every requirement of setup.py to its declared lower bound
(stdlib only: it runs in a bare venv before anything is installed)."""

import ast
import re
from pathlib import Path

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*(.*)$")


def install_requires(setup_py: Path) -> list[str]:
    for node in ast.walk(ast.parse(setup_py.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "INSTALL_REQUIRES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"no INSTALL_REQUIRES list in {setup_py}")


def lower_bound(requirement: str) -> tuple[str, str | None]:
    match = REQUIREMENT.match(requirement)
    if match is None:
        raise SystemExit(f"cannot read requirement {requirement!r}")
    name, specifiers = match.groups()
    floors = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip().startswith(">=")]
    return name, floors[0] if floors else None


def main() -> None:
    for line in install_requires(Path(__file__).resolve().parents[1] / "setup.py"):
        name, floor = lower_bound(line)
        if name != "torch" and floor:          # torch: the lock's build, installed beforehand
            print(f"{name}=={floor}")


if __name__ == "__main__":
    main()
