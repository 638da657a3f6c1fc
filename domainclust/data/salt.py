"""The per-installation secret mixed into hashed item keys (DICOM UIDs, file paths).

A public constant would let anyone holding a store test guesses of a UID against its keys; a
random salt, made once and kept beside the user's configuration, does not. The store records
only a one-way id of the salt, so a resume or `--add` with another salt is refused clearly
instead of every item looking new.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from domainclust.errors import DomainclustError

SALT_FILE = "salt"


def config_dir() -> Path:
    """`$DOMAINCLUST_CONFIG_DIR`, else `$XDG_CONFIG_HOME/domainclust`, else
    `~/.config/domainclust`."""
    explicit = os.environ.get("DOMAINCLUST_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "domainclust"


def installation_salt() -> str:
    """This installation's salt: read from `config_dir()/salt`, created there (random, 128
    bits, readable by its owner only) the first time; two processes creating it at once agree
    on the first one written."""
    path = config_dir() / SALT_FILE
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise DomainclustError(
                f"cannot create the key salt {path} ({exc.strerror}); set DOMAINCLUST_CONFIG_DIR "
                "to a writable folder or pass --set salt=...") from None
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(16) + "\n")
    salt = path.read_text().strip()
    if not salt:  # another process has created the file and not yet written it
        raise DomainclustError(f"the key salt {path} is empty; delete it to make a new one")
    return salt


def salt_id(salt: str) -> str:
    """A one-way id of `salt` for the store: equal ids, equal salts; it reveals nothing of it."""
    return hashlib.sha256(f"domainclust salt id\x1f{salt}".encode()).hexdigest()[:16]
