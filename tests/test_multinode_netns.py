"""Multi-node training over two Linux network namespaces joined by a veth pair (slow tier; needs root + iproute2).

The test makes two "hosts": namespaces <ns>a and <ns>b, each holding one end of a veth pair, addressed 10.77.0.1/30
and 10.77.0.2/30 (only these addresses, only inside the namespaces the test created; the namespaces have no
other route, so everything between the nodes crosses the veth). On each it runs
    deepspeed --hostfile H --no_ssh --node_rank i --master_addr 10.77.0.1 --module tasu train tiny ...
with GLOO_SOCKET_IFNAME naming that node's veth end. First the tiny model trains to completion over those
addresses; then a second run is started, node b is killed (every process in its namespace, SIGKILL), and node a's
rank and launcher must exit non-zero in time with a message naming rank 1. Namespaces (and everything running in
them) are removed by a finalizer.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tasu.train.comm_faults import EXIT_RANK_LOST

from .fuzz_utils import tally, write_tally
from .proc_utils import FAST, finish, logged_steps, wait_for_step
from .train_utils import ROOT, base_env, losses, read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ADDRS = ("10.77.0.1", "10.77.0.2")  # a private /30 of our own, inside our namespaces only
LIMIT_S = 60


@pytest.fixture(scope="module", autouse=True)
def _tally():
    yield
    write_tally(__name__)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _why_not() -> str | None:
    """None when network namespaces can be made here, else the reason to skip."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root (ip netns add / ip link add)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if shutil.which("deepspeed") is None:
        return "the deepspeed launcher is not on PATH"
    probe = f"tasuprobe{os.getpid()}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"`ip netns add` fails here: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _kill_all_in(ns: str) -> None:
    """SIGKILL every process in namespace `ns` (only ours: the test created it), bounded wait."""
    for _ in range(50):
        pids = [int(x) for x in _ip("netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


@pytest.fixture(scope="module")
def two_hosts():
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}"
    ns = (f"tasu{tag}a", f"tasu{tag}b")
    veth = (f"tv{tag}a", f"tv{tag}b")  # interface names: at most 15 characters
    made: list[str] = []
    try:
        for n in ns:
            _ip("netns", "add", n)
            made.append(n)
        _ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        for n, v, a in zip(ns, veth, ADDRS):
            _ip("link", "set", v, "netns", n)
            _ip("-n", n, "addr", "add", f"{a}/30", "dev", v)
            _ip("-n", n, "link", "set", v, "up")
            _ip("-n", n, "link", "set", "lo", "up")
        yield ns, veth
    finally:
        for n in made:
            _kill_all_in(n)
            _ip("netns", "del", n, check=False)  # deleting a namespace also removes its veth end (and the pair)


def _launch(ns: str, veth: str, node: int, hostfile, port: int, args: list[str]) -> subprocess.Popen:
    env = base_env()
    env["GLOO_SOCKET_IFNAME"] = veth  # gloo binds this node's veth end, not whatever the hostname resolves to
    cmd = ["ip", "netns", "exec", ns, "deepspeed", "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(node),
           "--master_addr", ADDRS[0], "--master_port", str(port), "--module", "tasu", *args]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _peers_seen(ns: str) -> set[str]:
    """Remote addresses of the TCP connections established inside namespace `ns`."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htn", "state", "established"], capture_output=True,
                         text=True, timeout=30).stdout
    addrs = {line.split()[-1].rsplit(":", 1)[0].strip("[]") for line in out.splitlines() if line.strip()}
    return {a.removeprefix("::ffff:") for a in addrs}  # IPv4-mapped (the TCPStore listens on ::)


def test_two_namespace_nodes_train_then_survive_a_lost_node(tmp_path, two_hosts):
    ns, veth = two_hosts
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(f"{ADDRS[0]} slots=1\n{ADDRS[1]} slots=1\n")
    port = random.Random(os.getpid()).randint(20000, 60000)  # fresh namespaces: every port is free

    # 1. training to completion over the veth pair
    out = tmp_path / "run"
    args = ["train", "tiny", f"output_dir={out}", "train.max_steps=20", "train.save_every=10", *FAST]
    nodes = [_launch(ns[i], veth[i], i, hostfile, port, args) for i in (0, 1)]
    wait_for_step(out, 3, nodes, timeout=300)
    seen = _peers_seen(ns[0]) | _peers_seen(ns[1])
    results = [finish(p, timeout=500) for p in nodes]
    for i, (rc, output, _) in enumerate(results):
        assert rc == 0, f"node {i}:\n{output[-4000:]}"
    assert ADDRS[0] in seen and ADDRS[1] in seen, seen  # the nodes talked over the veth pair...
    assert seen <= {*ADDRS, "127.0.0.1"}, seen  # ...and nowhere else
    recs = read_metrics(out)
    assert [r["step"] for r in recs] == list(range(1, 21)) and all(r["loss"] == r["loss"] for r in recs)
    assert (out / "checkpoints" / "step-00-00000020" / "COMPLETE").is_file()
    assert sum(losses(out)[-5:]) < sum(losses(out)[:5])

    # 2. a lost node: kill everything in node b's namespace; node a must exit non-zero in time
    out2 = tmp_path / "run2"
    args2 = ["train", "tiny", f"output_dir={out2}", "train.max_steps=100000", *FAST]
    nodes = [_launch(ns[i], veth[i], i, hostfile, port + 1, args2) for i in (0, 1)]
    wait_for_step(out2, 5, nodes, timeout=300)
    t0 = time.monotonic()
    _kill_all_in(ns[1])
    rc, output, _ = finish(nodes[0], timeout=LIMIT_S + 30)
    dt = time.monotonic() - t0
    nodes[1].communicate(timeout=30)
    assert rc != 0 and dt < LIMIT_S, (rc, dt, output[-4000:])
    assert "rank 0 of 2: lost contact with rank 1" in output and ADDRS[1] in output, output[-4000:]
    assert f"exits with return code = {EXIT_RANK_LOST}" in output, output[-3000:]  # the launcher saw our code
    print(f"node a exited {dt:.1f} s after node b was killed; trained 20 steps, {logged_steps(out2)} in run 2")
    tally("2 netns nodes: train 20 steps + kill node b", runs=2, node_kills=1)
