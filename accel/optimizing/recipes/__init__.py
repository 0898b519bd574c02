"""Recipes: the built-in ones (accel/recipes/builtin/*.yaml) by name, or any recipe file by path."""

from __future__ import annotations

import os
from pathlib import Path

from accel.core.errors import RecipeError
from accel.optimizing.recipes.schema import Recipe, parse_recipe, read_recipe

BUILTIN_DIR = Path(__file__).parent / "builtin"

__all__ = ["Recipe", "builtin_names", "builtin_recipes", "get_recipe", "parse_recipe", "read_recipe"]


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def builtin_recipes() -> list[Recipe]:
    return [read_recipe(BUILTIN_DIR / f"{name}.yaml") for name in builtin_names()]


def get_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """A built-in recipe by name, or a recipe file by path."""
    text = str(name_or_path)
    if text in builtin_names():
        return read_recipe(BUILTIN_DIR / f"{text}.yaml")
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists() or os.sep in text:
        if not path.exists():
            raise RecipeError(f"no such recipe file: {path}", f"built-in recipes: {', '.join(builtin_names())}")
        return read_recipe(path)
    raise RecipeError(
        f"unknown recipe '{text}'",
        f"built-in recipes: {', '.join(builtin_names())}; or pass the path of a .yaml recipe",
    )
