"""The floor of one RPC in Python gRPC on this machine: an empty unary call over mutual TLS.

A server process set up as a node's is (``grpc.aio``, the node's server options and
reloadable mutual-TLS credentials, a generic handler taking the raw bytes) answers every
call with no bytes at once; a client process set up as the combiner's is (``grpc.aio``,
its channel options) makes the calls one at a time. What the server process spends per
call is what a node cannot go below with this gRPC: the honest lower bound of "node CPU
per RPC beyond its exponentiations". Both run as separate processes, like a node and a
combiner, so neither's CPU is counted in the other's.

    python -m benchmarks.cluster.grpcfloor [--calls 2000] [--wait-ms 0 3] [--cluster FOLDER]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

__all__ = ["measure_grpc_floor"]

_METHOD = "/ittc.v1.Signer/Sign"
_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of the process's main thread, and of the whole process."""
    out = {}
    for key, path in (("main", f"/proc/{pid}/task/{pid}/stat"), ("all", f"/proc/{pid}/stat")):
        fields = pathlib.Path(path).read_text().rsplit(")", 1)[1].split()
        out[key] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


async def _serve(etc: pathlib.Path, wait_s: float) -> None:
    import grpc

    from ittc.wire import tls

    threads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="floor-wait")

    def wait() -> bytes:
        time.sleep(wait_s)  # (the GIL released, as during a share's exponentiation)
        return b""

    async def empty(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if wait_s > 0:
            return await asyncio.get_running_loop().run_in_executor(threads, wait)
        return b""

    credentials = tls.ReloadableServerCredentials(
        (etc / "tls.key").read_bytes(),
        (etc / "tls.pem").read_bytes(),
        (etc / "ca.pem").read_bytes(),
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 << 20),
            ("grpc.max_send_message_length", 4 << 20),
            ("grpc.so_reuseport", 0),
        ]
    )
    port = server.add_secure_port("127.0.0.1:0", credentials.credentials)
    handlers = {"Sign": grpc.unary_unary_rpc_method_handler(empty)}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("ittc.v1.Signer", handlers),)
    )
    await server.start()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(None)


async def _call(combiner: pathlib.Path, port: int, tls_name: str, calls: int) -> dict[str, Any]:
    import grpc

    from ittc.wire import tls

    credentials = tls.channel_credentials(
        combiner / "client.pem", combiner / "client.key", combiner / "ca.pem"
    )
    options = tls.channel_options(tls_name, 4 << 20)
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", credentials, options=options
    ) as channel:
        stub = channel.unary_unary(_METHOD)
        for _ in range(max(50, calls // 10)):  # connect, warm up
            await stub(b"", timeout=5)
        print("warm", flush=True)
        sys.stdin.readline()
        latencies = []
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = usage.ru_utime + usage.ru_stime
        for _ in range(calls):
            t0 = time.perf_counter()
            await stub(b"", timeout=5)
            latencies.append(time.perf_counter() - t0)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu1 = usage.ru_utime + usage.ru_stime
    latencies.sort()
    return {
        "calls": calls,
        "client_cpu_per_call_s": (cpu1 - cpu0) / calls,
        "latency_p50_s": statistics.median(latencies),
        "latency_p90_s": latencies[int(0.9 * (calls - 1))],
    }


def measure_grpc_floor(
    cluster_root: pathlib.Path,
    calls: int = 2000,
    *,
    wait_s: float = 0.0,
    site: int = 1,
    tls_name: str | None = None,
) -> dict[str, Any]:
    """Empty unary calls over mutual TLS with the certificates of a benchmark cluster
    (``cluster_root``: its ceremony folder), one at a time: the server's CPU per call (all
    its threads, and its event loop's thread), the client's, the latency. With ``wait_s``
    the server answers each call from a thread after that long, as a node answers from
    its exponentiation thread: gRPC costs more CPU per call when its threads go idle
    between the request and the answer."""
    etc = cluster_root / f"site-{site}" / "etc"
    combiner = cluster_root / "combiner"
    python = sys.executable
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    module = [python, "-m", "benchmarks.cluster.grpcfloor"]
    server = subprocess.Popen(
        [*module, "--serve", str(etc), str(wait_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    client = None
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        name = tls_name or f"ittc-node-{site}"
        client = subprocess.Popen(
            [*module, "--call", str(combiner), str(port), name, str(calls)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert client.stdout is not None and client.stdin is not None
        if client.stdout.readline().strip() != "warm":
            raise RuntimeError("the gRPC floor's client did not start")
        before = _process_cpu(server.pid)
        client.stdin.write("go\n")
        client.stdin.flush()
        result: dict[str, Any] = json.loads(client.stdout.readline())
        after = _process_cpu(server.pid)
        client.wait(timeout=30)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    result["wait_s"] = wait_s
    result["server_cpu_per_call_s"] = (after["all"] - before["all"]) / calls
    result["server_loop_thread_cpu_per_call_s"] = (after["main"] - before["main"]) / calls
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster.grpcfloor")
    parser.add_argument("--serve", nargs=2, metavar=("ETC", "WAIT_S"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--call", nargs=4, metavar=("COMBINER", "PORT", "TLS_NAME", "CALLS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument(
        "--wait-ms",
        type=float,
        nargs="+",
        default=[0.0, 3.0],
        help="the server answers from a thread after this long (0: at once); one "
        "measurement each (0 3)",
    )
    parser.add_argument(
        "--cluster",
        type=pathlib.Path,
        default=pathlib.Path("benchmarks/.clusters/rsa2048-3of5/cluster"),
        help="a benchmark cluster's ceremony folder, for its certificates "
        "(python -m benchmarks.cluster makes one)",
    )
    args = parser.parse_args(argv)
    if args.serve:
        folder, wait = args.serve
        asyncio.run(_serve(pathlib.Path(folder), float(wait)))
        return 0
    if args.call:
        folder, port, name, calls = args.call
        result = asyncio.run(_call(pathlib.Path(folder), int(port), name, int(calls)))
        print(json.dumps(result), flush=True)
        return 0
    for wait_ms in args.wait_ms:
        result = measure_grpc_floor(args.cluster, args.calls, wait_s=wait_ms / 1000)
        print(
            f"server answers after {wait_ms:g} ms: server CPU per call "
            f"{result['server_cpu_per_call_s'] * 1e3:.3f} ms (its event loop's thread "
            f"{result['server_loop_thread_cpu_per_call_s'] * 1e3:.3f} ms), client "
            f"{result['client_cpu_per_call_s'] * 1e3:.3f} ms; latency p50 "
            f"{result['latency_p50_s'] * 1e3:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
