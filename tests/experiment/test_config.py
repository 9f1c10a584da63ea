from pathlib import Path

import pytest

from fedtempo.errors import ConfigError
from fedtempo.experiment.config import ExperimentConfig, apply_overrides, load, parse_override

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_default_toml_spells_out_the_embedded_default() -> None:
    assert load(CONFIGS / "default.toml") == ExperimentConfig() == load(None)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    load(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "server.algorithm=fedx",
            "server.algorithm: bad value 'fedx' (allowed: 'fedavg', 'fedprox'",
        ),
        ("servr.rounds=3", "servr: unknown key"),
        ("server.round=3", "server.round: unknown key"),
        ("partition.num_clients=0", "partition.num_clients: input should be greater than"),
        ("train.lr=-0.1", "train.lr: input should be greater than 0"),
        ("partition.scheme=natural", "partition.scheme: 'natural' needs"),
        ("model.name=resnet", "model.name: bad value 'resnet'"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_parse_toml_values() -> None:
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=0.5") == (["a"], 0.5)
    assert parse_override("a=fedprox") == (["a"], "fedprox")
    assert parse_override('a="x y"') == (["a"], "x y")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("nonsense")
    c = load(None, ["server.rounds=7", "devices.compute.sigma=0"])
    assert c.server.rounds == 7 and c.devices.compute.sigma == 0
    assert c.devices.compute.median_flops == 2e9  # the rest of the table keeps its defaults


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load(bad)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("server.asyncfeded.epsilon=0", "server.asyncfeded.epsilon: input should be greater"),
        ("server.asyncfeded.k_max=0", "server.asyncfeded.k_max: input should be greater"),
        ("server.fedbuff.buffer_size=0", "server.fedbuff.buffer_size: input should be greater"),
        ("server.asyncfeded.k_init=30", "k_init: 30 is above k_max = 20"),
        ("server.fedasync.staleness=linear", "server.fedasync.staleness: bad value 'linear'"),
    ],
)
def test_async_hyperparameters_out_of_range(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, ["server.algorithm=asyncfeded", "server.max_updates=10", override])
    assert message in str(info.value)


def test_async_run_needs_a_stop() -> None:
    with pytest.raises(ConfigError, match=r"needs server\.max_updates or stop\.virtual_time"):
        load(None, ["server.algorithm=fedbuff"])


def test_extends_lays_a_file_over_its_base(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text(
        'name = "base"\n[server]\nrounds = 7\nclients_per_round = 3\n'
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.toml").write_text(
        'extends = "../base.toml"\nname = "child"\n[server]\nrounds = 9\n'
    )
    c = load(sub / "child.toml")
    assert (c.name, c.server.rounds, c.server.clients_per_round) == ("child", 9, 3)
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="loops back"):
        load(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "missing.toml"\n')
    with pytest.raises(ConfigError, match=r"missing\.toml: config file not found"):
        load(tmp_path / "c.toml")
