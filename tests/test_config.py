"""params.yaml validation: unknown keys, wrong types and out-of-range values are refused by name."""

from pathlib import Path

import pytest
import yaml

from ctca.config import ConfigError, Params, fingerprint, flatten, load_params, parse_params, to_dict

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_file_is_valid_and_complete():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = parse_params(raw)
    # the keys the issues promise exist in the file itself, not only as defaults
    for key in ("tam.depth", "model.method", "loss.l2g", "loss.g2l", "loss.rc", "loss.cmd", "train.epochs",
                "train.seed", "decode.beam_width", "loss.weights.l2g"):
        assert key in flatten(raw), key
    # and every section of the schema is written out, so users see every knob
    assert set(raw) == set(to_dict(Params()))
    assert params.tam.depth == raw["tam"]["depth"]


def test_defaults_round_trip():
    p = Params()
    assert parse_params(to_dict(p)) == p


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"tam": {"depht": 2}}, "tam.depht"),
        ({"trian": {}}, "trian"),
        ({"loss": {"weights": {"l2x": 1.0}}}, "loss.weights.l2x"),
    ],
)
def test_unknown_keys_are_refused_with_their_name(data, needle):
    with pytest.raises(ConfigError) as exc:
        parse_params(data)
    assert needle in str(exc.value)
    assert "allowed keys" in str(exc.value)


@pytest.mark.parametrize(
    ("data", "needle", "allowed"),
    [
        ({"tam": {"depth": 0}}, "tam.depth", "1 <= depth"),
        ({"tam": {"depth": "2"}}, "tam.depth", "integer"),
        ({"tam": {"depth": 2.5}}, "tam.depth", "integer"),
        ({"model": {"method": "transformer"}}, "model.method", "'baseline'"),
        ({"loss": {"l2g": "yes"}}, "loss.l2g", "true or false"),
        ({"loss": {"weights": {"va": -1}}}, "loss.weights.va", ">= 0"),
        ({"train": {"milestones": [11, 8]}}, "train.milestones", "increasing"),
        ({"train": {"epochs": True}}, "train.epochs", "integer"),
        ({"data": {"dataset": "mnist"}}, "data.dataset", "'phoenix2014'"),
        ({"data": {"dataset": "synthetic", "root": "/elsewhere"}}, "data.root", "data/synthsign"),
        ({"loader": {"crop": 64}, "frames": {"size": 40}}, "loader.crop", "frames.size"),
        ({"decode": {"beam_width": 0}}, "decode.beam_width", "1 <= x"),
        ({"synth": {"held_out_signers": 8, "n_signers": 8}}, "synth.held_out_signers", "allowed"),
        ({"spm": {"channels": []}}, "spm.channels", "non-empty"),
        ({"synth": {"noise": 0.9}}, "synth.noise", "allowed"),
        ({"synth": {"max_len": 2, "min_len": 3}}, "synth.max_len", "allowed"),
    ],
)
def test_invalid_values_name_the_key_and_what_is_allowed(data, needle, allowed):
    with pytest.raises(ConfigError) as exc:
        parse_params(data)
    assert needle in str(exc.value)
    assert allowed in str(exc.value)


def test_integers_are_accepted_for_floats_and_lists_become_tuples():
    p = parse_params({"train": {"lr": 1, "milestones": [3, 5]}})
    assert p.train.lr == 1.0 and isinstance(p.train.lr, float)
    assert p.train.milestones == (3, 5)


def test_load_params_names_the_file(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("tam:\n  depth: -3\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: tam\.depth=-3"):
        load_params(f)
    f.write_text("tam: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(f)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_fingerprint_changes_with_any_value():
    a, b = Params(), parse_params({"tam": {"depth": 2}})
    assert fingerprint(a.tam) != fingerprint(b.tam)
    assert fingerprint(a.tam) == fingerprint(Params().tam)


def test_values_dvc_writes_with_set_are_read_as_meant():
    """`dvc exp run -S train.amp=off -S smkd.decouple_lr=4e-5` writes `amp: off` and `decouple_lr: 4e-05` into
    params.yaml, which PyYAML (YAML 1.1) reads as False and as the string '4e-05'."""
    import yaml

    from ctca.config import ConfigError, parse_params

    data = yaml.safe_load("train:\n  amp: off\nsmkd:\n  decouple_lr: 4e-05\nvac:\n  tau: 1E+1\n")
    assert data["train"]["amp"] is False and data["smkd"]["decouple_lr"] == "4e-05"
    params = parse_params(data)
    assert params.train.amp == "off" and params.smkd.decouple_lr == 4e-5 and params.vac.tau == 10.0
    with pytest.raises(ConfigError, match="train.device=True is invalid"):  # no 'on' spelling for this key
        parse_params({"train": {"device": True}})
    with pytest.raises(ConfigError, match="smkd.decouple_lr='fast' is invalid"):
        parse_params({"smkd": {"decouple_lr": "fast"}})
