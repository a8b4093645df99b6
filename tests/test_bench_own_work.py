"""`python -m bench own-work`: every step timed both ways, on the pixels it checks equal."""

import shutil

from bench import own_work
from bench.__main__ import main as bench_main
from tests.helpers import DATA


def test_it_times_each_step_of_each_photo(tmp_path, capsys):
    shutil.copy(DATA / "hubble_deep_field.jpg", tmp_path / "hubble_deep_field.jpg")
    assert bench_main(["own-work", "--runs", "1", "--folder", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| hubble_deep_field.jpg |" in printed
    for step in own_work.STEPS:
        assert f"- {step}: median " in printed
    assert "- the four steps: median " in printed
