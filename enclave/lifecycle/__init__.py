"""Lifecycle of access and data: revocation at a project's end, working copies."""
