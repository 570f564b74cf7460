"""Architecture rules that keep the code base carriable (docs/DESIGN.md, "Structure")."""

import ast
from pathlib import Path

import pytest

import spiking_lm_plugin as slm

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spiking_lm_plugin", "lightning_modules")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every project module ``path`` imports, at module level or inside functions (type-checking-only
    imports are not imports at run time)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                   for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # an import of a package's name resolves to its __init__; of a module to that module
        graph[name] = {m for m in _imports(path, name) if m in files and m != name}
    return graph


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    # package __init__ files only re-export lazily; an edge into one stands for "some module below it"
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_module_sets_the_global_seed_or_process_wide_torch_settings():
    offenders = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text()
            for needle in ("torch.manual_seed(", "_dynamo.config.", "torch.set_default_dtype(", "set_num_threads("):
                if needle in text:
                    offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders


def test_the_kernels_leave_dynamos_settings_as_they_were():
    import torch

    from spiking_lm_plugin.neurons.kernels import site_code

    config = torch._dynamo.config
    key = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    before = getattr(config, key)
    x = torch.randn(3, 4)
    site_code(x, torch.ones(4), torch.full((4,), 0.5), torch.full((4,), 0.5), torch.full((4,), 0.5),
              torch.zeros(()), 2, None)
    assert getattr(config, key) == before


def test_the_runtime_container_restores_mode_and_meter_on_exit():
    runtime = slm.SpikingRuntime(mode="fused")
    meter = slm.EnergyMeter()
    with pytest.raises(RuntimeError):
        with runtime.use(mode="timestep", meter=meter):
            assert runtime.mode == "timestep" and runtime.meter is meter
            raise RuntimeError("inside")
    assert runtime.mode == "fused" and runtime.meter is None
    with pytest.raises(ValueError, match="unknown execution mode"):
        with runtime.use(mode="spiky"):
            pass
    assert runtime.mode == "fused"


def test_recipe_defaults_live_only_in_the_dataclasses():
    """No front end repeats a recipe default: the convert parser's defaults come from SpikingConfig."""
    from spiking_lm_plugin.cli import build_parser
    from spiking_lm_plugin.recipe_flags import recipe_from_args

    assert recipe_from_args(build_parser().parse_args(["convert", "--out", "x"])) == slm.SpikingConfig()
    from lightning_modules import ActivationDataModule, NeuronFitModule

    assert NeuronFitModule().spiking == ActivationDataModule().config == slm.SpikingConfig()
    for path in list((ROOT / "configs").glob("*.yaml")):
        text = path.read_text()
        for field in ("search_steps: 60", "threshold_steps: 40", "tau_headroom: 1.5", "rounds: 4"):
            assert field not in text, f"{path.name} repeats the default {field}"


def test_the_wrappers_emit_events_and_only_the_cost_model_prices_them():
    """Compute separate from counting: no wrapper imports the cost model or names a MAC/AC field."""
    offenders = []
    for path in (ROOT / "spiking_lm_plugin" / "modules").rglob("*.py"):
        text = path.read_text()
        if "cost_model" in text or "NONLINEAR_MACS" in text or "mac=" in text or "ac=" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
