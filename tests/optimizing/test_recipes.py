"""Recipe parsing and validation: built-ins load; every error names the file, rule and key."""

from __future__ import annotations

import pytest

from accel.core.errors import RecipeError, UnknownComponentError
from accel.optimizing.recipes import builtin_names, builtin_recipes, get_recipe, parse_recipe, read_recipe
from accel.optimizing.recipes.schema import DEFAULT_MIN_COSINE, Guard


def test_builtin_recipes_load():
    assert {"latency", "throughput", "memory", "default"} <= set(builtin_names())
    recipes = {r.name: r for r in builtin_recipes()}
    assert recipes["latency"].target == "latency"
    assert recipes["throughput"].target == "throughput"
    assert recipes["memory"].target == "memory"
    assert recipes["default"].needs_profile and not recipes["latency"].needs_profile
    assert all(r.description for r in recipes.values())


def test_lookup_by_name_and_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntarget: latency\nrules:\n  - name: r\n    try: [onnx.runtime]\n")
    assert get_recipe("latency").name == "latency"
    recipe = get_recipe(path)
    assert recipe.name == "mine" and recipe.rules[0].candidates[0].optimizer == "onnx.runtime"
    assert recipe.guard.min_cosine == DEFAULT_MIN_COSINE


def test_unknown_recipe_name_lists_builtins():
    with pytest.raises(RecipeError) as info:
        get_recipe("fastest")
    assert "unknown recipe 'fastest'" in info.value.message and "latency" in info.value.hint


def _error(tmp_path, text: str) -> RecipeError:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        read_recipe(path)
    assert str(path) in info.value.message
    return info.value


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: x\nrules: []\n", "key 'rules': expected a non-empty list"),
        (
            "name: x\ntarget: speed\nrules: [{try: [onnx.runtime]}]\n",
            "key 'target': expected one of latency, throughput, memory",
        ),
        ("name: x\nbudget: 3\nrules: [{try: [onnx.runtime]}]\n", "unknown key 'budget'"),
        ("name: x\nbudget_seconds: -1\nrules: [{try: [onnx.runtime]}]\n", "key 'budget_seconds'"),
        ("name: x\nrules: [{name: r1, try: [warp.drive]}]\n", "rule 'r1': key 'try': unknown optimizer 'warp.drive'"),
        (
            "name: x\nrules: [{name: r1, try: [{optimizer: batch.size, params: {size: 3}}]}]\n",
            "rule 'r1': optimizer 'batch.size' has no parameter 'size'",
        ),
        (
            "name: x\nrules: [{name: r1, try: [{optimizer: batch.size, params: {max_batch_size: 0}}]}]\n",
            "max_batch_size must be >= 1",
        ),
        ("name: x\nrules: [{name: r1, when: {findings: [slowness]}, try: [compile]}]\n", "rule 'r1': key 'when'"),
        ("name: x\nrules: [{name: r1, guard: {min_cosine: 2}, try: [compile]}]\n", "rule 'r1': key 'guard'"),
        ("name: x\nrules: [{name: r1, guard: {cosine: 0.9}, try: [compile]}]\n", "unknown key 'cosine'"),
        ("name: x\nrules: [{name: r1, try: [compile], then: 3}]\n", "rule 'r1': unknown key 'then'"),
        ("name: x\nrules: [{name: r1, try: [compile]}, {name: r1, try: [compile]}]\n", "rule 'r1' is defined twice"),
        ("- just\n- a list\n", "a recipe must be a mapping"),
        ("name: x\nrules: [{name: r1, try: [compile]\n", "not valid YAML"),
    ],
)
def test_validation_errors_name_file_rule_and_key(tmp_path, text, expected):
    error = _error(tmp_path, text)
    assert expected in error.message, error.message
    assert error.hint


def test_recommended_rules_need_no_candidate_list():
    recipe = parse_recipe(
        {"name": "x", "rules": [{"name": "r", "when": {"findings": ["padding"]}, "try": "recommended"}]}
    )
    assert recipe.rules[0].recommended and recipe.needs_profile


def test_guard_checks_its_values():
    with pytest.raises(ValueError, match="max_abs_error"):
        Guard(max_abs_error=-1.0)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        get_recipe(tmp_path / "missing.yaml")


def test_unknown_optimizer_is_an_unknown_component():
    from accel.optimizing.optimizers import OPTIMIZERS

    with pytest.raises(UnknownComponentError, match="unknown optimizer 'x'"):
        OPTIMIZERS.get("x")
