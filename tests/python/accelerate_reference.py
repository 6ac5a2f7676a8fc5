"""Reference values from Python Accelerate for the C++ ports of its test scripts.

tests/multiprocess/accelerate_test_script.cpp ports `training_check` of Accelerate's
accelerate/test_utils/scripts/test_script.py; the values it must reproduce come from here,
run under real Accelerate (CPU, gloo) with 1, 2 and 3 processes, and are kept in
accelerate_reference.json beside this file:

- `regression_dataset`: `RegressionDataset(length=L, seed=42)` of accelerate.test_utils for
  the lengths the training check uses (32 N), as float32 values;
- `training`: for N processes, the final `a`, `b` of `RegressionModel` after `training_check`'s
  three epochs with the seedable sampler: the single-process baseline (`baseline`), the
  Accelerator without and with `split_batches`, and under bf16 mixed precision;
- `training_generator`: the same with `use_seedable_sampler=False` (`training_check`'s other
  run: `DataLoader(shuffle=True, generator=generator)`, the generator synchronised from
  process 0 at every pass);
- `generator_resync`: for N processes, the batches each process gets in three passes of a
  prepared `DataLoader(range(20), batch_size=3, shuffle=True, generator=g)` (g seeded 7) when,
  after each pass, process i draws i + 1 numbers from g (`torch.rand(i + 1, generator=g)`):
  `[pass][process]` lists of batches.

Usage:
  python accelerate_reference.py generate OUT.json   # writes the fixture
  python accelerate_reference.py check FIXTURE.json  # reruns, compares; 77 without accelerate
  (worker mode, run by the two above under torch.distributed.run: worker OUT_PART.json)
"""

import json
import math
import os
import subprocess
import sys
import tempfile

SKIP = 77  # ctest's SKIP_RETURN_CODE
LENGTHS = (32, 64, 96)
PROCESSES = (1, 2, 3)
ATOL = RTOL = 1e-6  # Accelerate's tolerances in test_script.py


def worker(out_path):
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.test_utils import RegressionDataset, RegressionModel
    from accelerate.utils import DataLoaderConfiguration, gather_object, set_seed
    from accelerate.data_loader import SeedableRandomSampler
    from torch.utils.data import DataLoader

    state = Accelerator().state  # as test_script.py's main()
    n = state.num_processes
    batch_size = 8
    length = batch_size * 4 * n
    generator = torch.Generator()

    def training(seedable):
        def loader(train_set, size):
            if not seedable:  # generate_baseline_dataloader(use_seedable_sampler=False)
                return DataLoader(train_set, batch_size=size, shuffle=True, generator=generator)
            sampler = SeedableRandomSampler(generator=generator, data_source=train_set, num_samples=len(train_set))
            return DataLoader(train_set, batch_size=size, sampler=sampler)

        # mock_training: one process, batches of 8 N.
        set_seed(42)
        generator.manual_seed(42)
        train_set = RegressionDataset(length=length, seed=42)
        model = RegressionModel()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        baseline_dl = loader(train_set, batch_size * n)
        for _ in range(3):
            for batch in baseline_dl:
                model.zero_grad()
                loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
                loss.backward()
                optimizer.step()
        result = {"baseline": [model.a.item(), model.b.item()]}

        def accelerated(name, size, **kwargs):
            mixed = kwargs.pop("mixed_precision", None)
            AcceleratorState._reset_state()
            config = DataLoaderConfiguration(use_seedable_sampler=seedable, **kwargs)
            accelerator = Accelerator(dataloader_config=config, mixed_precision=mixed)
            model = RegressionModel()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            dl, model, optimizer = accelerator.prepare(loader(train_set, size), model, optimizer)
            set_seed(42)
            generator.manual_seed(42)
            for _ in range(3):
                for batch in dl:
                    model.zero_grad()
                    loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
                    accelerator.backward(loss)
                    optimizer.step()
            model = accelerator.unwrap_model(model).cpu()
            result[name] = [model.a.item(), model.b.item()]

        accelerated("no_split", batch_size)
        accelerated("split", batch_size * n, split_batches=True)
        accelerated("bf16", batch_size, mixed_precision="bf16")
        return result

    def resync():
        AcceleratorState._reset_state()
        accelerator = Accelerator()
        g = torch.Generator()
        g.manual_seed(7)
        dl = accelerator.prepare(DataLoader(list(range(20)), batch_size=3, shuffle=True, generator=g))
        passes = []
        for _ in range(3):
            mine = [batch.tolist() for batch in dl]
            passes.append(gather_object([mine]))
            torch.rand(accelerator.process_index + 1, generator=g)  # each process advances it differently
        return passes

    result = training(True)
    result["num_processes"] = n
    generator_result = training(False)
    generator_result["num_processes"] = n
    resync_result = resync()
    if state.process_index == 0:
        with open(out_path, "w") as f:
            json.dump({"training": result, "training_generator": generator_result,
                       "generator_resync": resync_result}, f)
    state.destroy_process_group()


def generate():
    import numpy as np  # noqa: F401
    from accelerate.test_utils import RegressionDataset

    data = {}
    for length in LENGTHS:
        ds = RegressionDataset(length=length, seed=42)
        data[str(length)] = {"x": [float(v) for v in ds.x], "y": [float(v) for v in ds.y]}
    training, training_generator, resync = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in PROCESSES:
            part = os.path.join(tmp, f"part{n}.json")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={n}", os.path.abspath(__file__), "worker", part]
            # ACCELERATE_USE_CPU: `accelerate launch --cpu`; without it Accelerate on a machine without
            # a GPU runs N single-process jobs.
            env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
            # A worker now and then aborts in PyTorch's teardown ("terminate called without an
            # active exception", 3 processes on a loaded machine, after its results are
            # written or before): a run is retried twice before the failure counts.
            for attempt in range(3):
                done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
                if done.returncode == 0:
                    break
                print(f"{n} processes: worker exited with {done.returncode} (attempt {attempt + 1})",
                      file=sys.stderr)
            done.check_returncode()
            with open(part) as f:
                part_values = json.load(f)
            training[str(n)] = part_values["training"]
            training_generator[str(n)] = part_values["training_generator"]
            resync[str(n)] = part_values["generator_resync"]
    import accelerate
    import torch
    return {"accelerate": accelerate.__version__, "torch": torch.__version__,
            "regression_dataset": data, "training": training,
            "training_generator": training_generator, "generator_resync": resync}


def check(fixture_path):
    with open(fixture_path) as f:
        fixture = json.load(f)
    fresh = generate()
    problems = []
    for length, values in fixture["regression_dataset"].items():
        for key in ("x", "y"):
            if fresh["regression_dataset"][length][key] != values[key]:
                problems.append(f"RegressionDataset(length={length}, seed=42).{key} differs")
    exact = True
    for n, modes, fresh_modes in [(n, m, fresh[key][n]) for key in ("training", "training_generator")
                                  for n, m in fixture[key].items()]:
        for mode, values in modes.items():
            if mode == "num_processes":
                continue
            (a, b), (fa, fb) = values, fresh_modes[mode]
            exact = exact and (fa, fb) == (a, b)
            for name, want, got in (("a", a, fa), ("b", b, fb)):
                if not math.isclose(got, want, rel_tol=RTOL, abs_tol=ATOL):
                    problems.append(f"{n} processes, {mode}: {name} = {got}, fixture {want}")
    for n, passes in fixture["generator_resync"].items():
        if fresh["generator_resync"][n] != passes:
            problems.append(f"{n} processes: generator_resync batches differ")
    for p in problems:
        print(p)
    print(f"accelerate {fresh['accelerate']}, torch {fresh['torch']}: "
          f"{'bit for bit' if exact else 'within 1e-6'}" if not problems else "fixture is stale")
    return 1 if problems else 0


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "worker":
        worker(sys.argv[2])
        return 0
    try:
        import accelerate  # noqa: F401
    except ImportError:
        print("this Python has no accelerate: skipped")
        return SKIP
    if mode == "generate":
        values = generate()
        with open(sys.argv[2], "w") as f:
            json.dump(values, f, indent=1)
            f.write("\n")
        return 0
    if mode == "check":
        return check(sys.argv[2])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
