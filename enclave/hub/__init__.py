"""JupyterHub integration: spawner, authenticator, accounts and the launcher.

``hub_config/jupyterhub_config.py`` loads :class:`~enclave.hub.spawner.EnclaveSpawner`
and :class:`~enclave.hub.auth.EnclaveOAuthenticator`; ``enclave demo`` and the
tests start everything with :func:`enclave.hub.launch.start_enclave`.
"""
