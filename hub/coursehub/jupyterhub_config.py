"""JupyterHub's configuration for a course hub; ``course-hub start`` passes it with ``-f``.

Everything specific to one hub comes from its state directory (``COURSEHUB_STATE``, see
:mod:`coursehub.settings`); this file only says how the parts fit together. An operator who needs more (an
institution's single sign-on, TLS) adds a ``jupyterhub_config.d/*.py`` file to the state directory: those are
read last and override anything here (see hub/README.md).
"""

import grp
import os
import sys

from coursehub.settings import Hub, parse_bytes

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)
hub = Hub(os.environ["COURSEHUB_STATE"])
s = hub.settings

# -- network: the proxy listens where people connect; the hub's API and the proxy's API stay on loopback ----
c.JupyterHub.ip = s.ip
c.JupyterHub.port = s.port
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = s.port + 1
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s.port + 2}"
c.ConfigurableHTTPProxy.command = [str(hub.proxy_command)]
c.ConfigurableHTTPProxy.pid_file = str(hub.private / "proxy.pid")

# -- state: root-only files in <state>/private --------------------------------------------------------------
c.JupyterHub.db_url = f"sqlite:///{hub.private / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(hub.private / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(hub.private / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every server (and empties their cgroups)
c.JupyterHub.cleanup_proxy = True

# -- who may log in: local accounts in the hub's two Unix groups, checked by PAM against /etc/shadow ----------
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {s.group("learner"), s.group("instructor")}
c.PAMAuthenticator.open_sessions = False
c.JupyterHub.template_vars = {
    "announcement_login": "Attention Mechanisms and Transformers: log in with the account your instructor gave you.",
}


def role_of(name: str) -> str:
    try:
        return "instructor" if name in grp.getgrnam(s.group("instructor")).gr_mem else "learner"
    except KeyError:
        return "learner"


# -- each person's server: JupyterLab from the shared course environment, limited by its own cgroup --------
c.JupyterHub.spawner_class = "coursehub.spawner.CgroupSpawner"
c.CgroupSpawner.cgroup_name = s.name
c.Spawner.cmd = [str(hub.env / "bin" / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 120  # a cold JupyterLab on a busy two-core machine takes tens of seconds
c.Spawner.http_timeout = 120


def per_role(spawner) -> None:
    """Limits and Jupyter configuration by role; instructors get room to grade."""
    role = role_of(spawner.user.name)
    spawner.mem_limit = parse_bytes(getattr(s, f"{role}_mem_limit"))
    spawner.cpu_limit = float(getattr(s, f"{role}_cpu_limit"))
    spawner.environment = {**spawner.environment, **hub.server_env(role)}


c.Spawner.pre_spawn_hook = per_role

# -- stop servers nobody uses: a learner's memory comes back to the pool -------------------------------------
if s.idle_cull_seconds:
    c.JupyterHub.services = [{
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={s.idle_cull_seconds}"],
    }]
    c.JupyterHub.load_roles = [{
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }]

# -- the operator's additions, read last -----------------------------------------------------------------
for extra in sorted((hub.state / "jupyterhub_config.d").glob("*.py")):
    load_subconfig(str(extra))  # noqa: F821 (provided by traitlets to configuration files)
