#!/usr/bin/env python3
"""Start-up time: from exec to GET /ready answering 200, polled every 1 ms.

    startup.py RUNS OUT_JSON -- BINARY ARGS... --listen 127.0.0.1:{port}

`{port}` is replaced by a fresh free loopback port for each start. Each start is stopped with
SIGTERM and must exit 0 within 15 s. Prints one line and writes
{"runs": N, "median_ms": .., "min_ms": .., "max_ms": .., "samples_ms": [...], "exit_codes": [...]}.
Exits 1 if any start fails (no 200 within 60 s, early exit, or a non-zero exit on SIGTERM).
"""
import json
import signal
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main():
    runs, out = int(sys.argv[1]), sys.argv[2]
    cmd = sys.argv[sys.argv.index("--") + 1:]
    samples, codes, errors = [], [], []
    for _ in range(runs):
        port = free_port()
        argv = [a.replace("{port}", str(port)) for a in cmd]
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ok = False
        while time.perf_counter() - t0 < 60:
            if ready(port):
                ok = True
                break
            if p.poll() is not None:
                break
            time.sleep(0.001)
        t1 = time.perf_counter()
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            _, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            errors.append("did not stop within 15 s of SIGTERM")
        codes.append(p.returncode)
        if not ok:
            errors.append(f"no 200 from /ready (exit {p.returncode}): {err.decode(errors='replace')[-400:]}")
        elif p.returncode != 0:
            errors.append(f"exit code {p.returncode} after SIGTERM: {err.decode(errors='replace')[-400:]}")
        if ok:
            samples.append((t1 - t0) * 1000.0)
    res = {
        "runs": runs,
        "median_ms": round(statistics.median(samples), 2) if samples else None,
        "min_ms": round(min(samples), 2) if samples else None,
        "max_ms": round(max(samples), 2) if samples else None,
        "samples_ms": [round(s, 2) for s in samples],
        "exit_codes": codes,
        "errors": errors,
    }
    with open(out, "w") as fh:
        json.dump(res, fh)
    print(f"start-up to /ready: median {res['median_ms']} ms, min {res['min_ms']}, max {res['max_ms']} "
          f"over {len(samples)}/{runs} starts; exit codes {sorted(set(codes))}")
    for e in errors:
        print("  error:", e, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
