#!/usr/bin/env python3
"""PeerBench: request/reply and pub/sub, ours against NNG 1.5.2 and raw C, in one run.

Every server runs in its own process pinned to CPU 1 (taskset), every client
in its own process pinned to CPU 0, as EchoBench does: on this 2-vCPU VM an
unpinned pair flips between a same-CPU regime and a cross-CPU one and the
numbers swing by 4x. Rounds rotate the order of the subjects; the report
takes medians over rounds.

Request/reply (one request in flight per connection; 1 and 16 connections;
64 B and 4 KiB bodies). Servers stay up for the whole run:
  floor        floor-server (C, blocking, thread per connection, u64 length + body)
  ours         PeerServers echo-server: a Socket<Rep0Handler> whose fd an application
               thread polls to echo each request, loop backend as shipped
               (automatic: io_uring here)
  ours-epoll   the same server on the epoll loop backend
  nng          nng-rep: NNG rep0 with 32 async contexts
Clients: rr-client (C) speaks the SP wire format to ours and NNG and the raw
framing to the floor, so one client drives every server; in addition NNG's
own req0 client (nng-req) against nng-rep, and our REQ sockets
(Socket<Req0Handler>) polled by fd (PeerServers req-client) against our
server: each stack end to end.

Pub/sub (1 publisher, 1/8/64 subscribers, 64 B and 4 KiB messages): the
publisher publishes as fast as its send call accepts for SECONDS, waits,
reports, closes. Publishers: PeerServers publisher (a Socket<Pub0Handler>)
and nng-pub (pub0); subscribers: sp-sub (C, SP SUB on one epoll thread) for
both, plus our SUB sockets (Socket<Sub0Handler>, PeerServers sub-client) for
ours.

Writes raw "key=value" lines (one per measurement) to --out.
"""
import argparse
import os
import subprocess
import sys
import time


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_idle_fraction(seconds=0.5):
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    i0, t0 = snap()
    time.sleep(seconds)
    i1, t1 = snap()
    return (i1 - i0) / max(1, t1 - t0)


def wait_idle(limit=0.9, timeout=30):
    deadline = time.time() + timeout
    idle = cpu_idle_fraction()
    while idle < limit and time.time() < deadline:
        idle = cpu_idle_fraction()
    return idle


class Server:
    """A server process pinned to CPU 1 that prints 'PORT n' and exits when its stdin closes."""

    def __init__(self, name, argv, env=None):
        self.name = name
        self.proc = subprocess.Popen(["taskset", "-c", "1"] + argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{name}: expected PORT, got {line!r}")
        self.port = int(line.split()[1])

    def stop(self):
        try:
            self.proc.stdin.close()
        except Exception:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def client(argv, timeout=60, cpu=0):
    r = subprocess.run(["taskset", "-c", str(cpu)] + argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return r.stdout


def kv(text):
    out = {}
    for word in text.split():
        if "=" in word:
            k, v = word.split("=", 1)
            out[k] = v
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--c-bin", required=True, help="directory with rr-client, floor-server, nng-*, sp-sub")
    ap.add_argument("--swift-bin", required=True, help="directory with PeerServers")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--only", choices=["rr", "pubsub"])
    args = ap.parse_args()
    quick = args.quick
    rr_rounds = args.rounds or (1 if quick else 3)
    ps_rounds = args.rounds or (1 if quick else 3)
    seconds = 0.5 if quick else 1.0
    warmup = 0.2 if quick else 0.3
    pub_seconds = 0.5 if quick else 1.0
    drain = 1.0
    C = lambda n: os.path.join(args.c_bin, n)
    S = os.path.join(args.swift_bin, "PeerServers")
    out = open(args.out, "w")

    def emit(line):
        out.write(line + "\n")
        out.flush()
        print(line, flush=True)

    uname = os.uname()
    emit(f"# PeerBench {'quick' if quick else 'full'} run, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    emit(f"# machine: {uname.sysname} {uname.release} {uname.machine}, {os.cpu_count()} CPUs, "
         f"load average {os.getloadavg()[0]:.2f}; servers/publishers pinned to CPU 1, clients to CPU 0")
    emit(f"# rr: {rr_rounds} rounds x {seconds} s (warm-up {warmup} s); pubsub: {ps_rounds} rounds x "
         f"{pub_seconds} s of publishing + {drain} s drain")

    if args.only in (None, "rr"):
        idle = wait_idle()
        emit(f"# rr start: CPU idle {idle:.0%}")
        servers = {
            "floor": Server("floor", [C("floor-server")]),
            "ours": Server("ours", [S, "echo-server"]),
            "ours-epoll": Server("ours-epoll", [S, "echo-server", "--backend", "epoll"]),
            "nng": Server("nng", [C("nng-rep"), "32"]),
        }
        # (subject name, server, client argv builder)
        def rr(wire):
            return lambda srv, conns, size: [C("rr-client"), wire, "127.0.0.1", str(srv.port), str(conns),
                                             str(size), str(seconds), str(warmup), str(srv.proc.pid)]
        subjects = [
            ("floor/rr-client-raw", "floor", rr("raw")),
            ("ours/rr-client-sp", "ours", rr("sp")),
            ("ours-epoll/rr-client-sp", "ours-epoll", rr("sp")),
            ("nng/rr-client-sp", "nng", rr("sp")),
            ("nng/nng-req", "nng", lambda srv, conns, size: [C("nng-req"), "127.0.0.1", str(srv.port), str(conns),
                                                           str(size), str(seconds), str(warmup), str(srv.proc.pid)]),
            ("ours/req-socket", "ours", lambda srv, conns, size: [S, "req-client", "--port", str(srv.port),
                                                                  "--connections", str(conns), "--size", str(size),
                                                                  "--seconds", str(seconds), "--warmup", str(warmup),
                                                                  "--server-pid", str(srv.proc.pid)]),
        ]
        try:
            for rnd in range(1, rr_rounds + 1):
                # "apart": client on CPU 0, server on CPU 1 (as EchoBench); "same": both on
                # CPU 1, where a wake-up is cheap and software costs show.
                for conns, placement in ((1, "apart"), (1, "same"), (16, "apart")):
                    for size in (64, 4096):
                        k = (rnd - 1) % len(subjects)
                        for name, server, build in subjects[k:] + subjects[:k]:
                            srv = servers[server]
                            res = client(build(srv, conns, size), cpu=1 if placement == "same" else 0)
                            emit(f"rr round={rnd} connections={conns} size={size} placement={placement} "
                                 f"subject={name} {res.strip()}")
        finally:
            for s in servers.values():
                s.stop()

    if args.only in (None, "pubsub"):
        idle = wait_idle()
        emit(f"# pubsub start: CPU idle {idle:.0%}")
        subjects = [
            ("ours/sp-sub", "ours", "sp-sub"),
            ("nng/sp-sub", "nng", "sp-sub"),
            ("ours/sub-socket", "ours", "sub-socket"),
        ]
        for rnd in range(1, ps_rounds + 1):
            for subs in (1, 8, 64):
                for size in (64, 4096):
                    k = (rnd - 1) % len(subjects)
                    for name, pub, sub in subjects[k:] + subjects[:k]:
                        if pub == "ours":
                            argv = [S, "publisher", "--size", str(size), "--seconds", str(pub_seconds),
                                    "--subscribers", str(subs), "--drain", str(drain)]
                        else:
                            argv = [C("nng-pub"), str(size), str(pub_seconds), str(subs), str(drain)]
                        p = Server(name, argv)
                        if sub == "sp-sub":
                            sargv = [C("sp-sub"), "127.0.0.1", str(p.port), str(subs), "60"]
                        else:
                            sargv = [S, "sub-client", "--port", str(p.port), "--subscribers", str(subs),
                                     "--timeout", "60"]
                        try:
                            sres = client(sargv, timeout=90)
                        finally:
                            pout = p.proc.stdout.read()
                            p.stop()
                        pk = kv(pout.splitlines()[0] if pout else "")
                        summary = [l for l in sres.splitlines() if l.startswith("subscribers=")][0]
                        per_sub = [kv(l) for l in sres.splitlines() if l.startswith("sub ")]
                        gaps = sum(int(x.get("gaps", 0)) for x in per_sub)
                        line = (f"pubsub round={rnd} subscribers_wanted={subs} size={size} subject={name} "
                                f"{summary} gaps_total={gaps} " + " ".join(f"{k}={v}" for k, v in pk.items()))
                        # Our publisher's per-subscriber counts (sorted), to match against what arrived.
                        ours_counts = [kv(l) for l in pout.splitlines() if l.startswith("pubsub ")]
                        if ours_counts:
                            line += " per_sub_delivered=" + ",".join(x["delivered"] for x in ours_counts)
                            line += " per_sub_dropped=" + ",".join(x["dropped"] for x in ours_counts)
                        line += " per_sub_received=" + ",".join(sorted((x["received"] for x in per_sub), key=int))
                        emit(line)
    out.close()


if __name__ == "__main__":
    main()
