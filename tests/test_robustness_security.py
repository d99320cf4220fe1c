"""Untrusted files never run code: every loading path is weights_only / safe, checked in the source; a truncated or
code-carrying checkpoint and a diverged run end as one clear line."""

from __future__ import annotations

import argparse
import ast
import pickle
from pathlib import Path

import pytest
import torch

from rtmdet_edge.checkpoint import read_checkpoint
from rtmdet_edge.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("rtmdet_edge", "targets", "quant", "demos", "benchmarks")


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
            kwargs = {k.arg: k.value for k in node.keywords}
            yield node, owner, name, kwargs


def test_no_loading_path_can_run_pickled_code() -> None:
    problems = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")) if (REPO / package).is_dir() else []:
            tree = ast.parse(path.read_text(), str(path))
            for node, owner, name, kwargs in _calls(tree):
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                if name == "load" and owner == "torch":
                    wo = kwargs.get("weights_only")
                    if not (isinstance(wo, ast.Constant) and wo.value is True):
                        problems.append(f"{where}: torch.load without weights_only=True")
                if name in ("load", "loads") and owner in ("pickle", "cPickle", "dill", "joblib"):
                    problems.append(f"{where}: {owner}.{name}")
                if name == "load" and owner in ("np", "numpy"):
                    ap = kwargs.get("allow_pickle")
                    if isinstance(ap, ast.Constant) and ap.value is True:
                        problems.append(f"{where}: np.load(allow_pickle=True)")
                if name in ("load", "load_all") and owner == "yaml":
                    loader = kwargs.get("Loader")
                    if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                        problems.append(f"{where}: yaml.{name} without SafeLoader (use yaml.safe_load)")
                if name in ("eval", "exec") and owner == "" and isinstance(node.func, ast.Name):
                    problems.append(f"{where}: {name}()")
    assert not problems, "\n".join(problems)


class _RunsCode:
    def __reduce__(self):
        return (print, ("pwned: this must never run",))


def test_code_carrying_and_truncated_checkpoints_are_one_user_error(tmp_path, capsys) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": _RunsCode()}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(UserError, match="refusing to load"):
        read_checkpoint(evil)
    assert "pwned" not in capsys.readouterr().out
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.ones(1000)}}, good)
    half = tmp_path / "half.pth"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # what a kill mid-write used to leave
    with pytest.raises(UserError, match="cannot read checkpoint"):
        read_checkpoint(half)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(UserError):
        read_checkpoint(empty)


def test_a_diverged_run_is_one_clear_error(monkeypatch) -> None:
    from rtmdet_edge.training import train as train_cmd
    from rtmdet_edge.training.engine import NonFiniteLossError

    def diverge(cfg):
        raise NonFiniteLossError("20 consecutive iterations had a non-finite loss; lower --lr")

    monkeypatch.setattr(train_cmd, "main", diverge)
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    with pytest.raises(UserError, match="non-finite loss.*last good checkpoint"):
        train_cmd.run(parser.parse_args(["--out", "runs/x"]))
