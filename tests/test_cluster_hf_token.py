"""cluster.yaml hands the Hugging Face token to every node owner-only (issue 27.6), the pattern of
the Ray token: the gated cost model of table3 is fetched by the trial's driver on a node."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "~/.cache/huggingface/token"


def test_the_token_file_is_mounted_on_every_node_and_kept_owner_only():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert config["file_mounts"].get(TOKEN) == TOKEN  # the path only: the secret stays in the file
    setup = " ".join(config["setup_commands"])
    assert f"chmod 600 {TOKEN}" in setup


def test_docs_say_how_to_create_it():
    docs = (ROOT / "docs" / "cluster.md").read_text()
    assert TOKEN in docs and "chmod 600" in docs and "Gated cost models" in docs
