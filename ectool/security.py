"""Who may do what: identity, privileges and their enforcement in the library.

Checks live here and are called by the library (:mod:`ectool.network`, :mod:`ectool.calls`,
the workflow engine, schema commands), so the CLI, the Python API and the dashboard enforce
the same rules. A denied action raises :class:`~ectool.errors.PermissionDenied` (exit 5)
before anything changes.

Identity: on PostgreSQL the role the server authenticated (``SELECT session_user`` once
connected; never ``EC_USER``, ``PGUSER`` or the config, which anyone can set); on the
embedded store ``EC_USER`` / the config's ``user``, else the OS user, so there privileges are
only as strong as the store file's permissions. The user
who creates a store (``ec db init``, or the first command on a new store) becomes its
``admin``; the ``admin`` role holds every privilege, present and future. A store with no
users at all (made before users existed) is open.
"""

from __future__ import annotations

import getpass
import os
from urllib.parse import unquote, urlsplit

from .errors import PermissionDenied

OBJECTS = ("NODE", "AGENT", "PROCESSOR", "SOCKET", "QUEUE", "PLUG", "WORKER", "CALL", "USER", "ROLE",
           "PRIVILEGE", "TRUST", "SCHEDULE")
ACTIONS = ("RUN_TASK", "CANCEL_TASK", "START_PROCESSOR", "STOP_PROCESSOR", "PAUSE_PROCESSOR",
           "TRUST_REPOSITORY", "DB_INIT", "DB_MIGRATE", "DB_DROP")
#: every privilege the library knows
PRIVILEGES = tuple(f"{verb}_{obj}" for obj in OBJECTS for verb in ("READ", "ADD", "DELETE", "UPDATE")) + ACTIONS
ADMIN = "admin"

_user: str | None = None


def identify(db_url: str, configured: str | None = None) -> str:
    """The acting user for a store URL before connecting (see the module docstring): on
    PostgreSQL only provisional, :func:`ectool.store.open_store` replaces it with the
    session user once connected."""
    if db_url.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        name = urlsplit(db_url).username
        if name:
            return unquote(name)
    return configured or os.environ.get("EC_USER") or getpass.getuser()


def set_user(name: str) -> None:
    """Set the acting user (on every store opened: cached grants belong to one store)."""
    global _user
    _cache.clear()
    _user = name


def current_user() -> str:
    return _user or os.environ.get("EC_USER") or getpass.getuser()


def privileges_of(user: str) -> set[str] | None:
    """The user's privileges; None if the store has no users (open); {"*"} for admins."""
    from .store.models import Privilege, Role, RolePrivilege, User, UserRole

    if not User.select().exists():
        return None
    roles = [r.name for r in Role.select(Role.name).join(UserRole).join(User).where(User.name == user)]
    if ADMIN in roles:
        return {"*"}
    query = (Privilege.select(Privilege.name).join(RolePrivilege).join(Role).join(UserRole).join(User)
             .where(User.name == user))
    return {p.name for p in query}


_cache: dict[str, tuple[float, set[str] | None]] = {}
CACHE_SECONDS = 2.0


def require(privilege: str) -> None:
    """Raise PermissionDenied unless the current user holds ``privilege``.

    Grants are cached for :data:`CACHE_SECONDS` per process (a long ``ec map`` or a
    Python client submits often); a denial is always re-checked.
    """
    import time

    assert privilege in PRIVILEGES, privilege
    user = current_user()
    stamp, held = _cache.get(user, (0.0, None))
    if time.monotonic() - stamp < CACHE_SECONDS and (held is None or "*" in held or privilege in held):
        return
    held = privileges_of(user)
    _cache[user] = (time.monotonic(), held)
    if held is None or "*" in held or privilege in held:
        return
    raise PermissionDenied(f"user {current_user()!r} lacks {privilege} "
                           f"(an admin can grant it: ec add role -n NAME -p {privilege}; "
                           f"ec add user -n {current_user()} -r NAME)")


def allowed(privilege: str) -> bool:
    """Does the current user hold ``privilege``? (:func:`require` without raising.)"""
    try:
        require(privilege)
    except PermissionDenied:
        return False
    return True


def bootstrap() -> None:
    """Create the ``admin`` role and make the current user an admin (on a new store)."""
    from .store.models import Role, User, UserRole

    role, _ = Role.get_or_create(name=ADMIN)
    user, _ = User.get_or_create(name=current_user())
    UserRole.get_or_create(user=user, role=role)
