#!/usr/bin/env python3
"""Instructions per request of OpenSIPS's SIP worker, by callgrind, for bench scenarios.

CPU figures on a shared VM move with the neighbours (steal); instruction counts do not.
For each scenario this runs its bench configuration with one UDP worker under
`valgrind --tool=callgrind`, twice (N1 and N2 REGISTERs after the same warm-up), and
reports (Ir(N2) - Ir(N1)) / (R2 - R1), R the replies the worker built (counted in the same
callgrind output): the worker's user-space instructions per request, start-up and warm-up
cancelled out. Kernel time (syscalls) is not in it.

    OPENSIPS=... SSO_AUTH_MODULE=... python3 bench/profile.py a b ct ca

Uses bench/run.py's configurations, fast SSO and sipp scenarios. Standard library only.
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402

N1, N2 = int(os.environ.get("PROFILE_N1") or 300), int(os.environ.get("PROFILE_N2") or 1300)
RATE = int(os.environ.get("PROFILE_RATE") or 100)


REPLY_FN = "build_res_buf_from_sip_req"


def replies_built(text):
    """Calls of OpenSIPS's reply builder in one callgrind output: the replies the worker
    sent (one per REGISTER here), whatever sipp managed to send or gave up on."""
    names, total, current = {}, 0, None
    for line in text.splitlines():
        if line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                current = m.group(1) if line.startswith("cfn=") else None
        elif line.startswith("calls=") and current is not None:
            if REPLY_FN in names.get(current, ""):
                total += int(line.split("=", 1)[1].split()[0])
    return total


def worker_ir(workdir, keep_as=None):
    """Total Ir of the busiest process's callgrind output (the one SIP worker).

    With keep_as, that output is kept under this name (PROFILE_KEEP=1), so that
    callgrind_annotate of the N1 and N2 runs can be compared function by function."""
    best, best_file = 0, None
    for f in workdir.glob("callgrind.out.*"):
        text = f.read_text(errors="replace")
        m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)",
                                                                      text, re.M)
        if m and int(m.group(1)) > best:
            best, best_file, replies = int(m.group(1)), f, replies_built(text)
    if keep_as and best_file:
        best_file.rename(workdir / keep_as)
    return best, (replies if best_file else 0)


def one_run(key, cfg_text, port, calls, keys, workdir):
    for f in workdir.glob("callgrind.out.*"):
        f.unlink()
    cfg = workdir / ("opensips-%s.cfg" % key)
    cfg.write_text(cfg_text)
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=%s/callgrind.out.%%p"
           % workdir, bench.find_opensips(), "-F", "-f", str(cfg), "-m", "256", "-M", "16",
           "-w", str(workdir)]
    # PROFILE_ALLOCATOR=HP_MALLOC (or Q_MALLOC): OpenSIPS's -a, its memory allocator
    if os.environ.get("PROFILE_ALLOCATOR"):
        cmd += ["-a", os.environ["PROFILE_ALLOCATOR"]]
    log = open(workdir / ("opensips-%s.log" % key), "ab")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not bench.options_ping(port, timeout=1.0):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("OpenSIPS under valgrind did not start (%s)" % key)
            time.sleep(0.5)
        scen = bench.SCENARIOS[key]
        for tag, n in (("warm", 50), ("load", calls)):
            stat = workdir / ("%s-%s-%d.csv" % (key, tag, n))
            sipp = bench.sipp_cmd(bench.SCEN_DIR / scen["xml"], port, RATE, n, keys, stat,
                                  n // RATE + 60)
            subprocess.run(sipp, cwd=workdir, capture_output=True, timeout=n // RATE + 120)
    finally:
        bench.kill_proc(p, grace=30)
        log.close()
    keep = "kept-%s-%d.callgrind" % (key, calls) if os.environ.get("PROFILE_KEEP") else None
    return worker_ir(workdir, keep)


def main(keys):
    binary = bench.find_opensips()
    module = bench.find_module()
    if not binary or not module:
        sys.exit("set OPENSIPS and SSO_AUTH_MODULE")
    workdir = Path(tempfile.mkdtemp(prefix="sso-profile-"))
    mpath = workdir / "modules"
    mpath.mkdir()
    for m in bench.find_modules_dir(binary).glob("*.so"):
        (mpath / m.name).symlink_to(m)
    module_copy = workdir / "sso_auth.so"
    module_copy.write_bytes(module.read_bytes())
    fixed = "bench-fixed-profile"
    sso = bench.FastSso(workdir, {fixed: bench.USER}).start()
    results = {}
    try:
        for key in keys:
            scen = bench.SCENARIOS[key]
            port = bench.free_udp_port()
            cfg = bench.CFG_HEAD.format(name=key, workers=1, port=port, mpath=mpath,
                                        open_files=bench.OPEN_FILES)
            if bench.uses_sso(key):
                cfg += bench.CFG_SSO.format(module=module_copy, sso=sso.url,
                                            client_id=bench.CLIENT_ID,
                                            client_secret=bench.CLIENT_SECRET,
                                            secret="p" * 48)
                cfg += scen.get("params", "")
            cfg += bench.CFG_ROUTE.format(auth=bench.AUTH_BLOCK[scen["auth"]])
            if scen["auth"] == "sso_async":
                cfg += bench.CFG_RESUME
            # The SSO's delay for this scenario (c5/ca5: 5 ms, so that async requests suspend).
            sso.control(delay_ms=scen.get("delay_ms", 0))
            irs = []
            for n in (N1, N2):
                keys_ = {"token": fixed} if key == "b" else (
                    {"run": "%s%d" % (key, n)} if scen["xml"] == "c_token_per_call.xml"
                    else {})
                irs.append(one_run(key, cfg, port, n, keys_, workdir))
            (ir1, rep1), (ir2, rep2) = irs
            # Per reply the worker built, not per REGISTER sipp meant to send: a worker that
            # falls behind under valgrind answers fewer, and dividing by N would hide that.
            per = (ir2 - ir1) / max(rep2 - rep1, 1)
            results[key] = per
            print("%-4s %10.0f instructions per request (Ir %d after %d replies, %d after %d;"
                  " %d and %d REGISTERs sent)" % (key, per, ir1, rep1, ir2, rep2, N1, N2),
                  flush=True)
    finally:
        sso.stop()
    if os.environ.get("PROFILE_KEEP"):
        print("callgrind outputs kept in %s" % workdir, flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:] or ["a", "b"])
