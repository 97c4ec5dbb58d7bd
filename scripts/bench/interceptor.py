"""Bench case: the call pipeline as the service applies it, a grpc.aio server interceptor
(server/core/call_pipeline.PipelineInterceptor), vs wrapping each servicer method at registration, side by
side on the measured RPC (the heartbeat).

The design card names `grpc-interceptor`'s AsyncServerInterceptor; that is a thin layer over
grpc.aio.ServerInterceptor, which the service uses directly (no extra dependency). The interceptor builds
each method's wrapped handler once and looks it up per call, so the difference measured is what grpc.aio's
interceptor machinery costs per call, not extra pipeline work. `python -m scripts.bench.interceptor` runs
the same Application as `python -m server`, except that the same wrapped handlers are registered in place
of the servicers' and the server has no interceptor.

Two processes (interceptor: `python -m server`; wrapper: this module), WORKERS_ENABLED=0, then
BENCH_INTERCEPTOR_ROUNDS rounds (3) of h2load on each, back to back; the ratio is the median of the
within-round ratios interceptor / wrapper (req/s), with the server CPU per call of each.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys

import grpc

from scripts.bench import fixtures, loadgen
from scripts.bench.procs import pick_port


def serve() -> None:
    """`python -m server`, with the pipeline's handlers registered in place of the servicers' methods."""
    import uvloop

    import server.app as app_module
    from server.core.config import Settings
    from server.core.logs import configure_logging

    def wrap_at_registration(pipeline, methods, services):
        """Stands in for PipelineInterceptor: replaces the registered handlers, adds no interceptor."""
        for service in services:
            wrapped = {}
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                wrapped[method.name] = pipeline.wrap_handler(path, methods.handler(path), method.input_type)
            methods.add_registered_method_handlers(service.full_name, wrapped)

    make_server = grpc.aio.server
    app_module.PipelineInterceptor = wrap_at_registration
    app_module.grpc.aio.server = lambda interceptors=(), **kw: make_server(
        interceptors=[i for i in interceptors if i is not None], **kw
    )
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    app = app_module.Application.build(settings)

    async def main() -> None:
        import asyncio

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        app.start_metrics()
        await app.start()
        try:
            await stop.wait()
        finally:
            await app.stop()

    uvloop.run(main())


def run(bench) -> dict:
    """Runs the case with the Bench's processes, knobs and load generator; returns its results."""
    cfg = bench.cfg
    rounds = int(os.environ.get("BENCH_INTERCEPTOR_ROUNDS", "3"))
    taken = {*cfg.grpc_ports, *cfg.metrics_ports}
    ports = {}
    for name, base in (("wrapper", 50075), ("interceptor", 50076)):
        grpc_port, metrics_port = pick_port(base, taken), pick_port(base + 1000, taken)
        taken |= {grpc_port, metrics_port}
        ports[name] = (grpc_port, metrics_port)
        env = {
            **bench.service_env(),
            "GRPC_PORT": str(grpc_port),
            "METRICS_PORT": str(metrics_port),
            "WORKERS_ENABLED": "0",
        }
        module = "server" if name == "interceptor" else "scripts.bench.interceptor"
        bench.procs.start(f"pipeline-{name}", [sys.executable, "-m", module], env)
        target = f"127.0.0.1:{grpc_port}"
        bench.procs.wait_ready(f"pipeline-{name}", lambda t=target: fixtures.wait_serving(t))
    bench.token = bench.token or fixtures.user_token()
    choice = bench.choice or fixtures.choose_rpc(f"127.0.0.1:{ports['interceptor'][0]}")
    body = bench.work / "interceptor.bin"
    body.write_bytes(loadgen.grpc_frame(choice.message))
    for name, (grpc_port, _) in ports.items():
        target = f"127.0.0.1:{grpc_port}"
        code, details = fixtures.raw_call(target, choice.method, choice.message, bench.token)
        if code != choice.expected_code:
            raise RuntimeError(f"pipeline-{name} answered {code.name}: {details}")

    def load(name: str) -> loadgen.LoadResult:
        grpc_port, metrics_port = ports[name]
        headers = {
            "content-type": "application/grpc",
            "te": "trailers",
            "authorization": f"Bearer {bench.token}",
        }
        before = fixtures.handled_codes(metrics_port, choice.method)
        meter = bench.meter([f"pipeline-{name}"])
        result = loadgen.h2load(
            f"http://127.0.0.1:{grpc_port}{choice.method}",
            body,
            headers,
            clients=cfg.connections,
            streams=cfg.streams,
            log_file=bench.work / f"pipeline-{name}.h2load.log",
            target=f"127.0.0.1:{grpc_port}{choice.method}",
            meter=meter,
            duration=cfg.duration,
            warmup=cfg.warmup,
        )
        result.cpu = meter.report(result.requests)
        (bench.work / f"pipeline-{name}.h2load.log").unlink(missing_ok=True)
        codes = fixtures.codes_delta(before, fixtures.handled_codes(metrics_port, choice.method))
        result.grpc_codes = codes
        expected = choice.expected_code.name
        result.bad_grpc_status = fixtures.unexpected_calls(codes, expected, result.in_flight_at_end)
        print(f"bench:   pipeline-{name}: {result.rps:.0f} req/s, codes {codes}", flush=True)
        return result

    runs: dict[str, list[loadgen.LoadResult]] = {"wrapper": [], "interceptor": []}
    for n in range(1, rounds + 1):
        print(f"bench: pipeline round {n}/{rounds} (wrapper, interceptor)", flush=True)
        for name in runs:
            runs[name].append(load(name))
    for name in runs:
        bench.procs.stop(f"pipeline-{name}")

    def server_us(result: loadgen.LoadResult) -> float:
        per = (result.cpu or {}).get("cpu_us_per_call", {})
        return sum(v for k, v in per.items() if k != "redis")

    pairs = [i.rps / w.rps for w, i in zip(runs["wrapper"], runs["interceptor"], strict=True) if w.rps]
    cpu_pairs = [
        server_us(w) / server_us(i)
        for w, i in zip(runs["wrapper"], runs["interceptor"], strict=True)
        if server_us(w) and server_us(i)
    ]
    ratio = statistics.median(pairs) if pairs else None
    cpu_ratio = statistics.median(cpu_pairs) if cpu_pairs else None
    us = {name: statistics.median(server_us(r) for r in rs) for name, rs in runs.items()}
    failures = sum(r.failures + (r.bad_grpc_status or 0) for rs in runs.values() for r in rs)
    print()
    print(f"Call pipeline: grpc.aio interceptor vs wrapper ({choice.method}, {rounds} rounds)")
    for name, rs in runs.items():
        best = max(r.rps for r in rs)
        print(f"  {name:<12} best {best:>7.0f} req/s, median server CPU {us[name]:.0f} us/call")
    paired = zip(runs["wrapper"], runs["interceptor"], strict=True)
    shown = "; ".join(f"{w.rps:.0f} / {i.rps:.0f}" for w, i in paired)
    print(f"  rounds (wrapper / interceptor req/s): {shown}")
    if ratio is not None:
        print(f"  ratio interceptor / wrapper: {ratio:.2f} (req/s, median of rounds)")
    if cpu_ratio is not None:
        print(f"  ratio interceptor / wrapper by server CPU per call: {cpu_ratio:.2f} (CPU-normalized)")
    print(f"  failed or unexpected-status calls: {failures}")
    print()
    return {
        "method": choice.method,
        "ratio_median": ratio,
        "ratios": pairs,
        "cpu_normalized_ratio": cpu_ratio,
        "server_us_per_call_median": us,
        "rounds": {name: [round(r.rps, 1) for r in rs] for name, rs in runs.items()},
        "failures": failures,
    }


if __name__ == "__main__":
    serve()
