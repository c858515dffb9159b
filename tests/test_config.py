"""The configuration object: presets, validation and the JSON round trip."""

import pytest

from hw.config import PRESETS, EmberConfig, get_preset


def test_presets():
    assert {"tiny", "small", "default", "mtia"} <= set(PRESETS)
    assert (get_preset("default").pe_rows, get_preset("default").pe_cols) == (8, 8)
    assert get_preset("mtia").macs_per_cycle == 65536
    assert not get_preset("mtia").simulate
    for name, cfg in PRESETS.items():
        assert cfg.name == name
        assert cfg.top_name == f"ember_{name}" and "__" not in cfg.top_name


def test_cpu_async_presets():
    """The presets meant for the ECP5 (and CI) run the control core on its own clock."""
    assert get_preset("tiny").cpu_async and get_preset("small").cpu_async
    assert not get_preset("default").cpu_async and not get_preset("mtia").cpu_async
    assert EmberConfig(name="x", pe_rows=1, pe_cols=1, pe_lanes=1).cpu_async is False
    with pytest.raises(TypeError, match="cpu_async must be a bool, not 1"):
        get_preset("tiny").replace(cpu_async=1)


def test_small_fits_its_word():
    """`small` (sized for the ECP5-85F, synth/README.md) feeds the PE array from one 16-byte word."""
    cfg = get_preset("small")
    assert cfg.simulate and cfg.macs_per_cycle == 64 and cfg.sram_bytes == 128 * 1024
    assert max(cfg.pe_rows * cfg.pe_lanes, cfg.pe_cols * cfg.pe_lanes,
               4 * cfg.pe_cols) <= cfg.bus_bytes


def test_json_round_trip():
    for cfg in PRESETS.values():
        assert EmberConfig.from_json(cfg.to_json()) == cfg


def test_frozen():
    with pytest.raises(AttributeError):
        get_preset("tiny").pe_rows = 4


@pytest.mark.parametrize("field, value, exc", [
    ("pe_rows", 0, ValueError),
    ("pe_cols", -1, ValueError),
    ("pe_lanes", 0, ValueError),
    ("pe_lanes", 4097, ValueError),
    ("pe_rows", 2.0, TypeError),
    ("pe_rows", True, TypeError),
    ("name", "Bad__Name", ValueError),
    ("name", "a__b", ValueError),
    ("simulate", "yes", TypeError),
    ("cpu_async", 1, TypeError),
    ("cpu_async", "no", TypeError),
])
def test_validation_names_the_field(field, value, exc):
    with pytest.raises(exc, match=field):
        get_preset("tiny").replace(**{field: value})


def test_unknown_preset():
    with pytest.raises(ValueError, match="'nope'.*choose one of"):
        get_preset("nope")


def test_from_json_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown configuration fields"):
        EmberConfig.from_json('{"name": "x", "pe_rows": 1, "pe_cols": 1, "pe_lanes": 1, "q": 1}')
