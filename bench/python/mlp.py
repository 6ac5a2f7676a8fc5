"""The MLP job of bench_mlp.cpp in Python with PyTorch (Debian's python3-torch).

One process:   OMP_NUM_THREADS=2 /usr/bin/python3 bench/python/mlp.py
Two processes: accelerate-cpp launch --num_processes 2 /usr/bin/python3 bench/python/mlp.py
               (or torchrun): DistributedDataParallel over gloo, DistributedSampler,
               model.no_sync() on accumulation steps, as Accelerate does.

64-256-256-1 regression, 8,192 samples (same formula as bench/common.h), batch 64 per process,
AdamW lr 1e-3, gradient accumulation 2, linear warmup schedule, 5 epochs; DataLoader over a
TensorDataset (per-sample indexing + default collate, as the C++ loaders), num_workers 0.
Threads per process: OMP_NUM_THREADS (torch.set_num_threads). Rank 0 prints `RESULT {json}`;
--stamps prints `STAMP name time.time()` at start (before `import torch`), after the import,
after init_process_group, after set-up, and after the first optimizer step.
"""
import time

_T0 = time.time()
import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def stamp(name, t=None):
    print(f"STAMP {name} {time.time() if t is None else t:.6f}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--samples", type=int, default=8192)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--stamps", action="store_true")
    p.add_argument("--exit-after-first-step", action="store_true")
    a = p.parse_args()
    if a.stamps:
        stamp("main", _T0)

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    if a.stamps:
        stamp("imported")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ddp = world > 1
    if ddp:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if ddp else 0
    if a.stamps:
        stamp("ready")

    n, f = a.samples, 64
    i = torch.arange(n * f, dtype=torch.float32).reshape(n, f)
    x = torch.sin(i * 0.7311 + 0.1)
    w = torch.cos(torch.arange(f, dtype=torch.float32) * 1.3).unsqueeze(1)
    y = torch.tanh(x.matmul(w) * 0.25) + 0.1 * torch.sin(i[:, :1] * 0.37)
    ds = TensorDataset(x, y)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                              torch.nn.ReLU(), torch.nn.Linear(256, 1))
    model = torch.nn.parallel.DistributedDataParallel(net) if ddp else net
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr)
    sampler = DistributedSampler(ds, shuffle=True) if ddp else None
    loader = DataLoader(ds, batch_size=a.batch, shuffle=not ddp, sampler=sampler, num_workers=0)
    batches_all = (n + a.batch - 1) // a.batch
    total = a.epochs * batches_all // a.accum
    warmup = total // 20

    def factor(step):
        step *= world  # as Accelerate: the schedule advances num_processes steps per step
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    if a.stamps:
        stamp("prepared")

    if ddp:
        dist.barrier()
    t0 = time.perf_counter()
    stamped = False
    for epoch in range(a.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        per_rank = len(loader)
        for k, (xb, yb) in enumerate(loader):
            sync = (k + 1) % a.accum == 0 or k + 1 == per_rank
            ctx = model.no_sync() if ddp and not sync else contextlib.nullcontext()
            with ctx:
                loss = F.mse_loss(model(xb), yb)
                (loss / a.accum).backward()
            if sync:
                opt.step()
                sched.step()
                opt.zero_grad()
                if a.stamps and not stamped:
                    stamp("first_step")
                    stamped = True
                    if a.exit_after_first_step:
                        if ddp:
                            dist.barrier()
                            dist.destroy_process_group()
                        return 0
    if ddp:
        dist.barrier()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        final = F.mse_loss(net(x), y).item()
    if rank == 0:
        print("RESULT " + json.dumps({
            "bench": "mlp", "mode": "python-ddp" if ddp else "python", "world": world,
            "threads": torch.get_num_threads(), "seconds": seconds,
            "samples_per_s": a.samples * a.epochs / seconds, "loss": final}), flush=True)
    if ddp:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
