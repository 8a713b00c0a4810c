"""The docs site builds with mkdocs --strict, and its recipe reference is the validator's schema."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "src" / "ipex_aot" / "resources" / "recipe.schema.json"


def _mkdocs(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, cwd=root, env=env)


def test_site_builds_strict_with_every_recipe_key(tmp_path):
    proc = _mkdocs(REPO, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "site" / "recipe-reference" / "index.html").read_text(encoding="utf-8")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    for key, node in schema["properties"].items():
        assert f"<code>{key}</code>" in page
        for sub in node.get("properties", {}):
            assert f"<code>{key}.{sub}</code>" in page
    assert "<!-- recipe-schema -->" not in page


def test_a_broken_link_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copytree(REPO / "src" / "ipex_aot" / "resources", copy / "src" / "ipex_aot" / "resources")
    index = copy / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + "\nSee [the missing page](no-such-page.md).\n",
                     encoding="utf-8")
    proc = _mkdocs(copy, tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stderr
