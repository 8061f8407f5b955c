"""Reading Kubernetes manifests the way kubectl does: one file, or stdin for ``-``, with any
number of YAML documents. Shared by ``kaiten validate`` and ``kaiten plan``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


def read_documents(path: Path) -> list[dict[str, Any]]:
    """The mapping documents of ``path`` (``-``: stdin), in order; other documents are skipped.
    Raises OSError, UnicodeDecodeError or yaml.YAMLError."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]
