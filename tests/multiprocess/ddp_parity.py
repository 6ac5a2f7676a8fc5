"""The Python half of the parity test: PyTorch's own DDP (gloo) on the job of ddp_parity.cpp.

Run under a launcher that sets the torchrun environment (accelerate-cpp launch or torchrun).
Data order: each epoch e the indices are torch.randperm(n, generator seeded 7 + e), cut into
batches of the per-process batch size, batch i going to rank i mod N (Accelerate's sharding).
Rank 0 writes the final parameters, one value a line, to argv[1].
Arguments as ddp_parity.cpp's: OUT [batch [engine (ignored) [hook [join [find_unused [model
[accumulation]]]]]]]: hook no/fp16/bf16 registers default_hooks.fp16/bf16_compress_hook (as
Accelerate's comm_hook); join 1 trains each epoch under `with ddp.join():`, rank r taking at most
max(1, n - 2r) of its n batches; model bn is ddp_parity.cpp's BnNet (BatchNorm2d and BatchNorm1d):
rank 0 writes its buffers after the parameters, and each rank r writes the evaluation output of
the first 16 samples, through DDP, to OUT.r; accumulation k: the loss divided by k, gradients
synchronised (outside no_sync) and the optimizer stepped every k-th batch, as Accelerate's
accumulate.
"""
import contextlib
import faulthandler
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

SAMPLES = 96


class BnNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        self.bn2 = torch.nn.BatchNorm2d(2)
        self.fc1 = torch.nn.Linear(6, 16)
        self.bn1 = torch.nn.BatchNorm1d(16)
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x):
        h = torch.relu(self.bn2(self.conv(x.view(-1, 1, 1, 3)))).flatten(1)
        return self.fc2(torch.tanh(self.bn1(self.fc1(h))))


def write_values(f, tensor):
    for v in tensor.detach().flatten().double().tolist():
        f.write(f"{v:.9g}\n")


def main():
    # A hang (a bug on either side) prints where each rank is and ends the job.
    faulthandler.dump_traceback_later(90, exit=True)
    out = sys.argv[1]
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    a = torch.arange(SAMPLES, dtype=torch.float32)
    x = torch.stack([torch.sin(a), torch.cos(a), torch.sin(2 * a)], 1)
    y = (0.5 * x[:, 0] - 0.3 * x[:, 1] + 0.1).unsqueeze(1)

    model_name = sys.argv[7] if len(sys.argv) > 7 else "mlp"
    accumulation = int(sys.argv[8]) if len(sys.argv) > 8 else 1
    if model_name == "bn":
        model = BnNet()
    else:
        model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    with torch.no_grad():
        for k, p in enumerate(model.parameters()):
            p.copy_((torch.sin(torch.arange(p.numel(), dtype=torch.float32) + 10 * k) * 0.3).reshape(p.shape))
    hook = sys.argv[4] if len(sys.argv) > 4 else "no"
    join = len(sys.argv) > 5 and sys.argv[5] == "1"
    find_unused = len(sys.argv) > 6 and sys.argv[6] == "1"
    ddp = DDP(model, find_unused_parameters=find_unused)
    if hook == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif hook == "bf16":
        ddp.register_comm_hook(None, default_hooks.bf16_compress_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)

    for epoch in range(3):
        order = torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(7 + epoch))
        batches = [order[i:i + batch] for i in range(0, SAMPLES, batch)]
        mine = list(range(rank, len(batches), world))
        if join:
            mine = mine[:max(1, len(mine) - 2 * rank)]
        with ddp.join(enable=join):
            for count, i in enumerate(mine):
                idx = batches[i]
                sync = (count + 1) % accumulation == 0 or count + 1 == len(mine)
                with contextlib.nullcontext() if sync else ddp.no_sync():
                    loss = torch.nn.functional.mse_loss(ddp(x[idx]), y[idx])
                    (loss / accumulation if accumulation > 1 else loss).backward()
                if sync:
                    opt.step()
                    opt.zero_grad()

    if rank == 0:
        with open(out, "w") as f:
            for p in model.parameters():
                write_values(f, p)
            if model_name == "bn":
                for b in model.buffers():
                    write_values(f, b)
    if model_name == "bn":
        ddp.eval()
        with torch.no_grad():
            output = ddp(x[:16])
        with open(f"{out}.{rank}", "w") as f:
            write_values(f, output)
    dist.barrier()
    # PyTorch 1.13's DDP can hang in its destructor after Join or with a comm hook (seen with 3
    # processes); the results are written and every rank is past the barrier: skip teardown.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
