"""Safe by default: the user's files survive, every refusal is one line before any model loads, a
checkpoint is verified whole, an interrupted overwrite leaves a loadable checkpoint, the import hook and
the command line start cheap."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import spiking_lm_plugin as slm
from spiking_lm_plugin import checkpoint_files

from .helpers import random_windows, tiny_config, tiny_model

CLI = str(Path(sys.executable).with_name("spiking-lm"))
REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess, expected: str) -> None:
    assert proc.returncode == 2, (proc.stdout[-500:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], lines


@pytest.fixture(scope="module")
def model():
    m = tiny_model()
    slm.convert(m, tiny_config(), calibration=random_windows(256), show_progress=False)
    return m


def test_out_refuses_a_users_folder_and_a_file_and_keeps_them(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    one_line_error(cli("convert", "--model", "no-such-model", "--out", str(mine)), "not a spiking-lm checkpoint")
    one_line_error(cli("convert", "--model", "no-such-model", "--out", str(mine), "--overwrite"),
                   "not a spiking-lm checkpoint")
    assert (mine / "notes.txt").read_text() == "precious"
    afile = tmp_path / "afile"
    afile.write_text("data")
    one_line_error(cli("convert", "--model", "no-such-model", "--out", str(afile)), "is a file")
    assert afile.read_text() == "data" and not list(tmp_path.glob(".afile*"))


def test_unwritable_out_fails_before_the_model_loads(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory would have to be")
    # the model does not exist either: the output check must come first
    one_line_error(cli("convert", "--model", "no-such-model", "--out", str(blocker / "ckpt")),
                   "cannot write a checkpoint")


def test_overwrite_needs_the_flag_and_keeps_other_files(tmp_path, model):
    out = slm.save(model, tmp_path / "ckpt")
    (out / "README.txt").write_text("my notes on this run")
    (out / "plots").mkdir()
    (out / "plots" / "loss.png").write_bytes(b"png")
    one_line_error(cli("convert", "--model", "no-such-model", "--out", str(out)), "pass --overwrite")
    slm.save(model, out)                          # the Python API replaces a checkpoint in place
    assert (out / "README.txt").read_text() == "my notes on this run"
    assert (out / "plots" / "loss.png").read_bytes() == b"png"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    slm.load(tiny_model(), out)


def test_files_respect_the_umask(tmp_path, model):
    previous = os.umask(0o022)
    try:
        out = slm.save(model, tmp_path / "ckpt")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {"neurons.safetensors": 0o644, "spiking_config.json": 0o644}
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_info_and_load_refuse_a_truncated_tensor_file(tmp_path, model):
    out = slm.save(model, tmp_path / "ckpt")
    assert cli("info", str(out)).returncode == 0
    tensors = out / "neurons.safetensors"
    data = tensors.read_bytes()
    tensors.write_bytes(data[:-16])
    one_line_error(cli("info", str(out)), "is truncated")
    with pytest.raises(slm.CheckpointError, match="is truncated"):
        slm.load(tiny_model(), out)
    tensors.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))      # same size, one bit flipped
    one_line_error(cli("info", str(out)), "sha256")


def test_an_interrupted_overwrite_leaves_a_loadable_checkpoint(tmp_path, model, monkeypatch):
    out = slm.save(model, tmp_path / "ckpt")
    original = checkpoint_files._replace_with

    def killed_before_the_swap(directory, tmp):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_files, "_replace_with", killed_before_the_swap)
    with pytest.raises(KeyboardInterrupt):
        slm.save(model, out)
    slm.load(tiny_model(), out)
    # the platform without an atomic exchange: killed between its two renames
    monkeypatch.setattr(checkpoint_files, "_replace_with", original)
    monkeypatch.setattr(checkpoint_files, "_exchange", lambda a, b: False)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_files.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        slm.save(model, out)
    monkeypatch.setattr(checkpoint_files.os, "replace", real_replace)
    assert not out.exists()                         # the moment of the kill: only the hidden copies
    slm.load(tiny_model(), out)                     # reading recovers the old checkpoint
    slm.save(model, out)                            # and the next save cleans every hidden leftover
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_grains_and_allocation_must_agree():
    with pytest.raises(ValueError, match="has 3 grains but grains=2"):
        slm.SpikingConfig(timesteps=8, grains=2, allocation=(2, 2, 4))
    assert slm.SpikingConfig(timesteps=8, grains=3, allocation=(2, 2, 4)).allocation == (2, 2, 4)
    one_line_error(cli("convert", "--out", "unused", "--grains", "2", "--allocation", "2,2,4"),
                   "has 3 grains but grains=2")


def test_an_empty_model_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(cli("convert", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "ckpt")),
                   "folder without config.json")


def test_the_import_hook_imports_nothing():
    """The .pth hook runs at every interpreter start: it must not import a single module."""
    code = ("import sys; before = set(sys.modules); import spiking_lm_lmeval_hook; "
            "print(sorted(set(sys.modules) - before - {'spiking_lm_lmeval_hook'}))")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_help_tasks_dir_and_argument_errors_do_not_import_torch():
    """What keeps them fast (their time is a bench row): the command line imports torch only to work."""
    code = ("import sys; from spiking_lm_plugin.cli import main\n"
            "for argv in (['tasks-dir'], ['convert', '--out', 'x', '-T', '0'], ['convert', '--out', 'x', "
            "'--grains', '2', '--allocation', '2,2,4']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stderr[-2000:]
    assert shutil.which(CLI) or Path(CLI).is_file()
