"""`kaiten plan --check-azure` as a user runs it after `az login`: the real CLI process, the
real azure-identity credential chain (its Azure CLI credential, answered by a stand-in `az` on
PATH) and the real azure-mgmt-compute client, against the fake ARM server over HTTPS."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.fake_arm import FakeArm

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "tests" / "fixtures" / "seeds" / "inference-phi-3-mini.yaml"
FAMILY = "standardNCADSA100v4Family"


@pytest.fixture
async def arm(tmp_path: Path) -> AsyncIterator[FakeArm]:
    async with FakeArm(tmp_path / "arm") as fake:
        yield fake


def fake_az(directory: Path) -> Path:
    """An `az` that answers `az account get-access-token` as a logged-in Azure CLI does."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "az"
    token = {
        "accessToken": "token-from-az-login",
        "expires_on": int(time.time()) + 3600,
        "subscription": FakeArm.subscription,
        "tokenType": "Bearer",
    }
    script.write_text(f"#!/bin/sh\necho '{json.dumps(token)}'\n")
    script.chmod(0o755)
    return directory


async def kaiten_plan(
    arm: FakeArm, tmp_path: Path, *args: str, unset: tuple[str, ...] = ()
) -> tuple[int, str, str]:
    """`kaiten plan SEED --check-azure` on an A100 against ``arm``, without the variables
    named in ``unset``."""
    env = {
        **os.environ,
        "PATH": f"{fake_az(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}",
        "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential",
        "ARM_SUBSCRIPTION_ID": arm.subscription,
        "LOCATION": arm.location,
        "KAITEN_ARM_ENDPOINT": arm.url,
        "KAITEN_ARM_CA_FILE": str(arm.ca_file),
        "KAITEN_ARM_RETRIES": "0",
    }
    for name in unset:
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kaiten",
        "plan",
        str(SEED),
        "--check-azure",
        "--instance-type",
        "Standard_NC24ads_A100_v4",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_plan_that_fits_the_quota_says_so_with_the_numbers(
    arm: FakeArm, tmp_path: Path
) -> None:
    arm.usages[FAMILY] = (24, 48)
    arm.usages["cores"] = (30, 100)
    code, out, err = await kaiten_plan(arm, tmp_path)
    assert code == 0, err
    assert "1 x Standard_NC24ads_A100_v4 (24 vCPUs each, 24 vCPUs)" in out
    assert "24 of 48 vCPUs used, 24 free -> fits" in out
    assert "30 of 100 vCPUs used, 70 free -> fits" in out
    assert "fits: the planned nodes can be created" in out
    # The real client asked ARM, with the token the Azure CLI handed out.
    paths = [r.path for r in arm.requests]
    assert any(p.endswith("/providers/Microsoft.Compute/skus") for p in paths)
    assert any(p.endswith(f"/locations/{arm.location}/usages") for p in paths)


async def test_a_plan_that_does_not_fit_fails_and_says_by_how_much(
    arm: FakeArm, tmp_path: Path
) -> None:
    arm.usages[FAMILY] = (40, 48)
    code, out, _ = await kaiten_plan(arm, tmp_path, "-o", "json")
    assert code == 1
    quota = json.loads(out)["quota"]
    assert quota["fits"] is False
    assert quota["vcpus_needed"] == 24
    family = next(u for u in quota["usages"] if u["current"] == 40)
    assert family["limit"] == 48

    code, text, _ = await kaiten_plan(arm, tmp_path)
    assert code == 1
    assert "40 of 48 vCPUs used, 8 free -> short by 16" in text
    assert "request a quota increase" in text


async def test_without_a_subscription_the_check_says_what_to_set(
    arm: FakeArm, tmp_path: Path
) -> None:
    unset = ("ARM_SUBSCRIPTION_ID", "AZURE_SUBSCRIPTION_ID", "LOCATION")
    code, _, err = await kaiten_plan(arm, tmp_path, unset=unset)
    assert code == 2
    assert "ARM_SUBSCRIPTION_ID" in err
    assert "LOCATION" in err
    assert arm.requests == []
