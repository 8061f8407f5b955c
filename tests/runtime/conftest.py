"""The tiny model, built offline once per test session, and a server around it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localdev import infra
from presets.inference.engine import Engine, LoadOptions, load_engine


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from presets.tiny import build_tiny_model  # noqa: PLC0415

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def engine(tiny_model: Path) -> Iterator[Engine]:
    loaded = load_engine(LoadOptions(model=tiny_model, threads=1))
    yield loaded
    loaded.close()


class ServerThread:
    """uvicorn serving ``app`` on a free port in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn  # noqa: PLC0415

        self.port = infra.free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        infra.wait_for_port("127.0.0.1", self.port, 30, "the inference server")
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
