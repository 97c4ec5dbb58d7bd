"""Processes the benchmark starts (echo server, service processes, a private Envoy) and stops again.

Every child gets PR_SET_PDEATHSIG=SIGTERM, so even a benchmark killed with SIGKILL leaves nothing behind;
normally `Procs.stop_all()` (called from a `finally`) stops them in reverse start order.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: SIGTERM it when the benchmark process dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        # as the servers bind (SO_REUSEADDR): TIME_WAIT leftovers of an earlier run do not make a port busy
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pick_port(preferred: int, taken: set[int]) -> int:
    """`preferred` when it is free, else a free ephemeral port (other work on the machine may hold it)."""
    if preferred not in taken and _bindable(preferred) and not port_open(preferred):
        taken.add(preferred)
        return preferred
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


class StartError(RuntimeError):
    pass


class Procs:
    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self._children: dict[str, subprocess.Popen] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        if name in self._children:
            raise StartError(f"{name} is already running")
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 (kept open for the child's lifetime)
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        self._children[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, name: str, check: Callable[[], bool], timeout: float = 40.0) -> None:
        proc = self._children[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StartError(
                    f"{name} exited with {proc.returncode} during startup "
                    f"(log {self.log_dir / (name + '.log')}):\n{self.log_tail(name)}"
                )
            try:
                if check():
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise StartError(f"{name} not ready within {timeout:.0f}s:\n{self.log_tail(name)}")

    def pid(self, name: str) -> int:
        return self._children[name].pid

    def stop(self, name: str, timeout: float = 10.0) -> int | None:
        proc = self._children.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for name in reversed(list(self._children)):
            try:
                self.stop(name)
            except Exception as exc:  # keep stopping the others
                print(f"bench: could not stop {name}: {exc}", file=sys.stderr)


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_cpu() -> tuple[float, float, float]:
    """(busy, stolen, total) CPU seconds of the whole machine so far, from /proc/stat. Stolen time is what
    the hypervisor gave to other guests (counted in busy): on a shared host it is what skews a round."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    steal = values[7] if len(values) > 7 else 0
    return (sum(values) - idle) / _TICK, steal / _TICK, sum(values) / _TICK


class CpuMeter:
    """CPU used by named processes (and by the whole machine) over a measured window.

    CPU time per call is far less sensitive to other work on the machine than requests per second: it is
    what the ratios would be on an otherwise idle machine, as long as the process is CPU-bound.
    """

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self._start: tuple[float, dict[str, float], tuple[float, float, float]] | None = None
        self._stop: tuple[float, dict[str, float], tuple[float, float, float]] | None = None

    def _sample(self) -> tuple[float, dict[str, float], tuple[float, float, float]]:
        cpu = {}
        for name, pid in self.pids.items():
            try:
                cpu[name] = process_cpu_seconds(pid)
            except OSError:
                cpu[name] = float("nan")
        return time.monotonic(), cpu, machine_cpu()

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> None:
        self._stop = self._sample()

    def report(self, calls: int) -> dict:
        if self._start is None or self._stop is None:
            return {}
        (t0, c0, (busy0, steal0, total0)), (t1, c1, (busy1, steal1, total1)) = self._start, self._stop
        seconds = t1 - t0
        used = {name: c1[name] - c0[name] for name in self.pids}
        return {
            "window_s": round(seconds, 2),
            "cores_used": {name: round(v / seconds, 3) for name, v in used.items()} if seconds else {},
            "cpu_us_per_call": {name: round(v / calls * 1e6, 1) for name, v in used.items()} if calls else {},
            "machine_busy": round((busy1 - busy0) / max(1e-9, total1 - total0), 3),
            "machine_steal": round((steal1 - steal0) / max(1e-9, total1 - total0), 3),
            "machine_cores": os.cpu_count(),
        }


def envoy_ready(admin_port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as resp:
        return resp.read().strip() == b"LIVE"


def render_envoy(output: Path, *, port: int, admin_port: int, upstreams: list[str]) -> None:
    """A private Envoy config from the project's template (scripts/render-envoy.py), access log off."""
    env = {
        **os.environ,
        "ENVOY_PORT": str(port),
        "ENVOY_ADMIN_PORT": str(admin_port),
        "GRPC_UPSTREAMS": ",".join(upstreams),
        "ENVOY_ACCESS_LOG": os.environ.get("BENCH_ENVOY_ACCESS_LOG", "0"),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render-envoy.py"), "-o", str(output)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise StartError(f"render-envoy.py failed: {proc.stderr.strip()}")
