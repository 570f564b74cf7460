"""Offline assets: fetched with pip, sha256-checked, cached atomically, corruption detected."""


import pytest

from spiking_lm_plugin import assets


def test_text_assets_are_real_and_split_disjointly():
    calib = assets.text_documents("enwiki-excerpt", "calibration")
    evaluation = assets.text_documents("enwiki-excerpt", "evaluation")
    assert len(calib) > 30 and len(evaluation) > 30
    assert not {d["title"] for d in calib} & {d["title"] for d in evaluation}
    words = sum(len(d["text"].split()) for d in calib + evaluation)
    assert words > 300_000
    text = evaluation[0]["text"]
    assert "{{" not in text and "[[" not in text and "<ref" not in text
    assert len(assets.text_documents("botchan")) > 50


def test_corrupted_cache_entry_is_detected_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKING_LM_CACHE", str(tmp_path))
    docs = assets.text_documents("botchan")
    entry = tmp_path / "text" / "botchan" / "documents.jsonl"
    original = entry.read_bytes()
    entry.write_bytes(original[: len(original) // 2])          # a truncated file
    assert assets.text_documents("botchan") == docs
    assert entry.read_bytes() == original
    (tmp_path / "text" / "botchan" / ".complete.json").unlink()   # an unfinished entry
    assert assets.text_documents("botchan") == docs


def test_checksum_mismatch_is_refused(tmp_path):
    bad = assets.Archive(assets.BOTCHAN.requirement, assets.BOTCHAN.member, "0" * 64,
                         assets.BOTCHAN.archive_sha256, sdist=True)
    with pytest.raises(assets.AssetError, match="sha256 mismatch"):
        assets.fetch_member(bad, tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


def test_download_failure_is_clear(tmp_path):
    missing = assets.Archive("spiking-lm-no-such-package-xyz==0.0.1", "x", "")
    with pytest.raises(assets.AssetError, match="pip could not download"):
        assets.fetch_member(missing, tmp_path / "x")


def test_paths_and_hub_ids_pass_through(tmp_path):
    assert assets.resolve_model(str(tmp_path)) == str(tmp_path)
    assert assets.resolve_model("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"
    with pytest.raises(ValueError, match="unknown text asset"):
        assets.text_documents("wikitext-103")


def test_clean_wikitext():
    raw = "'''Anarchism''' is a {{lang|en|political}} [[philosophy|theory]].<ref>cite</ref>\n[[Category:X]]\n== History ==\nText."
    assert assets.clean_wikitext(raw) == "Anarchism is a  theory.\nHistory\nText."
