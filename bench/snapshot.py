#!/usr/bin/env python3
"""Snapshot save and restore, tern against QEMU, same guest, same run.

Driven by bench/snapshot.sh (see there for usage). The guest is the
self-checking `dirty` PVH guest with 1 GiB of RAM: it fills all RAM above
16 MiB with a pattern, dirties a 64 MiB window pass after pass, and at the
end checks every page and prints "dirty: OK" (exit through the test-exit
port). For each VMM and each round:

  save     boot the guest; once it has printed pass K, stop it (tern:
           "pause"; QEMU: QMP "stop"), then time the save of the stopped
           guest: tern's snapshot-save (written to a temporary name, fsync,
           rename: durable), QEMU's `migrate "exec:cat > FILE"` until
           query-migrate says completed (not fsynced: QEMU has no such step;
           the figure with a `sync` after it is given too).
  restore  time from launching the restoring process to the guest running:
           tern `restore FILE` (lazy: RAM mapped from the file; eager:
           snapshot.eager=on) until its control socket answers "running";
           QEMU `-incoming "exec:cat FILE" -S` until the incoming migration
           is done, then QMP "cont", until query-status says running. Also
           the time from the launch to the restored guest's "dirty: OK".

Every command is logged (--show-commands) so that RESULTS.md can quote it.
All times are wall-clock from this script, so both VMMs are measured the
same way; process start-up is included for both.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

PAGE = 4096


def now():
    return time.monotonic()


class Line:
    """A JSON-lines socket client (tern's control socket and QMP alike)."""

    def __init__(self, path, timeout=60.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""

    def send(self, obj):
        self.s.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("connection closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        self.s.close()


def connect_retry(path, deadline, proc=None):
    while True:
        try:
            return Line(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("process exited with %d before its socket answered" % proc.returncode)
            if now() > deadline:
                raise
            time.sleep(0.0002)


class Tern:
    def __init__(self, sock):
        self.c = Line(sock)
        self.n = 0

    def cmd(self, name, args=None):
        self.n += 1
        self.c.send({"id": self.n, "cmd": name, "args": args or {}})
        while True:
            m = self.c.recv()
            if "event" in m:
                continue
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError("tern %s: %s" % (name, m["error"]))
                return m["ok"]


class QMP:
    def __init__(self, sock, proc=None, deadline=None):
        self.c = connect_retry(sock, deadline or now() + 30, proc)
        self.c.recv()  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, args=None):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.c.send(msg)
        while True:
            m = self.c.recv()
            if "event" in m:
                continue
            if "error" in m:
                raise RuntimeError("qmp %s: %s" % (name, m["error"]))
            return m.get("return")


def log_cmd(args, what):
    if args.show_commands:
        print("  $ " + " ".join(what), file=sys.stderr)


def wait_file_line(path, pred, deadline, proc):
    while now() < deadline:
        try:
            with open(path, "rb") as f:
                data = f.read().decode("latin-1")
            for line in data.splitlines():
                if pred(line):
                    return line
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the VMM exited (%d) while waiting on %s" % (proc.returncode, path))
        time.sleep(0.005)
    raise RuntimeError("timed out waiting on %s" % path)


def pass_at_least(k):
    def pred(line):
        return line.startswith("dirty: pass ") and line[12:].strip().isdigit() and int(line[12:]) >= k
    return pred


def kill(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def sizes(path):
    st = os.stat(path)
    return st.st_size, st.st_blocks * 512


def drop_page_cache():
    """Only what this run wrote is worth dropping; the whole cache is the
    only handle there is. Needs root; skipped silently otherwise."""
    try:
        subprocess.run(["sync"], check=False)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- tern

def tern_guest_args(a):
    return [a.tern, "-o", "kernel=" + a.guest, "-o", "memory.size=%dM" % a.mem_mib,
            "-o", "cmdline=passes=%d window=64M progress=1" % a.passes, "-o", "test_exit.enable=on",
            "-o", "console.input=off"]


def tern_save(a, work, rnd):
    con, sock, snap = (os.path.join(work, "tern-%d.%s" % (rnd, x)) for x in ("console", "sock", "snap"))
    cmd = tern_guest_args(a) + ["-o", "console.path=" + con, "-o", "control.path=" + sock]
    log_cmd(a, cmd)
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_file_line(con, pass_at_least(a.snap_pass), now() + 300, p)
        connect_retry(sock, now() + 30, p).close()
        t = Tern(sock)
        t.cmd("pause")
        t0 = now()
        r = t.cmd("snapshot-save", {"path": snap})
        t1 = now()
    finally:
        kill(p)
    apparent, allocated = sizes(snap)
    return {"save_s": t1 - t0, "apparent": apparent, "allocated": allocated, "file": snap,
            "paused_ms": r["paused_ms"], "data_bytes": r["data_bytes"]}


def tern_restore(a, work, rnd, snap, eager):
    tag = "tern-%d-%s" % (rnd, "eager" if eager else "lazy")
    con, sock = os.path.join(work, tag + ".console"), os.path.join(work, tag + ".sock")
    cmd = [a.tern, "restore", snap, "-o", "console.path=" + con, "-o", "control.path=" + sock,
           "-o", "snapshot.eager=" + ("on" if eager else "off")]
    log_cmd(a, cmd)
    t0 = now()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = connect_retry(sock, t0 + 60, p)
        # the socket exists before the VM runs; "status" is answered once
        # the event loop runs, which vm_start starts with the vCPUs
        n = 0
        while True:
            n += 1
            c.send({"id": n, "cmd": "status"})
            m = c.recv()
            while "event" in m:
                m = c.recv()
            if m.get("ok", {}).get("state") == "running":
                break
        t_run = now()
        c.close()
        st = p.wait(timeout=600)
        t_end = now()
    finally:
        kill(p)
    ok = open(con, "rb").read().decode("latin-1")
    if st != 0 or "dirty: OK" not in ok or "dirty: start" in ok:
        raise RuntimeError("%s: status %d, console tail %r" % (tag, st, ok[-200:]))
    return {"run_s": t_run - t0, "ok_s": t_end - t0}


# ---------------------------------------------------------------- QEMU

def qemu_base(a, con, qmp):
    return [a.qemu, "-M", a.qemu_machine, "-enable-kvm", "-cpu", "host", "-m", "%dM" % a.mem_mib,
            "-nodefaults", "-display", "none", "-chardev", "file,id=con,path=" + con,
            "-serial", "chardev:con", "-device", "isa-debug-exit,iobase=0x501,iosize=1",
            "-qmp", "unix:%s,server=on,wait=off" % qmp]


def qemu_save(a, work, rnd):
    con, qmp, snap = (os.path.join(work, "qemu-%d.%s" % (rnd, x)) for x in ("console", "qmp", "mig"))
    cmd = qemu_base(a, con, qmp) + ["-kernel", a.guest, "-append",
                                    "passes=%d window=64M progress=1" % a.passes]
    log_cmd(a, cmd)
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        q = QMP(qmp, p)
        wait_file_line(con, pass_at_least(a.snap_pass), now() + 300, p)
        q.cmd("stop")
        # the harder anchor: no bandwidth cap (the default is 128 MiB/s)
        q.cmd("migrate-set-parameters", {"max-bandwidth": 1 << 40})
        t0 = now()
        q.cmd("migrate", {"uri": "exec:cat > " + snap})
        while True:
            st = q.cmd("query-migrate").get("status")
            if st == "completed":
                break
            if st in ("failed", "cancelled"):
                raise RuntimeError("qemu migrate: " + st)
            time.sleep(0.001)
        t1 = now()
        subprocess.run(["sync", snap], check=False)
        t2 = now()
    finally:
        kill(p)
    apparent, allocated = sizes(snap)
    return {"save_s": t1 - t0, "save_sync_s": t2 - t0, "apparent": apparent, "allocated": allocated,
            "file": snap}


def qemu_restore(a, work, rnd, snap):
    con, qmp = (os.path.join(work, "qemu-%d-in.%s" % (rnd, x)) for x in ("console", "qmp"))
    cmd = qemu_base(a, con, qmp) + ["-incoming", "exec:cat " + snap, "-S"]
    log_cmd(a, cmd)
    t0 = now()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        q = QMP(qmp, p, t0 + 60)
        while True:
            st = q.cmd("query-migrate").get("status")
            if st == "completed":
                break
            if st in ("failed", "cancelled"):
                raise RuntimeError("qemu incoming: " + st)
            time.sleep(0.0005)
        q.cmd("cont")
        while q.cmd("query-status").get("status") != "running":
            time.sleep(0.0005)
        t_run = now()
        st = p.wait(timeout=600)
        t_end = now()
    finally:
        kill(p)
    ok = open(con, "rb").read().decode("latin-1")
    # isa-debug-exit: the guest's 0 becomes (0 << 1) | 1
    if st != 1 or "dirty: OK" not in ok or "dirty: start" in ok:
        raise RuntimeError("qemu restore: status %d, console tail %r" % (st, ok[-200:]))
    return {"run_s": t_run - t0, "ok_s": t_end - t0}


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tern", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--qemu-machine", default="microvm")
    ap.add_argument("--mem-mib", type=int, default=1024)
    ap.add_argument("--passes", type=int, default=40)
    ap.add_argument("--snap-pass", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", required=True)
    ap.add_argument("--show-commands", action="store_true")
    ap.add_argument("--json", help="write the raw figures here")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)

    rows = {k: [] for k in ("tern_save", "qemu_save", "qemu_save_sync", "tern_lazy_run", "tern_eager_run",
                            "qemu_run", "tern_lazy_ok", "tern_eager_ok", "qemu_ok")}
    files = {}
    for rnd in range(a.rounds):
        # alternate which VMM goes first, so load drifts hit both alike
        order = ("tern", "qemu") if rnd % 2 == 0 else ("qemu", "tern")
        for vmm in order:
            if vmm == "tern":
                s = tern_save(a, a.work, rnd)
                rows["tern_save"].append(s["save_s"])
                files["tern"] = s
                lz = tern_restore(a, a.work, rnd, s["file"], False)
                eg = tern_restore(a, a.work, rnd, s["file"], True)
                rows["tern_lazy_run"].append(lz["run_s"])
                rows["tern_lazy_ok"].append(lz["ok_s"])
                rows["tern_eager_run"].append(eg["run_s"])
                rows["tern_eager_ok"].append(eg["ok_s"])
                os.unlink(s["file"])
            else:
                s = qemu_save(a, a.work, rnd)
                rows["qemu_save"].append(s["save_s"])
                rows["qemu_save_sync"].append(s["save_sync_s"])
                files["qemu"] = s
                r = qemu_restore(a, a.work, rnd, s["file"])
                rows["qemu_run"].append(r["run_s"])
                rows["qemu_ok"].append(r["ok_s"])
                os.unlink(s["file"])
        print("round %d: " % rnd + ", ".join("%s %.1f ms" % (k, v[-1] * 1e3) for k, v in rows.items() if v),
              file=sys.stderr)

    med = {k: statistics.median(v) for k, v in rows.items()}
    mn = {k: min(v) for k, v in rows.items()}
    out = {"rounds": a.rounds, "median_s": med, "min_s": mn, "all_s": rows,
           "tern_file": {k: files["tern"][k] for k in ("apparent", "allocated", "data_bytes", "paused_ms")},
           "qemu_file": {k: files["qemu"][k] for k in ("apparent", "allocated")},
           "loadavg": open("/proc/loadavg").read().split()[:3]}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)

    def ms(k):
        return "%.1f ms (min %.1f)" % (med[k] * 1e3, mn[k] * 1e3)

    print("snapshot benchmark: %d MiB dirty guest, %d rounds, median (min); QEMU -M %s; load %s"
          % (a.mem_mib, a.rounds, a.qemu_machine, " ".join(out["loadavg"])))
    print("  save of a stopped guest:  tern %s (durable: fsync)  qemu %s (+sync %s)"
          % (ms("tern_save"), ms("qemu_save"), ms("qemu_save_sync")))
    print("                            qemu/tern = %.2f (%.2f with sync)"
          % (med["qemu_save"] / med["tern_save"], med["qemu_save_sync"] / med["tern_save"]))
    tf, qf = out["tern_file"], out["qemu_file"]
    print("  file size:                tern %.1f MiB apparent, %.1f MiB allocated; qemu %.1f MiB"
          % (tf["apparent"] / 2**20, tf["allocated"] / 2**20, qf["apparent"] / 2**20))
    print("  restore to running:       tern lazy %s, eager %s; qemu %s"
          % (ms("tern_lazy_run"), ms("tern_eager_run"), ms("qemu_run")))
    print("                            qemu/tern lazy = %.0f, qemu/tern eager = %.1f"
          % (med["qemu_run"] / med["tern_lazy_run"], med["qemu_run"] / med["tern_eager_run"]))
    print("  launch to \"dirty: OK\":    tern lazy %s, eager %s; qemu %s"
          % (ms("tern_lazy_ok"), ms("tern_eager_ok"), ms("qemu_ok")))
    print("                            qemu/tern lazy = %.2f, qemu/tern eager = %.2f"
          % (med["qemu_ok"] / med["tern_lazy_ok"], med["qemu_ok"] / med["tern_eager_ok"]))


if __name__ == "__main__":
    main()
