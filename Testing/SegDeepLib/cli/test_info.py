"""``segdeep info``: versions, devices, CRF backends and the CRF block-cache cap."""

from __future__ import annotations

import json

from SegDeepLib.cli.main import main


def test_info_json_lists_crf_backends_and_cache_limit(capsys, monkeypatch):
    monkeypatch.setenv("SEGDEEP_CRF_CACHE_MB", "123")
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"exact", "torch"} <= set(info["crf_backends"])
    assert info["crf_cache_limit_mb"] == 123.0
    assert info["torch"] and info["cpu_threads"] >= 1
