"""JupyterHub configuration of the research enclave.

Read by ``jupyterhub -f hub_config/jupyterhub_config.py``. Every value that
changes between installations comes from an environment variable, which
``enclave.hub.launch`` sets:

Required
    ``ENCLAVE_HUB_STATE_DIR``  folder of the hub database, cookie secret, proxy pid
    ``ENCLAVE_OIDC_ISSUER``  issuer URL of the OpenID Connect provider
    ``ENCLAVE_OIDC_CLIENT_ID``  the hub's client id at the provider
    ``ENCLAVE_OIDC_CLIENT_SECRET_FILE``  file (mode 0600) of the client secret
    ``ENCLAVE_HUB_CRYPT_KEY_FILE``  file (mode 0600) of the auth state key
Optional
    ``ENCLAVE_HUB_PORT`` public port of the proxy (8000),
    ``ENCLAVE_HUB_API_PORT`` the hub's own port (8081),
    ``ENCLAVE_PROXY_API_PORT`` the proxy's REST API port (8001),
    ``ENCLAVE_HUB_SERVICES`` comma-separated managed services to run, out of
    ``broker``, ``audit`` and ``ethics`` (all by default; empty for none),
    ``ENCLAVE_ETHICS_PORT`` port of the ethics page service (8003),
    ``ENCLAVE_HUB_HOME_ROOT`` folder of the researchers' home folders
    (``/home/enclave``),
    ``ENCLAVE_HUB_RUNTIME_ROOT`` folder of the users' Jupyter runtime folders
    (``/run/enclave-users``),
    ``ENCLAVE_MFA_GROUPS`` groups that must sign in with a second factor
    (``security-admins``),
    ``ENCLAVE_AUDIT_USER`` OS user of the audit collector (the broker's OS
    user), and the ``ENCLAVE_*`` settings of ``enclave.config.load_settings``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from enclave.config import load_settings
from enclave.hub.accounts import ROLE_GROUPS

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

HUB_CONFIG_DIR = Path(__file__).resolve().parent
REPO_ROOT = HUB_CONFIG_DIR.parent
BIN_DIR = Path(sys.executable).parent


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(
            f"jupyterhub_config.py: environment variable {name} is not set. "
            "Start the hub with `python -m enclave.hub.launch`, or set it."
        )
    return value


def _read_secret(path: str) -> str:
    secret_file = Path(path)
    if secret_file.stat().st_mode & 0o077:
        raise SystemExit(
            f"{secret_file} is readable by other users; run chmod 600 {secret_file}"
        )
    return secret_file.read_text(encoding="utf-8").strip()


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


settings = load_settings()
state_dir = Path(_required("ENCLAVE_HUB_STATE_DIR"))
issuer = _required("ENCLAVE_OIDC_ISSUER").rstrip("/")
hub_port = int(os.environ.get("ENCLAVE_HUB_PORT", "8000"))
hub_api_port = int(os.environ.get("ENCLAVE_HUB_API_PORT", "8081"))
proxy_api_port = int(os.environ.get("ENCLAVE_PROXY_API_PORT", "8001"))
ethics_port = int(os.environ.get("ENCLAVE_ETHICS_PORT", "8003"))
public_url = f"http://127.0.0.1:{hub_port}"

# --- Network: everything on loopback --------------------------------------
c.JupyterHub.bind_url = f"{public_url}/"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{hub_api_port}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [
    str(HUB_CONFIG_DIR / "node_modules" / ".bin" / "configurable-http-proxy")
]
c.ConfigurableHTTPProxy.pid_file = str(state_dir / "proxy.pid")

# --- State --------------------------------------------------------------
c.JupyterHub.db_url = f"sqlite:///{state_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state_dir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state_dir / "jupyterhub.pid")
c.JupyterHub.log_level = os.environ.get("ENCLAVE_HUB_LOG_LEVEL", "INFO")
# A hub login lasts as long as a provider session (8 hours), not the 14 days
# that JupyterHub allows by default.
c.JupyterHub.cookie_max_age_days = 8 / 24

# --- Authentication: the enclave's OpenID Connect provider ---------------
c.JupyterHub.authenticator_class = "enclave.hub.auth.EnclaveOAuthenticator"
c.EnclaveOAuthenticator.login_service = "enclave sign-in"
c.EnclaveOAuthenticator.client_id = _required("ENCLAVE_OIDC_CLIENT_ID")
c.EnclaveOAuthenticator.client_secret = _read_secret(
    _required("ENCLAVE_OIDC_CLIENT_SECRET_FILE")
)
c.EnclaveOAuthenticator.oauth_callback_url = f"{public_url}/hub/oauth_callback"
c.EnclaveOAuthenticator.authorize_url = f"{issuer}/auth"
c.EnclaveOAuthenticator.token_url = f"{issuer}/token"
# The ID token carries amr and acr, which the userinfo response lacks. It
# comes straight from the provider's token endpoint over loopback.
c.EnclaveOAuthenticator.userdata_from_id_token = True
c.EnclaveOAuthenticator.scope = ["openid", "profile", "email", "groups"]
c.EnclaveOAuthenticator.username_claim = "preferred_username"
c.EnclaveOAuthenticator.enable_pkce = True
c.EnclaveOAuthenticator.manage_groups = True
c.EnclaveOAuthenticator.auth_state_groups_key = "oauth_user.groups"
c.EnclaveOAuthenticator.allowed_groups = set(ROLE_GROUPS)
c.EnclaveOAuthenticator.admin_groups = set()
c.EnclaveOAuthenticator.admin_users = set()
c.EnclaveOAuthenticator.mfa_required_groups = set(
    _names(os.environ.get("ENCLAVE_MFA_GROUPS", "security-admins"))
)
# Each login's amr, acr and groups go to the catalog, where the broker
# applies the login rules of levels 4 and 5 for as long as the cookie lasts.
c.EnclaveOAuthenticator.catalog_url = settings.db_url
# Each login, rejection and logout is also an audit event, and a login that
# cannot be audited is rejected. The hub runs as root, so it reads the key.
c.EnclaveOAuthenticator.audit_key_file = str(settings.audit_key_path)
c.EnclaveOAuthenticator.login_lifetime_hours = c.JupyterHub.cookie_max_age_days * 24
c.EnclaveOAuthenticator.auto_login = True
c.EnclaveOAuthenticator.enable_auth_state = True
c.EnclaveOAuthenticator.logout_redirect_url = (
    f"{issuer}/session/end?client_id={c.EnclaveOAuthenticator.client_id}"
)
# JupyterHub's CryptKeeper reads from this variable the key that encrypts the
# auth state (the user's tokens from the provider) in the hub database.
os.environ.setdefault(
    "JUPYTERHUB_CRYPT_KEY", _read_secret(_required("ENCLAVE_HUB_CRYPT_KEY_FILE"))
)

# --- Roles: no API tokens, no sharing, no admin ---------------------------
# The default `user` role grants `self`, which includes `tokens` and
# `shares`. With `tokens` a user could create a long-lived API token usable
# outside the browser, and with `shares` open their server to another user.
# The enclave grants only what is needed to start, stop and use one's own
# server.
c.JupyterHub.load_roles = [
    {
        "name": "user",
        "description": "Start, stop and use one's own server",
        "scopes": [
            "read:users!user",
            "users:activity!user",
            "servers!user",
            "access:servers!user",
        ],
    },
]
c.JupyterHub.allow_named_servers = False
# The page layout in templates/ hides the Token link from users without the
# `tokens` scope.
c.JupyterHub.template_paths = [str(HUB_CONFIG_DIR / "templates")]

# --- Spawner: each researcher's server as their own OS user ---------------
c.JupyterHub.spawner_class = "enclave.hub.spawner.EnclaveSpawner"
c.EnclaveSpawner.user_prefix = settings.user_prefix
c.EnclaveSpawner.home_root = os.environ.get("ENCLAVE_HUB_HOME_ROOT", "/home/enclave")
c.EnclaveSpawner.runtime_root = os.environ.get(
    "ENCLAVE_HUB_RUNTIME_ROOT", "/run/enclave-users"
)
c.EnclaveSpawner.broker_socket = str(settings.broker_socket)
c.EnclaveSpawner.audit_socket = str(settings.audit_socket)
c.EnclaveSpawner.run_dir = str(settings.run_dir)
c.Spawner.cmd = [str(BIN_DIR / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# On SIGINT, Jupyter Server asks on stdin for 5 s whether to shut down.
# SIGTERM shuts it down at once, kernels included.
c.LocalProcessSpawner.interrupt_timeout = 0
# Leave ~/.jupyter out of the server's configuration search path, so a user
# cannot re-enable what the arguments below turn off.
c.Spawner.disable_user_config = True
c.Spawner.environment = {
    # The repository root is a Jupyter data folder whose kernels/ holds the
    # locked-down `enclave-python` kernel spec.
    "JUPYTER_PATH": str(REPO_ROOT),
    # singleuser/labconfig/page_config.json turns off the JupyterLab plugins
    # of the extension manager, terminals and the news feed.
    "JUPYTER_CONFIG_PATH": str(HUB_CONFIG_DIR / "singleuser"),
}
# Command-line arguments take precedence over every configuration file.
c.Spawner.args = [
    "--ServerApp.terminals_enabled=False",
    "--LabApp.extension_manager=readonly",
    "--LabApp.lock_all_plugins=True",
    # No requests from the researcher's browser to jupyter.org or PyPI.
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    "--ServerApp.jpserver_extensions=enclave_server=True",
    "--ServerApp.contents_manager_class=enclave_server.contents.EnclaveContentsManager",
    "--KernelManager.transport=ipc",
    "--KernelSpecManager.ensure_native_kernel=False",
    "--KernelSpecManager.allowed_kernelspecs=enclave-python",
    "--MappingKernelManager.default_kernel_name=enclave-python",
]

# --- Managed services ----------------------------------------------------
enclave_bin = str(BIN_DIR / "enclave")
service_env = {
    "ENCLAVE_HOME": str(settings.home),
    "ENCLAVE_KEY_DIR": str(settings.key_dir),
    "ENCLAVE_RUN_DIR": str(settings.run_dir),
    "ENCLAVE_DB_URL": settings.db_url,
    "ENCLAVE_BROKER_USER": settings.broker_user,
    "ENCLAVE_USER_PREFIX": settings.user_prefix,
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
}
known_services = {
    "broker": {
        "name": "broker",
        "command": [enclave_bin, "broker", "serve"],
        "user": settings.broker_user,
        "environment": service_env,
    },
    # The collector appends to the same catalog and reads the audit key, both
    # owned by the broker's OS user, so by default it runs as that user too.
    "audit": {
        "name": "audit",
        "command": [sys.executable, "-m", "enclave.audit.service"],
        "user": os.environ.get("ENCLAVE_AUDIT_USER", settings.broker_user),
        "environment": service_env,
    },
    # The ethics review page, at /services/ethics/ behind the hub's OAuth.
    # Its entry comes from enclave.ethics, imported only when it is requested.
    "ethics": None,
}
requested_services = _names(
    os.environ.get("ENCLAVE_HUB_SERVICES", "broker,audit,ethics")
)
unknown = sorted(set(requested_services) - set(known_services))
if unknown:
    raise SystemExit(
        f"ENCLAVE_HUB_SERVICES names unknown services {unknown}; "
        f"choose from {sorted(known_services)}"
    )
if "ethics" in requested_services:
    from enclave.ethics import hub_service as ethics_service

    known_services["ethics"] = ethics_service.service_entry(
        f"http://127.0.0.1:{ethics_port}",
        environment=service_env,
        user=settings.broker_user,
    )
    # Every signed-in user may open the ethics page. The page itself decides
    # what each role may do there.
    c.JupyterHub.load_roles[0]["scopes"].extend(ethics_service.USER_SCOPES)
    c.JupyterHub.load_roles.append(ethics_service.service_role())
c.JupyterHub.services = [known_services[name] for name in requested_services]
lookup_services = [name for name in requested_services if name != "ethics"]
if lookup_services:
    c.JupyterHub.load_roles.append(
        {
            "name": "enclave-service",
            "description": "Look up users and their groups",
            "scopes": [
                "list:users",
                "read:users:name",
                "read:users:groups",
                "read:groups",
            ],
            "services": lookup_services,
        }
    )
