"""One pod's health, decided from data (no I/O, no clock): the pod as the kubelet reports it, and
its node, give the most telling failure (OOM kill, crash loop, image pull, start error or a
container that exited non-zero, eviction, scheduling, node pressure) as a Kaito reason and a
one-line message that quotes the kubelet and the container's termination message. The deployer's
InferenceReady and the tuner's JobStarted both build on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

OOM_KILLED = "ContainerOOMKilled"
CRASH_LOOP_BACK_OFF = "ContainerCrashLoopBackOff"
IMAGE_PULL_ERROR = "ImagePullError"
CONTAINER_START_ERROR = "ContainerStartError"
POD_EVICTED = "PodEvicted"
UNSCHEDULABLE = "Unschedulable"
NODE_DISK_PRESSURE = "NodeDiskPressure"
NODE_MEMORY_PRESSURE = "NodeMemoryPressure"

MAX_MESSAGE = 1024
MAX_TERMINATION_TAIL = 512  # of a container's termination message, quoted last in a message

IMAGE_PULL_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RegistryUnavailable",
    }
)
START_WAITING_REASONS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "StartError"}
)
START_TERMINATED_REASONS = frozenset({"StartError", "ContainerCannotRun"})
# Node condition type -> the reason reported for a not-Ready pod on that node.
NODE_PRESSURE = (("DiskPressure", NODE_DISK_PRESSURE), ("MemoryPressure", NODE_MEMORY_PRESSURE))

_NEWLINES = re.compile(r"\s*[\r\n]+\s*")


@dataclass(frozen=True, slots=True)
class _Container:
    """One entry of ``initContainerStatuses`` or ``containerStatuses``."""

    label: str  # "container ws" or "init container puller"
    image: str
    restarts: int
    waiting: Mapping[str, Any]
    terminated: Mapping[str, Any]
    last_terminated: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Pod:
    name: str
    phase: str
    reason: str
    message: str
    ready: bool
    conditions: tuple[Mapping[str, Any], ...]
    containers: tuple[_Container, ...]  # init containers first
    node_name: str
    node: Mapping[str, Any]


_Check = Callable[[_Pod], str | None]


def pod_failure(
    pod: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]]
) -> tuple[str, str] | None:
    """(reason, message) of the most telling failure of one pod, or None when nothing failed."""
    view = _pod_view(pod, nodes)
    for reason, check in _CHECKS:
        message = check(view)
        if message is not None:
            return reason, one_line(message)
    return None


def one_line(text: str) -> str:
    """``text`` on one line, at most ``MAX_MESSAGE`` characters (cut ones end with "...")."""
    flat = _NEWLINES.sub(" ", text).strip()
    if len(flat) <= MAX_MESSAGE:
        return flat
    return flat[: MAX_MESSAGE - 3] + "..."


def pod_name(pod: Mapping[str, Any]) -> str:
    return _str(dig(pod, "metadata", "name"))


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in _maps(dig(pod, "status", "conditions"))
    )


def is_terminal(pod: Mapping[str, Any]) -> bool:
    return dig(pod, "status", "phase") in {"Failed", "Succeeded"}


def _pod_view(pod: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]]) -> _Pod:
    status = _map(pod.get("status"))
    conditions = tuple(_maps(status.get("conditions")))
    node_name = _str(dig(pod, "spec", "nodeName"))
    return _Pod(
        name=pod_name(pod),
        phase=_str(status.get("phase")),
        reason=_str(status.get("reason")),
        message=_str(status.get("message")),
        ready=pod_ready(pod),
        conditions=conditions,
        containers=(
            *(_container(s, "init container") for s in _maps(status.get("initContainerStatuses"))),
            *(_container(s, "container") for s in _maps(status.get("containerStatuses"))),
        ),
        node_name=node_name,
        node=_map(nodes.get(node_name)) if node_name else {},
    )


def _container(status: Mapping[str, Any], kind: str) -> _Container:
    return _Container(
        label=f"{kind} {_str(status.get('name'))}",
        image=_str(status.get("image")),
        restarts=int_field(status.get("restartCount")),
        waiting=_map(dig(status, "state", "waiting")),
        terminated=_map(dig(status, "state", "terminated")),
        last_terminated=_map(dig(status, "lastState", "terminated")),
    )


# --- the checks, in priority order ---------------------------------------------------------------


def _oom_killed(pod: _Pod) -> str | None:
    for c in pod.containers:
        for term in (c.terminated, c.last_terminated):
            if term.get("reason") == "OOMKilled":
                return (
                    f"pod {pod.name} {c.label} was OOMKilled{_exit_code(term)}, "
                    f"restarted {_times(c.restarts)}: "
                    "give it more memory or a smaller model/context"
                )
    return None


def _crash_loop(pod: _Pod) -> str | None:
    for c in pod.containers:
        if c.waiting.get("reason") != "CrashLoopBackOff":
            continue
        message = (
            f"pod {pod.name} {c.label} is in CrashLoopBackOff, restarted {_times(c.restarts)}"
            f"{_quote(c.waiting)}"
        )
        if c.last_terminated:
            last = _str(c.last_terminated.get("reason")) or "terminated"
            message += f"; last termination: {last}{_exit_code(c.last_terminated)}"
            message += _tail(_str(c.last_terminated.get("message")))
        return message
    return None


def _image_pull(pod: _Pod) -> str | None:
    for c in pod.containers:
        reason = _str(c.waiting.get("reason"))
        if reason in IMAGE_PULL_REASONS:
            return (
                f'pod {pod.name} {c.label} cannot pull image "{c.image}" ({reason})'
                f"{_quote(c.waiting)}"
            )
    return None


def _start_error(pod: _Pod) -> str | None:
    for c in pod.containers:
        reason = _str(c.waiting.get("reason"))
        if reason in START_WAITING_REASONS:
            return f"pod {pod.name} {c.label} cannot start ({reason}){_quote(c.waiting)}"
        reason = _str(c.terminated.get("reason"))
        if reason in START_TERMINATED_REASONS:
            return f"pod {pod.name} {c.label} cannot start ({reason}){_quote(c.terminated)}"
    if pod.phase != "Failed" or pod.reason == "Evicted":  # an eviction kills containers too
        return None
    for c in pod.containers:
        if int_field(c.terminated.get("exitCode")) != 0:
            reason = _str(c.terminated.get("reason")) or "terminated"
            return (
                f"pod {pod.name} failed: {c.label} exited with {reason}{_exit_code(c.terminated)}"
                f"{_tail(_str(c.terminated.get('message')))}"
            )
    return None


def _evicted(pod: _Pod) -> str | None:
    if pod.reason != "Evicted":
        return None
    return f"pod {pod.name} was evicted" + (f": {pod.message}" if pod.message else "")


def _unschedulable(pod: _Pod) -> str | None:
    for cond in pod.conditions:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return f"pod {pod.name} cannot be scheduled{_quote(cond)}"
    return None


def _node_pressure(condition_type: str) -> _Check:
    def check(pod: _Pod) -> str | None:
        if pod.ready or not pod.node:
            return None
        for cond in _maps(dig(pod.node, "status", "conditions")):
            if cond.get("type") == condition_type and cond.get("status") == "True":
                return (
                    f"pod {pod.name} is not ready and its node {pod.node_name} reports "
                    f"{condition_type}{_quote(cond)}"
                )
        return None

    return check


_CHECKS: tuple[tuple[str, _Check], ...] = (
    (OOM_KILLED, _oom_killed),
    (CRASH_LOOP_BACK_OFF, _crash_loop),
    (IMAGE_PULL_ERROR, _image_pull),
    (CONTAINER_START_ERROR, _start_error),
    (POD_EVICTED, _evicted),
    (UNSCHEDULABLE, _unschedulable),
    *((reason, _node_pressure(condition)) for condition, reason in NODE_PRESSURE),
)


# --- wording and plain-dict access ---------------------------------------------------------------


def _quote(obj: Mapping[str, Any]) -> str:
    """ ": <message>" of a waiting/terminated state or condition, or "" when it has none."""
    message = _str(obj.get("message")).strip()
    return f": {message}" if message else ""


def _tail(message: str) -> str:
    message = message.strip()
    if not message:
        return ""
    if len(message) > MAX_TERMINATION_TAIL:
        message = "..." + message[-(MAX_TERMINATION_TAIL - 3) :]
    return f": {message}"


def _exit_code(term: Mapping[str, Any]) -> str:
    code = term.get("exitCode")
    return f" (exit code {code})" if isinstance(code, int) else ""


def _times(count: int) -> str:
    return f"{count} time" if count == 1 else f"{count} times"


def dig(obj: Mapping[str, Any], *path: str) -> Any:
    current: Any = obj
    for key in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _maps(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def int_field(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
