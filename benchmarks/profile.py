"""Where a lone signature's CPU goes: every thread of the client and the nodes, and a
flame graph of what each side does while it holds the GIL.

    python -m benchmarks.profile                 # 2048-bit, k=3 of 5, 600 signatures
    python -m benchmarks.profile --count 1000 --rate 200
    python -m benchmarks.profile --code /path/to/an/old/checkout   # nodes run that code

A local benchmark cluster (:mod:`benchmarks.cluster.target`) serves one signature at a
time. Over the measured signatures this records:

- the CPU time of every thread of the client process and of the node processes, from
  ``/proc/<pid>/task/<tid>/stat``, named as Python names them (``ittc-sign_0``,
  ``ittc-audit``, ``MainThread``; gRPC's own threads by their system names), per RPC;
- with `py-spy <https://github.com/benfred/py-spy>`_ (``pip install py-spy``), samples
  of the thread holding the GIL in each process (``--gil``): the Python work of the
  request path, exponentiations excluded (they run without the GIL). Cython frames
  (gRPC's) are not Python frames: their time shows under the Python frame that called
  them (``Handle._run`` for the event loop's callbacks).

Writes ``profile-<date>.md`` and ``.json``, and with matplotlib a flame graph of the
nodes and of the client (``-nodes.png``, ``-client.png``) to ``benchmarks/results``.
py-spy samples cost the sampled processes time: latencies measured with it are not
the benchmark's (``python -m benchmarks.cluster --sweep lone`` is).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from benchmarks import micro
from benchmarks.cluster.cpu import cores
from benchmarks.cluster.target import cached_cluster, start_local
from benchmarks.micro import Progress
from ittc.combiner import ClusterClient, SignItem
from ittc.scheme.encoding import Scheme

__all__ = ["collapse", "main", "thread_cpu", "top_frames"]

SCHEMA = "ittc.bench.profile/1"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: Frames of the event loop and of startup above the request path, left out of "top".
_PLUMBING = re.compile(r"^(<module>|_run_module_as_main|_run_code|main|run|Runner\.run)$")


# -- threads and their CPU -----------------------------------------------------------------


def _py_spy() -> str | None:
    here = pathlib.Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def thread_names(pid: int, spy: str | None) -> dict[str, str]:
    """Native thread id -> the thread's Python name (py-spy dump), for another process."""
    if pid == os.getpid():
        return {str(t.native_id): t.name for t in threading.enumerate()}
    if spy is None:
        return {}
    out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True)
    names = {}
    for line in out.stdout.splitlines():
        found = re.match(r'Thread (\d+) \(.*?\): "(.*)"', line)
        if found:
            names[found.group(1)] = found.group(2)
    return names


def thread_cpu(roles: Sequence[tuple[str, int]], spy: str | None) -> dict[tuple[int, str], Any]:
    """(pid, tid) -> (role:thread name, CPU seconds so far) for every thread of ``roles``."""
    out: dict[tuple[int, str], Any] = {}
    for role, pid in roles:
        names = thread_names(pid, spy)
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                comm = pathlib.Path(task.path, "comm").read_text().strip()
                fields = pathlib.Path(task.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = re.sub(r"_\d+$", "_N", names.get(task.name, comm))
            user, system = int(fields[11]) / _TICK, int(fields[12]) / _TICK
            out[(pid, task.name)] = (f"{role}: {name}", user + system, system)
    return out


def cpu_by_thread(
    before: dict[Any, Any], after: dict[Any, Any]
) -> tuple[dict[str, float], dict[str, float]]:
    """CPU seconds by thread name between two :func:`thread_cpu` readings: all of it, and
    the part spent in the kernel (system calls: sockets, epoll, futex wake-ups, fsync)."""
    by: collections.Counter[str] = collections.Counter()
    kernel: collections.Counter[str] = collections.Counter()
    for key, (name, cpu, system) in after.items():
        _, cpu0, system0 = before.get(key, (name, 0.0, 0.0))
        by[name] += cpu - cpu0
        kernel[name] += system - system0
    return dict(by.most_common()), dict(kernel)


# -- samples -------------------------------------------------------------------------------


def collapse(paths: Sequence[pathlib.Path]) -> collections.Counter[tuple[str, ...]]:
    """py-spy raw output (``thread;frame;...;frame count``) as stacks of function names,
    root first, the thread left out."""
    stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = [re.sub(r" \((.*?)(:\d+)?\)$", r" (\1)", f) for f in stack.split(";")[1:]]
            stacks[tuple(frames)] += int(count)
    return stacks


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    parts = where.rstrip(")").split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def top_frames(stacks: collections.Counter[tuple[str, ...]], count: int = 15) -> dict[str, Any]:
    """The functions with the most samples: on top of the stack (self) and anywhere on it
    (inclusive), each as a share of all samples."""
    total = sum(stacks.values()) or 1
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    for frames, n in stacks.items():
        if frames:
            own[_short(frames[-1])] += n
        for frame in set(frames):
            if not _PLUMBING.match(frame.partition(" (")[0]):
                anywhere[_short(frame)] += n
    return {
        "samples": total,
        "self": [(name, n / total) for name, n in own.most_common(count)],
        "inclusive": [(name, n / total) for name, n in anywhere.most_common(count)],
    }


def flame_graph(
    stacks: collections.Counter[tuple[str, ...]], path: pathlib.Path, title: str
) -> bool:
    """An icicle flame graph (root at the top; width = share of samples) as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    total = sum(stacks.values())
    if not total:
        return False
    tree: dict[tuple[str, ...], int] = collections.Counter()
    for frames, n in stacks.items():
        for depth in range(1, len(frames) + 1):
            tree[frames[:depth]] += n
    depth_max = max(len(k) for k in tree)
    fig, ax = plt.subplots(figsize=(14, max(4.0, 0.32 * depth_max + 1)))

    def draw(prefix: tuple[str, ...], x: float) -> None:
        children = sorted(
            (k for k in tree if len(k) == len(prefix) + 1 and k[: len(prefix)] == prefix),
            key=lambda k: -tree[k],
        )
        for child in children:
            width = tree[child] / total
            if width < 0.002:
                continue
            name = child[-1]
            ours = "ittc" in name
            ax.barh(
                -len(child),
                width,
                left=x,
                height=0.92,
                color="#e8743b" if ours else "#f2c14e",
                edgecolor="white",
                linewidth=0.4,
            )
            if width > 0.03:
                label = _short(name)
                chars = int(width * 190)
                ax.text(
                    x + 0.002,
                    -len(child),
                    label if len(label) <= chars else label[: max(chars - 1, 1)] + "…",
                    va="center",
                    fontsize=7,
                )
            draw(child, x)
            x += width

    draw((), 0.0)
    ax.set_xlim(0, 1)
    ax.set_ylim(-depth_max - 0.6, -0.4)
    ax.set_yticks([])
    ax.set_xlabel("share of GIL-holding samples (orange: ittc's own code)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# -- the run -------------------------------------------------------------------------------


async def _lone_signatures(client: ClusterClient, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        item = SignItem(Scheme.PKCS1V15, "sha256", os.urandom(32))
        started = time.perf_counter()
        await client.sign_items([item])
        latencies.append(time.perf_counter() - started)
    return latencies


def run(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Profile a lone-signature load; the report (the sample files written to ``raw``)."""
    spy = _py_spy()
    if args.rate and spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy), or give --rate 0")
    spy_bin = spy or "py-spy"
    root = cached_cluster(args.cache, args.bits, args.k, 5, progress)
    if args.code is not None:
        os.environ["PYTHONPATH"] = f"{args.code}{os.pathsep}{args.code / 'nodes'}"
    raw = args.out / "raw" / f"profile-{args.stamp}"
    raw.mkdir(parents=True, exist_ok=True)
    target = start_local(root, raw, cores(), progress)
    assert target.local is not None
    pids = [pid for pid in (target.local.pid(i) for i in target.local.indices) if pid]
    roles = [("client", os.getpid())] + [("nodes", pid) for pid in pids]
    samplers: list[subprocess.Popen[bytes]] = []
    try:

        async def load() -> dict[str, Any]:
            async with ClusterClient(target.cluster) as client:
                await _lone_signatures(client, args.warmup)
                if args.rate:
                    for role, pid in roles:
                        out = raw / f"{role}-{pid}.txt"
                        command = [spy_bin, "record", "--pid", str(pid)]
                        command += ["--rate", str(args.rate)]
                        command += ["--format", "raw", "--output", str(out), "--gil"]
                        command += ["--nonblocking", "--threads"]
                        samplers.append(
                            subprocess.Popen(
                                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                            )
                        )
                    await asyncio.sleep(1.0)  # samplers attached
                before, rpcs = thread_cpu(roles, spy), client.stats.rpcs
                progress.line(f"  {args.count} lone signatures ...")
                latencies = await _lone_signatures(client, args.count)
                after, rpcs = thread_cpu(roles, spy), client.stats.rpcs - rpcs
                return {"latencies": latencies, "cpu": cpu_by_thread(before, after), "rpcs": rpcs}

        measured = asyncio.run(load())
    finally:
        for sampler in samplers:
            sampler.send_signal(signal.SIGINT)
        for sampler in samplers:
            sampler.wait(timeout=60)
        target.close()
    rpcs = measured["rpcs"]
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "machine": micro.machine_facts(),
        "config": {
            "bits": args.bits,
            "k": args.k,
            "count": args.count,
            "rate_hz": args.rate,
            "nodes_code": str(args.code) if args.code else "this checkout",
        },
        "rpcs": rpcs,
        "latency_p50_s": statistics.median(measured["latencies"]),
        "cpu_per_rpc_s": {name: cpu / rpcs for name, cpu in measured["cpu"][0].items() if cpu > 0},
        "system_cpu_per_rpc_s": {
            name: cpu / rpcs for name, cpu in measured["cpu"][1].items() if cpu > 0
        },
    }
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    for role in ("nodes", "client"):
        stacks = collapse(sorted(raw.glob(f"{role}-*.txt")))
        report[f"{role}_top"] = top_frames(stacks)
        png = args.out / f"profile-{args.stamp}-{role}.png"
        title = (
            f"{'The nodes' if role == 'nodes' else 'The client'} while holding the GIL, a "
            f"lone signature at a time ({args.bits}-bit, k={args.k}), {report['machine']['date']}"
        )
        if stacks and not args.no_plot and flame_graph(stacks, png, title):
            report[f"{role}_flame_graph"] = png.name
    return report


def render_markdown(report: dict[str, Any]) -> str:
    m, cfg = report["machine"], report["config"]
    lines = [
        f"# Where a lone signature's CPU goes, {m['date']}",
        "",
        f"Machine: {m['cpu_model']}, {m['cpus_usable']} usable cores; load average "
        f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end. "
        f"{cfg['bits']}-bit key, k={cfg['k']} of 5; {cfg['count']} signatures one at a "
        f"time, {report['rpcs']} RPCs; nodes' code: {cfg['nodes_code']}; ittc "
        f"{micro.ittc_build(m)}. py-spy sampled at {cfg['rate_hz']} Hz "
        f"(p50 {report['latency_p50_s'] * 1e3:.2f} ms with the samplers attached).",
        "",
        "## CPU per RPC, by thread (all node processes together)",
        "",
        "| thread | CPU per RPC | of which in the kernel |",
        "|---|---:|---:|",
    ]
    kernel = report.get("system_cpu_per_rpc_s", {})
    for name, seconds in report["cpu_per_rpc_s"].items():
        if seconds >= 1e-6:
            system = kernel.get(name)
            shown = f"{system * 1e3:.3f} ms" if system is not None else "-"
            lines.append(f"| {name} | {seconds * 1e3:.3f} ms | {shown} |")
    for role, title in (("nodes", "The nodes"), ("client", "The client")):
        top = report.get(f"{role}_top")
        if not top or top["samples"] <= 1:
            continue
        lines += [
            "",
            f"## {title}: GIL-holding samples ({top['samples']})",
            "",
            "| on top of the stack (self) | share | anywhere on the stack | share |",
            "|---|---:|---|---:|",
        ]
        for (own, a), (anywhere, b) in zip(top["self"], top["inclusive"], strict=False):
            lines.append(f"| `{own}` | {a:.1%} | `{anywhere}` | {b:.1%} |")
        if report.get(f"{role}_flame_graph"):
            lines += ["", f"![{title}, flame graph]({report[f'{role}_flame_graph']})"]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("--count", type=int, default=600, help="signatures measured (600)")
    p.add_argument("--warmup", type=int, default=60, help="signatures before (60)")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second; 0: none")
    p.add_argument("--bits", type=int, default=2048, choices=(2048, 3072, 4096))
    p.add_argument("--k", type=int, default=3, choices=range(2, 6), metavar="K")
    p.add_argument(
        "--code",
        type=pathlib.Path,
        default=None,
        help="run the nodes from this checkout (its ittc/ and nodes/), e.g. an older one",
    )
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks") / "results")
    p.add_argument("--cache", type=pathlib.Path, default=pathlib.Path("benchmarks") / ".clusters")
    p.add_argument("--no-plot", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args, Progress())
    base = args.out / f"profile-{args.stamp}"
    base.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    markdown = render_markdown(report)
    base.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
