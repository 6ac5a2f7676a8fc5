"""Runs the accelerate-cpp benchmarks side by side and prints a table (called by bench/run.sh).

    /usr/bin/python3 bench/driver.py --build BUILD_DIR [overhead] [python] [startup] [ckpt]
                                      [allreduce] [blas] [--reps N] [--quick]

Every comparison is a ratio of two runs made side by side: the variants of a comparison are
run one after the other in an order that alternates every repetition, and the table gives the
medians of each variant and the median of the per-repetition ratios.

Noise: before each section the 1-minute load average must be below --max-load (default 0.7;
we wait up to --wait seconds, then go on and say so). During every run the CPU time used by
processes other than the benchmark is measured from /proc/stat and our children's rusage; the
table reports it as "foreign CPU" (0 = the machine was ours alone, 1 = one core busy with
something else).
"""
import argparse
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NPROC = os.cpu_count() or 1
BLAS_DIRS = {
    "reference": "/usr/lib/x86_64-linux-gnu/blas",
    "openblas-pthread": "/usr/lib/x86_64-linux-gnu/openblas-pthread",
    "openblas-openmp": "/usr/lib/x86_64-linux-gnu/openblas-openmp",
}

STAMP_RE = re.compile(r"STAMP (\w+) ([0-9.]+)")
RESULT_RE = re.compile(r"RESULT (\{.*\})")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_busy_seconds():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Runner:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.bin = os.path.join(self.build, "bench")
        self.launcher = os.path.join(self.build, "tools", "accelerate-cpp", "accelerate-cpp")
        self.noise = []  # foreign CPU fraction of every run
        self.load_checks = []  # (section, load before, waited seconds)
        self.rows = []  # table rows
        self.raw = {}  # everything, for the json file

    # ---- quiet machine ----
    def wait_quiet(self, section):
        """Before the first section: the 1-minute load average must drop below --max-load.
        Later the load average still holds our own previous runs, so the machine counts as
        quiet when the other processes keep less than --max-busy cores busy over 3 s."""
        start = time.time()
        first = not self.load_checks
        while True:
            if first:
                level = loadavg()
                quiet = level < self.args.max_load
                what = f"load average {level:.2f}"
            else:
                b0, t0 = cpu_busy_seconds(), time.time()
                time.sleep(3)
                level = (cpu_busy_seconds() - b0) / (time.time() - t0)
                quiet = level < self.args.max_busy
                what = f"{level:.2f} cores busy"
            if quiet or time.time() - start > self.args.wait:
                break
            log(f"[{section}] {what}: waiting for a quiet machine")
            time.sleep(10)
        waited = time.time() - start
        self.load_checks.append((section, what, waited))
        if not quiet:
            log(f"[{section}] machine still busy ({what}); measuring anyway")
        return level

    # ---- one run ----
    def run(self, cmd, env=None, timeout=600):
        full_env = dict(os.environ)
        full_env.pop("OMP_NUM_THREADS", None)
        full_env.update(env or {})
        busy0, ours0, t0 = cpu_busy_seconds(), children_cpu(), time.time()
        p = subprocess.run(cmd, env=full_env, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
        wall = time.time() - t0
        busy, ours = cpu_busy_seconds() - busy0, children_cpu() - ours0
        # /proc/stat counts in 10 ms ticks: too coarse for runs shorter than 0.2 s
        foreign = max(0.0, (busy - ours) / wall) if wall >= 0.2 else 0.0
        if wall >= 0.2:
            self.noise.append(foreign)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {p.returncode}:\n{p.stdout[-3000:]}")
        results = [json.loads(m.group(1)) for m in RESULT_RE.finditer(p.stdout)]
        stamps = {}
        for m in STAMP_RE.finditer(p.stdout):
            # keep the latest stamp of each name over the ranks
            stamps[m.group(1)] = max(stamps.get(m.group(1), 0.0), float(m.group(2)))
        return {"results": results, "stamps": stamps, "wall": wall, "foreign": foreign,
                "t_start": t0, "out": p.stdout}

    def launch(self, n, prog_args, threads=None):
        cmd = [self.launcher, "launch", "--num_processes", str(n),
               "--main_process_port", str(free_port())]
        if threads:
            cmd += ["--num_cpu_threads_per_process", str(threads)]
        return cmd + prog_args

    # ---- side-by-side comparison ----
    def compare(self, name, variants, metric, reps, higher_is_better=True):
        """variants: list of (label, fn -> run dict); metric(run) -> float. Returns medians and
        the per-repetition ratios of every variant to the first."""
        values = {label: [] for label, _ in variants}
        noise = []
        for _, fn in variants:  # one discarded warm-up round (page cache, clock ramp-up)
            fn()
        for r in range(reps):
            order = variants if r % 2 == 0 else list(reversed(variants))
            if len(variants) > 2:
                k = r % len(variants)
                order = variants[k:] + variants[:k]
                if r % 2:
                    order = list(reversed(order))
            for label, fn in order:
                run = fn()
                values[label].append(metric(run))
                noise.append(run["foreign"])
            log(f"[{name}] rep {r + 1}/{reps}: " +
                ", ".join(f"{l}={values[l][-1]:.4g}" for l, _ in variants))
        base = variants[0][0]
        out = {"values": values, "noise_median": statistics.median(noise),
               "noise_max": max(noise), "median": {}, "ratio": {}}
        for label, _ in variants:
            out["median"][label] = statistics.median(values[label])
            if label != base:
                ratios = [v / b if higher_is_better else b / v
                          for v, b in zip(values[label], values[base])]
                out["ratio"][label] = statistics.median(ratios)
        self.raw[name] = out
        return out

    def row(self, section, what, a, b, ratio, target, note=""):
        met = ""
        if target is not None:
            met = "met" if ratio >= target else "MISSED"
        self.rows.append((section, what, a, b, ratio, target, met, note))

    # ---------------------------------------------------------------------------------------
    def overhead(self):
        """The MLP job with the system BLAS and with --alt-blas (where sgemm no longer hides
        the framework's own costs), then the CNN."""
        blases = [self.base_blas()]
        alt = self.args.alt_blas
        if alt and os.path.exists(os.path.join(BLAS_DIRS[alt], "libblas.so.3")):
            blases.append((alt, {"LD_LIBRARY_PATH": BLAS_DIRS[alt]}))
        for blas, benv in blases:
            self.mlp_overhead(blas, benv)
        self.wait_quiet("overhead-cnn")
        cnn = os.path.join(self.bin, "bench_cnn")
        base, benv = self.base_blas()
        env1 = dict(benv, OMP_NUM_THREADS=str(NPROC))
        steps = ["--steps", "100" if self.args.quick else "300"]
        sps = lambda run: run["results"][0]["samples_per_s"]  # noqa: E731
        c = self.compare("cnn-1p", [
            ("plain", lambda: self.run([cnn, "--mode", "plain"] + steps, env1)),
            ("accel", lambda: self.run([cnn, "--mode", "accel"] + steps, env1)),
        ], sps, self.args.reps)
        self.row("overhead", f"Fashion-MNIST CNN, 1 process x {NPROC} threads, {steps[1]} "
                 "steps: accel / plain", c["median"]["plain"], c["median"]["accel"],
                 c["ratio"]["accel"], 0.98, f"samples/s; {base}")

    def threads_1p(self, blas):
        """Threads of 1-process runs: nproc (the Accelerator's default) with the reference
        BLAS; 1 with OpenBLAS, where 2 OpenMP threads make the ~0.3 s job's speed bimodal from
        run to run (about +-30%) on this VM, drowning a 2% effect."""
        return str(NPROC) if blas in ("reference", "system libblas") else "1"

    def base_blas(self):
        """The reference BLAS, chosen explicitly (LD_LIBRARY_PATH), whatever the system's
        libblas.so.3 alternative is; the system's where it is not installed."""
        if os.path.exists(os.path.join(BLAS_DIRS["reference"], "libblas.so.3")):
            return "reference", {"LD_LIBRARY_PATH": BLAS_DIRS["reference"]}
        return "system libblas", {}

    def mlp_overhead(self, blas, benv):
        reps = self.args.reps
        mlp = os.path.join(self.bin, "bench_mlp")
        sps = lambda run: run["results"][0]["samples_per_s"]  # noqa: E731
        threads1 = self.threads_1p(blas)
        env1 = dict(benv, OMP_NUM_THREADS=threads1)
        epochs = ["--epochs", "2" if self.args.quick else "5"]
        self.wait_quiet(f"overhead ({blas})")
        c = self.compare(f"mlp-1p {blas}", [
            ("plain", lambda: self.run([mlp, "--mode", "plain"] + epochs, env1)),
            ("accel", lambda: self.run([mlp, "--mode", "accel"] + epochs, env1)),
            ("plain-index", lambda: self.run([mlp, "--mode", "plain-index"] + epochs, env1)),
            ("accel-batched", lambda: self.run([mlp, "--mode", "accel-batched"] + epochs, env1)),
        ], sps, reps)
        self.row("overhead", f"MLP, 1 process x {threads1} thread(s): accel / plain LibTorch "
                 "(torch::data loader)", c["median"]["plain"], c["median"]["accel"],
                 c["ratio"]["accel"], 0.98, f"samples/s; {blas}")
        self.row("overhead", "  (info) plain-index / plain: loop slicing one tensor, no per-"
                 "sample get/stack", c["median"]["plain"], c["median"]["plain-index"],
                 c["ratio"]["plain-index"], None, f"samples/s; {blas}")
        self.row("overhead", "  (info) accel with a batched data set (get_items) / plain",
                 c["median"]["plain"], c["median"]["accel-batched"], c["ratio"]["accel-batched"],
                 None, f"samples/s; {blas}")

        if blas != "reference" and blas != "system libblas":
            # Why 1 thread here: OpenMP's spinning wait with 2 threads on this VM (info rows).
            envs = {"1 thread": dict(benv, OMP_NUM_THREADS="1"),
                    "2 threads": dict(benv, OMP_NUM_THREADS="2"),
                    "2 threads passive": dict(benv, OMP_NUM_THREADS="2",
                                              OMP_WAIT_POLICY="PASSIVE")}
            c = self.compare(f"mlp-1p-omp {blas}", [
                (label, lambda e=e: self.run([mlp, "--mode", "accel"] + epochs, e))
                for label, e in envs.items()], sps, reps)
            for label in ("2 threads", "2 threads passive"):
                self.row("overhead", f"  (info) accel, 1 process: {label} / 1 thread "
                         "(OMP_WAIT_POLICY=PASSIVE: OpenMP threads sleep instead of spinning)",
                         c["median"]["1 thread"], c["median"][label], c["ratio"][label], None,
                         f"samples/s; {blas}")

        self.wait_quiet(f"overhead-2p ({blas})")
        reps2 = 2 * reps  # 2-process runs spread more (gloo latency stalls): more repetitions
        c = self.compare(f"mlp-2p {blas}", [
            ("c10d-reducer", lambda: self.run(self.launch(2, [mlp, "--mode", "c10d-reducer"] +
                                                          epochs, 1), benv)),
            ("accel", lambda: self.run(self.launch(2, [mlp, "--mode", "accel"] + epochs, 1),
                                       benv)),
            ("c10d-allreduce", lambda: self.run(self.launch(2, [mlp, "--mode", "c10d-allreduce"]
                                                            + epochs, 1), benv)),
        ], sps, reps2)
        self.row("overhead", "MLP, 2 processes x 1 thread: accel / hand-written c10d "
                 "(TCPStore+Gloo+Reducer)", c["median"]["c10d-reducer"], c["median"]["accel"],
                 c["ratio"]["accel"], 0.95, f"samples/s; {blas}")
        acc_vs_ar = [a / b for a, b in zip(c["values"]["accel"], c["values"]["c10d-allreduce"])]
        self.row("overhead", "  accel / hand-written c10d (flat allreduce after backward)",
                 c["median"]["c10d-allreduce"], c["median"]["accel"],
                 statistics.median(acc_vs_ar), 0.95, f"samples/s; {blas}")

    # ---------------------------------------------------------------------------------------
    def python(self):
        """accelerate-cpp against PyTorch in Python on the MLP job, with the reference BLAS and
        with --alt-blas."""
        reps = self.args.reps
        mlp = os.path.join(self.bin, "bench_mlp")
        py = [self.args.python, os.path.join(ROOT, "bench", "python", "mlp.py")]
        epochs = ["--epochs", "2" if self.args.quick else "5"]
        sps = lambda run: run["results"][0]["samples_per_s"]  # noqa: E731
        blases = [self.base_blas()]
        alt = self.args.alt_blas
        if alt and os.path.exists(os.path.join(BLAS_DIRS[alt], "libblas.so.3")):
            blases.append((alt, {"LD_LIBRARY_PATH": BLAS_DIRS[alt]}))
        for blas, benv in blases:
            threads1 = self.threads_1p(blas)
            env1 = dict(benv, OMP_NUM_THREADS=threads1)
            self.wait_quiet(f"python ({blas})")
            c = self.compare(f"python-1p {blas}", [
                ("python", lambda: self.run(py + epochs, env1)),
                ("accel", lambda: self.run([mlp, "--mode", "accel"] + epochs, env1)),
            ], sps, reps)
            self.row("python", f"MLP, 1 process x {threads1} thread(s): accelerate-cpp / PyTorch",
                     c["median"]["python"], c["median"]["accel"], c["ratio"]["accel"], None,
                     f"samples/s; {blas}")
            self.wait_quiet(f"python-2p ({blas})")
            c = self.compare(f"python-2p {blas}", [
                ("python-ddp", lambda: self.run(self.launch(2, py + epochs, 1), benv)),
                ("accel", lambda: self.run(self.launch(2, [mlp, "--mode", "accel"] + epochs, 1),
                                           benv)),
                ("accel-batched", lambda: self.run(self.launch(
                    2, [mlp, "--mode", "accel-batched"] + epochs, 1), benv)),
            ], sps, 2 * reps)
            self.row("python", "MLP, 2 processes x 1 thread: accelerate-cpp / PyTorch DDP "
                     "(gloo)", c["median"]["python-ddp"], c["median"]["accel"],
                     c["ratio"]["accel"], 1.5, f"samples/s; {blas}")
            self.row("python", "  (info) the same, accelerate-cpp with a batched data set "
                     "(get_items) / PyTorch DDP", c["median"]["python-ddp"],
                     c["median"]["accel-batched"], c["ratio"]["accel-batched"], None,
                     f"samples/s; {blas}")
            if blas in ("reference", "system libblas"):
                continue
            # The same job with no gradient synchronisation (accumulation over the whole
            # epoch: one all-reduce and optimizer step per epoch): what remains is the
            # per-operator cost of each language, without the shared gloo all-reduce.
            nosync = ["--accum", "1000000"]
            c = self.compare(f"python-2p-nosync {blas}", [
                ("python-ddp", lambda: self.run(self.launch(2, py + epochs + nosync, 1), benv)),
                ("accel", lambda: self.run(self.launch(2, [mlp, "--mode", "accel"] + epochs +
                                                       nosync, 1), benv)),
            ], sps, 2 * reps)
            self.row("python", "  (info) the same, forward/backward only (no all-reduce, no "
                     "optimizer step: --accum 1000000)", c["median"]["python-ddp"],
                     c["median"]["accel"], c["ratio"]["accel"], None, f"samples/s; {blas}")

    # ---------------------------------------------------------------------------------------
    def startup(self):
        reps = self.args.reps
        mlp = os.path.join(self.bin, "bench_mlp")
        script = os.path.join(ROOT, "bench", "python", "mlp.py")
        torchrun = shutil.which("torchrun", path="/usr/bin") or "/usr/bin/torchrun"

        def since_start(name):
            def f(run):
                return run["stamps"][name] - run["t_start"]
            return f

        blas, benv = self.base_blas()

        def ours():
            return self.run(self.launch(2, [mlp, "--mode", "accel", "--stamps",
                                            "--exit-after-first-step"], 1), benv)

        def theirs():
            return self.run([torchrun, "--nproc_per_node", "2", "--redirects", "1", "--tee", "1",
                             "--master_port", str(free_port()), script, "--stamps",
                             "--exit-after-first-step"], dict(benv, OMP_NUM_THREADS="1"))

        self.wait_quiet("startup")
        runs = {"ours": [], "torchrun": []}

        def keep(label, fn):
            def g():
                r = fn()
                runs[label].append(r)
                return r
            return g

        c = self.compare("startup", [("torchrun", keep("torchrun", theirs)),
                                     ("ours", keep("ours", ours))],
                         since_start("first_step"), reps, higher_is_better=False)
        self.row("startup", "launch -> first optimizer step, 2 processes: torchrun+Python / "
                 "accelerate-cpp (s; ratio = speed-up)", c["median"]["torchrun"],
                 c["median"]["ours"], c["ratio"]["ours"], None, "seconds")
        ours_s = c["median"]["ours"]
        self.row("startup", "accelerate-cpp launch -> first optimizer step (s), target <= 0.3 s",
                 0.3, ours_s, 0.3 / ours_s, 1.0, "seconds (a = target)")

        def phases(label, names):
            out = {}
            for n in names:
                vals = [r["stamps"][n] - r["t_start"] for r in runs[label] if n in r["stamps"]]
                if vals:
                    out[n] = statistics.median(vals)
            return out

        breakdown = {"ours": phases("ours", ["main", "ready", "built", "prepared", "first_batch",
                                               "first_step"]),
                     "torchrun": phases("torchrun",
                                        ["main", "imported", "ready", "prepared", "first_step"])}

        # Baselines: what start-up costs before any of our code runs.
        empty = os.path.join(self.bin, "bench_empty")
        empty_torch = os.path.join(self.bin, "bench_empty_torch")
        main_at = since_start("main")
        variants = [
            ("launch+empty", lambda: self.run(self.launch(2, [empty], 1), benv)),
            ("launch+empty_torch", lambda: self.run(self.launch(2, [empty_torch], 1), benv)),
            ("empty_torch", lambda: self.run([empty_torch], dict(benv, OMP_NUM_THREADS="1"))),
            ("empty", lambda: self.run([empty], {"OMP_NUM_THREADS": "1"})),
        ]
        alt = self.args.alt_blas
        if alt and os.path.exists(os.path.join(BLAS_DIRS[alt], "libblas.so.3")):
            variants.append((f"empty_torch ({alt})", lambda: self.run(
                [empty_torch], {"OMP_NUM_THREADS": "1", "LD_LIBRARY_PATH": BLAS_DIRS[alt]})))
        c2 = self.compare("startup-baselines", variants, main_at, reps, higher_is_better=False)
        breakdown["baselines_main_after_start"] = c2["median"]
        ld = self.run([empty_torch], {"LD_DEBUG": "statistics", "OMP_NUM_THREADS": "1"})
        m = re.search(r"total startup time in dynamic loader:\s*([0-9,]+) cycles", ld["out"])
        reloc = re.search(r"number of relocations:\s*(\d+)", ld["out"])
        breakdown["ld_debug"] = {"loader_cycles": m.group(1) if m else None,
                                 "relocations": reloc.group(1) if reloc else None}
        self.raw["startup-breakdown"] = breakdown
        b = breakdown
        self.row("startup", "  (info) launcher + empty program (no LibTorch): main() after (s)",
                 None, c2["median"]["launch+empty"], None, None, "seconds")
        self.row("startup", "  (info) launcher + empty program linked to LibTorch: main() after "
                 "(s)", None, c2["median"]["launch+empty_torch"], None, None, "seconds")
        self.row("startup", "  (info) empty LibTorch program alone: main() after (s)",
                 c2["median"]["empty"], c2["median"]["empty_torch"], None, None,
                 f"a = no LibTorch; {blas}")
        if alt and f"empty_torch ({alt})" in c2["median"]:
            self.row("startup", f"  (info) empty LibTorch program alone with {alt}: main() "
                     "after (s)", c2["median"]["empty_torch"], c2["median"][f"empty_torch ({alt})"],
                     statistics.median([x / y for x, y in zip(
                         c2["values"][f"empty_torch ({alt})"], c2["values"]["empty_torch"])]),
                     None, f"a = {blas}; ratio = time with {alt} / time with {blas}")
        ld_libs = len([line for line in subprocess.run(
            ["ldd", empty_torch], capture_output=True, text=True).stdout.splitlines() if "=>" in line])
        self.row("startup", f"  (info) LibTorch's load: {ld_libs} shared libraries, "
                 f"{breakdown['ld_debug']['relocations']} symbol relocations, dynamic loader "
                 f"{breakdown['ld_debug']['loader_cycles']} TSC cycles (LD_DEBUG=statistics)",
                 None, None, None, None, "")
        for label, names in (("ours", ["main", "ready", "built", "prepared", "first_batch",
                                        "first_step"]),
                             ("torchrun", ["main", "imported", "ready", "prepared",
                                           "first_step"])):
            self.row("startup", f"  (info) {label}: " + ", ".join(
                f"{n} {b[label].get(n, float('nan')):.3f}" for n in names), None, None, None,
                None, "s after launch")

    # ---------------------------------------------------------------------------------------
    def ckpt(self):
        reps = max(3, self.args.reps)
        out_dir = os.path.join(self.args.tmp, "ckpt")
        cmd = [os.path.join(self.bin, "bench_ckpt"), "--dir", out_dir, "--reps", str(reps)]
        if self.args.quick:
            cmd += ["--tensors", "4"]
        self.wait_quiet("ckpt")
        run = self.run(cmd, {"OMP_NUM_THREADS": "1"})
        r = run["results"][0]
        self.raw["ckpt"] = r
        gb = r["bytes"] / 1e9
        for op, what in (("save", "save_model (page cache; fsync outside timing)"),
                         ("save_fsync", "save_model + fsync"),
                         ("load_warm", "load_checkpoint_in_model, file in page cache"),
                         ("load_cold", "load_checkpoint_in_model, page cache dropped")):
            self.row("ckpt", f"{what}, {gb:.2f} GB: GB/s plain I/O vs safetensors",
                     r[f"{op}_raw_GBps"], r[f"{op}_lib_GBps"], r[f"{op}_ratio"], 0.8,
                     f"GB/s; foreign CPU {run['foreign']:.2f}")
        # save_state / load_state with checksums (the default) against checksums(false).
        cmd = [os.path.join(self.bin, "bench_ckpt"), "--mode", "state", "--dir",
               out_dir + "_state", "--reps", str(reps)]
        if self.args.quick:
            cmd += ["--tensors", "4"]
        self.wait_quiet("ckpt-state")
        run = self.run(cmd, {"OMP_NUM_THREADS": "1"})
        r = run["results"][0]
        self.raw["ckpt_state"] = r
        size = f"model {r['model_bytes'] / 1e6:.0f} MB + Adam, folder {r['folder_bytes'] / 1e6:.0f} MB"
        for op, what in (("save", "save_state (files fsync'ed)"),
                         ("load_warm", "load_state, folder in page cache"),
                         ("load_cold", "load_state, page cache dropped")):
            self.row("ckpt", f"{what}, {size}: s without vs with checksums (ratio = time with / "
                     "without)", r[f"{op}_off_s"], r[f"{op}_on_s"], r[f"{op}_ratio"], None,
                     f"seconds; foreign CPU {run['foreign']:.2f}")

    # ---------------------------------------------------------------------------------------
    def allreduce(self):
        prog = os.path.join(self.bin, "bench_allreduce")
        self.wait_quiet("allreduce")
        reps = "10" if self.args.quick else "20"
        mlp = ["--sizes", "16384,256,65536,256,256,1"]
        cases = (
            ("4096 params x 4 KiB", ["--params", "4096", "--size", "1024"], True),
            ("4096 params x 4 KiB, gradient_as_bucket_view(false)",
             ["--params", "4096", "--size", "1024", "--copy"], True),
            ("4096 params x 4 KiB, DdpEngine::Reducer",
             ["--params", "4096", "--size", "1024", "--engine", "reducer"], False),
            ("4096 params x 4 KiB, DdpEngine::Reducer, gradient_as_bucket_view(false)",
             ["--params", "4096", "--size", "1024", "--engine", "reducer", "--copy"], False),
            ("4096 params x 4 KiB, hand-made c10d::Reducer (no accelerate)",
             ["--params", "4096", "--size", "1024", "--engine", "c10d", "--copy"], False),
            ("16 params x 1 MiB", ["--params", "16", "--size", "262144"], True),
            ("16 params x 1 MiB, gradient_as_bucket_view(false)",
             ["--params", "16", "--size", "262144", "--copy"], True),
            ("16 params x 1 MiB, DdpEngine::Reducer",
             ["--params", "16", "--size", "262144", "--engine", "reducer"], False),
            ("the MLP's 6 parameters", mlp + ["--reps", "200"], True),
            ("the MLP's 6 parameters, DdpEngine::Reducer", mlp + ["--reps", "200", "--engine",
                                                                  "reducer"], False))
        for what, extra, target in cases:
            cmd = [prog, "--reps", reps] + extra
            run = self.run(self.launch(2, cmd, 1))
            r = run["results"][0]
            self.raw[f"allreduce-{what}"] = r
            self.row("allreduce", f"gradient sync, {what} = {r['bytes'] / 2**20:.2f} MiB, 2 "
                     "processes: flat all-reduce time / sync time (sync = synchronised backward "
                     "- the slower process's backward alone)", r["flat_s"],
                     r["sync_s"] - r["nosync_slowest_s"], r["ratio_vs_slowest"],
                     0.8 if target else None,
                     f"sync {r['sync_s'] * 1e3:.2f} ms, backward alone {r['nosync_s'] * 1e3:.2f} "
                     f"ms (slower process {r['nosync_slowest_s'] * 1e3:.2f} ms), flat "
                     f"{r['flat_s'] * 1e3:.2f} ms; against this process's own backward: "
                     f"{r['ratio']:.3f}")
        lat = os.path.join(self.bin, "bench_gloo_latency")
        for what, extra in (("idle", []), ("after 1 ms of compute", ["--compute-us", "1000"]),
                            ("after 1 ms of sleep", ["--compute-us", "1000", "--sleep"]),
                            ("after 1 ms of compute, polling", ["--compute-us", "1000",
                                                                "--poll"])):
            run = self.run(self.launch(2, [lat] + extra, 1))
            r = run["results"][0]
            self.row("allreduce", f"  (info) one Gloo all-reduce of 328 KB, {what}: median vs "
                     "90th percentile (us)", r["median_us"], r["p90_us"],
                     r["p90_us"] / max(1.0, r["median_us"]), None,
                     f"10th percentile {r['p10_us']:.0f} us; rank {r['rank']}")

    # ---------------------------------------------------------------------------------------
    def blas(self):
        prog = os.path.join(self.bin, "bench_blas")
        variants = [v for v, d in BLAS_DIRS.items() if os.path.exists(os.path.join(d, "libblas.so.3"))]
        self.wait_quiet("blas")
        mhz = 0.0
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    mhz = float(line.split(":")[1])
                    break
        clock = self.run([prog, "--clock"])["results"][0]["ghz"]
        self.raw["clock"] = {"nominal_mhz": mhz, "measured_ghz": clock}
        peak_core = clock * 32  # AVX2 FMA float32: 2 FMA units x 8 floats x 2 flops per cycle
        self.row("blas", f"core clock: nominal (cpu MHz) vs measured busy (dependent adds), GHz; "
                 f"AVX2 peak {mhz / 1000 * 32:.0f} / {peak_core:.0f} GFLOP/s per core",
                 mhz / 1000, clock, None, None, "GHz")
        reps = 3
        for threads in (1, 2) if NPROC >= 2 else (1,):
            for n in (256, 1024):
                def mk(v, n=n, threads=threads):
                    return lambda: self.run([prog, "--sizes", str(n), "--threads", str(threads),
                                             "--seconds", "0.2" if self.args.quick else "0.4"],
                                            {"LD_LIBRARY_PATH": BLAS_DIRS[v],
                                             "OMP_NUM_THREADS": str(threads)})
                c = self.compare(f"blas-{n}-{threads}t", [(v, mk(v)) for v in variants],
                                 lambda run: run["results"][0]["gflops"], reps)
                peak = peak_core * threads
                for v in variants[1:]:
                    self.row("blas", f"sgemm {n}x{n}, {threads} thread(s): GFLOP/s reference vs "
                             f"{v} (AVX2 peak {peak:.0f} at {clock:.2f} GHz)", c["median"]["reference"],
                             c["median"][v], c["ratio"][v], None,
                             f"{100 * c['median'][v] / peak:.0f}% of AVX2 peak; reference "
                             f"{100 * c['median']['reference'] / peak:.1f}%")
        # The MLP job with each BLAS.
        mlp = os.path.join(self.bin, "bench_mlp")
        epochs = ["--epochs", "2" if self.args.quick else "5"]
        sps = lambda run: run["results"][0]["samples_per_s"]  # noqa: E731
        for n in (1, 2):
            def mk(v, n=n):
                env = {"LD_LIBRARY_PATH": BLAS_DIRS[v]}
                if n == 1:
                    return lambda: self.run([mlp, "--mode", "accel"] + epochs,
                                            dict(env, OMP_NUM_THREADS=str(NPROC)))
                return lambda: self.run(self.launch(2, [mlp, "--mode", "accel"] + epochs, 1), env)
            c = self.compare(f"blas-mlp-{n}p", [(v, mk(v)) for v in variants], sps, reps)
            for v in variants[1:]:
                self.row("blas", f"MLP job (accel), {n} process(es) x "
                         f"{NPROC if n == 1 else 1} thread(s): samples/s reference vs {v}",
                         c["median"]["reference"], c["median"][v], c["ratio"][v], None,
                         "samples/s")

    # ---------------------------------------------------------------------------------------
    def table(self):
        lines = ["| section | comparison | A | B | B/A (median of paired ratios) | target | "
                 "| note |", "|---|---|---|---|---|---|---|---|"]

        def fmt(v):
            if v is None:
                return ""
            return f"{v:.4g}" if isinstance(v, float) else str(v)
        for s, what, a, b, ratio, target, met, note in self.rows:
            t = "" if target is None else f">= {target:g}"
            lines.append(f"| {s} | {what} | {fmt(a)} | {fmt(b)} | {fmt(ratio)} | {t} | {met} | "
                         f"{note} |")
        return "\n".join(lines)


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    blas = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    return f"{NPROC} cores ({model}), {platform.platform()}, system libblas.so.3 -> {blas}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("sections", nargs="*",
                   help="overhead python startup ckpt allreduce blas (default: all)")
    p.add_argument("--build", required=True)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="smaller jobs, for trying it out")
    p.add_argument("--max-load", type=float, default=float(os.environ.get("BENCH_MAX_LOAD", 0.7)))
    p.add_argument("--max-busy", type=float,
                   default=float(os.environ.get("BENCH_MAX_BUSY", 0.3)),
                   help="cores busy with other processes allowed before a later section")
    p.add_argument("--wait", type=float, default=float(os.environ.get("BENCH_WAIT", 300)))
    p.add_argument("--tmp", default=os.environ.get("BENCH_TMP", os.path.join(ROOT, "bench", "out")))
    p.add_argument("--python", default="/usr/bin/python3")
    p.add_argument("--alt-blas", default=os.environ.get("BENCH_ALT_BLAS", "openblas-openmp"),
                   help="also run the MLP comparisons under this BLAS, through LD_LIBRARY_PATH "
                        "(reference, openblas-pthread, openblas-openmp; empty: skip)")
    args = p.parse_args()
    all_sections = ["overhead", "python", "startup", "ckpt", "allreduce", "blas"]
    sections = args.sections or all_sections
    for s in sections:
        if s not in all_sections:
            p.error(f"unknown section {s}; choose from {' '.join(all_sections)}")
    os.makedirs(args.tmp, exist_ok=True)
    runner = Runner(args)
    t0 = time.time()
    for s in sections:
        log(f"== {s}")
        getattr(runner, s)()
    elapsed = time.time() - t0
    noise = runner.noise
    header = [
        f"machine: {machine()}",
        "command: " + os.environ.get("BENCH_COMMAND", "bench/driver.py " + " ".join(sys.argv[1:])),
        f"sections: {' '.join(sections)}; {args.reps} repetitions; {elapsed:.0f} s",
        "quiet check before each section: " + ", ".join(
            f"{s}: {l}" + (f" (waited {w:.0f} s)" if w > 5 else "")
            for s, l, w in runner.load_checks),
        f"foreign CPU during runs (cores busy with other work): median "
        f"{statistics.median(noise):.2f}, max {max(noise):.2f}" if noise else "",
    ]
    table = runner.table()
    text = "\n".join(header) + "\n\n" + table + "\n"
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(args.tmp, f"results-{stamp}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.tmp, f"results-{stamp}.json"), "w") as f:
        json.dump({"header": header, "rows": runner.rows, "raw": runner.raw}, f, indent=1,
                  default=str)
    log(f"written to {args.tmp}/results-{stamp}.md and .json")


if __name__ == "__main__":
    main()
