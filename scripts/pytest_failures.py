"""A pytest plugin for ``gpu_check.py``: each failure is written to ``--failures-file`` the
moment its report arrives, so a suite stopped by its time budget still says why its tests
failed (pytest prints tracebacks, and writes JUnit XML, only at the end of the session).

Loaded with ``-p pytest_failures`` (``scripts/`` on the path). Under pytest-xdist only the
controller writes: the workers' reports reach it too. A worker is told by its ``workerinput``,
not by the environment: a pytest started from inside an xdist worker inherits
``PYTEST_XDIST_WORKER`` without being one.
"""

from __future__ import annotations

_path: str | None = None


def pytest_addoption(parser) -> None:
    parser.addoption("--failures-file", default=None,
                     help="append each failed test's report here as it happens")


def pytest_configure(config) -> None:
    global _path
    _path = None if hasattr(config, "workerinput") else config.getoption("--failures-file")


def pytest_runtest_logreport(report) -> None:
    if not _path or not report.failed:
        return
    with open(_path, "a") as f:
        f.write(f"=== {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")
