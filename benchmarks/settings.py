"""Where the services are, what the suite may create there, and the machine.

Every key, table and file a run creates carries the run's
:class:`Namespace`, so runs never meet each other (or anyone else's data)
and cleaning up is "delete everything with this prefix". The service URLs
can be changed with environment variables:

``BENCH_REDIS_URL``
    default ``redis://127.0.0.1:6379/15`` (a database of its own, so that
    ``SCAN``-based clean-ups do not walk other people's keys).
``BENCH_POSTGRES_URL``
    default ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``.
``BENCH_SQLITE_DIR``
    where the SQLite database files go; default the system temp directory.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import secrets
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
SQLITE_DIR = Path(os.environ.get("BENCH_SQLITE_DIR", tempfile.gettempdir()))

#: Signs every subject's cookies (Beaker, Flask and us alike).
SECRET = "benchmark secret, not for production use! 0123456789"
#: Prefix of every namespace, so stale ones can be recognised.
PREFIX = "wsbench"


@dataclasses.dataclass(frozen=True)
class Namespace:
    """The names one run may create, derived from one random token, and
    where its PostgreSQL is.

    :param token: e.g. ``"wsbench_3f9a1c2e"``; safe in Redis keys, SQL
        identifiers and file names.
    :param postgres_url: the SQLAlchemy URL subjects connect to (the round
        trip counting pass points it at a counting proxy).
    """

    token: str
    postgres_url: str = POSTGRES_URL

    @classmethod
    def new(cls) -> Namespace:
        """A namespace no other run uses."""
        return cls(f"{PREFIX}_{secrets.token_hex(4)}")

    @classmethod
    def from_env(cls) -> Namespace:
        """The namespace the parent process passed to a gunicorn worker."""
        return cls(os.environ["BENCH_NAMESPACE"])

    def child(self, name: str) -> Namespace:
        """A namespace inside this one (its names start with this token)."""
        return dataclasses.replace(self, token=f"{self.token}_{name}")

    def via(self, postgres_url: str) -> Namespace:
        """The same names, reached through another PostgreSQL URL."""
        return dataclasses.replace(self, postgres_url=postgres_url)

    def redis_prefix(self, slug: str) -> str:
        """The Redis key prefix of one subject."""
        return f"{self.token}:{slug}:"

    def table(self, slug: str) -> str:
        """The SQL table name of one subject."""
        return f"{self.token}_{slug}".replace("-", "_")

    def sqlite_url(self, slug: str) -> str:
        """An SQLAlchemy URL for a SQLite file of one subject."""
        return f"sqlite:///{self.sqlite_path(slug)}"

    def sqlite_path(self, slug: str) -> Path:
        return SQLITE_DIR / f"{self.table(slug)}.sqlite3"


def cpu_model() -> str:
    """The CPU's model name, from ``/proc/cpuinfo`` where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """What the numbers were measured on, for the report header."""
    return {
        "cpu": f"{cpu_model()}, {os.cpu_count()} logical CPUs",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "wsgi_session": _git_revision(),
        "build": _build(),
    }


def _build() -> str:
    """Which build of wsgi_session runs: pure Python or compiled by mypyc."""
    from wsgi_session._mypyc import COMPILED_MODULES, is_compiled

    if is_compiled():
        return f"compiled by mypyc ({len(COMPILED_MODULES)} modules of the request path; see setup.py)"
    return "pure Python"


def _git_revision() -> str:
    """The checkout's commit, with ``+dirty`` if it has local changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "wsgi_session"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit
