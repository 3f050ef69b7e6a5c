"""dvc.yaml declares what each stage runs and reads: its deps cover the ctca code the stage script imports
(transitively, ``ctca.codebase.ctca_imports``), and its params cover the keys the script itself reads.

A missing code dep means editing that module does not rerun the stage, so ``dvc repro`` keeps outputs the
current code would not produce; a missing params key means changing it does not rerun the stage either.
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

from ctca.codebase import ctca_imports
from ctca.config import flatten, parse_params, to_dict

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
SCRIPTS = {name: f"stages/{m.group(1)}.py" for name, s in STAGES.items()
           if isinstance(s.get("cmd"), str) and (m := re.fullmatch(r"python -m stages\.(\w+)", s["cmd"].strip()))}
# keys that do not change a stage's outputs: where MLflow runs go (the report, whose "Methods compared" depends on
# it, lists it), and how training is executed (dvc.yaml's train comment)
NOT_OUTPUT_KEYS = ("tracking", "train.nproc", "train.threads", "train.checkpoint_steps")


def test_every_stage_is_a_stage_script():
    assert set(SCRIPTS) == set(STAGES)


def _covered(path: Path, deps: list[Path]) -> bool:
    return any(path == d or d in path.parents for d in deps)


@pytest.mark.parametrize("stage", sorted(SCRIPTS))
def test_declared_deps_cover_the_code_the_stage_runs(stage):
    deps = [Path(d) for d in STAGES[stage].get("deps", [])]
    code = ctca_imports(SCRIPTS[stage], root=REPO)
    uncovered = sorted(p.as_posix() for p in code if not _covered(p, deps))
    assert not uncovered, f"dvc.yaml stage {stage!r}: add to its deps: {uncovered}"


def params_read(script: Path) -> set[str]:
    """Keys a stage script reads from its ``params`` object: ``params.a.b`` (as deep as the keys go), and a
    whole section for ``params.section("a")`` or a method call on it (``params.synth.generator_config()``).
    Reads inside library functions the script passes ``params`` to are not seen."""
    keys = set(flatten(to_dict(parse_params({}))))
    sections = {k.split(".")[0] for k in keys}
    attrs, whole = set(), set()
    for node in ast.walk(ast.parse(script.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "section"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "params"
                and node.args and isinstance(node.args[0], ast.Constant)):
            whole.add(node.args[0].value)
        elif isinstance(node, ast.Attribute):
            chain, inner = [], node
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            if not (isinstance(inner, ast.Name) and inner.id == "params") or chain[0] not in sections:
                continue
            # the deepest prefix that is a key or a nested section (loss.weights); else the whole section
            for n in range(len(chain), 0, -1):
                key = ".".join(chain[:n])
                if key in keys or any(k.startswith(key + ".") for k in keys):
                    attrs.add(key)
                    break
    # ast.walk also visits the inner nodes of params.train.amp: keep only the outermost reads
    return whole | {k for k in attrs if not any(o.startswith(k + ".") for o in attrs)}


@pytest.mark.parametrize("stage", sorted(SCRIPTS))
def test_declared_params_cover_the_keys_the_stage_script_reads(stage):
    declared = [str(p) for p in STAGES[stage].get("params", [])]
    read = params_read(REPO / SCRIPTS[stage])
    missing = sorted(k for k in read if not any(k == x or k.startswith(x + ".") for x in NOT_OUTPUT_KEYS)
                     and not any(k == d or k.startswith(d + ".") for d in declared))
    assert not missing, f"dvc.yaml stage {stage!r}: add to its params: {missing}"


def test_params_read_sees_keys_sections_and_method_calls(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("def run(params):\n    a = params.train.amp, params.loss.weights.va\n"
                      "    params.synth.generator_config()\n    log(params.section('decode'), params.train.seed)\n")
    assert params_read(script) == {"train.amp", "train.seed", "loss.weights.va", "synth", "decode"}
