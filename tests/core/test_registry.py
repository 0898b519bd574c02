"""The generic registry: duplicate names are errors, unknown names list the valid ones."""

import pytest

from accel.core.errors import UnknownComponentError
from accel.core.registry import Registry


def test_register_and_get():
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)

    @registry.register("b")
    def b():
        return 2

    assert registry.get("a") == 1
    assert registry.get("b") is b
    assert registry.names() == ["a", "b"]
    assert "a" in registry and len(registry) == 2


def test_duplicate_name_is_an_error():
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        registry.add("a", 2)


def test_unknown_name_lists_valid_ones():
    registry: Registry[int] = Registry("widget")
    registry.add("alpha", 1)
    registry.add("beta", 2)
    with pytest.raises(UnknownComponentError) as info:
        registry.get("gamma")
    assert "unknown widget 'gamma'" in info.value.message
    assert "alpha, beta" in info.value.hint


def test_builtin_registries_are_filled():
    from accel.profiling.analyzers import ANALYZERS

    assert {"data_loading", "input_decoding", "padding", "repeated_inputs"} <= set(ANALYZERS.names())
