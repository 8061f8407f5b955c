"""Azure errors sorted by what retrying can do, and the regional vCPU quota check."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.polling.base_polling import OperationFailed
from azure.core.rest import HttpRequest
from azure.core.utils import CaseInsensitiveDict

from services.provisioner.azure import QuotaCheck, QuotaUsage, azure_error
from services.provisioner.cloud import CloudError
from shared.errors import KaitenError, PermanentError, TransientError

QUOTA_MESSAGE = (
    "Operation could not be completed as it results in exceeding approved "
    "standardNCADSA100v4Family Cores quota. Additional details - Deployment Model: Resource "
    "Manager, Location: eastus, "
    "Current Limit: 0, Current Usage: 0, Additional Required: 24, (Minimum) New Limit Required: "
    "24. Submit a request for Quota increase at https://aka.ms/ProdportalCRP/#blade/Microsoft_"
    "Azure_Capacity/UsageAndQuota.ReactView/Parameters/ by specifying parameters listed in the "
    "'Details' section for deployment to succeed."
)
IN_PROGRESS = (
    "Operation is not allowed: Another operation (Updating) is in progress, please wait for it "
    "to finish before starting a new operation. See https://aka.ms/aks-pending-operation for "
    "more details"
)
REASONS = {200: "OK", 400: "Bad Request", 409: "Conflict", 429: "Too Many Requests"}


class FakeResponse:
    """What azure-core reads from an HTTP response when it builds ``HttpResponseError``:
    ``status_code``, ``reason``, ``headers`` (case-insensitive) and the body."""

    def __init__(
        self, status_code: int, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        self.status_code: int | None = status_code
        self.reason: str | None = REASONS.get(status_code, "Internal Server Error")
        self.headers: CaseInsensitiveDict = CaseInsensitiveDict(
            {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        )
        self.request = HttpRequest(
            "PUT",
            "https://management.azure.com/subscriptions/0000/resourceGroups/rg/providers/"
            "Microsoft.ContainerService/managedClusters/kaito/agentPools/ws0123abcde"
            "?api-version=2025-05-01",
        )
        self._body = (body if isinstance(body, str) else json.dumps(body)).encode()

    def body(self) -> bytes:
        return self._body

    def text(self, encoding: str | None = None) -> str:
        return self._body.decode(encoding or "utf-8")


def arm_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> HttpResponseError:
    """The error the management client raises for an ARM error response."""
    response = FakeResponse(status, {"error": {"code": code, "message": message}}, headers)
    return HttpResponseError(response=response)


def failed_operation(code: str, message: str) -> HttpResponseError:
    """The error ``poller.result()`` raises when the long-running operation ends Failed: the
    last poll (200 OK) carries the operation status, and azure-core chains OperationFailed."""
    status = {
        "name": "6f2c1e0a-1111-2222-3333-444455556666",
        "status": "Failed",
        "startTime": "2026-05-01T10:00:00Z",
        "endTime": "2026-05-01T10:03:12Z",
        "error": {"code": code, "message": message},
    }
    try:
        _operation_failed()
    except OperationFailed as err:
        return HttpResponseError(response=FakeResponse(200, status), error=err)


def _operation_failed() -> NoReturn:
    """What azure-core's polling raises when the operation's status is Failed."""
    raise OperationFailed("Operation failed or canceled")


def sort(error: Exception) -> KaitenError:
    return azure_error(error, "create agent pool ws0123abcde")


def test_a_realistic_arm_error_is_parsed_by_azure_core() -> None:
    """The fake response is good enough for azure-core to read the OData error."""
    error = arm_error(409, "OperationNotAllowed", IN_PROGRESS)

    assert error.status_code == 409
    assert error.error is not None
    assert error.error.code == "OperationNotAllowed"
    assert error.message.startswith("(OperationNotAllowed) Operation is not allowed")


@pytest.mark.parametrize("header", ["Retry-After", "retry-after"])
def test_throttling_is_transient_after_the_servers_delay(header: str) -> None:
    error = arm_error(429, "TooManyRequests", "Too many requests, retry later.", {header: "17"})

    sorted_error = sort(error)

    assert isinstance(sorted_error, TransientError)
    assert sorted_error.delay == 17.0
    assert "create agent pool ws0123abcde" in str(sorted_error)


def test_throttling_without_retry_after_leaves_the_delay_to_the_bus() -> None:
    sorted_error = sort(arm_error(429, "TooManyRequests", "Too many requests."))

    assert isinstance(sorted_error, TransientError)
    assert sorted_error.delay is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(status: int) -> None:
    error = arm_error(status, "InternalServerError", "An unexpected error occured.")

    assert isinstance(sort(error), TransientError)


def test_a_server_error_without_a_json_body_is_transient() -> None:
    error = HttpResponseError(response=FakeResponse(503, "<html>Service Unavailable</html>"))

    assert isinstance(sort(error), TransientError)


def test_another_operation_in_progress_is_transient() -> None:
    sorted_error = sort(arm_error(409, "OperationNotAllowed", IN_PROGRESS))

    assert isinstance(sorted_error, TransientError)
    assert "Another operation (Updating) is in progress" in str(sorted_error)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (409, "OperationNotAllowed", QUOTA_MESSAGE),
        (400, "QuotaExceeded", QUOTA_MESSAGE),
        (
            400,
            "InsufficientVCPUQuota",
            "Insufficient regional vcpu quota left for location eastus. left regional vcpu "
            "quota 0, requested quota 24",
        ),
    ],
)
def test_quota_refusals_are_cloud_errors_with_azures_code_and_message(
    status: int, code: str, message: str
) -> None:
    sorted_error = sort(arm_error(status, code, message))

    assert isinstance(sorted_error, CloudError)
    assert isinstance(sorted_error, PermanentError)
    assert sorted_error.reason == code
    assert sorted_error.message == message


def test_a_bad_request_is_a_cloud_error() -> None:
    message = "The VM size of Standard_NC6s_v3 is not supported in this region."
    sorted_error = sort(arm_error(400, "InvalidParameter", message))

    assert isinstance(sorted_error, CloudError)
    assert (sorted_error.reason, sorted_error.message) == ("InvalidParameter", message)


def test_a_failed_operation_is_a_cloud_error_with_the_operations_code() -> None:
    sorted_error = sort(failed_operation("QuotaExceeded", QUOTA_MESSAGE))

    assert isinstance(sorted_error, CloudError)
    assert sorted_error.reason == "QuotaExceeded"
    assert sorted_error.message == QUOTA_MESSAGE


def test_a_failed_operation_known_only_by_its_message_keeps_the_message() -> None:
    text = f"(QuotaExceeded) {QUOTA_MESSAGE}"

    sorted_error = sort(HttpResponseError(message=text))

    assert isinstance(sorted_error, CloudError)
    assert sorted_error.reason == "QuotaExceeded"
    assert sorted_error.message == text


def test_a_failed_operation_with_a_transient_code_is_transient() -> None:
    error = failed_operation("InternalOperationError", "Internal error, please retry.")

    assert isinstance(sort(error), TransientError)


@pytest.mark.parametrize(
    "error",
    [
        ServiceRequestError("Cannot connect to host management.azure.com:443"),
        ServiceResponseError("Connection aborted: RemoteDisconnected"),
    ],
)
def test_lost_connections_are_transient(error: Exception) -> None:
    sorted_error = sort(error)

    assert isinstance(sorted_error, TransientError)
    assert "create agent pool ws0123abcde" in str(sorted_error)


# --- regional quota -----------------------------------------------------------------------------


def check(
    nodes: int, family: tuple[int, int], regional: tuple[int, int] | None = None
) -> QuotaCheck:
    return QuotaCheck(
        sku="Standard_NC24ads_A100_v4",
        location="eastus",
        nodes=nodes,
        vcpus_per_node=24,
        family=QuotaUsage("Standard NCADS_A100_v4 Family vCPUs", *family),
        regional=None if regional is None else QuotaUsage("Total Regional vCPUs", *regional),
    )


@pytest.mark.parametrize(
    ("nodes", "family", "regional", "fits"),
    [
        (2, (40, 100), None, True),  # 40 + 48 = 88 <= 100
        (2, (52, 100), None, True),  # exactly the limit
        (2, (53, 100), None, False),
        (1, (0, 0), None, False),  # no quota for the family at all
        (2, (0, 100), (20, 68), True),
        (2, (0, 100), (20, 67), False),  # the regional cores limit binds
        (2, (90, 100), (0, 1000), False),  # the family limit binds
    ],
)
def test_fits_when_every_limit_takes_the_needed_vcpus(
    nodes: int, family: tuple[int, int], regional: tuple[int, int] | None, fits: bool
) -> None:
    quota = check(nodes, family, regional)

    assert quota.needed == nodes * 24
    assert quota.fits is fits


def test_the_rendered_check_names_the_numbers() -> None:
    text = check(2, (40, 100), (20, 60)).render()

    assert "eastus" in text
    assert "2 x Standard_NC24ads_A100_v4" in text
    assert "24 vCPUs each" in text
    assert "48 vCPUs" in text
    assert "Standard NCADS_A100_v4 Family vCPUs: 40 of 100 vCPUs used, 60 free -> fits" in text
    assert "Total Regional vCPUs: 20 of 60 vCPUs used, 40 free -> short by 8" in text
    assert text.splitlines()[-1].startswith("does not fit")


def test_a_check_that_fits_says_so() -> None:
    text = check(1, (0, 24)).render()

    assert "0 of 24 vCPUs used, 24 free -> fits" in text
    assert "Total Regional" not in text
    assert text.splitlines()[-1].startswith("fits")
