"""One rank of the two-process parity tests: `parity_worker.py OUT` runs
every entry of parity_cases.gloo_keys() over torch.distributed (Gloo,
env:// variables) -- the idiom cases with deft's sgd against
torch.optim.SGD on all_reduce'd gradients, def and ef21 against their
restatements, and the restatements against SGD with ratio 1 -- and rank 0
saves every rank's results to OUT with torch.save: {key: [result of rank
0, of rank 1, ...]}, a result being a dict of relative errors (and
problems) or {"error": message} when the entry raised."""
import datetime
import os
import sys
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import parity_cases  # noqa: E402

torch.set_num_threads(1)
out_path = sys.argv[1]
dist.init_process_group("gloo", init_method="env://",
                        timeout=datetime.timedelta(seconds=60))
results = {}
for key in parity_cases.gloo_keys():
    try:
        results[key] = parity_cases.run_key(key)
    except Exception:  # reported per entry by the test
        results[key] = {"error": traceback.format_exc()}
every = [None] * dist.get_world_size()
dist.all_gather_object(every, results)
if dist.get_rank() == 0:
    torch.save({k: [r[k] for r in every] for k in results}, out_path)
dist.barrier()
dist.destroy_process_group()
