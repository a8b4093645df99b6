"""`python -m bench SECTION`: one command line, every section on it."""

from __future__ import annotations

import pytest

from bench.__main__ import MODULE_SECTIONS, parse

MEASUREMENTS = ("all", "frontier", "side-by-side", "overhead")


def test_the_help_lists_every_section(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(["--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    for section in (*MEASUREMENTS, *MODULE_SECTIONS):
        assert f"    {section} " in printed or f"    {section}\n" in printed, section


@pytest.mark.parametrize("section", [*MEASUREMENTS, *MODULE_SECTIONS])
def test_each_section_takes_the_model_to_measure(section, tmp_path):
    extra = ["one", "two"] if section == "ab" else []
    args = parse([section, "--model", str(tmp_path / "other.onnx"), *extra])
    assert args.section == section and args.model == tmp_path / "other.onnx"


def test_a_section_that_does_not_exist_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(["stages"])
    assert exit_.value.code == 2
    assert "invalid choice: 'stages'" in capsys.readouterr().err
