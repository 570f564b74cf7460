"""A checkpoint directory on disk (docs/DESIGN.md, "Checkpoint"): where one may be written, how it is
swapped into place, and how a reader tells that it is whole. Standard library only, so the command line
can refuse a bad ``--out`` or inspect a checkpoint without importing torch.

Writes never delete a file that is not part of a checkpoint, and an interrupted overwrite leaves the old
or the new checkpoint at the target, never neither: the new one is built in a hidden sibling directory
and exchanged with the old one in one ``renameat2(RENAME_EXCHANGE)`` call where the platform has it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Callable

FORMAT = "spiking-lm"
FORMAT_VERSION = 1
CONFIG_FILE = "spiking_config.json"
TENSORS_FILE = "neurons.safetensors"
CHECKPOINT_FILES = (CONFIG_FILE, TENSORS_FILE)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, too new, or made for another base model."""


class OutputPathError(ValueError):
    """A checkpoint cannot (or must not) be written at the requested path."""


def _tmp_prefix(directory: Path) -> str:
    return f".{directory.name}.tmp-"


def _old_path(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.old")


def is_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a spiking-lm checkpoint config."""
    try:
        return json.loads((directory / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _refuse_foreign(directory: Path) -> None:
    """Never write over a file, or into a non-empty directory that is not a checkpoint (the user's own)."""
    recover_interrupted(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputPathError(f"{directory} is a file, not a checkpoint directory; choose another path")
    if directory.is_dir() and any(directory.iterdir()) and not is_checkpoint(directory):
        raise OutputPathError(f"{directory} is a non-empty directory that is not a spiking-lm checkpoint; "
                              "refusing to write there (choose a new or empty directory)")


def check_output_path(directory: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse, before any work, a path that is a file, a non-empty directory that is not a checkpoint, an
    existing checkpoint without ``overwrite``, or a place that cannot be written."""
    directory = Path(directory)
    _refuse_foreign(directory)
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise OutputPathError(f"{directory} already holds a spiking-lm checkpoint; pass --overwrite to "
                              "replace it")
    where = _existing_ancestor(directory.parent)
    try:
        Path(tempfile.mkdtemp(prefix=_tmp_prefix(directory), dir=where)).rmdir()
    except OSError as exc:
        raise OutputPathError(f"cannot write a checkpoint at {directory}: {exc.strerror or exc} "
                              f"({where})") from None
    return directory


def recover_interrupted(directory: Path) -> None:
    """Put back an old checkpoint that an interrupted two-rename overwrite left only in ``.NAME.old``."""
    old = _old_path(directory)
    if not directory.exists() and old.is_dir() and is_checkpoint(old):
        os.replace(old, directory)


def _clean_stale(directory: Path) -> None:
    """Remove the hidden build and swap directories of earlier interrupted saves to ``directory``."""
    parent = directory.parent
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        if entry.is_dir() and (entry.name.startswith(_tmp_prefix(directory)) or entry == _old_path(directory)):
            shutil.rmtree(entry, ignore_errors=True)


def _apply_umask(tmp: Path) -> None:
    """Files as readable as any other file this process writes (mkdtemp and some writers use 0600/0700)."""
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)
    for name in CHECKPOINT_FILES:
        if (tmp / name).exists():
            (tmp / name).chmod(0o666 & ~mask)


def _link_extras(directory: Path, tmp: Path) -> None:
    """Hard-link (or copy) every non-checkpoint entry of ``directory`` into ``tmp``: nothing is lost."""
    for entry in directory.iterdir():
        if entry.name in CHECKPOINT_FILES:
            continue
        target = tmp / entry.name
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, target, symlinks=True, copy_function=os.link)
            else:
                os.link(entry, target, follow_symlinks=False)
        except OSError:
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, target, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, target, follow_symlinks=False)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where the platform cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace_with(directory: Path, tmp: Path) -> None:
    """Move the finished ``tmp`` to ``directory``, swapping out an existing checkpoint."""
    if not directory.exists():
        os.replace(tmp, directory)
        return
    _link_extras(directory, tmp)
    if _exchange(tmp, directory):
        shutil.rmtree(tmp, ignore_errors=True)        # tmp now holds the old checkpoint
        return
    old = _old_path(directory)                        # no exchange: two renames, recoverable in between
    os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def write_directory(directory: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a hidden sibling directory, then put it in place of ``directory``."""
    directory = Path(directory)
    _refuse_foreign(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(directory)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(directory), dir=directory.parent))
    try:
        write(tmp)
        _apply_umask(tmp)
        _replace_with(directory, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def file_digest(path: Path) -> dict:
    """Size and sha256 of a file, as recorded in the checkpoint config."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def read_meta(directory: str | os.PathLike) -> dict:
    """The checkpoint config, after checking that it is one and not from a newer spiking-lm."""
    directory = Path(directory)
    recover_interrupted(directory)
    if not directory.is_dir():
        raise CheckpointError(f"spiking checkpoint {str(directory)!r} does not exist (expected a directory "
                              f"with {CONFIG_FILE} and {TENSORS_FILE}, as written by `spiking-lm convert`)")
    cfg = directory / CONFIG_FILE
    if not cfg.is_file():
        raise CheckpointError(f"{directory} is not a spiking checkpoint: {CONFIG_FILE} is missing")
    try:
        meta = json.loads(cfg.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{cfg} is corrupt (not valid JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("format_version"), int):
        raise CheckpointError(f"{cfg} is not a spiking-lm checkpoint config")
    if meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{directory} has format version {meta['format_version']}, newer than this "
                              f"spiking-lm supports ({FORMAT_VERSION}); upgrade spiking-lm")
    return meta


def _safetensors_extent(path: Path) -> int:
    """The byte length a safetensors file must have according to its own header."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated ({len(head)} bytes)")
        (size,) = struct.unpack("<Q", head)
        try:
            header = json.loads(fh.read(size))
        except ValueError:
            raise CheckpointError(f"{path} is corrupt (its header is not valid JSON)") from None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + size + max(ends, default=0)


def verify_tensors(directory: str | os.PathLike, meta: dict) -> None:
    """Check that the tensor file is whole: the size and sha256 recorded at save, or (older checkpoints)
    the extent its own header declares."""
    path = Path(directory) / TENSORS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    actual = path.stat().st_size
    recorded = meta.get("tensors")
    if recorded:
        if actual != recorded["bytes"]:
            raise CheckpointError(f"{path} is truncated or padded: {actual:,} bytes, {recorded['bytes']:,} "
                                  "were written")
        if file_digest(path)["sha256"] != recorded["sha256"]:
            raise CheckpointError(f"{path} is corrupt: its sha256 differs from the one recorded at save")
        return
    expected = _safetensors_extent(path)
    if actual != expected:
        raise CheckpointError(f"{path} is truncated or corrupt: {actual:,} bytes, its header declares "
                              f"{expected:,}")
