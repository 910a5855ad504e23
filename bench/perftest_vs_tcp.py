#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Unmodified perftest over the emulated USB4 cable next to qperf TCP over loopback, one run.

Each perftest measurement is a server and a client process, each an emulated host on its end of
a fresh shared-memory cable, started through `tbv run` (the libibverbs provider, rdma_provider/);
perftest exchanges its connection data over TCP on 127.0.0.1. The TCP reference is qperf's
tcp_lat / tcp_bw between a qperf server and client on 127.0.0.1, on the same machine, at the same
message sizes.

  latency:   ib_write_lat, ib_send_lat (half round trip), ib_read_lat (full round trip),
             qperf tcp_lat (half round trip); 64 B ... 64 KiB
  bandwidth: ib_write_bw, ib_read_bw, ib_send_bw, qperf tcp_bw; 1 KiB ... 1 MiB

Every figure is the median over --runs rounds (default 3; each round measures everything once).
The table goes to stdout; --json FILE writes every run and the machine; --plot FILE draws the
medians (needs matplotlib). Use a release build:

  meson setup -Dbuildtype=release -Dtests=false /tmp/rel && ninja -C /tmp/rel
  bench/perftest_vs_tcp.py --build /tmp/rel --json perftest_vs_tcp.json

Exits non-zero if any measurement failed (the table shows `fail` there).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAT_PROGS = ["ib_write_lat", "ib_send_lat", "ib_read_lat"]
BW_PROGS = ["ib_write_bw", "ib_read_bw", "ib_send_bw"]
LAT_SIZES = [64, 256, 1024, 4096, 16384, 65536]
BW_SIZES = [1024, 4096, 16384, 65536, 262144, 1048576]


def human(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1 << 10 and size % (1 << 10) == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """True if something listens on TCP `port`. Reads /proc instead of connecting: perftest's
    server takes the first connection it accepts as its client."""
    want = f":{port:04X}"
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, encoding="ascii") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and cols[1].endswith(want):
                        return True
        except OSError:
            pass
    return False


class Failure(Exception):
    pass


class Runner:
    """Starts processes, remembers them and their cables, and cleans up whatever is left."""

    def __init__(self, tbv: str, verbose: bool) -> None:
        self.tbv = tbv
        self.verbose = verbose
        self.procs: list[subprocess.Popen] = []
        self.cables: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="tbv-pvt-"))
        self.seq = 0
        self.retries = 0  # clients run again because they connected before the server listened

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for f in Path("/dev/shm").glob(f"tbverbs-stats-{p.pid}-*"):
                f.unlink(missing_ok=True)
        self.procs.clear()
        for c in self.cables:
            Path(f"/dev/shm/tbv-cable-{c}").unlink(missing_ok=True)
        self.cables.clear()

    def close(self) -> None:
        self.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        e = dict(os.environ)
        e.update(env)
        with open(log, "wb") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=e)
        self.procs.append(p)
        return p

    def perftest(self, prog: str, args: list[str]) -> str:
        """`prog args` as server and client over a fresh cable; the client's output."""
        self.seq += 1
        cable = f"pvt-{os.getpid()}-{self.seq}"
        self.cables.append(cable)
        port = free_port()
        common = [prog, "-d", "tbv0", "-p", str(port), *args]
        slog, clog = self.tmp / "server.log", self.tmp / "client.log"
        try:
            # The server listens only once its port is ACTIVE, i.e. once the client's process
            # has the other end of the cable: it must not wait after the link comes up
            # (TBV_LINK_SETTLE_MS=0), while the client waits, at most 1 s, until the server
            # listens on TCP (perftest does not retry its connect). A client that still came
            # too early runs again.
            server = self.spawn([self.tbv, "run", "--emu", cable, "--", *common], slog,
                                {"TBV_LINK_SETTLE_MS": "0"})
            deadline = time.monotonic() + 30
            while not Path(f"/dev/shm/tbv-cable-{cable}").exists():
                if server.poll() is not None:
                    raise Failure(f"{prog} server exited ({server.returncode}) before opening "
                                  f"the cable:\n{slog.read_text(errors='replace')}")
                if time.monotonic() > deadline:
                    raise Failure(f"{prog} server did not open the cable in 30 s")
                time.sleep(0.05)
            for attempt in range(3):
                client = self.spawn([self.tbv, "run", "--emu", cable, "--", *common, "127.0.0.1"],
                                    clog, {"TBV_LINK_SETTLE_MS": "1000"})
                try:
                    client.wait(timeout=180)
                except subprocess.TimeoutExpired:
                    client.kill()
                    client.wait()
                    raise Failure(f"{prog} client did not finish in 180 s:\n"
                                  f"{clog.read_text(errors='replace')}")
                out = clog.read_text(errors="replace")
                if (client.returncode != 0 and "Couldn't connect" in out
                        and server.poll() is None and attempt < 2):
                    self.retries += 1
                    deadline = time.monotonic() + 30
                    while not listening(port) and server.poll() is None:
                        if time.monotonic() > deadline:
                            raise Failure(f"{prog} server not listening on TCP {port} in 30 s")
                        time.sleep(0.05)
                    continue
                break
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
                raise Failure(f"{prog} server did not exit within 30 s of its client")
            if client.returncode != 0 or server.returncode != 0:
                raise Failure(f"{prog} {' '.join(args)}: client exit {client.returncode}, "
                              f"server exit {server.returncode}\n--- client ---\n{out}"
                              f"--- server ---\n{slog.read_text(errors='replace')}")
            return out
        finally:
            self.cleanup()

    def qperf_server(self, port: int) -> subprocess.Popen:
        p = self.spawn(["qperf", "-lp", str(port)], self.tmp / "qperf-server.log", {})
        deadline = time.monotonic() + 10
        while not listening(port):
            if p.poll() is not None or time.monotonic() > deadline:
                raise Failure("qperf server did not start")
            time.sleep(0.05)
        return p


def table_row(out: str) -> list[str]:
    """The first result row under perftest's `#bytes` header."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("#bytes"):
            for row in lines[i + 1:]:
                cols = row.split()
                if cols and cols[0].isdigit():
                    return cols
    raise Failure("no result row in perftest's output:\n" + out)


def parse_lat(out: str) -> dict[str, float]:
    # #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%
    c = table_row(out)
    return {"median_us": float(c[4]), "avg_us": float(c[5]), "min_us": float(c[2]),
            "p99_us": float(c[7])}


def parse_bw(out: str) -> dict[str, float]:
    # #bytes #iterations BW peak[MB/sec] BW average[MB/sec] MsgRate[Mpps]; perftest's MB is MiB
    c = table_row(out)
    return {"gbps": float(c[3]) * 1048576 * 8 / 1e9, "mpps": float(c[4])}


UNITS = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "sec": 1e6,
         "bytes/sec": 1e-9, "KB/sec": 1e-6, "MB/sec": 1e-3, "GB/sec": 1.0, "TB/sec": 1e3}


def parse_qperf(out: str, what: str) -> float:
    """qperf's `latency = N us` (in µs) or `bw = N GB/sec` (in GB/s, 10^9 bytes)."""
    m = re.search(rf"^\s*{what}\s*=\s*([0-9.,]+)\s+(\S+)", out, re.M)
    if not m or m.group(2) not in UNITS:
        raise Failure(f"qperf: no {what} in:\n{out}")
    return float(m.group(1).replace(",", "")) * UNITS[m.group(2)]


def measure_round(r: Runner, a: argparse.Namespace, log) -> list[dict]:
    rows: list[dict] = []

    def record(kind: str, test: str, size: int, fn) -> None:
        row = {"kind": kind, "test": test, "bytes": size}
        t0 = time.monotonic()
        try:
            row.update(fn())
        except Failure as e:
            row["error"] = str(e)
            print(f"  FAILED {test} {human(size)}: {str(e).splitlines()[0]}", file=sys.stderr)
            if a.verbose:
                print(str(e), file=sys.stderr)
        row["seconds"] = round(time.monotonic() - t0, 2)
        rows.append(row)
        log(row)

    for prog in LAT_PROGS:
        for size in a.lat_sizes:
            record("lat", prog, size,
                   lambda p=prog, s=size: parse_lat(r.perftest(p, ["-s", str(s), "-n",
                                                                   str(a.lat_iters)])))
    for prog in BW_PROGS:
        for size in a.bw_sizes:
            record("bw", prog, size,
                   lambda p=prog, s=size: parse_bw(r.perftest(p, ["-s", str(s), "-D",
                                                                  str(a.seconds)])))
    port = free_port()
    try:
        r.qperf_server(port)
        base = ["qperf", "-lp", str(port), "-t", str(a.seconds), "-vu"]

        def qp(test: str, size: int, what: str) -> float:
            p = subprocess.run([*base, "-m", str(size), "127.0.0.1", test], capture_output=True,
                               text=True, timeout=60 + 2 * a.seconds, check=False)
            if p.returncode != 0:
                raise Failure(f"qperf {test} -m {size}: exit {p.returncode}\n{p.stdout}{p.stderr}")
            return parse_qperf(p.stdout, what)

        for size in a.lat_sizes:
            record("lat", "qperf tcp_lat", size,
                   lambda s=size: {"median_us": qp("tcp_lat", s, "latency")})
        for size in a.bw_sizes:
            record("bw", "qperf tcp_bw", size,
                   lambda s=size: {"gbps": qp("tcp_bw", s, "bw") * 8})
    except Failure as e:
        print(f"  FAILED qperf: {e}", file=sys.stderr)
    finally:
        r.cleanup()
    return rows


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy so far (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this script and of its children that ended (every pair is reaped)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def median_of(runs: list[list[dict]], kind: str, test: str, size: int, key: str):
    vals = [row[key] for rnd in runs for row in rnd
            if row["kind"] == kind and row["test"] == test and row["bytes"] == size and key in row]
    return statistics.median(vals) if vals else None


def fmt(v, digits: int) -> str:
    return "fail" if v is None else f"{v:.{digits}f}"


def cell(runs: list[list[dict]], kind: str, test: str, size: int, key: str, digits: int) -> str:
    """The median, and with several runs the lowest and highest in brackets."""
    vals = [row[key] for rnd in runs for row in rnd
            if row["kind"] == kind and row["test"] == test and row["bytes"] == size and key in row]
    if not vals:
        return "fail"
    m = fmt(statistics.median(vals), digits)
    if len(vals) < 2:
        return m
    lo, hi = min(vals), max(vals)
    d = max(0, digits - 1)
    return f"{m} ({lo:.{d}f}–{hi:.{d}f})"


def print_tables(runs: list[list[dict]], a: argparse.Namespace) -> None:
    lat_tests = LAT_PROGS + ["qperf tcp_lat"]
    spread = " (lowest–highest)" if len(runs) > 1 else ""
    print(f"\nLatency, µs, median of {len(runs)} runs{spread}; perftest: t_typical, "
          "its median; write/send/tcp: half round trip, read: full round trip")
    print(f"| bytes | {' | '.join(lat_tests)} |")
    print("|---:|" + "---:|" * len(lat_tests))
    for size in a.lat_sizes:
        cells = [cell(runs, "lat", t, size, "median_us", 2) for t in lat_tests]
        print(f"| {human(size)} | {' | '.join(cells)} |")
    bw_tests = BW_PROGS + ["qperf tcp_bw"]
    print(f"\nBandwidth, Gb/s (10^9 bit/s of payload), median of {len(runs)} runs{spread}, "
          f"{a.seconds} s per size")
    print(f"| bytes | {' | '.join(bw_tests)} |")
    print("|---:|" + "---:|" * len(bw_tests))
    for size in a.bw_sizes:
        cells = [cell(runs, "bw", t, size, "gbps", 2) for t in bw_tests]
        print(f"| {human(size)} | {' | '.join(cells)} |")


def plot(runs: list[list[dict]], a: argparse.Namespace, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot needs matplotlib in {sys.executable} (Debian: apt-get install "
              "python3-matplotlib, and run the script with /usr/bin/python3)", file=sys.stderr)
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    # One colour per operation in both panels; TCP dashed.
    colours = {"write": "tab:blue", "read": "tab:green", "send": "tab:orange", "tcp": "tab:red"}

    def style(t: str) -> dict:
        op = next(k for k in colours if k in t)
        return {"color": colours[op], "linestyle": "--" if op == "tcp" else "-", "marker": "o"}

    for t in LAT_PROGS + ["qperf tcp_lat"]:
        ys = [median_of(runs, "lat", t, s, "median_us") for s in a.lat_sizes]
        ax1.plot(a.lat_sizes, [float("nan") if y is None else y for y in ys], label=t, **style(t))
    ax1.set(xscale="log", yscale="log", xlabel="message size (bytes)", ylabel="µs",
            title="latency (median)")
    for t in BW_PROGS + ["qperf tcp_bw"]:
        ys = [median_of(runs, "bw", t, s, "gbps") for s in a.bw_sizes]
        ax2.plot(a.bw_sizes, [float("nan") if y is None else y for y in ys], label=t, **style(t))
    ax2.set(xscale="log", xlabel="message size (bytes)", ylabel="Gb/s", title="bandwidth")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("perftest over the emulated USB4 cable vs qperf TCP over loopback")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def machine(build: Path) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args: str) -> str:
        p = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True,
                           check=False)
        return p.stdout.strip() if p.returncode == 0 else ""

    src = ROOT
    buildtype = "unknown"
    try:
        info = json.loads((build / "meson-info" / "intro-buildoptions.json").read_text())
        buildtype = next(o["value"] for o in info if o["name"] == "buildtype")
        files = json.loads((build / "meson-info" / "intro-buildsystem_files.json").read_text())
        src = Path(min(files, key=len)).parent  # the top-level meson.build
    except (OSError, ValueError, StopIteration, KeyError):
        pass
    commit = git("rev-parse", "--short=7", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+uncommitted changes"
    pkgs = {}
    for pkg in ("perftest", "qperf", "rdma-core"):
        p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                           text=True, check=False)
        pkgs[pkg] = p.stdout.strip() if p.returncode == 0 else "?"
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "source": str(src), "commit": commit, "build": str(build), "buildtype": buildtype,
            "packages": pkgs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--build", default=str(ROOT / "build" / "demo"),
                    help="meson build directory with src/tools/tbv and the provider "
                         "(default: build/demo, scripts/demo's release build)")
    ap.add_argument("--runs", type=int, default=3, help="rounds; figures are medians (3)")
    ap.add_argument("--seconds", type=int, default=2,
                    help="duration of each bandwidth measurement, perftest -D and qperf -t (2)")
    ap.add_argument("--lat-iters", type=int, default=1000, help="perftest latency -n (1000)")
    ap.add_argument("--lat-sizes", type=int, nargs="+", default=LAT_SIZES, metavar="BYTES")
    ap.add_argument("--bw-sizes", type=int, nargs="+", default=BW_SIZES, metavar="BYTES")
    ap.add_argument("--quick", action="store_true",
                    help="one run, sizes 64 B/4 KiB and 4 KiB/1 MiB, 1 s (a smoke test)")
    ap.add_argument("--json", metavar="FILE", help="write every run and the machine as JSON")
    ap.add_argument("--plot", metavar="FILE", help="draw the medians into a PNG (matplotlib)")
    ap.add_argument("--from-json", metavar="FILE",
                    help="measure nothing: print the tables (and --plot) of an earlier --json")
    ap.add_argument("-v", "--verbose", action="store_true", help="full output of failures")
    a = ap.parse_args()
    if a.from_json:
        data = json.loads(Path(a.from_json).read_text())
        runs, m = data["runs"], data["machine"]
        a.seconds = m["seconds"]
        a.lat_sizes = sorted({row["bytes"] for rnd in runs for row in rnd if row["kind"] == "lat"})
        a.bw_sizes = sorted({row["bytes"] for rnd in runs for row in rnd if row["kind"] == "bw"})
        print(f"{a.from_json}: {m['date']}, {m['nproc']} CPUs, {m['cpu']}, tree {m['commit']}; "
              f"{m['command']}")
        for ld in m.get("load", []):
            print(f"  run {ld['run']}: {ld['seconds']} s, this benchmark {ld.get('own_cpus', '?')} "
                  f"CPUs, other processes {ld.get('other_cpus', '?')}, load average "
                  f"{ld['loadavg_start'][0]:.2f} -> {ld['loadavg_end'][0]:.2f}, client retries "
                  f"{ld.get('client_retries', '?')}")
        print_tables(runs, a)
        if a.plot:
            plot(runs, a, a.plot)
        return 0
    if a.quick:
        a.runs, a.seconds, a.lat_sizes, a.bw_sizes = 1, 1, [64, 4096], [4096, 1048576]

    build = Path(a.build).resolve()
    tbv = build / "src" / "tools" / "tbv"
    if not os.access(tbv, os.X_OK):
        print(f"perftest_vs_tcp: {tbv} not found: build first (see --help)", file=sys.stderr)
        return 2
    missing = [p for p in LAT_PROGS + BW_PROGS + ["qperf"] if shutil.which(p) is None]
    if missing:
        print(f"perftest_vs_tcp: not installed: {' '.join(missing)} (scripts/deps provider)",
              file=sys.stderr)
        return 2

    meta = machine(build)
    meta.update({
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([sys.argv[0], *sys.argv[1:]]),
        "runs": a.runs, "seconds": a.seconds, "lat_iters": a.lat_iters,
    })
    if meta["buildtype"] != "release":
        print(f"perftest_vs_tcp: warning: {build} is a '{meta['buildtype']}' build, not release",
              file=sys.stderr)
    print(f"machine: {meta['nproc']} CPUs, {meta['cpu']}, Linux {meta['kernel']}; tree "
          f"{meta['commit']} ({meta['buildtype']} build {build}); perftest "
          f"{meta['packages']['perftest']}, qperf {meta['packages']['qperf']}")

    r = Runner(str(tbv), a.verbose)

    def on_signal(signum, _frame):
        r.close()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    runs: list[list[dict]] = []
    loads = []
    try:
        for i in range(a.runs):
            la0 = os.getloadavg()
            t0 = time.monotonic()
            busy0, own0 = busy_cpu_seconds(), own_cpu_seconds()
            retries0 = r.retries
            print(f"run {i + 1}/{a.runs} (load average {la0[0]:.2f}) ...", flush=True)

            def log(row):
                if a.verbose:
                    print(f"  {row}", flush=True)

            runs.append(measure_round(r, a, log))
            la1 = os.getloadavg()
            wall = time.monotonic() - t0
            own = own_cpu_seconds() - own0
            other = max(0.0, busy_cpu_seconds() - busy0 - own)
            loads.append({"run": i + 1, "loadavg_start": la0, "loadavg_end": la1,
                          "seconds": round(wall, 1), "own_cpus": round(own / wall, 2),
                          "other_cpus": round(other / wall, 2),
                          "client_retries": r.retries - retries0})
            print(f"  done in {wall:.0f} s: this benchmark used {own / wall:.2f} CPUs, other "
                  f"processes {other / wall:.2f} of {os.cpu_count()} (load average "
                  f"{la1[0]:.2f})", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        r.close()
        return 130
    finally:
        r.close()

    print_tables(runs, a)
    meta["load"] = loads
    failed = sum(1 for rnd in runs for row in rnd if "error" in row)
    if a.json:
        medians = []
        for kind, tests, sizes, key in (
                ("lat", LAT_PROGS + ["qperf tcp_lat"], a.lat_sizes, "median_us"),
                ("bw", BW_PROGS + ["qperf tcp_bw"], a.bw_sizes, "gbps")):
            for t in tests:
                for s in sizes:
                    medians.append({"kind": kind, "test": t, "bytes": s,
                                    key: median_of(runs, kind, t, s, key)})
        Path(a.json).write_text(json.dumps({"machine": meta, "median": medians, "runs": runs},
                                           indent=1) + "\n")
        print(f"\njson: {a.json}")
    if a.plot:
        plot(runs, a, a.plot)
    if failed:
        print(f"\n{failed} measurement(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
