"""Load generators of the benchmark: h2load (gRPC unary over h2c) and wrk (REST over HTTP/1.1).

h2load does not read HTTP trailers, so it sees only HTTP statuses; whether the calls answered grpc-status 0
is checked separately (a real gRPC client call and the service's own per-code counters).
"""

from __future__ import annotations

import math
import re
import struct
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scripts.bench.procs import die_with_parent


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: compressed flag (0), 4-byte big-endian length, the message."""
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass
class LoadResult:
    tool: str
    target: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    # transport-level failures: h2load failed/errored/timeout, wrk socket errors
    errors: int = 0
    # HTTP statuses other than the expected one (h2load: per-request log; wrk: "Non-2xx or 3xx")
    bad_status: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    # grpc-status codes other than the expected one, from the service's counters (None: not checked)
    bad_grpc_status: int | None = None
    # calls a timed run may still have in flight when it stops: h2load resets those streams (at most one
    # call per stream: clients x streams; none for a run of -n calls), wrk closes its connections (one per
    # connection); the service counts those calls CANCELLED
    in_flight_at_end: int = 0
    grpc_codes: dict[str, int] | None = None
    command: str = ""
    # CPU used by the processes under test during the measured window (procs.CpuMeter.report)
    cpu: dict = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return self.errors + self.bad_status + (self.bad_grpc_status or 0)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["failures"] = self.failures
        return data


class LoadError(RuntimeError):
    pass


def percentile(sorted_values: list[int], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    # nearest rank
    index = min(len(sorted_values) - 1, max(0, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return float(sorted_values[index])


def _run(cmd: list[str], timeout: float, meter=None, main_after: float = 0.0) -> tuple[str, str]:
    """Runs a load generator; `meter` (a procs.CpuMeter) is started when its measured phase begins
    (`main_after` seconds in, i.e. after h2load's warm-up) and stopped when it exits."""
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent
    ) as proc:
        try:
            if meter is not None:
                if main_after:
                    time.sleep(main_after)
                meter.start()
            out, err = proc.communicate(timeout=timeout)
            if meter is not None:
                meter.stop()
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise LoadError(f"{cmd[0]} did not finish within {timeout:.0f}s") from exc
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0:
        raise LoadError(f"{cmd[0]} exited {proc.returncode}: {err.strip() or out[-800:]}")
    return out, err


def read_h2load_log(log_file: Path) -> tuple[list[int], dict[str, int]]:
    """(latencies in microseconds, sorted; count per HTTP status) from h2load's per-request log."""
    latencies: list[int] = []
    statuses: dict[str, int] = {}
    with open(log_file, encoding="ascii", errors="replace") as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            statuses[parts[1]] = statuses.get(parts[1], 0) + 1
            latencies.append(int(parts[2]))
    latencies.sort()
    return latencies, statuses


def h2load(
    url: str | list[str],
    body_file: Path,
    headers: dict[str, str],
    *,
    clients: int,
    streams: int,
    duration: float | None = None,
    warmup: float | None = None,
    requests: int | None = None,
    log_file: Path,
    target: str = "",
    meter=None,
) -> LoadResult:
    """Runs h2load (one thread) against a gRPC method (or several, which each client calls in turn);
    p50/p99 come from its per-request log."""
    cmd = ["h2load", "-t1", f"-c{clients}", f"-m{streams}", "-d", str(body_file), f"--log-file={log_file}"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    if requests is not None:
        cmd += ["-n", str(requests)]
        timeout = 300.0
    else:
        cmd += ["-D", f"{duration:g}"]
        if warmup:
            cmd += [f"--warm-up-time={warmup:g}"]
        timeout = (duration or 0) + (warmup or 0) + 60
    cmd += [url] if isinstance(url, str) else url  # several: each client sends them in turn
    log_file.unlink(missing_ok=True)  # h2load appends to an existing log
    out, _ = _run(cmd, timeout, meter, main_after=warmup if requests is None and warmup else 0.0)

    result = LoadResult(tool="h2load", target=target or str(url), command=_shown(cmd))
    result.in_flight_at_end = clients * streams if requests is None else 0
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    if not m:
        raise LoadError(f"unexpected h2load output:\n{out[-1500:]}")
    seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    m2 = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
        r"(\d+) timeout",
        out,
    )
    if not m2:
        raise LoadError(f"unexpected h2load output:\n{out[-1500:]}")
    total, _started, done, _ok, failed, errored, timed_out = (int(g) for g in m2.groups())
    result.errors = failed + errored + timed_out + (total - done)

    latencies, statuses = read_h2load_log(log_file)
    result.requests = len(latencies)
    result.statuses = statuses
    result.bad_status = sum(n for code, n in statuses.items() if code != "200")
    if requests is None:
        # timing-based run: h2load's own rate is over the main duration (warm-up excluded)
        result.seconds = duration or seconds
        result.rps = float(m.group(3))
    else:
        result.seconds = seconds
        result.rps = result.requests / seconds if seconds else 0.0
    if latencies:
        result.p50_ms = percentile(latencies, 50) / 1000
        result.p99_ms = percentile(latencies, 99) / 1000
        result.mean_ms = sum(latencies) / len(latencies) / 1000
    return result


def _lua_string(value: str) -> str:
    level = "=" * 4
    while f"]{level}]" in value:
        level += "="
    return f"[{level}[{value}]{level}]"


def wrk_script(path: Path, method: str, body: str | None, headers: dict[str, str]) -> Path:
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body)}")
    for name, value in headers.items():
        # (a space after "[": `t[[` would start a long string)
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise LoadError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    duration: float,
    expected_2xx: bool = True,
    target: str = "",
    meter=None,
) -> LoadResult:
    """Runs wrk (one thread, `connections` keep-alive HTTP/1.1 connections) with --latency."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out, err = _run(cmd, duration + 60, meter)
    if f"{script.name}:" in err:  # wrk reports a broken script and then runs its default GET anyway
        raise LoadError(f"wrk script error: {err.strip()[:500]}")
    result = LoadResult(tool="wrk", target=target or url, command=_shown(cmd), seconds=duration)
    result.in_flight_at_end = connections  # at most one request per connection when wrk stops
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        raise LoadError(f"unexpected wrk output:\n{out[-1500:]}")
    result.requests = int(m.group(1))
    result.seconds = _ms(m.group(2) + m.group(3)) / 1000
    result.rps = float(rps.group(1))
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        pm = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if pm:
            setattr(result, attr, _ms(pm.group(1)))
    mean = re.search(r"Latency\s+(\S+)", out)
    if mean:
        result.mean_ms = _ms(mean.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        result.errors = sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    n_bad = int(non2xx.group(1)) if non2xx else 0
    if expected_2xx:
        result.bad_status = n_bad
        result.statuses = {"2xx/3xx": result.requests - n_bad, "other": n_bad}
    else:
        # expected an error status (fallback RPC answering UNIMPLEMENTED → 501): every 2xx is unexpected
        result.bad_status = result.requests - n_bad
        result.statuses = {"2xx/3xx": result.requests - n_bad, "non-2xx": n_bad}
    return result


def _shown(cmd: list[str]) -> str:
    """The command line with the bearer token elided (it must not land in results or logs)."""
    shown = []
    for part in cmd:
        if part.lower().startswith("authorization:"):
            part = "authorization: Bearer <token>"
        shown.append(part)
    return " ".join(shown)
