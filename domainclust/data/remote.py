"""Reads from a remote store (an fsspec URL) that survive a short outage and fail in one line.

A server that restarts, a dropped connection or a throttled object store fails a read for a
few seconds; such a read is tried again after a growing pause (`RETRY_DELAYS_S`). When the
tries run out, or the error is not one a retry can mend (a missing file, a refused
permission), the read ends in a `DomainclustError` naming the URL, so a long run stops with a
sentence instead of a traceback from the HTTP or S3 client, and the same command resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from domainclust.errors import DomainclustError

T = TypeVar("T")

RETRY_DELAYS_S = (0.5, 1.0, 2.0)  # pauses before the 2nd, 3rd and 4th try
# Client libraries whose errors are network failures (aiohttp: http(s)://; botocore: s3://).
NETWORK_MODULES = ("aiohttp", "botocore", "urllib3", "requests", "google.auth", "gcsfs")
FINAL = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a network failure that may pass: connection refused or reset, a
    timeout, an error of an HTTP/S3 client; not a missing file or a refused permission."""
    if isinstance(exc, FINAL):
        return False
    if isinstance(exc, (OSError, TimeoutError)):  # aiohttp's connection errors are OSErrors
        return True
    return any(cls.__module__.startswith(NETWORK_MODULES) for cls in type(exc).__mro__)


def retrying(call: Callable[[], T], *, url: str, delays: tuple[float, ...] | None = None) -> T:
    """`call()`, tried again after each of `delays` while it fails with a transient error;
    then a one-line DomainclustError naming `url`."""
    delays = RETRY_DELAYS_S if delays is None else delays
    for attempt in range(len(delays) + 1):
        try:
            return call()
        except DomainclustError:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted by is_transient just below
            if not is_transient(exc):
                raise
            if attempt == len(delays):
                raise DomainclustError(
                    f"store {url} cannot be reached ({describe(exc)}; tried {attempt + 1} "
                    f"times over {sum(delays):g} s); check that its server is up and the "
                    "network, then run the same command again") from None
            time.sleep(delays[attempt])
    raise AssertionError("unreachable")


def describe(exc: BaseException) -> str:
    """The exception's type and first line, short."""
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
