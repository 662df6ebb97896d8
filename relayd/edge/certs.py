"""`ServerCertificate`: an HTTPS listener's certificate and key, re-read on demand (SIGHUP).

certbot and acme.sh renew a certificate in place, then ask the daemon to reload. Each new
connection takes the context that is current when it is accepted; connections already
open keep the one they were set up with, so a reload drops nothing. A reload that fails
(a missing or unreadable file, a key that does not match the certificate, a half-written
file) is logged and the certificate in use stays.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from relayd.common.runner import describe
from relayd.common.tls import server_context

__all__ = ["HTTPS_ALPN", "CertificateError", "ServerCertificate"]

log = logging.getLogger(__name__)

# What an HTTPS listener offers by ALPN, preferred first (hypercorn speaks both).
HTTPS_ALPN = ("h2", "http/1.1")


class CertificateError(OSError):
    """The certificate or key of a listener cannot be loaded; the message names the key."""


class ServerCertificate:
    """The TLS context of one listener (``section`` names its config section)."""

    def __init__(self, section: str, cert_file: Path, key_file: Path) -> None:
        """Raises `CertificateError` if the files cannot be loaded."""
        self.section = section
        self.cert_file = cert_file
        self.key_file = key_file
        self._context = self._load()

    def current(self) -> ssl.SSLContext:
        """The context for a connection accepted now."""
        return self._context

    def reload(self) -> bool:
        """Re-read the files; on failure log it and keep the context in use."""
        try:
            context = self._load()
        except CertificateError as exc:
            log.error("%s; still serving the previous certificate", exc)
            return False
        self._context = context
        log.info("%s TLS certificate reloaded from %s", self.section, self.cert_file)
        return True

    def _load(self) -> ssl.SSLContext:
        try:
            return server_context(self.cert_file, self.key_file, alpn=HTTPS_ALPN)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise CertificateError(
                f"{self.section}.tls_cert: cannot load {self.cert_file} with key "
                f"{self.key_file}: {describe(exc)}") from exc
