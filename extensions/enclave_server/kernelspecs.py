"""Kernel spec manager that starts only the allowed kernel specs.

``KernelSpecManager.allowed_kernelspecs`` in jupyter_client 8 filters the
list of kernel specs but still starts any installed spec that a client names,
so this subclass applies the allow list when a spec is looked up as well.
"""

from __future__ import annotations

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from traitlets import default

__all__ = ["EnclaveKernelSpecManager"]


class EnclaveKernelSpecManager(KernelSpecManager):
    """List and start only the kernel specs in ``allowed_kernelspecs``."""

    @default("ensure_native_kernel")
    def _default_ensure_native_kernel(self) -> bool:
        # The built-in python3 spec runs a kernel with network access.
        return False

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        """Return the spec ``kernel_name``; raise NoSuchKernel if it is not allowed."""
        allowed = {name.lower() for name in self.allowed_kernelspecs}
        if allowed and kernel_name.lower() not in allowed:
            self.log.warning("Rejected a request for kernel spec %r", kernel_name)
            raise NoSuchKernel(kernel_name)
        return super().get_kernel_spec(kernel_name)
