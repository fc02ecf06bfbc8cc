"""`twistd edgeproxy` options: how many worker processes."""

import pytest
from twisted.python import usage

from edgeproxy.tap import Options, available_cpus, worker_count


@pytest.mark.parametrize(
    "option, configured, expected",
    [(None, 0, available_cpus()), (None, 3, 3), (2, 3, 2), (1, 0, 1), (4, 0, 4)],
)
def test_the_command_line_wins_over_the_config_and_auto_is_the_cpu_count(option, configured, expected):
    assert worker_count(option, configured) == expected


def test_workers_is_a_positive_number():
    options = Options()
    options.parseOptions(["--workers", "3"])
    assert options["workers"] == 3
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--workers", "0"])
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--workers", "two"])
