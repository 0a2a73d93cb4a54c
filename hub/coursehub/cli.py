"""``hub/course-hub``: install, populate, start and tear down a course hub (standard library only; run as root).

    course-hub setup                      install the course environment and the proxy into /opt/coursehub
    course-hub init  --state DIR          create a hub's state directory, Unix groups and nbgrader exchange
    course-hub add-user --state DIR NAME [--instructor] [--password-stdin]
    course-hub remove-user --state DIR NAME
    course-hub run --state DIR [--cwd D] NAME -- COMMAND...   run a command as NAME, as NAME's server would
    course-hub start --state DIR          run the hub in the foreground until interrupted
    course-hub destroy --state DIR        remove the hub's accounts, groups, cgroups and state directory
    course-hub trial                      all of it on loopback with demo accounts; Ctrl-C removes everything

It runs with any Python 3.10+ (``setup`` builds the environment everything else uses) and never imports
JupyterHub: that lives in the course environment, and ``start`` runs it from there.
"""

from __future__ import annotations

import argparse
import fcntl
import grp
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coursehub import cgroups
from coursehub.settings import (DEFAULT_PREFIX, DEFAULT_STATE, ROLES, Hub, Settings, check_name, parse_bytes)

HUB_DIR = Path(__file__).resolve().parents[1]  # hub/ in the repository
REPO = HUB_DIR.parent


class HubError(RuntimeError):
    """A problem the operator can fix; the message says how."""


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise HubError(f"{what} needs root (it creates accounts, cgroups and files other users must not change): "
                       "run it with sudo")


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise HubError(f"`{' '.join(map(str, command))}` failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def _say(message: str) -> None:
    print(f"course-hub: {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# setup: the course environment, once, read-only to everyone else
# ---------------------------------------------------------------------------------------------------------

def _fingerprints(python: Path) -> dict[str, str]:
    """What the installed environment depends on: its packages ("deps") and the course's own code ("code")."""
    groups = {
        "deps": [REPO / "requirements.txt", REPO / "pyproject.toml", REPO / "Makefile", HUB_DIR / "requirements.txt",
                 HUB_DIR / "pyproject.toml", HUB_DIR / "package.json", HUB_DIR / "package-lock.json"],
        "code": sorted((REPO / "coursekit").rglob("*.py")) + sorted((HUB_DIR / "coursehub").rglob("*.py")),
    }
    prints = {}
    for group, files in groups.items():
        digest = hashlib.sha256(str(python.resolve()).encode())
        for path in files:
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
        prints[group] = digest.hexdigest()
    return prints


def _check_readable_by_others(python: Path) -> None:
    """Learners' servers run this interpreter as themselves: every folder on its way must let them in."""
    real = python.resolve()
    for part in [real, *real.parents]:
        mode = part.stat().st_mode
        needed = 0o005 if part.is_dir() else 0o005 if part == real else 0o004
        if mode & needed != needed:
            raise HubError(f"{python} resolves to {real}, and other users cannot reach {part} (mode "
                           f"{oct(mode & 0o777)}): learners could not run it. Use a Python every user can run, "
                           "e.g. --python /usr/bin/python3 (Debian's python3 and python3-venv packages)")


def setup(prefix: Path, python: Path, force: bool = False) -> None:
    """Install the course environment (``make setup`` with the hub's additions) and the proxy into ``prefix``.

    Nothing happens when nothing it depends on changed; when only coursekit's or the hub's own code changed,
    only those two packages are installed again (seconds, not minutes).
    """
    _require_root("setup")
    if not python.exists():
        raise HubError(f"no Python at {python}: install Debian's python3 and python3-venv, or pass --python")
    _check_readable_by_others(python)
    prefix.mkdir(parents=True, exist_ok=True)
    os.chmod(prefix, 0o755)
    with open(prefix / ".setup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installation at a time: a second waits, then finds it done
        _setup_locked(prefix, python, force)


def _setup_locked(prefix: Path, python: Path, force: bool) -> None:
    stamp = prefix / "installed.json"
    prints = _fingerprints(python)
    installed = json.loads(stamp.read_text()) if stamp.exists() else {}
    env_dir = prefix / "env"
    started = time.monotonic()
    if not force and installed.get("deps") == prints["deps"] and (env_dir / "bin" / "python").exists():
        if installed.get("code") == prints["code"]:
            _say(f"the course environment in {prefix} is up to date")
            return
        _say(f"coursekit or the hub changed: installing them again into {env_dir}")
        _install_course_code(env_dir)
    else:
        _install_everything(prefix, python)
    _run(["chmod", "-R", "u+rwX,go+rX,go-w", str(prefix)])
    _run(["chown", "-R", "root:root", str(prefix)])
    _verify_as_nobody(prefix)
    stamp.write_text(json.dumps({**prints, "python": str(python), "seconds": round(time.monotonic() - started)}) + "\n")
    _say(f"installed in {time.monotonic() - started:.0f} s")


def _install_everything(prefix: Path, python: Path) -> None:
    if shutil.which("npm") is None:
        raise HubError("npm is missing: install Debian's nodejs and npm packages (node 20 or newer)")
    prefix.mkdir(parents=True, exist_ok=True)
    os.chmod(prefix, 0o755)
    env_dir = prefix / "env"
    _say(f"installing the course environment into {env_dir} (a few minutes the first time)")
    # The course's own set-up, from the same pinned requirements a laptop gets...
    # (not the flags of a `make test` that runs us: its variables would override ours)
    clean = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VENV", "PYTHON")}
    # The dependencies changed (that is why we are here), whatever the files' times say: make's own stamp, newer
    # than a requirements.txt that a checkout of another branch or an old backup wrote, must not skip the install.
    (env_dir / ".installed").unlink(missing_ok=True)
    _run(["make", "-C", str(REPO), "--no-print-directory", "setup", f"VENV={env_dir}", f"PYTHON={python}"], env=clean)
    _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(HUB_DIR / "requirements.txt")])
    # A course hub runs offline and speaks for the course: JupyterLab's news and update checks stay off.
    _write(env_dir / "share" / "jupyter" / "lab" / "settings" / "overrides.json", json.dumps(LAB_OVERRIDES, indent=1) + "\n")
    # Every kernel tells its learner when the previous one was killed for running out of memory.
    _write(env_dir / "etc" / "ipython" / "ipython_kernel_config.py", KERNEL_CONFIG)
    _install_course_code(env_dir)
    proxy = prefix / "proxy"
    proxy.mkdir(exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(HUB_DIR / name, proxy)
    _say("installing configurable-http-proxy from the npm registry")
    _run(["npm", "ci", "--no-audit", "--no-fund", "--engine-strict", "--omit=dev"], cwd=proxy)


def _install_course_code(env_dir: Path) -> None:
    """coursekit and the hub's own package, as copies: learners never need to read the repository."""
    with tempfile.TemporaryDirectory() as scratch:
        course_src, hub_src = Path(scratch) / "coursekit", Path(scratch) / "coursehub"
        course_src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, course_src)
        shutil.copytree(REPO / "coursekit", course_src / "coursekit", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(HUB_DIR, hub_src, ignore=shutil.ignore_patterns("__pycache__", "node_modules", "k8s"))
        _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
              str(course_src), str(hub_src)])


KERNEL_CONFIG = ("# Written by course-hub setup: see coursehub/kernel_notice.py.\n"
                 "c = get_config()  # noqa: F821\n"
                 "c.InteractiveShellApp.exec_lines = [\"__import__('coursehub.kernel_notice').kernel_notice.install(get_ipython())\"]\n")
LAB_OVERRIDES = {"@jupyterlab/apputils-extension:notification": {"checkForUpdates": False, "fetchNews": "false"}}


def _verify_as_nobody(prefix: Path) -> None:
    """Prove that an unprivileged account can use what was installed, as a learner's server will."""
    check = "import coursekit, nbgrader, jupyterlab, jupyterhub, torch; print(torch.__version__)"
    _run(["runuser", "-u", "nobody", "--", str(prefix / "env" / "bin" / "python"), "-c", check], cwd="/")
    _run(["runuser", "-u", "nobody", "--", str(prefix / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy"),
          "--version"], cwd="/")


# ---------------------------------------------------------------------------------------------------------
# init: the state directory, groups and exchange
# ---------------------------------------------------------------------------------------------------------

LEARNER_SERVER_CONFIG = {  # learners see the Assignments list, not the instructor's tools
    "ServerApp": {"jpserver_extensions": {"nbgrader.server_extensions.formgrader": False,
                                          "nbgrader.server_extensions.course_list": False}},
}
LEARNER_PAGE_CONFIG = {"disabledExtensions": {"@jupyter/nbgrader:formgrader": True,
                                              "@jupyter/nbgrader:course-list": True,
                                              "@jupyter/nbgrader:create-assignment": True}}


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def init(state: Path, settings: Settings) -> Hub:
    """Create (or complete) a hub's state directory; an existing one keeps its settings."""
    _require_root("init")
    check_name(settings.name)
    parse_bytes(settings.learner_mem_limit), parse_bytes(settings.instructor_mem_limit)
    hub = Hub.create(state, settings)
    s = hub.settings
    os.chmod(hub.state, 0o755)  # learners' servers read <state>/jupyter and reach the exchange
    hub.private.mkdir(exist_ok=True)
    os.chmod(hub.private, 0o700)
    for role in ROLES:
        if not _group_exists(s.group(role)):
            _run(["groupadd", s.group(role)])
    common = hub.state / "jupyter" / "common"
    _write(common / "nbgrader_config.py",
           "# Written by course-hub init: where this hub's nbgrader exchange is, for every user.\n"
           "c = get_config()  # noqa: F821\n"
           f"c.CourseDirectory.course_id = {s.course_id!r}\n"
           f"c.Exchange.root = {str(hub.exchange)!r}\n")
    learner = hub.state / "jupyter" / "learner"
    _write(learner / "jupyter_server_config.json", json.dumps(LEARNER_SERVER_CONFIG, indent=1) + "\n")
    _write(learner / "labconfig" / "page_config.json", json.dumps(LEARNER_PAGE_CONFIG, indent=1) + "\n")
    _write(hub.state / "jupyter" / "instructor" / "nbgrader_config.py",
           "# Written by course-hub init: collect trusts a submission's owner and change time, not its name.\n"
           "c = get_config()  # noqa: F821\n"
           "c.ExchangeFactory.collect = 'coursehub.exchange.OwnerCheckedCollect'\n")
    # nbgrader's exchange root: anyone may create in it (nbgrader insists on 0777), the sticky bit stops anyone
    # from renaming or deleting what another user made, such as the course's folder.
    hub.exchange.mkdir(parents=True, exist_ok=True)
    os.chown(hub.exchange, 0, 0)
    os.chmod(hub.exchange, 0o1777)
    (hub.state / "jupyterhub_config.d").mkdir(exist_ok=True)
    return hub


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


# ---------------------------------------------------------------------------------------------------------
# accounts
# ---------------------------------------------------------------------------------------------------------

def add_user(hub: Hub, name: str, role: str, password: str | None, home_base: Path | None = None,
             existing: bool = False) -> str:
    """Create a local account in the hub's group for ``role``; returns its password ('' for an existing one).

    An instructor also gets the course (``nbgrader_config.py``, ``solutions/``, ``exercises/``) in their home,
    and owns the course's folder in the exchange if nobody does yet.
    """
    _require_root("add-user")
    check_name(name)
    s = hub.settings
    account = _user(name)
    if account is not None and name not in s.users and not existing:
        raise HubError(f"a user named {name} already exists on this machine and this hub did not create it: "
                       f"pass --existing to let that account into the course, or choose another name")
    if account is None:
        command = ["useradd", "--create-home", "--shell", "/bin/bash", "--user-group"]
        if home_base is not None:
            home_base.mkdir(parents=True, exist_ok=True)
            command += ["--base-dir", str(home_base)]
        _run([*command, name])
        account = pwd.getpwnam(name)
    os.chmod(account.pw_dir, 0o700)  # nobody else may read a learner's work
    for other in ROLES:
        if name in grp.getgrnam(s.group(other)).gr_mem and other != role:
            _run(["gpasswd", "--delete", name, s.group(other)])
    _run(["usermod", "--append", "--groups", s.group(role), name])
    if password is None and account.pw_name not in s.users and existing:
        password = ""  # their own password stays
    elif password is None:
        password = secrets.token_urlsafe(12)
    if password:
        _run(["chpasswd"], input=f"{name}:{password}\n")
    if name not in s.users or s.users[name] != role:
        s.users[name] = role
        hub.save()
    if role == "instructor":
        _give_course(hub, account)
    return password


def _give_course(hub: Hub, account: pwd.struct_passwd) -> None:
    """Copy the course into the instructor's home and give them the course's folder in the exchange."""
    s = hub.settings
    home = Path(account.pw_dir)
    course = hub.course_dir(home)
    if not course.exists():
        course.mkdir()
        shutil.copy(REPO / "nbgrader_config.py", course)
        for folder in ("solutions", "exercises"):
            shutil.copytree(REPO / folder, course / folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        with (course / "nbgrader_config.py").open("a") as handle:
            handle.write("\n# Added by the course hub (hub/course-hub add-user --instructor):\n"
                         "# a submission after the due date set with `nbgrader db assignment add NAME --duedate=...`\n"
                         f"# gets nbgrader's late penalty {s.late_penalty!r} ('zero': no points; 'none': no penalty).\n"
                         f"c.LateSubmissionPlugin.penalty_method = {s.late_penalty!r}\n")
        _write(home / ".jupyter" / "nbgrader_config.py",
               "# Written by the course hub: the formgrader works on this course directory.\n"
               "c = get_config()  # noqa: F821\n"
               f"c.CourseDirectory.root = {str(course)!r}\n")
        _run(["chown", "-R", f"{account.pw_uid}:{account.pw_gid}", str(course), str(home / ".jupyter")])
    folder = hub.course_exchange
    if not folder.exists():
        folder.mkdir()
        # nbgrader's own modes, plus the sticky bit on inbound: a learner may add a submission there but never
        # list, rename or delete anyone's (setgid keeps nbgrader's group inheritance).
        for sub, mode in (("outbound", 0o755), ("inbound", 0o3733), ("feedback", 0o711)):
            (folder / sub).mkdir()
            os.chown(folder / sub, account.pw_uid, account.pw_gid)
            os.chmod(folder / sub, mode)
        os.chown(folder, account.pw_uid, account.pw_gid)
        os.chmod(folder, 0o755)


def remove_user(hub: Hub, name: str) -> None:
    """Stop everything the account runs on the hub, then delete it and its home (only accounts this hub made)."""
    _require_root("remove-user")
    s = hub.settings
    if name not in s.users:
        raise HubError(f"{name} is not an account this hub created (its accounts: {', '.join(sorted(s.users)) or 'none'})")
    server = cgroups.existing(s.name, name)
    if server is not None:
        server.remove()
    if _user(name) is not None:
        _run(["userdel", "--remove", name])
    del s.users[name]
    hub.save()


def run_as(hub: Hub, name: str, command: list[str], cwd: Path | None = None) -> int:
    """Run ``command`` as ``name`` with the environment that user's server gets; returns its exit status."""
    _require_root("run")
    account = _user(name)
    if account is None:
        raise HubError(f"no user named {name}")
    role = hub.settings.users.get(name) or ("instructor" if name in grp.getgrnam(hub.settings.group("instructor")).gr_mem
                                             else "learner")
    env = {"HOME": account.pw_dir, "USER": name, "LOGNAME": name, "SHELL": account.pw_shell,
           "LANG": "C.UTF-8", **hub.server_env(role)}

    def become_user():
        os.setgroups(os.getgrouplist(name, account.pw_gid))
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    try:
        return subprocess.call(command, env=env, cwd=str(cwd or account.pw_dir), preexec_fn=become_user)
    except OSError as err:
        raise HubError(f"cannot run {command[0]!r} as {name}: {err.strerror}") from err


# ---------------------------------------------------------------------------------------------------------
# start, destroy, trial
# ---------------------------------------------------------------------------------------------------------

def _warn_if_solutions_readable() -> None:
    solutions = REPO / "solutions"
    reachable = all(p.stat().st_mode & 0o005 == 0o005 for p in [solutions, *solutions.parents])
    if reachable:
        _say(f"warning: every account on this machine can read {solutions} (answers and hidden tests). The "
             f"course is public, but on a hub you may prefer `chmod o-rwx {solutions}`.")


def start(hub: Hub, log: Path | None = None) -> int:
    """Run JupyterHub in the foreground; on exit make sure no server, kernel or proxy is left behind."""
    _require_root("start")
    if not (hub.env / "bin" / "jupyterhub").exists() or not hub.proxy_command.exists():
        raise HubError(f"the course environment is not installed in {hub.prefix}: run `course-hub setup` first")
    _warn_if_solutions_readable()
    cgroups.make_room_on_v2(hub.settings.name)  # inherited by the hub through COURSEHUB_CGROUP_BASE
    hub.private.mkdir(exist_ok=True)
    os.chmod(hub.private, 0o700)
    env = {"PATH": f"{hub.env / 'bin'}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "COURSEHUB_STATE": str(hub.state), "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(32),
           **({cgroups.BASE_VARIABLE: os.environ[cgroups.BASE_VARIABLE]} if cgroups.BASE_VARIABLE in os.environ else {})}
    command = [str(hub.env / "bin" / "python"), "-m", "coursehub.hub"]
    output = open(log, "ab") if log else None
    child = subprocess.Popen(command, env=env, cwd=str(hub.private), stdout=output,
                             stderr=subprocess.STDOUT if log else None, preexec_fn=_default_signals)

    def forward(signum, _frame):
        child.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
        _stop_leftovers(hub)
        if output:
            output.close()
    return status


def _default_signals() -> None:
    """A hub started from a background job inherits an ignored SIGINT, and so would every service it starts
    (they would then sit out JupyterHub's interrupt before being terminated): give them the defaults back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_leftovers(hub: Hub) -> None:
    """After JupyterHub exits, however it exited: no proxy, no server, no kernel, no cgroup remains."""
    pid_file = hub.private / "proxy.pid"
    if pid_file.exists():
        try:
            pid = int(pid_file.read_text().strip())
            if Path(f"/proc/{pid}/cmdline").read_bytes().find(b"configurable-http-proxy") >= 0:
                os.kill(pid, signal.SIGTERM)
        except (ValueError, OSError):
            pass
        pid_file.unlink(missing_ok=True)
    cgroups.remove_hub(hub.settings.name)


def destroy(hub: Hub) -> None:
    """Remove every account this hub created, its groups and cgroups, and its state directory."""
    _require_root("destroy")
    s = hub.settings
    cgroups.remove_hub(s.name)
    for name in list(s.users):
        remove_user(hub, name)
    for role in ROLES:
        if _group_exists(s.group(role)):
            _run(["groupdel", s.group(role)])
    shutil.rmtree(hub.state)


def trial(port: int, prefix: Path, python: Path, state: Path | None, keep: bool) -> int:
    """Everything on loopback: install if needed, an instructor and two learners, sdpa released; Ctrl-C ends it."""
    setup(prefix, python)
    state = state or Path(tempfile.mkdtemp(prefix="coursehub-trial-"))
    hub = init(state, Settings(name="coursehub-trial", prefix=str(prefix), port=port))
    accounts = {}
    try:
        for name, role in (("trial-teacher", "instructor"), ("trial-ada", "learner"), ("trial-ben", "learner")):
            accounts[name] = add_user(hub, name, role, None, home_base=hub.state / "home")
        _write(hub.private / "trial-accounts.json", json.dumps(accounts, indent=1) + "\n", mode=0o600)
        for step in (["nbgrader", "generate_assignment", "sdpa", "--force"], ["nbgrader", "release_assignment", "sdpa"]):
            if run_as(hub, "trial-teacher", step, cwd=hub.course_dir(Path(pwd.getpwnam("trial-teacher").pw_dir))):
                raise HubError(f"`{' '.join(step)}` failed as trial-teacher")
        print(f"\nA trial course hub: http://127.0.0.1:{port}/  (Ctrl-C stops it"
              f"{'' if keep else ' and removes these accounts'})\n")
        for name, password in accounts.items():
            print(f"  {hub.settings.users[name]:<10} {name:<14} password {password}")
        print("\nLearners find `sdpa` under Nbgrader > Assignments in JupyterLab.\n", flush=True)
        return start(hub)
    finally:
        if not keep:
            destroy(hub)
            _say("trial removed: its accounts, groups, cgroups and state directory are gone")


# ---------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="course-hub", description="A JupyterHub for the course, with nbgrader's exchange.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_state(p):
        p.add_argument("--state", type=Path, default=DEFAULT_STATE, help=f"the hub's state directory (default {DEFAULT_STATE})")
        return p

    p = sub.add_parser("setup", help="install the course environment and the proxy (root; minutes the first time)")
    p.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX, help=f"where to install (default {DEFAULT_PREFIX})")
    p.add_argument("--python", type=Path, default=Path("/usr/bin/python3"), help="a Python every user can run")
    p.add_argument("--force", action="store_true", help="install again even if nothing changed")

    p = with_state(sub.add_parser("init", help="create a hub's state directory, groups and exchange"))
    defaults = Settings()
    p.add_argument("--name", default=defaults.name, help="prefix of the hub's Unix groups and cgroups")
    p.add_argument("--prefix", default=defaults.prefix)
    p.add_argument("--ip", default=defaults.ip, help="where the hub listens (default loopback)")
    p.add_argument("--port", type=int, default=defaults.port)
    p.add_argument("--exchange", default="", help="nbgrader exchange root (default <state>/exchange)")
    for role in ROLES:
        p.add_argument(f"--{role}-mem-limit", default=getattr(defaults, f"{role}_mem_limit"))
        p.add_argument(f"--{role}-cpu-limit", type=float, default=getattr(defaults, f"{role}_cpu_limit"))
    p.add_argument("--late-penalty", choices=("none", "zero"), default=defaults.late_penalty)
    p.add_argument("--idle-cull-seconds", type=int, default=defaults.idle_cull_seconds)

    p = with_state(sub.add_parser("add-user", help="create a learner's or an instructor's local account"))
    p.add_argument("name")
    p.add_argument("--instructor", action="store_true", help="an instructor (default: a learner)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input "
                   "(default: a random one, printed)")
    p.add_argument("--home-base", type=Path, help="create the home under this folder (default: useradd's)")
    p.add_argument("--existing", action="store_true", help="let an existing account in, keeping its password")

    p = with_state(sub.add_parser("remove-user", help="stop and delete an account this hub created"))
    p.add_argument("name")

    p = with_state(sub.add_parser("run", help="run a command as a user, with their server's environment"))
    p.add_argument("name")
    p.add_argument("--cwd", type=Path)
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")

    p = with_state(sub.add_parser("start", help="run the hub in the foreground"))
    p.add_argument("--log", type=Path, help="append the hub's log to this file (default: the terminal)")

    with_state(sub.add_parser("destroy", help="remove the hub's accounts, groups, cgroups and state directory"))

    p = sub.add_parser("trial", help="a trial hub on loopback with an instructor and two learners")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--prefix", type=Path, default=DEFAULT_PREFIX)
    p.add_argument("--python", type=Path, default=Path("/usr/bin/python3"))
    p.add_argument("--state", type=Path, help="state directory (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the accounts and state when it stops")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "setup":
            setup(args.prefix, args.python, force=args.force)
        elif args.command == "init":
            settings = Settings(name=args.name, prefix=str(args.prefix), ip=args.ip, port=args.port,
                                exchange=args.exchange, late_penalty=args.late_penalty,
                                idle_cull_seconds=args.idle_cull_seconds,
                                **{f"{r}_{k}_limit": getattr(args, f"{r}_{k}_limit") for r in ROLES for k in ("mem", "cpu")})
            hub = init(args.state, settings)
            _say(f"hub '{hub.settings.name}' ready in {hub.state}")
        elif args.command == "add-user":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
            if args.password_stdin and not password:
                raise HubError("--password-stdin read an empty password")
            role = "instructor" if args.instructor else "learner"
            password = add_user(Hub(args.state), args.name, role, password, args.home_base, args.existing)
            _say(f"{role} {args.name} can log in" + ("" if args.password_stdin or not password else f" with password {password}"))
        elif args.command == "remove-user":
            remove_user(Hub(args.state), args.name)
        elif args.command == "run":
            command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if command and command[0].startswith("-"):
                raise HubError(f"{command[0]} after the user's name: options such as --cwd go before it "
                               "(course-hub run --state DIR --cwd FOLDER NAME -- COMMAND...)")
            if not command:
                raise HubError("no command given: course-hub run --state DIR NAME -- COMMAND...")
            return run_as(Hub(args.state), args.name, command, args.cwd)
        elif args.command == "start":
            return start(Hub(args.state), args.log)
        elif args.command == "destroy":
            destroy(Hub(args.state))
        elif args.command == "trial":
            return trial(args.port, args.prefix, args.python, args.state, args.keep)
    except (HubError, FileNotFoundError, ValueError, cgroups.CgroupError) as err:
        print(f"course-hub {args.command}: {err}", file=sys.stderr)
        return 2
    return 0
