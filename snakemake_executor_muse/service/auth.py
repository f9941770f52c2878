"""Users, password hashes and JSON Web Tokens of the local service.

The users file is YAML::

    users:
      alice:
        password_hash: "pbkdf2_sha256$600000$<salt>$<hash>"
        softwares: ["*"]          # or a list of software names

Password hashes are PBKDF2-SHA256 from the standard library, with the iteration count
and the salt inside the string (``muse hash-password`` makes them). Tokens are HS256
JWTs whose signing secret is generated once and kept, mode 0600, in the state folder,
so that a restarted service still accepts the tokens it issued. Neither passwords nor
tokens are ever logged or put into an exception message.
"""

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import yaml

logger = logging.getLogger(__name__)

HASH_SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000
SECRET_FILE_NAME = "jwt_secret"
ISSUER = "muse-serve"


class AuthenticationFailed(Exception):
    """Wrong credentials, or a token that is missing, malformed or expired (401)."""

    def __init__(self, message: str, more: list[str] | None = None) -> None:
        super().__init__(message)
        self.more = more or []


class AccessDenied(Exception):
    """An authenticated user without access to the software asked for (403)."""

    def __init__(self, message: str, more: list[str] | None = None) -> None:
        super().__init__(message)
        self.more = more or []


class UsersFileError(Exception):
    """The users file cannot be read or has the wrong shape (a start-up error)."""


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """A salted PBKDF2-SHA256 hash: ``pbkdf2_sha256$<iterations>$<salt>$<hash>``."""
    salt = secrets.token_urlsafe(16)
    digest = _pbkdf2(password, salt, iterations)
    return f"{HASH_SCHEME}${iterations}${salt}${digest}"


def check_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches the ``hash_password`` string ``encoded``."""
    try:
        scheme, iterations, salt, expected = encoded.split("$", 3)
        rounds = int(iterations)
    except ValueError:
        return False
    if scheme != HASH_SCHEME or rounds < 1:
        return False
    return hmac.compare_digest(_pbkdf2(password, salt, rounds), expected)


def _pbkdf2(password: str, salt: str, iterations: int) -> str:
    raw = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return base64.b64encode(raw).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class User:
    """One entry of the users file."""

    name: str
    password_hash: str
    softwares: tuple[str, ...]

    def may_run(self, software: str) -> bool:
        return "*" in self.softwares or software in self.softwares


def load_users(path: Path) -> dict[str, User]:
    """Read the users file; raise UsersFileError naming what is wrong."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsersFileError(f"cannot read users file {path}: {exc}") from exc
    entries = data.get("users") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise UsersFileError(
            f"users file {path}: expected a mapping 'users: {{NAME: {{password_hash: "
            "..., softwares: [...]}}}}' at the top; make hashes with "
            "'muse hash-password'"
        )
    return {str(name): _user(path, str(name), entry) for name, entry in entries.items()}


def _user(path: Path, name: str, entry: object) -> User:
    if not isinstance(entry, dict) or not isinstance(entry.get("password_hash"), str):
        raise UsersFileError(
            f"users file {path}: user {name!r} needs a 'password_hash' string "
            "(make one with 'muse hash-password')"
        )
    softwares = entry.get("softwares", [])
    if isinstance(softwares, str):
        softwares = [softwares]
    if not isinstance(softwares, list):
        raise UsersFileError(
            f"users file {path}: 'softwares' of user {name!r} must be a list of "
            f'software names or ["*"], got {type(softwares).__name__}'
        )
    return User(name, entry["password_hash"], tuple(str(sw) for sw in softwares))


class UserDirectory:
    """The users file, re-read when it changes on disk."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._users: dict[str, User] = {}
        if path is not None:
            self._reload()

    def _reload(self) -> None:
        assert self._path is not None
        mtime = self._path.stat().st_mtime
        if mtime != self._mtime:
            self._users = load_users(self._path)
            self._mtime = mtime
            logger.info("users file %s: %d users", self._path, len(self._users))

    def get(self, name: str) -> User | None:
        if self._path is None:
            return None
        with self._lock:
            try:
                self._reload()
            except (OSError, UsersFileError) as exc:
                # keep serving the users read before rather than locking everyone out
                logger.error(
                    "users file not re-read, keeping the previous one: %s", exc
                )
        return self._users.get(name)

    def authenticate(self, username: str, password: str) -> User:
        if self._path is None:
            raise AuthenticationFailed(
                "this service has no users: start 'muse serve' with --users FILE",
                ["make password hashes with 'muse hash-password'"],
            )
        user = self.get(username)
        if user is None or not check_password(password, user.password_hash):
            logger.info("failed login for user %r", username)
            raise AuthenticationFailed(
                "wrong username or password",
                ["ask the service's administrator for a user, or check the users file"],
            )
        return user


def load_or_create_secret(state_dir: Path) -> bytes:
    """The token signing secret, created (mode 0600) on first use."""
    path = state_dir / SECRET_FILE_NAME
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        candidate = state_dir / f".{SECRET_FILE_NAME}.{os.getpid()}"
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        # link-then-unlink: two services starting at once agree on one secret
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    os.chmod(path, 0o600)
    return path.read_text().strip().encode()


@dataclass(frozen=True)
class TokenInfo:
    """What a valid token says."""

    username: str
    expires: int


class TokenIssuer:
    """Issues and checks HS256 tokens with a lifetime."""

    def __init__(self, secret: bytes, lifetime_seconds: int) -> None:
        self._secret = secret
        self.lifetime_seconds = lifetime_seconds

    def issue(self, username: str) -> str:
        now = int(time.time())
        claims = {
            "sub": username,
            "iat": now,
            "exp": now + self.lifetime_seconds,
            "iss": ISSUER,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str | None) -> TokenInfo:
        if not token:
            raise AuthenticationFailed(
                "a JWT is required: send it as the 'jwt' parameter or an "
                "'Authorization: Bearer' header",
                ["get one with POST /api/jwt/obtain/ (username, password)"],
            )
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationFailed(
                "the JWT has expired",
                ["get a new one with POST /api/jwt/obtain/"],
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise AuthenticationFailed(
                "the JWT is not valid for this service",
                ["get one with POST /api/jwt/obtain/ from this service"],
            ) from exc
        return TokenInfo(str(claims["sub"]), int(claims["exp"]))
