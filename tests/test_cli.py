"""rtmdet_edge/cli.py: a usage mistake is one line on stderr and exit code 2, like every other user error."""

from __future__ import annotations

import pytest

from rtmdet_edge.cli import main


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["quantize", "--weights", "w.pth", "--recipe", "foo"], "rtmdet-edge quantize: error: argument --recipe"),
        (["--bogus"], "rtmdet-edge: error: unrecognized arguments: --bogus"),
        (["export", "--format"], "rtmdet-edge export: error: argument --format: expected one argument"),
    ],
)
def test_usage_mistake_is_one_line(argv: list[str], expected: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(expected), err
    assert "--help" in err and "usage:" not in err
