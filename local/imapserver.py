"""A real Dovecot IMAP server for the tests, benchmarks and the demo, run from a temp dir.

``DovecotServer`` is a plain class (a context manager) so a benchmark can run one outside pytest;
the session fixture at the bottom wraps it. Everything Dovecot writes (config, sockets, state, log,
mail) stays under one temp dir, and nothing is read from the system's /etc/dovecot.

Run as root, Dovecot refuses to run its login process or touch mail as root, so those two run as
``nobody`` (the one user every Debian system has); run as anyone else, everything runs as that user.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
INSTALL_SCRIPT = Path(__file__).resolve().parent / "install-dovecot.sh"
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")  # not on an unprivileged user's PATH on Debian
START_TIMEOUT = 15.0
_USER_NAME = re.compile(r"[A-Za-z0-9._@+-]+")

CONFIG = """\
# Written by local/imapserver.py: a throwaway IMAP server on {host}:{port}.
protocols = imap
listen = {host}
base_dir = {root}/run
state_dir = {root}/state
instance_name = sendwell-test-{port}
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# A failed login answers at once: tests check wrong passwords and must stay fast.
auth_failure_delay = 0
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
# mdbox, Dovecot's own format, stores many messages a file: APPEND runs ~6x faster than with
# maildir, which a 10,000-message benchmark mailbox needs. The mail is throwaway: no fsync.
mail_location = mdbox:~/mdbox
mail_fsync = never

passdb {{
  driver = passwd-file
  # One passwd-file per user: Dovecot stats a file at most once a second, so a user added just
  # after another one logged in would be missed in a shared file; a new file is read at once.
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={root}/mail/%u
}}

namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}

# chroot needs root; the rootless setup Dovecot documents turns it off for these two.
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
  # No listener, no penalty: Dovecot would otherwise slow every login after one wrong password.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


@dataclass(frozen=True, slots=True)
class _Identity:
    internal_user: str
    internal_group: str
    login_user: str
    mail_uid: int
    mail_gid: int


def dovecot_binary() -> str | None:
    return shutil.which("dovecot", path=_search_path())


def _search_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])


def ensure_dovecot() -> str:
    """The dovecot binary, installing the Debian package first when it is missing."""
    binary = dovecot_binary()
    if binary is not None:
        return binary
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
    binary = dovecot_binary()
    if result.returncode != 0 or binary is None:
        raise RuntimeError(
            f"dovecot is missing and {INSTALL_SCRIPT.name} could not install it "
            f"(exit {result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return binary


class DovecotServer:
    """Dovecot on 127.0.0.1 and a free port, with users in passwd-files that it rereads."""

    host = HOST

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or ensure_dovecot()
        self.port = 0
        self.root = Path()
        self._process: subprocess.Popen[bytes] | None = None
        self._users: dict[str, str] = {}

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        identity = _identity()
        self.root = Path(tempfile.mkdtemp(prefix="sendwell-dovecot-"))
        # The mail processes may run as another user (see the module docstring): they must be able
        # to pass through this directory and own the mail under it.
        self.root.chmod(0o711)
        for sub in ("run", "state", "mail", "users"):
            (self.root / sub).mkdir()
        os.chown(self.root / "mail", identity.mail_uid, identity.mail_gid)
        for _attempt in range(3):  # another process may take the free port before Dovecot binds it
            self.port = _free_port()
            config = self.root / "dovecot.conf"
            config.write_text(CONFIG.format(host=HOST, port=self.port, root=self.root, **asdict(identity)))
            with (self.root / "dovecot.stderr").open("wb") as stderr:
                self._process = subprocess.Popen(
                    [self.binary, "-F", "-c", str(config)], stdout=stderr, stderr=subprocess.STDOUT
                )
            if self._wait_until_listening():
                return
        output = (self.root / "dovecot.stderr").read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"dovecot did not start:\n{output[-2000:]}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()  # the master stops its children before it exits
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.root != Path() and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    def add_user(self, name: str, password: str) -> None:
        """Create a user, or change its password: a change takes up to a second to be seen."""
        if not _USER_NAME.fullmatch(name) or any(ch in password for ch in ":\r\n"):
            raise ValueError("a user name is letters, digits and ._@+-; a password has no ':' or line break")
        path = self.root / "users" / name
        changed = name in self._users
        self._users[name] = password
        staged = path.with_suffix(".new")
        staged.write_text(f"{name}:{{PLAIN}}{password}\n", encoding="utf-8")
        if changed:
            # Dovecot rereads a file whose mtime (whole seconds) changed, checking at most once a
            # second: give the new version another mtime, and let the second it was written end.
            mtime = int(max(time.time(), path.stat().st_mtime + 1))
            os.utime(staged, (mtime, mtime))
        staged.replace(path)
        if changed:
            time.sleep(max(0.0, int(time.time()) + 1 - time.time()) + 0.01)

    def connect(self, name: str) -> imaplib.IMAP4:
        """A logged-in imaplib session as ``name``, for tests to set up mailboxes directly."""
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        client.login(name, self._users[name])
        return client

    def set_uidvalidity(self, name: str, mailbox: str, uidvalidity: int) -> None:
        """Renumber a mailbox the way a server migration or restore does (``doveadm mailbox update``)."""
        command = ["mailbox", "update", "-u", name, "--uid-validity", str(uidvalidity), mailbox]
        self.doveadm(*command)

    def doveadm(self, *args: str) -> str:
        doveadm = shutil.which("doveadm", path=_search_path())
        if doveadm is None:
            raise RuntimeError("doveadm is missing (it comes with dovecot-core)")
        config = str(self.root / "dovecot.conf")
        result = subprocess.run([doveadm, "-c", config, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"doveadm {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_until_listening(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False  # exited: most likely the port was taken
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"* OK"):
                        return True
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen within {START_TIMEOUT} s:\n{self.log()[-2000:]}")


def _identity() -> _Identity:
    user = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(os.getgid()).gr_name
    if os.getuid() != 0:
        return _Identity(user.pw_name, group, user.pw_name, user.pw_uid, user.pw_gid)
    nobody = pwd.getpwnam("nobody")
    return _Identity(user.pw_name, group, nobody.pw_name, nobody.pw_uid, nobody.pw_gid)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port
