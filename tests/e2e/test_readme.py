"""The README's walkthrough, run as written: the commands of its ``bash`` block after the
walkthrough marker, in one shell, on a stack of its own (``KAITEN_HOME`` and ports isolated, the
session's NATS and PostgreSQL; ``$PWD/.kaiten`` and the local port 8080 are the only words
changed)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.stack import running_stack

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- walkthrough:"
BASH = shutil.which("bash") or "/bin/bash"


def walkthrough() -> str:
    """The bash block that follows the walkthrough marker in README.md."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(MARKER) :]
    found = re.search(r"```bash\n(.*?)```", after, flags=re.DOTALL)
    assert found is not None, "README.md: no ```bash block after the walkthrough marker"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_walkthrough_block_is_there_and_uses_only_what_the_repo_has() -> None:
    script = walkthrough()
    assert script.startswith("make up\n")
    assert script.rstrip().endswith("make down")
    for path in re.findall(r"-f (\S+\.yaml)", script):
        assert (ROOT / path).is_file(), f"README walkthrough names {path}, which is missing"


def test_the_readme_walkthrough_runs_as_written(
    tmp_path_factory: pytest.TempPathFactory, bundled_nats_url: str, postgres_server_url: str
) -> None:
    home = tmp_path_factory.mktemp("readme-stack")
    port = str(free_port())
    script = walkthrough().replace("$PWD/.kaiten", str(home)).replace("8080", port)
    with running_stack(
        home, bundled_nats_url, postgres_server_url, start=False, KAITEN_MODEL_STORE=str(home)
    ) as stack:
        done = subprocess.run(
            [BASH, "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        out = done.stdout
        assert done.returncode == 0, f"walkthrough failed:\n{out}\n{done.stderr}"
        assert '"Result"' in out  # POST /chat
        assert '"chat.completion"' in out  # /v1/chat/completions
        row = next(line for line in out.splitlines() if line.startswith("tiny-chat "))
        assert row.split()[1:5] == ["local-cpu", "True", "True", "True"], row
        assert "workspace.kaito.sh/workspace-phi-3-mini condition met" in out
        assert 'workspace.kaito.sh "tiny-chat" deleted' in out
        assert not stack.state(), "make down left the stack running"
