"""bench/api: API latency and throughput against a bare aiohttp handler.

    .venv/bin/python -m bench.api [--clients 200] [--requests 4000] [--rate 500]

Starts the platform (`somvad run`, its own data folder and its own Asterisk
instance "bench", stopped again at the end)
and a bare aiohttp server returning the same JSON as ``GET /conferences``,
both as separate processes on loopback. Each is driven by the same client
loop: a closed loop of N concurrent clients, then an open loop at a fixed
rate. Figures that matter are ratios against the bare handler of the same
run. Prints a table and writes bench/results/api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "api.json"
ADMIN_PASSWORD = "bench-admin-password"
DEADLINE = 120.0
BENCH_ASTERISK = {
    "SOMVAD_ASTERISK_INSTANCE": "bench",
    "SOMVAD_ASTERISK_HTTP_PORT": "8091",
    "SOMVAD_SIP_PORT": "5090",
    "SOMVAD_RTP_START": "22000",
    "SOMVAD_RTP_END": "22999",
    "SOMVAD_AMI_PORT": "5041",
}  # no phase runs longer than this, whatever the arguments

BARE_SERVER = """
import sys
from aiohttp import web
body = open(sys.argv[2], "rb").read()
async def handler(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None,
            access_log=None)
"""


@dataclass
class Figures:
    target: str
    mode: str
    requests: int
    errors: int
    seconds: float
    throughput: float
    p50_ms: float
    p99_ms: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_http(url: str, within: float = 120) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {within} s")


Request = Callable[[aiohttp.ClientSession], Awaitable[int]]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _figures(
    target: str, mode: str, latencies: list[float], errors: int, seconds: float
) -> Figures:
    return Figures(
        target=target,
        mode=mode,
        requests=len(latencies),
        errors=errors,
        seconds=round(seconds, 3),
        throughput=round(len(latencies) / seconds, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 2),
        p99_ms=round(_percentile(latencies, 0.99) * 1000, 2),
    )


async def closed_loop(
    target: str, request: Request, clients: int, total: int, expected: int
) -> Figures:
    latencies: list[float] = []
    errors = 0
    remaining = total
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        stop_at = started + DEADLINE

        async def client() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.perf_counter() < stop_at:
                remaining -= 1
                sent = time.perf_counter()
                status = await request(session)
                latencies.append(time.perf_counter() - sent)
                errors += status != expected

        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - started
    return _figures(target, f"{clients} clients", latencies, errors, seconds)


async def open_loop(
    target: str, request: Request, rate: int, seconds: float, expected: int
) -> Figures:
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000)
    ) as session:

        async def one() -> None:
            nonlocal errors
            sent = time.perf_counter()
            status = await request(session)
            latencies.append(time.perf_counter() - sent)
            errors += status != expected

        started = time.perf_counter()
        tasks = []
        for index in range(int(rate * seconds)):
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)
        elapsed = time.perf_counter() - started
    return _figures(target, f"{rate} req/s", latencies, errors, elapsed)


async def _prepare(api: str) -> tuple[str, str, str, bytes]:
    """Log in, onboard a tenant with traders and rooms; returns what to hit."""
    async with aiohttp.ClientSession() as session:

        async def post(path: str, token: str | None, body: dict) -> dict:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with session.post(api + path, json=body, headers=headers) as r:
                assert r.status < 300, (path, r.status, await r.text())
                return dict(await r.json())

        admin = (
            await post(
                "/auth/login", None, {"username": "admin", "password": ADMIN_PASSWORD}
            )
        )["access_token"]
        await post(
            "/tenants",
            admin,
            {
                "name": "bench",
                "admin": {"username": "bench-admin", "password": "bench-password"},
            },
        )
        token = (
            await post(
                "/auth/login",
                None,
                {"username": "bench-admin", "password": "bench-password"},
            )
        )["access_token"]
        trader = await post(
            "/users",
            token,
            {
                "username": "bench-trader",
                "password": "bench-password",
                "role": "trader",
            },
        )
        room = {}
        for index in range(20):
            room = await post("/conferences", token, {"name": f"room {index}"})
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(api + "/conferences", headers=headers) as response:
            listing = await response.read()
    return token, room["id"], trader["id"], listing


def _request(method: str, url: str, token: str, body: dict | None) -> Request:
    headers = {"Authorization": f"Bearer {token}"}

    async def send(session: aiohttp.ClientSession) -> int:
        async with session.request(method, url, json=body, headers=headers) as r:
            await r.read()
            return r.status

    return send


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop_bench_asterisk(env: dict[str, str]) -> None:
    somvad = str(ROOT / ".venv/bin/somvad")
    command = [somvad, "asterisk", "down", "--instance", "bench"]
    subprocess.run(command, env=env, check=False, capture_output=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


async def run(clients: int, total: int, rate: int, rate_seconds: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="somvad-bench-"))
    api_port, bare_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "SOMVAD_DATA_DIR": str(work),
        "SOMVAD_PORT": str(api_port),
        "SOMVAD_DEMO": "0",
        "SOMVAD_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SOMVAD_LOG_LEVEL": "WARNING",
        # Its own Asterisk: one Asterisk belongs to one control plane, and
        # the instance of `make run` (or of the tests) must not be touched.
        **BENCH_ASTERISK,
    }
    somvad = _start([str(ROOT / ".venv/bin/somvad"), "run"], env, work / "api.log")
    bare = None
    try:
        api = f"http://127.0.0.1:{api_port}"
        await _wait_http(api + "/health")
        token, room, trader, listing = await _prepare(api)
        (work / "body.json").write_bytes(listing)
        bare = _start(
            [
                sys.executable,
                "-c",
                BARE_SERVER,
                str(bare_port),
                str(work / "body.json"),
            ],
            env,
            work / "bare.log",
        )
        bare_url = f"http://127.0.0.1:{bare_port}"
        await _wait_http(bare_url + "/")
        plans = [
            ("bare handler", _request("GET", bare_url + "/", token, None), 200),
            (
                "GET /conferences",
                _request("GET", api + "/conferences", token, None),
                200,
            ),
            # The trader has no registered phone, so every join is answered
            # 409 no_registered_device after the full validation path
            # (token, tenant, room, membership, mixer, registrations).
            (
                "POST /conferences/{id}/join",
                _request(
                    "POST", f"{api}/conferences/{room}/join", token, {"user_id": trader}
                ),
                409,
            ),
        ]
        figures: list[Figures] = []
        for target, request, expected in plans:
            await closed_loop(target, request, 20, 200, expected)  # warm-up
            figures.append(await closed_loop(target, request, clients, total, expected))
            figures.append(
                await open_loop(target, request, rate, rate_seconds, expected)
            )
    finally:
        _stop(somvad)
        if bare is not None:
            _stop(bare)
        _stop_bench_asterisk(env)
        shutil.rmtree(work, ignore_errors=True)
    return _report(figures, clients)


def _report(figures: list[Figures], clients: int) -> dict:
    bare = {f.mode: f for f in figures if f.target == "bare handler"}
    rows = []
    for f in figures:
        ratio = f.p99_ms / bare[f.mode].p99_ms if bare[f.mode].p99_ms else 0.0
        rows.append({**asdict(f), "p99_vs_bare": round(ratio, 2)})
    return {
        "benchmark": "api",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python -m bench.api", *sys.argv[1:]]),
        "machine": {
            "cores": os.cpu_count(),
            "model": _cpu_model(),
            "python": platform.python_version(),
        },
        "clients": clients,
        "rows": rows,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _print(report: dict) -> None:
    machine = report["machine"]
    print(
        f"bench/api {report['date']} on {machine['cores']} cores, "
        f"{machine['model']}; command: {report['command']}"
    )
    header = (
        "target",
        "load",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99 / bare",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in report["rows"]:
        print(
            f"| {row['target']} | {row['mode']} | {row['requests']} | "
            f"{row['errors']} | {row['throughput']} | {row['p50_ms']} | "
            f"{row['p99_ms']} | {row['p99_vs_bare']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    args = parser.parse_args()
    report = asyncio.run(run(args.clients, args.requests, args.rate, args.rate_seconds))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    _print(report)
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
