"""spiking-lm: spiking LLMs with multi-granularity phase coding, as an lm-eval plugin and a Lightning trainer."""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "spiking_lm_lmeval.pth"

#: The ranges CI tests (docs/DESIGN.md, "Dependency policy"): .ci/run runs the suite on constraints.txt,
#: then a smoke on the newest releases allowed here and one on every lower bound below
#: (scripts/smoke.sh). transformers and lm-eval are capped at the next major/minor series because we
#: subclass and wrap their internals; the rest have tested lower bounds only.
#: weight quantization (``weight_bits`` 8 / 4); optional: transformers imports torchao at every model load
#: when it is installed, and its CUDA extensions log load failures on CPU-only torch builds
QUANT = "torchao>=0.18,<0.19"
INSTALL_REQUIRES = [
    "torch>=2.13",
    "transformers>=5.0,<6",
    "lm-eval>=0.4.10,<0.5",
    "pytorch-lightning>=2.4",
    "torchmetrics>=1.4",
    "rich>=13",
    "jsonargparse[signatures]>=4.30",
    "safetensors>=0.4.3",
    "gguf>=0.10",
    "accelerate>=1.2",
    "matplotlib>=3.9",
]


class BuildPyWithImportHook(build_py):
    """Ship the .pth import hook at the root of site-packages (lm-eval 0.4.x has no plugin entry points)."""

    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        mapping[os.path.join(self.build_lib, PTH)] = PTH
        return mapping


class _StrategyWithImportHook:
    """Wraps setuptools' editable strategy to also write the .pth hook into the editable wheel."""

    def __init__(self, inner):
        self._inner = inner

    def __call__(self, wheel_obj, files, mapping):
        self._inner(wheel_obj, files, mapping)
        with open(PTH, "rb") as fh:
            wheel_obj.writestr(PTH, fh.read())

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


class EditableWheelWithImportHook(editable_wheel):
    """`pip install -e .` gets the same lm-eval import hook as a regular install."""

    def _select_strategy(self, *args, **kwargs):
        return _StrategyWithImportHook(super()._select_strategy(*args, **kwargs))


setup(
    name="spiking-lm",
    version="0.1.0",
    description="Convert LLaMA-family LLMs to spiking LLMs (multi-granularity phase coding) and evaluate them in lm-eval",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # tasks/ and configs/ live at the top level of the repo and install as data packages of the library
    packages=find_packages(include=["spiking_lm_plugin*", "lightning_modules*"])
    + ["spiking_lm_plugin.tasks", "spiking_lm_plugin.configs"],
    package_dir={"spiking_lm_plugin.tasks": "tasks", "spiking_lm_plugin.configs": "configs"},
    py_modules=["spiking_lm_lmeval_hook"],
    package_data={"spiking_lm_plugin.tasks": ["*.yaml", "*_yaml", "*.py"], "spiking_lm_plugin.configs": ["*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": ["pytest>=8", "pytest-timeout", QUANT], "quant": [QUANT],
                    "hadamard": ["fast-hadamard-transform"]},
    entry_points={
        "console_scripts": [
            "spiking-lm=spiking_lm_plugin.cli:main",
            "spiking-lm-train=lightning_modules.cli:main",
        ],
        # plugin discovery of lm-eval releases after 0.4.13; the .pth hook serves 0.4.x
        "lm_eval.models": ["spiking-hf=spiking_lm_plugin.lm_eval_model:SpikingHFLM"],
    },
    cmdclass={"build_py": BuildPyWithImportHook, "editable_wheel": EditableWheelWithImportHook},
)
