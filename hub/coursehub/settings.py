"""One hub's settings and the layout of its state directory (standard library only).

A hub is a state directory (``/srv/coursehub`` for a real course) holding ``settings.json`` and everything the
hub writes: JupyterHub's database and secrets, nbgrader's exchange, and the Jupyter configuration its users'
servers read. The software lives apart, in the environment ``course-hub setup`` installs (``/opt/coursehub``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_PREFIX = Path("/opt/coursehub")
DEFAULT_STATE = Path("/srv/coursehub")
COURSE_ID = "attention-transformers"  # as in the repository's nbgrader_config.py
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")  # a Unix user name, an nbgrader student id, a cgroup name
ROLES = ("learner", "instructor")

_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str | int) -> int:
    """'2G' -> 2147483648, as JupyterHub's ``mem_limit`` reads it."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), flags=re.I)
    if not match:
        raise ValueError(f"not an amount of memory: {text!r} (write it like 512M or 2G)")
    number, unit = match.groups()
    return int(float(number) * _UNITS.get(unit.upper(), 1))


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(f"{name!r} cannot be an account name here: use 1-31 lower-case letters, digits or '-', "
                         "starting with a letter (it becomes a Unix user, an nbgrader student id and a cgroup)")
    return name


@dataclass
class Settings:
    """What ``settings.json`` holds. Limits are per server; instructors get more, for grading."""

    name: str = "coursehub"  # prefix of the Unix groups and the cgroup folder: two hubs on one machine differ here
    course_id: str = COURSE_ID
    prefix: str = str(DEFAULT_PREFIX)  # where `course-hub setup` installed the environment and the proxy
    ip: str = "127.0.0.1"
    port: int = 8000  # the proxy's public port; the hub's API and the proxy's API take the next two
    learner_mem_limit: str = "2G"
    learner_cpu_limit: float = 1.0
    instructor_mem_limit: str = "6G"
    instructor_cpu_limit: float = 2.0
    late_penalty: str = "zero"  # nbgrader's LateSubmissionPlugin.penalty_method: "none" or "zero"
    idle_cull_seconds: int = 3600  # stop a server nobody has used for this long (0: never)
    exchange: str = ""  # nbgrader's exchange root; default <state>/exchange
    users: dict[str, str] = field(default_factory=dict)  # accounts this hub created: name -> role

    def group(self, role: str) -> str:
        return f"{self.name}-{role}s"


class Hub:
    """A state directory and its settings."""

    def __init__(self, state: Path | str) -> None:
        self.state = Path(state).resolve()
        self.settings_file = self.state / "settings.json"
        if not self.settings_file.exists():
            raise FileNotFoundError(f"{self.state} is not a course hub's state directory (no settings.json): "
                                    f"create one with `course-hub init --state {self.state}`")
        data = json.loads(self.settings_file.read_text())
        self.settings = Settings(**data)

    @classmethod
    def create(cls, state: Path | str, settings: Settings) -> "Hub":
        state = Path(state).resolve()
        state.mkdir(parents=True, exist_ok=True)
        path = state / "settings.json"
        if not path.exists():
            path.write_text(json.dumps(asdict(settings), indent=1) + "\n")
        return cls(state)

    def save(self) -> None:
        tmp = self.settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.settings), indent=1) + "\n")
        tmp.replace(self.settings_file)

    # -- the layout ---------------------------------------------------------------------------------------
    @property
    def prefix(self) -> Path:
        return Path(self.settings.prefix)

    @property
    def env(self) -> Path:
        """The course environment: Python, JupyterHub, JupyterLab, nbgrader, torch and coursekit."""
        return self.prefix / "env"

    @property
    def proxy_command(self) -> Path:
        return self.prefix / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy"

    @property
    def exchange(self) -> Path:
        return Path(self.settings.exchange) if self.settings.exchange else self.state / "exchange"

    @property
    def course_exchange(self) -> Path:
        return self.exchange / self.settings.course_id

    @property
    def private(self) -> Path:
        """Root-only: JupyterHub's database, cookie secret and proxy token, the hub's log."""
        return self.state / "private"

    def jupyter_config_path(self, role: str) -> str:
        """JUPYTER_CONFIG_PATH for a server: the role's own settings first, then the ones everyone shares."""
        return f"{self.state / 'jupyter' / role}:{self.state / 'jupyter' / 'common'}"

    def course_dir(self, home: Path) -> Path:
        """An instructor's nbgrader course directory: a copy of the course in their home."""
        return home / self.settings.course_id

    def server_env(self, role: str) -> dict[str, str]:
        """What every server of this role (and `course-hub run`) gets in its environment."""
        return {
            "PATH": f"{self.env / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "JUPYTER_CONFIG_PATH": self.jupyter_config_path(role),
            "COURSEHUB_ROLE": role,
        }
