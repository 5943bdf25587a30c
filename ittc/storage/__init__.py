"""What ittc keeps in files: encrypted key shares and site keys, the cluster's TLS
identities, and the one atomic, private-by-default file writer everything else uses.

Nothing here touches the network. Secrets are written only through
:func:`~ittc.storage.sharefile.write_share_file`,
:func:`~ittc.storage.sitekey.write_site_key` (both encrypted),
:func:`~ittc.storage.sharefile.write_passphrase_file` and
:func:`~ittc.storage.pki.write_private_key` (both mode 0600).
"""

from ittc.storage.files import write_file_atomically
from ittc.storage.sharefile import (
    FORMAT_VERSION,
    MAX_FILE_SIZE,
    MAX_MEMLIMIT,
    MAX_OPSLIMIT,
    KdfLimits,
    ShareFileHeader,
    new_passphrase,
    read_passphrase_file,
    read_share_file,
    read_share_header,
    write_passphrase_file,
    write_share_file,
)
from ittc.storage.sitekey import read_site_identity, read_site_key, write_site_key

__all__ = [
    "FORMAT_VERSION",
    "MAX_FILE_SIZE",
    "MAX_MEMLIMIT",
    "MAX_OPSLIMIT",
    "KdfLimits",
    "ShareFileHeader",
    "new_passphrase",
    "read_passphrase_file",
    "read_share_file",
    "read_share_header",
    "read_site_identity",
    "read_site_key",
    "write_file_atomically",
    "write_passphrase_file",
    "write_share_file",
    "write_site_key",
]
