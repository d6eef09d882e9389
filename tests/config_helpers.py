"""Shared by the config tests (test_config.py, test_config_errors.py): a YAML file to load."""

from __future__ import annotations

from pathlib import Path


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path
