"""Comparing resourceVersions: integers where both are, otherwise never known older."""

from __future__ import annotations

import pytest

from shared.kube import older_version


@pytest.mark.parametrize(
    ("version", "than", "older"),
    [
        ("9", "10", True),  # as integers, not as strings ("9" > "10")
        ("10", "9", False),
        ("10", "10", False),
        ("", "10", False),
        ("abc", "abd", False),  # opaque: not known older
        ("10", "", False),
    ],
)
def test_older_version(version: str, than: str, older: bool) -> None:
    assert older_version(version, than) is older
