"""Whose port is it: the runner's check that the server answering is its own child."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from llamarunner.runner.model_runner import _listens_on

# A child that listens on a port of its own and prints it, then waits for stdin to close.
_LISTENER = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True); sys.stdin.read()\n"
)


def test_a_port_this_process_listens_on_is_its_own() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert _listens_on(os.getpid(), port) is True
    assert _listens_on(os.getpid(), port) is False  # closed: nobody's


def test_a_port_a_descendant_listens_on_counts_as_the_trees() -> None:
    # llama-server started through a wrapper script: the listener is a grandchild.
    child = subprocess.Popen([sys.executable, "-c", _LISTENER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        assert _listens_on(os.getpid(), port) is True  # found among the descendants
        assert _listens_on(child.pid, port) is True
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
        child.stdout.close()  # type: ignore[union-attr]


def test_a_connected_socket_is_not_a_listener() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            client_port = client.getsockname()[1]
            assert _listens_on(os.getpid(), client_port) is False


def test_a_process_that_is_gone_owns_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert done.returncode == 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    assert _listens_on(gone.pid, 1) is False
