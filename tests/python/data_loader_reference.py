"""Reference values of Accelerate 1.15's data-loader sharding, for tests/data_loader_test.cpp.

Runs Accelerate's own BatchSamplerShard, IterableDatasetShard and DataLoaderDispatcher (the
latter with a recorded broadcast standing in for the processes), and PyTorch's DataLoader with
a generator, and prints JSON. tests/python/data_loader_reference.json is this script's output;
the ctest `data_loader_python_reference` reruns it and compares.

Usage: python data_loader_reference.py [--check FIXTURE]
"""
import json
import sys
import types

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset

import accelerate
import accelerate.data_loader as adl
from accelerate.data_loader import BatchSamplerShard, DataLoaderDispatcher, IterableDatasetShard


class ListBatchSampler:
    """A batch sampler yielding fixed lists, with Python's batch_size / drop_last attributes."""

    def __init__(self, batches, batch_size, drop_last):
        self.batches, self.batch_size, self.drop_last = batches, batch_size, drop_last

    def __iter__(self):
        return iter([list(b) for b in self.batches])

    def __len__(self):
        return len(self.batches)


class Stream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))


def batch_sampler_cases():
    cases = []
    lists = []
    for n in (0, 1, 2, 3, 5, 7, 11, 16, 21, 22, 24, 25):
        for bs in (1, 2, 3, 4):
            for drop_last in (False, True):
                lists.append((list(BatchSampler(range(n), bs, drop_last)), bs, drop_last))
    # Irregular batches: bucketing by length, with and without a nominal batch size.
    irregular = [[0, 3, 5], [1, 2], [4, 6, 7, 8], [9], [10, 11, 12]]
    for bs in (None, 3):
        for drop_last in (False, True):
            lists.append((irregular, bs, drop_last))
            lists.append((irregular[:2], bs, drop_last))
            lists.append((irregular[:4], bs, drop_last))
    lists.append(([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10, 11, 12, 13], [14]], 4, False))
    for batches, bs, drop_last in lists:
        for n_proc in (2, 3):
            for split in (False, True):
                if split and (bs is None or bs % n_proc != 0):
                    continue
                for even in (True, False):
                    sampler = ListBatchSampler(batches, bs, drop_last)
                    shards = [
                        list(BatchSamplerShard(sampler, n_proc, p, split_batches=split, even_batches=even))
                        for p in range(n_proc)
                    ]
                    cases.append(dict(batches=batches, batch_size=bs, drop_last=drop_last,
                                      num_processes=n_proc, split_batches=split,
                                      even_batches=even, shards=shards))
    return cases


def iterable_cases():
    cases = []
    for n in (0, 1, 2, 3, 5, 7, 8, 11, 16, 21, 22, 25):
        for bs in (1, 2, 3, 4):
            for drop_last in (False, True):
                for n_proc in (2, 3):
                    for split in (False, True):
                        if split and bs % n_proc != 0:
                            continue
                        shards = [
                            list(IterableDatasetShard(Stream(n), batch_size=bs, drop_last=drop_last,
                                                      num_processes=n_proc, process_index=p,
                                                      split_batches=split))
                            for p in range(n_proc)
                        ]
                        cases.append(dict(n=n, batch_size=bs, drop_last=drop_last,
                                          num_processes=n_proc, split_batches=split, shards=shards))
    return cases


class NoBatches(Exception):
    """Accelerate's dispatcher raises when a pass has no batch at all."""


def dispatch_batches(n, bs, drop_last, n_proc, split):
    """Each process's batches (lists of sample values) from DataLoaderDispatcher over Stream(n),
    with process 0's broadcasts recorded and replayed to the others."""
    sent = []
    out = []
    for p in range(n_proc):
        replay = iter(sent)

        def broadcast_object_list(obj, from_process=0, _p=p, _replay=replay):
            if _p == 0:
                sent.append(list(obj))
            else:
                obj[:] = next(_replay)
            return obj

        def broadcast(tensor, from_process=0, _p=p, _replay=replay):
            if tensor is None and _p == 0:
                raise NoBatches()
            if _p == 0:
                sent.append(tensor.clone())
                return tensor
            return next(_replay)

        saved = (adl.broadcast_object_list, adl.broadcast)
        adl.broadcast_object_list, adl.broadcast = broadcast_object_list, broadcast
        try:
            dl = DataLoaderDispatcher(Stream(n), split_batches=split, batch_size=bs,
                                      drop_last=drop_last, _drop_last=drop_last)
            dl.state = types.SimpleNamespace(process_index=p, num_processes=n_proc,
                                             device=torch.device("cpu"))
            mine = []
            ends = []
            for batch in dl:
                mine.append(batch.tolist())
                ends.append(dl.end_of_dataloader)
            out.append(dict(batches=mine, remainder=dl.remainder if mine else -1))
        finally:
            adl.broadcast_object_list, adl.broadcast = saved
    return out


def dispatch_cases():
    cases = []
    # Not passes without a batch: Accelerate's dispatcher raises there (NoBatches).
    for n in (1, 2, 5, 7, 8, 11, 16, 21, 22, 25):
        for bs in (1, 2, 3, 4):
            for drop_last in (False, True):
                for n_proc in (2, 3):
                    for split in (False, True):
                        if split and bs % n_proc != 0:
                            continue
                        try:
                            shards = dispatch_batches(n, bs, drop_last, n_proc, split)
                        except NoBatches:
                            continue
                        cases.append(dict(n=n, batch_size=bs, drop_last=drop_last,
                                          num_processes=n_proc, split_batches=split,
                                          shards=[s["batches"] for s in shards],
                                          remainder=shards[0]["remainder"]))
    return cases


def generator_cases():
    cases = []
    for n, seed in ((10, 0), (17, 1234), (64, 42)):
        g = torch.Generator()
        g.manual_seed(seed)
        dl = DataLoader(list(range(n)), batch_size=n, shuffle=True, generator=g)
        # Whole passes: one that runs to its end also draws RandomSampler's trailing randperm.
        epochs = [[i for batch in dl for i in batch.tolist()] for _ in range(3)]
        # Passes left after their first batch (of n // 2 + 1) draw no trailing randperm.
        g.manual_seed(seed)
        dl = DataLoader(list(range(n)), batch_size=n // 2 + 1, shuffle=True, generator=g)
        first_batches = [next(iter(dl)).tolist() for _ in range(3)]
        cases.append(dict(n=n, seed=seed, epochs=epochs, first_batches=first_batches))
    return cases


def main():
    data = dict(accelerate=accelerate.__version__,
                batch_sampler_shard=batch_sampler_cases(),
                iterable_dataset_shard=iterable_cases(),
                dispatcher=dispatch_cases(),
                generator=generator_cases())
    text = json.dumps(data, sort_keys=True)
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        with open(sys.argv[2]) as f:
            fixture = json.load(f)
        if fixture != json.loads(text):
            for key in data:
                if fixture.get(key) != json.loads(text)[key]:
                    print(f"differs from the fixture: {key}", file=sys.stderr)
            sys.exit(1)
        print("the fixture matches Accelerate", accelerate.__version__)
        return
    print(text)


if __name__ == "__main__":
    main()
