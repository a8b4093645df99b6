"""The OpenAPI document is the contract: schemathesis, a tool no one here
wrote, generates requests from it (valid and invalid) against real gunicorn
and runs every check it has on the answers.

Bounded (EXAMPLES per operation), with a fixed seed, so that `make test`
judges the service and not the dice: a fresh seed each run turned CI red on
a schemathesis false positive no one had seen (seed 3057913041). To explore,
``make fuzz`` runs fresh seeds, each printed; replay one with
``CONTRACT_SEED=SEED pytest tests/system/test_openapi_contract.py``.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from tests.processes import run
from tests.system.server import ROOT, running_gunicorn

ST = Path(sys.executable).with_name("st")
# Per operation, in the fuzzing phase (the coverage phase draws its own cases).
# NOTE: each valid upload is a model run; 40 keeps the whole run near 90 s
# on 2 busy cores (docs/removebg.md).
EXAMPLES = 40
# The seed `make test` runs: one that found a false positive once, so its
# run also holds the hooks' filter to it.
SEED = 3057913041
# Well above a run's time; a hang fails, it never blocks the suite.
TIMEOUT_S = 400


def test_every_check_passes_on_every_operation(tmp_path):
    chosen = os.environ.get("CONTRACT_SEED") or str(SEED)
    seed = random.randrange(2**32) if chosen == "random" else int(chosen)
    print(f"schemathesis seed: {seed}")
    with running_gunicorn(tmp_path) as server:
        result = run([str(ST), "run", f"http://127.0.0.1:{server.port}/openapi.json",
                      "--checks", "all", "--max-examples", str(EXAMPLES), "--seed", str(seed),
                      "--workers", "1", "--no-color", "--output-truncate", "true",
                      "--request-timeout", "60"],
                     timeout=TIMEOUT_S, cwd=tmp_path,
                     env=os.environ | {"SCHEMATHESIS_HOOKS": "tests.system.schemathesis_hooks",
                                       "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, (f"seed {seed}:\n{result.stdout[-12000:]}"
                                    f"\n{result.stderr[-3000:]}")
    assert " passed" in result.stdout, result.stdout[-3000:]
