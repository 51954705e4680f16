"""The gevent and gunicorn internals flaskapp uses (flaskapp/runtime/__init__.py) were written for these versions."""
from __future__ import annotations

import importlib.metadata

import pytest

from flaskapp.runtime import RECHECK, WRITTEN_FOR, client_socket


@pytest.mark.parametrize("package", sorted(WRITTEN_FOR))
def test_the_installed_version_is_the_one_the_runtime_hacks_were_written_for(package):
    installed, written_for = importlib.metadata.version(package), WRITTEN_FOR[package]
    assert installed == written_for, (
        f"{package} {installed} is installed, but flaskapp/runtime was written against {written_for}. "
        f"Before raising the pin, re-check {RECHECK[package]}; then set WRITTEN_FOR in "
        f"flaskapp/runtime/__init__.py.")


def test_every_package_written_for_says_what_to_recheck():
    assert set(RECHECK) == set(WRITTEN_FOR)


def test_the_client_socket_is_gunicorns_and_absent_elsewhere():
    sock = object()
    assert client_socket({"gunicorn.socket": sock}) is sock
    assert client_socket({}) is None


def test_the_waiter_is_gevents_for_plain_sockets_only():
    import socket

    import gevent.socket

    from flaskapp.runtime.gevent_io import readable_waiter

    plain, other = socket.socketpair()
    ours, theirs = gevent.socket.socketpair()
    try:
        assert readable_waiter(plain) is None  # no event loop to wait through
        wait = readable_waiter(ours)
        theirs.sendall(b"x")
        wait()  # returns once readable
        assert ours.recv(1) == b"x"
    finally:
        for sock in (plain, other, ours, theirs):
            sock.close()


def test_the_process_id_is_read_again_in_a_forked_child():
    import os

    from flaskapp.runtime import process

    parent = os.getpid()
    assert process.pid() == parent
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: say whether its id is its own, and leave at once
        os.write(write, b"1" if process.pid() == os.getpid() != parent else b"0")
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read, 1) == b"1"
