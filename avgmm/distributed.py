"""Joining a multi-process run: who is who, a bounded wait for the others, and a peer
that dies told in one line.

`jax.distributed.initialize` alone answers a misconfigured cluster badly: a missing peer
or coordinator means minutes of silence and then a fatal abort of the C++ runtime (a
stack dump that Python cannot catch); two processes given the same `JAX_PROCESS_ID` wait
forever; a peer killed mid-run stops the others only at the runtime's heartbeat timeout,
again with a stack dump. So before it, every process meets process 0 at the coordinator's
address on a plain TCP connection (`join`):

- each process first prints who it is and whom it waits for;
- process 0 waits at most `AVGMM_DISTRIBUTED_TIMEOUT` seconds (default 120) for every
  other process to check in, and then names the missing ones in one line (exit status
  1); the others wait as long for the coordinator and then say so;
- a `JAX_PROCESS_ID` claimed twice, or processes that disagree on `JAX_NUM_PROCESSES`,
  are refused in one line on every process concerned (exit status 2);
- once everyone is there, the connections stay open for the whole run: a process that
  disappears (killed, crashed) closes its end, and every other process prints one line
  naming it and exits with status 1 at once. A machine that vanishes (power, network) is
  found by TCP keepalive within `AVGMM_HEARTBEAT_TIMEOUT` seconds (default 60), which also
  bounds the runtime's own heartbeat.

Then `jax.distributed.initialize` runs with the same coordinator, count and id (its
cluster detection, e.g. SLURM's, supplies them where the environment has no
`JAX_COORDINATOR_ADDRESS`) and starts at once, everyone being there. Where the cluster
cannot be detected ahead of jax (jax's private detection API changed), jax is called as
before, without these checks.
"""

import atexit
import json
import os
import socket
import sys
import threading
import time
from typing import Dict, Optional, Tuple

import jax

from avgmm.errors import UserError, WorkdirError

TIMEOUT_ENV = "AVGMM_DISTRIBUTED_TIMEOUT"
HEARTBEAT_ENV = "AVGMM_HEARTBEAT_TIMEOUT"
DEFAULT_TIMEOUT = 120
DEFAULT_HEARTBEAT = 60
CHECK = ("check JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (or the "
         "SLURM / MPI job) on every machine")


class PeerLostError(WorkdirError):
    """A process of a multi-process run did not join, or left it."""


def wanted() -> bool:
    """Whether the environment describes a multi-process run."""
    return bool(os.environ.get("JAX_COORDINATOR_ADDRESS")
                or os.environ.get("SLURM_NTASKS", "1") != "1"
                or os.environ.get("OMPI_COMM_WORLD_SIZE", "1") != "1")


def seconds_setting(env: str, default: int) -> int:
    """A positive whole number of seconds from the environment variable `env`."""
    value = os.environ.get(env)
    if value is None:
        return default
    if not value.strip().isdigit() or int(value) < 1:
        raise UserError(f"{env}={value!r}: expected a whole number of seconds >= 1")
    return int(value)


def cluster() -> Optional[Tuple[str, int, int]]:
    """`(coordinator address, process count, this process's id)`: from the three JAX_*
    variables, else from jax's cluster detection (SLURM, Open MPI, ...); None where jax
    cannot tell ahead of `jax.distributed.initialize`."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    explicit = {}
    for var in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        value = os.environ.get(var)
        if value is not None:
            if not value.strip().isdigit():
                raise UserError(f"{var}={value!r}: expected an integer >= 0")
            explicit[var] = int(value)
    n, pid = explicit.get("JAX_NUM_PROCESSES"), explicit.get("JAX_PROCESS_ID")
    if address is None or n is None or pid is None:
        try:
            from jax._src import clusters  # jax's own detection, as initialize() uses it

            address, n, pid, _ = clusters.ClusterEnv.auto_detect_unset_distributed_params(
                address, n, pid, None, None, seconds_setting(TIMEOUT_ENV, DEFAULT_TIMEOUT))
        except Exception:  # noqa: BLE001 (a private API: fall back to plain jax)
            return None
    if address is None or n is None or pid is None:
        missing = [v for v, x in (("JAX_COORDINATOR_ADDRESS", address),
                                  ("JAX_NUM_PROCESSES", n), ("JAX_PROCESS_ID", pid))
                   if x is None]
        raise UserError(f"a multi-process run needs {', '.join(missing)} too: set all three "
                        "on every machine (docs/multihost.md)")
    if not 0 <= pid < n:
        raise UserError(f"JAX_PROCESS_ID={pid} with JAX_NUM_PROCESSES={n}: the ids are "
                        f"0..{n - 1}, one per process")
    return address, n, pid


def initialize() -> None:
    """Joins the run the environment describes (see the module docstring), then
    `jax.distributed.initialize`. Raises `UserError` (a misconfiguration) or
    `PeerLostError` (a process missing) in one line."""
    timeout = seconds_setting(TIMEOUT_ENV, DEFAULT_TIMEOUT)
    heartbeat = seconds_setting(HEARTBEAT_ENV, DEFAULT_HEARTBEAT)
    found = cluster()
    if found is None:
        jax.distributed.initialize()
        return
    address, n, pid = found
    join(address, n, pid, timeout, heartbeat)
    jax.distributed.initialize(address, n, pid, initialization_timeout=timeout,
                               heartbeat_timeout_seconds=heartbeat)


def _who(pid: int, n: int) -> str:
    return f"process {pid} of {n} (host {socket.gethostname()}, pid {os.getpid()})"


def _split(address: str) -> Tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"JAX_COORDINATOR_ADDRESS={address!r}: expected HOST:PORT, e.g. "
                        "gpu0.example.org:1234")
    return host.strip("[]"), int(port)


def _send(conn: socket.socket, message: Dict) -> None:
    try:
        conn.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        pass  # the other end is gone; its own end says so


def _keepalive(conn: socket.socket, heartbeat: int) -> None:
    """TCP keepalive probes that find a vanished machine within `heartbeat` seconds."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", max(1, heartbeat // 3)),
                        ("TCP_KEEPINTVL", max(1, heartbeat // 6)), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            conn.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def join(address: str, n: int, pid: int, timeout: int, heartbeat: int) -> None:
    """Meets every process at process 0 (see the module docstring); returns once all `n`
    are there, with the watch on the others running."""
    host, port = _split(address)
    if pid == 0:
        others = ", ".join(str(i) for i in range(1, n)) or "none"
        print(f"{_who(0, n)}: coordinating at {address}; waiting up to {timeout} s "
              f"({TIMEOUT_ENV}) for process(es) {others}", flush=True)
        peers = _gather(port, n, timeout, heartbeat, address)
    else:
        print(f"{_who(pid, n)}: joining the run coordinated by process 0 at {address}; "
              f"waiting up to {timeout} s ({TIMEOUT_ENV})", flush=True)
        peers = {0: _check_in(host, port, n, pid, timeout, heartbeat, address)}
    _Watch(peers, pid).start()


def _gather(port: int, n: int, timeout: int, heartbeat: int,
            address: str) -> Dict[int, socket.socket]:
    """Process 0: accepts the others' check-ins until all `n - 1` are there."""
    bind = os.environ.get("JAX_COORDINATOR_BIND_ADDRESS")
    bind_host = _split(bind)[0] if bind else ""
    try:
        if not bind_host and socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6,
                                          dualstack_ipv6=True, reuse_port=False)
        else:
            server = socket.create_server((bind_host, port))
    except OSError as e:
        raise UserError(f"{_who(0, n)} cannot listen on port {port} of "
                        f"JAX_COORDINATOR_ADDRESS={address} ({e.strerror or e}): another "
                        "process 0 (JAX_PROCESS_ID=0 given twice?) or another program holds "
                        f"it; choose a free port and {CHECK}") from None
    peers: Dict[int, socket.socket] = {}
    seen: Dict[int, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(peers) < n - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [str(i) for i in range(1, n) if i not in peers]
                message = (f"{_who(0, n)} waited {timeout} s ({TIMEOUT_ENV}) for process(es) "
                           f"{', '.join(missing)} of {n} to join at {address}: start "
                           f"{'them' if len(missing) > 1 else 'it'}, or {CHECK}")
                for conn in peers.values():
                    _send(conn, {"error": message, "status": 1})
                raise PeerLostError(message)
            server.settimeout(left)
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            conn.settimeout(max(1.0, left))
            try:
                hello = json.loads(conn.makefile().readline() or "{}")
            except (OSError, ValueError):
                conn.close()
                continue  # not one of ours (a port scan, a health check)
            if not isinstance(hello.get("id"), int) or not isinstance(hello.get("n"), int):
                conn.close()
                continue  # not one of ours
            problem = _refusal(hello, n, peers, seen)
            if problem:  # a misconfigured job: every process stops with the same line
                for other in [conn, *peers.values()]:
                    _send(other, {"error": problem, "status": 2})
                conn.close()
                raise UserError(problem)
            conn.settimeout(None)
            _keepalive(conn, heartbeat)
            peers[hello["id"]] = conn
            seen[hello["id"]] = f"host {hello.get('host')}, pid {hello.get('pid')}"
        for conn in peers.values():
            _send(conn, {"ok": True})
        return peers
    finally:
        server.close()


def _refusal(hello: Dict, n: int, peers: Dict[int, socket.socket],
             seen: Dict[int, str]) -> Optional[str]:
    """Why a process's check-in shows a misconfigured job, or None."""
    pid, their_n = hello["id"], hello["n"]
    where = f"host {hello.get('host')}, pid {hello.get('pid')}"
    if their_n != n:
        return (f"process {pid} ({where}) has JAX_NUM_PROCESSES={their_n} but process 0 has "
                f"{n}: give every process the same count")
    if not 0 < pid < n:
        return (f"JAX_PROCESS_ID={pid} ({where}) is not one of 1..{n - 1} (process 0 "
                "coordinates; each other process needs its own id)")
    if pid in peers:
        return (f"JAX_PROCESS_ID={pid} is given to two processes ({seen[pid]} and {where}): "
                f"give each process its own id 0..{n - 1}")
    return None


def _check_in(host: str, port: int, n: int, pid: int, timeout: int, heartbeat: int,
              address: str) -> socket.socket:
    """Processes 1..n-1: connects to process 0 (retrying until it listens), announces
    itself, and waits for everyone."""
    deadline = time.monotonic() + timeout
    conn = None
    while conn is None:
        try:
            conn = socket.create_connection((host, port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise PeerLostError(
                    f"{_who(pid, n)} could not reach process 0 at {address} within {timeout} "
                    f"s ({TIMEOUT_ENV}): is process 0 running? {CHECK}") from None
            time.sleep(0.5)
    _send(conn, {"id": pid, "n": n, "host": socket.gethostname(), "pid": os.getpid()})
    conn.settimeout(max(1.0, deadline - time.monotonic() + 5))
    try:
        line = conn.makefile("rb").readline()
    except (OSError, socket.timeout):
        line = None
    try:
        reply = json.loads(line) if line else None
    except ValueError:
        reply = None
    if isinstance(reply, dict) and reply.get("ok"):
        conn.settimeout(None)
        _keepalive(conn, heartbeat)
        return conn
    conn.close()
    if isinstance(reply, dict) and reply.get("error"):
        raise (UserError if reply.get("status") == 2 else PeerLostError)(reply["error"])
    if line is None:  # nothing came back in time
        raise PeerLostError(f"{_who(pid, n)} reached process 0 at {address} but the run did "
                            f"not start within {timeout} s ({TIMEOUT_ENV}): process 0 names "
                            f"what is missing; {CHECK}")
    # Something else answered at the address: the run's own runtime, which process 0
    # starts once every process has checked in, so the run started without this one.
    raise UserError(f"{_who(pid, n)}: the run at {address} has started without it: another "
                    f"process has JAX_PROCESS_ID={pid} (or this one came too late); {CHECK}")


class _Watch:
    """Watches the connections to the other processes for the whole run: one that closes
    without a goodbye (the process was killed, or crashed with a traceback) stops this
    process in one line. A process that ends says goodbye first (atexit), so its peers let
    it go; one that ends on an uncaught exception says so."""

    def __init__(self, peers: Dict[int, socket.socket], pid: int):
        self.peers, self.pid = peers, pid
        self.leaving = threading.Event()
        self.crashed = False

    def start(self) -> None:
        atexit.register(self.leave)
        previous = sys.excepthook

        def hook(kind, value, tb):
            self.crashed = True
            previous(kind, value, tb)

        sys.excepthook = hook
        for peer, conn in self.peers.items():
            threading.Thread(target=self._watch, args=(peer, conn), daemon=True,
                             name=f"avgmm-watch-{peer}").start()

    def leave(self) -> None:
        """Tells the others that this process ends (on purpose, or after a crash)."""
        self.leaving.set()
        for conn in self.peers.values():
            _send(conn, {"bye": True, "crashed": self.crashed})

    def _watch(self, peer: int, conn: socket.socket) -> None:
        bye = None
        try:
            for line in conn.makefile():
                message = json.loads(line or "{}")
                if message.get("bye"):
                    bye = message
        except (OSError, ValueError):
            pass
        if self.leaving.is_set() or (bye is not None and not bye.get("crashed")):
            return
        who = "process 0 (the coordinator)" if peer == 0 else f"process {peer}"
        how = ("stopped on an error (its own output has the traceback)" if bye else
               "is gone (killed, crashed or its machine unreachable)")
        print(f"error: {who} of this multi-process run {how}: process {self.pid} stops "
              "too; restart the whole job with the same command to resume from the last "
              "checkpoint", file=sys.stderr, flush=True)
        os._exit(1)
