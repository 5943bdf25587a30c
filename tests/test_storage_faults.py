"""A node's files, damaged or swapped or loosened, and its audit log, edited.

Every case starts a real node process (``python -m ittc_node``) on a copy of node 4's
folder that was broken one way, and checks what an operator would see: exit status 2,
one line on stderr naming the file at fault and the problem, and **nothing lost or
overwritten**: the share file, the audit log, the passphrase file and the TLS key have
the same bytes, mtime and mode afterwards, and no file appeared or vanished.

The audit log the cases start from is a real one, written by node 4 while it signed
and refused requests. ``ittc audit verify`` (the command line, in a subprocess) is
checked against the same log: intact, edited, with a line deleted or moved, cut short.

Already in tests/test_node.py (not repeated): a byte flipped near the end of the share
file, a wrong passphrase, mode 0644 on the share file and the TLS key, the audit log's
folder being a file, an edited last line, a log of another key, an unknown config field.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from ittc_node.audit import AuditLog, audit_log_head, verify_audit_log

from ittc.deploy.layout import CeremonyFolder
from ittc.deploy.localcluster import NodeStartError
from tests.cluster import (
    EmbeddedNode,
    LocalCluster,
    audit_log_of,
    copy_node,
    file_state,
    make_cluster,
    pkcs1_item,
    pss_item,
    sign_request,
    site_passphrase,
    write_private,
)

TIMEOUT = 20.0
#: Node processes started at once (the machine has two cores and other users).
PARALLEL = 4


@dataclass
class Env:
    cluster: LocalCluster
    #: A real audit log written by node 4 (start, signed and refused requests, stop).
    real_log: bytes
    #: Another key's cluster folder.
    other_root: pathlib.Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("storage-faults")
    root = make_cluster(base / "main")
    other = make_cluster(base / "other")
    with LocalCluster(root) as cluster:
        cluster.start([4], timeout=120)
        stub = cluster.stub(4)
        p = cluster.params
        for n in range(4):
            stub.Sign(
                sign_request(p, [pkcs1_item(f"m{n}".encode()), pss_item(b"p")]), timeout=TIMEOUT
            )
        with pytest.raises(grpc.RpcError):
            stub.Sign(sign_request(p, [pkcs1_item(b"x")], key_id="00" * 32), timeout=TIMEOUT)
        stub.Sign(sign_request(p, [pkcs1_item(b"last")]), timeout=TIMEOUT)
        assert cluster.terminate(4) == 0
        real_log = cluster.audit_log(4).read_bytes()
        assert verify_audit_log(cluster.audit_log(4)) == 8  # start, 6 requests, stop
        yield Env(cluster, real_log, other)


def lines_of(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


# -- breaking a node folder -------------------------------------------------------------

#: What a breaker returns: the file the node must name, and what it must say about it.
Blame = tuple[pathlib.Path, str]


def _flip(path: pathlib.Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    mode = path.stat().st_mode
    path.write_bytes(bytes(data))
    os.chmod(path, mode)


def _own_passphrase(folder: pathlib.Path, content: bytes, mode: int = 0o600) -> pathlib.Path:
    """Give the copy a passphrase file of its own, in its config folder."""
    path = write_private(folder / "passphrase", content)
    os.chmod(path, mode)
    toml = folder / "node.toml"
    toml.write_text(
        re.sub(r"(?m)^passphrase_file = .*$", 'passphrase_file = "passphrase"', toml.read_text())
    )
    return path


def _share_header_byte(folder: pathlib.Path, env: Env) -> Blame:
    _flip(folder / "share.enc", 40)  # inside the KDF salt: the header checksum catches it
    return folder / "share.enc", "is damaged: its header checksum does not match"


def _share_ciphertext_byte(folder: pathlib.Path, env: Env) -> Blame:
    share = folder / "share.enc"
    _flip(share, share.stat().st_size // 2 + 100)  # mid-ciphertext: the AEAD catches it
    return share, "is damaged or was altered: it fails authentication"


def _share_of_another_node(folder: pathlib.Path, env: Env) -> Blame:
    share = folder / "share.enc"
    shutil.copy2(env.cluster.node_dir(2) / "share.enc", share)
    return share, "holds the share of node 2, not of node 4"


def _share_of_another_key(folder: pathlib.Path, env: Env) -> Blame:
    share = folder / "share.enc"
    shutil.copy2(CeremonyFolder(env.other_root).etc(4) / "share.enc", share)
    return share, "holds a share of key"


def _passphrase_with_extra_newline(folder: pathlib.Path, env: Env) -> Blame:
    _own_passphrase(
        folder, site_passphrase(env.cluster.root, 4) + b"\n\n"
    )  # one newline is forgiven, not two
    return folder / "share.enc", "the passphrase does not open"


def _empty_passphrase(folder: pathlib.Path, env: Env) -> Blame:
    return _own_passphrase(folder, b"\n"), "holds an empty passphrase"


def _passphrase_group_readable(folder: pathlib.Path, env: Env) -> Blame:
    path = _own_passphrase(folder, site_passphrase(env.cluster.root, 4) + b"\n", 0o640)
    return path, "accessible by group or other users (mode 0640); restrict it with: chmod 600"


def _share_group_writable(folder: pathlib.Path, env: Env) -> Blame:
    os.chmod(folder / "share.enc", 0o620)
    return folder / "share.enc", "(mode 0620); restrict it with: chmod 600"


def _tls_key_other_readable(folder: pathlib.Path, env: Env) -> Blame:
    os.chmod(folder / "tls.key", 0o604)
    return folder / "tls.key", "private key is accessible to other users (chmod 600)"


def _audit_is_a_directory(folder: pathlib.Path, env: Env) -> Blame:
    (audit_log_of(folder)).unlink()
    (audit_log_of(folder)).mkdir()
    return audit_log_of(folder), "cannot open for appending"


def _audit_is_a_fifo(folder: pathlib.Path, env: Env) -> Blame:
    # Opening a FIFO for writing waits for a reader: the node must refuse, not hang.
    (audit_log_of(folder)).unlink()
    os.mkfifo(audit_log_of(folder), 0o600)
    return audit_log_of(folder), "cannot open for appending"


def _audit_is_a_symlink(folder: pathlib.Path, env: Env) -> Blame:
    # A link to a log elsewhere (maybe the real one, maybe /etc/passwd): not followed.
    elsewhere = folder.parent / f"{folder.name}-log-elsewhere"
    (audit_log_of(folder)).rename(elsewhere)
    (audit_log_of(folder)).symlink_to(elsewhere)
    return audit_log_of(folder), "cannot open for appending"


def _audit_group_writable(folder: pathlib.Path, env: Env) -> Blame:
    os.chmod(audit_log_of(folder), 0o620)
    return audit_log_of(folder), "writable by group or other users (mode 0620)"


def _edit_log(change: Callable[[list[bytes]], list[bytes]]) -> Callable[[pathlib.Path, Env], None]:
    def apply(folder: pathlib.Path, env: Env) -> None:
        path = audit_log_of(folder)
        path.write_bytes(b"".join(change(lines_of(path.read_bytes()))))

    return apply


def _audit(
    change: Callable[[list[bytes]], list[bytes]], words: str
) -> Callable[[pathlib.Path, Env], Blame]:
    def breaker(folder: pathlib.Path, env: Env) -> Blame:
        _edit_log(change)(folder, env)
        return audit_log_of(folder), words

    return breaker


def _edited_line(lines: list[bytes], index: int) -> list[bytes]:
    out = list(lines)
    record = json.loads(out[index])
    record["outcome"] = "refused" if record.get("outcome") == "signed" else "signed"
    out[index] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    assert out[index] != lines[index]
    return out


def _cut_middle(lines: list[bytes]) -> list[bytes]:
    # Bytes removed from the middle of line 3 to the middle of line 4 (a botched edit).
    data = b"".join(lines)
    start = sum(map(len, lines[:2])) + len(lines[2]) // 2
    end = sum(map(len, lines[:3])) + len(lines[3]) // 2
    return lines_of(data[:start] + data[end:])


STARTUP_REFUSALS: dict[str, Callable[[pathlib.Path, Env], Blame]] = {
    "share file: a byte flipped in its header": _share_header_byte,
    "share file: a byte flipped in its ciphertext": _share_ciphertext_byte,
    "share file: node 2's, copied over node 4's": _share_of_another_node,
    "share file: node 4's of another key": _share_of_another_key,
    "passphrase file: an extra trailing newline": _passphrase_with_extra_newline,
    "passphrase file: empty": _empty_passphrase,
    "passphrase file: mode 0640": _passphrase_group_readable,
    "share file: mode 0620": _share_group_writable,
    "tls.key: mode 0604": _tls_key_other_readable,
    "audit log: a directory": _audit_is_a_directory,
    "audit log: a FIFO": _audit_is_a_fifo,
    "audit log: a symlink": _audit_is_a_symlink,
    "audit log: mode 0620": _audit_group_writable,
    "audit log: line 3 edited": _audit(
        lambda ls: _edited_line(ls, 2), "line 4 does not chain to the line before it"
    ),
    "audit log: line 3 deleted": _audit(
        lambda ls: ls[:2] + ls[3:], "line 3 does not chain to the line before it"
    ),
    "audit log: lines 3 and 4 swapped": _audit(
        lambda ls: ls[:2] + [ls[3], ls[2]] + ls[4:], "line 3 does not chain to the line before it"
    ),
    "audit log: a line inserted": _audit(
        lambda ls: ls[:4] + [ls[1]] + ls[4:], "line 5 does not chain to the line before it"
    ),
    "audit log: cut in the middle": _audit(_cut_middle, ": line 3"),  # JSON or chain
    "audit log: first line deleted": _audit(
        lambda ls: ls[1:], "line 1: does not start the hash chain"
    ),
    "audit log: last write cut short": _audit(
        lambda ls: ls[:-1] + [ls[-1][:-20]], "line 8: incomplete (no newline"
    ),
}

#: Files whose bytes, mtime and mode must survive a refused start (with all the others).
WATCHED = ("share.enc", "audit.log", "passphrase", "tls.key", "tls.pem", "node.toml")


def _tree(folder: pathlib.Path) -> dict[str, Any]:
    """Every entry of the config folder and of the state folder, both folders themselves
    (a folder's mtime moves if a file is created or removed) and the symlink case's target."""
    var = audit_log_of(folder).parent
    paths = [folder, *sorted(folder.iterdir()), var, *sorted(var.iterdir())]
    paths.append(folder.parent / f"{folder.name}-log-elsewhere")
    return {str(p): file_state(p) for p in paths}


@pytest.fixture(scope="module")
def startup_refusals(env: Env) -> dict[str, tuple[int, str, Blame, dict[str, Any], dict[str, Any]]]:
    """Each broken copy of node 4 started once (PARALLEL at a time); what happened."""
    prepared = []
    for n, (case, breaker) in enumerate(STARTUP_REFUSALS.items()):
        folder = copy_node(env.cluster.root, 4, f"broken-{n}")
        (audit_log_of(folder)).write_bytes(env.real_log)
        os.chmod(audit_log_of(folder), 0o600)
        blame = breaker(folder, env)
        prepared.append((case, folder, blame, _tree(folder)))
    results = {}
    for start in range(0, len(prepared), PARALLEL):
        batch = prepared[start : start + PARALLEL]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "ittc_node", "--config", str(folder / "node.toml")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _, folder, _, _ in batch
        ]
        for (case, folder, blame, before), proc in zip(batch, procs, strict=True):
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise AssertionError(f"{case}: the node hung instead of refusing") from None
            results[case] = (proc.returncode, err.decode(), blame, before, _tree(folder))
    return results


@pytest.mark.parametrize("case", list(STARTUP_REFUSALS))
@pytest.mark.network
def test_node_refuses_to_start_and_changes_nothing(
    startup_refusals: dict[str, Any], case: str
) -> None:
    code, stderr, (culprit, words), before, after = startup_refusals[case]
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ittc-node: error: ")
    assert str(culprit) in lines[0], lines[0]
    assert words in lines[0], lines[0]
    # Nothing lost or overwritten: same files, same bytes, same mtimes, same modes.
    assert after == before
    # ...and the comparison covered every file the node reads or writes (etc/ and var/).
    assert set(WATCHED) - {"passphrase"} <= {pathlib.Path(path).name for path in after}


@pytest.mark.network
def test_a_good_restart_only_appends(env: Env) -> None:
    """The control for the cases above: node 4 itself, unbroken, starts on its real log,
    signs and stops; its share file is untouched and the old log is a prefix of the new."""
    cluster = env.cluster
    log = cluster.audit_log(4)
    assert log.read_bytes() == env.real_log
    share_before = file_state(cluster.node_dir(4) / "share.enc")
    cluster.start([4], timeout=60)
    try:
        cluster.stub(4).Sign(sign_request(cluster.params, [pkcs1_item(b"more")]), timeout=TIMEOUT)
    finally:
        assert cluster.terminate(4) == 0
    data = log.read_bytes()
    assert data.startswith(env.real_log) and len(data) > len(env.real_log)
    assert verify_audit_log(log) == 8 + 3  # and a start, a request, a stop
    assert file_state(cluster.node_dir(4) / "share.enc") == share_before


# -- a full disk, a failed write or fsync -------------------------------------------------
#
# The documented recovery: the node refuses to sign (UNAVAILABLE, NOT_SERVING) until it is
# restarted; the log ends with its last acknowledged line (a failed write is cut back,
# nothing acknowledged is touched); fix the disk and restart, and the node verifies its
# log and serves again. Node 5 (never started by the other tests here) is used for it.


def _point_audit_log(cluster: LocalCluster, index: int, path: pathlib.Path) -> str:
    """Set node ``index``'s ``[audit] path``; return the config text to put back."""
    toml = cluster.node_dir(index) / "node.toml"
    original = toml.read_text()
    toml.write_text(re.sub(r"(?m)^path = .*$", f'path = "{path}"', original))
    return original


def _sign(cluster: LocalCluster, index: int, message: bytes) -> None:
    cluster.stub(index).Sign(sign_request(cluster.params, [pkcs1_item(message)]), timeout=TIMEOUT)


def _restart_serves_and_keeps(
    cluster: LocalCluster, index: int, log: pathlib.Path, acked: bytes
) -> None:
    """A real node process starts on ``log``, verifies it, signs, stops; the acknowledged
    bytes are still the log's prefix, unchanged."""
    cluster.start([index], timeout=60)
    try:
        _sign(cluster, index, b"after the disk was fixed")
    finally:
        assert cluster.terminate(index) == 0
    data = log.read_bytes()
    assert data.startswith(acked)
    lines = verify_audit_log(log)
    assert [json.loads(line)["type"] for line in data[len(acked) :].splitlines()] == [
        "start",
        "request",
        "stop",
    ]
    assert lines == len(lines_of(acked)) + 3


class _DiskFault:
    """Replaces the audit writer's ``write`` and ``fsync`` once armed: a write that stores
    half of what it was given and then finds the disk full, or an fsync that fails."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.armed = False
        self.hits = 0

    def write(self, fd: int, data: memoryview) -> int:
        if self.armed and self.kind in ("short write", "short write, cut fails"):
            self.hits += 1
            if self.hits == 1:
                return os.write(fd, data[: max(1, len(data) // 2)])
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.armed and self.kind == "fsync fails":
            self.hits += 1
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)


@pytest.mark.parametrize("kind", ["short write", "fsync fails", "short write, cut fails"])
@pytest.mark.network
def test_a_failed_audit_write_is_cut_back_and_a_restart_recovers(
    env: Env, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    cluster = env.cluster
    node = EmbeddedNode.start(cluster, 5, f"disk-{tmp_path.name}", clock=time.time)
    log = node.config.audit_log
    fault = _DiskFault(kind)
    monkeypatch.setattr(AuditLog, "_write", staticmethod(fault.write))
    monkeypatch.setattr(AuditLog, "_fsync", staticmethod(fault.fsync))
    try:
        for n in range(3):
            node.stub.Sign(sign_request(cluster.params, [pkcs1_item(b"m%d" % n)]), timeout=TIMEOUT)
        acked = log.read_bytes()
        fault.armed = True
        if kind == "short write, cut fails":

            def no_truncate(fd: int, length: int) -> None:
                raise OSError(errno.EIO, "Input/output error")

            monkeypatch.setattr(os, "ftruncate", no_truncate)
        for n in range(2):  # the failed request, then one after it
            with pytest.raises(grpc.RpcError) as refused:
                node.stub.Sign(
                    sign_request(cluster.params, [pkcs1_item(b"x%d" % n)]), timeout=TIMEOUT
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert fault.hits >= 1
    finally:
        node.close()
        monkeypatch.undo()
    original = _point_audit_log(cluster, 5, log)
    try:
        if kind == "short write, cut fails":
            # The cut failed too: the torn line stays, the node refuses to start and says
            # where the acknowledged lines end; the operator cuts there and restarts.
            torn = log.read_bytes()
            assert torn.startswith(acked) and len(torn) > len(acked)
            with pytest.raises(NodeStartError) as refused_start:
                cluster.start([5], timeout=60)
            assert cluster.returncode(5) == 2
            assert f"truncate -s {len(acked)}" in str(refused_start.value)
            os.truncate(log, len(acked))
        else:
            assert log.read_bytes() == acked  # cut back: no torn, no unacknowledged line
        _restart_serves_and_keeps(cluster, 5, log, acked)
    finally:
        (cluster.node_dir(5) / "node.toml").write_text(original)


@contextlib.contextmanager
def _tiny_disk(where: pathlib.Path, size: int) -> Iterator[pathlib.Path]:
    """A tmpfs of ``size`` bytes mounted at ``where`` (root only)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'}); "
            "the injected faults above cover the same code"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.network
def test_a_full_disk_leaves_no_torn_line_and_fix_then_restart_works(
    env: Env, tmp_path: pathlib.Path
) -> None:
    """A real full file system under a real node process."""
    cluster = env.cluster
    with _tiny_disk(tmp_path / "disk", 64 << 10) as disk:
        log = disk / "audit.log"
        original = _point_audit_log(cluster, 5, log)
        try:
            cluster.start([5], timeout=60)
            _sign(cluster, 5, b"before")
            # Fill every free block: the log can grow only within its last block now.
            filler = disk / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * 4096):
                        pass
            finally:
                os.close(fd)
            failed = None
            for n in range(200):
                acked = log.read_bytes()
                try:
                    _sign(cluster, 5, b"filling %d" % n)
                except grpc.RpcError as exc:
                    failed = exc
                    break
            assert failed is not None and failed.code() == grpc.StatusCode.UNAVAILABLE
            assert cluster.health(5) == "NOT_SERVING"
            with pytest.raises(grpc.RpcError) as again:
                _sign(cluster, 5, b"still full")
            assert again.value.code() == grpc.StatusCode.UNAVAILABLE
            assert log.read_bytes() == acked  # no torn line: the short write was cut back
            assert cluster.terminate(5) == 0
            assert "bytes of the failed write" in cluster.log_tail(5, lines=50)
            filler.unlink()  # fix the disk...
            _restart_serves_and_keeps(cluster, 5, log, acked)  # ...and restart
        finally:
            if cluster.running(5):
                cluster.kill(5)
            (cluster.node_dir(5) / "node.toml").write_text(original)


# -- ittc audit verify ------------------------------------------------------------------


def audit_verify(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ittc", "audit", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


CLI_BREAKS: dict[str, tuple[Callable[[list[bytes]], list[bytes]], int]] = {
    "line 2 edited": (lambda ls: _edited_line(ls, 1), 3),
    "line 5 edited": (lambda ls: _edited_line(ls, 4), 6),
    "line 4 deleted": (lambda ls: ls[:3] + ls[4:], 4),
    "line 6 moved to the start": (lambda ls: [ls[5]] + ls[:5] + ls[6:], 1),
    "lines 2 and 3 swapped": (lambda ls: [ls[0], ls[2], ls[1]] + ls[3:], 2),
    "a line copied to the end": (lambda ls: ls + [ls[3]], 9),
    "last line cut short": (lambda ls: ls[:-1] + [ls[-1][:-1]], 8),
}


@pytest.mark.network
def test_cli_audit_verify_intact(env: Env, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(env.real_log)
    result = audit_verify(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: 8 records, hash chain intact"


@pytest.mark.parametrize("case", list(CLI_BREAKS))
@pytest.mark.network
def test_cli_audit_verify_names_the_bad_line(env: Env, tmp_path: pathlib.Path, case: str) -> None:
    change, bad_line = CLI_BREAKS[case]
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(change(lines_of(env.real_log))))
    assert path.read_bytes() != env.real_log
    result = audit_verify(path)
    assert result.returncode == 3  # evidence of tampering or damage: not a usage error (2)
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith(f"ittc: error: {path}: line {bad_line}: "), message


@pytest.mark.parametrize("kind", ["missing", "a directory"])
def test_cli_audit_verify_a_file_it_cannot_read_is_a_usage_error(
    tmp_path: pathlib.Path, kind: str
) -> None:
    path = tmp_path / "audit.log"
    if kind == "a directory":
        path.mkdir()
    result = audit_verify(path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"ittc: error: {path}: cannot read: ")


def test_cli_audit_verify_says_an_empty_log_is_empty(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    result = audit_verify(path)
    assert result.returncode == 1
    assert result.stdout.strip() == f"{path}: empty: no records, nothing to verify"
    assert "intact" not in result.stdout


@pytest.mark.network
def test_tail_cuts_need_the_head_recorded_elsewhere(env: Env, tmp_path: pathlib.Path) -> None:
    """What the chain cannot show (docs/security.md): lines cut off the end, or the last
    line edited, still verify; only a head hash recorded elsewhere catches them."""
    path = tmp_path / "audit.log"
    path.write_bytes(env.real_log)
    recorded = audit_log_head(path)
    assert audit_verify(path).returncode == 0
    cut = lines_of(env.real_log)[:-2]
    path.write_bytes(b"".join(cut))
    assert audit_verify(path).returncode == 0  # the chain alone is fooled...
    assert audit_log_head(path) != recorded  # ...the recorded head is not
    path.write_bytes(b"".join(_edited_line(lines_of(env.real_log), 7)))
    assert audit_verify(path).returncode == 0
    assert audit_log_head(path) != recorded
