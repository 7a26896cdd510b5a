"""spargering under `mpirun -np 2` and `-np 3` with mpi4py (mpi_ranks.py does the checks on every rank);
every run has a timeout: a hang is a failure."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("ranks", [2, 3])
def test_sharded_equals_one_process_and_errors_reach_every_rank(np, spargering, mpirun, ranks):
    env = dict(os.environ, OMPI_MCA_btl_vader_single_copy_mechanism="none",
               PYTHONPATH=os.pathsep.join([os.path.join(os.path.dirname(HERE)), HERE]))
    command = [mpirun, "-np", str(ranks), "--oversubscribe", sys.executable, os.path.join(HERE, "mpi_ranks.py")]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"mpirun -np {ranks} hung (timeout 240 s): {e.stdout}")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    for rank in range(ranks):
        assert output.count(f"rank {rank}: ok ") == 3, output
        assert output.count(f"rank {rank}: raised for bad ") == 5, output
        assert f"rank {rank}: done" in output, output
    print(output)
