"""`accel cache info` and `accel cache clear`: the on-disk store of decoded samples (cache.decoded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from accel.cli.common import console
from accel.cli.units import format_bytes

cache_app = typer.Typer(
    help="Inspect or empty the decoded-sample cache (cache.decoded).", no_args_is_help=True, rich_markup_mode=None
)

DIR_OPTION = typer.Option(
    None, "--dir", help="Cache directory (default: decoded/ under $ACCEL_CACHE_DIR, else under $XDG_CACHE_HOME/accel)."
)


def _root(directory: Optional[Path]) -> Path:
    from accel.core.errors import AccelError
    from accel.optimizing.optimizers._store import default_cache_dir

    root = directory if directory is not None else default_cache_dir()
    if root.exists() and not root.is_dir():
        raise AccelError(f"cache directory {root} is a file, not a folder", "pass the cache's folder with --dir")
    return root


@cache_app.command("info")
def info_command(directory: Optional[Path] = DIR_OPTION) -> None:
    """List the cached namespaces (one per decode/transform code version): records and bytes."""
    from accel.optimizing.optimizers._store import describe

    root = _root(directory)
    infos = describe(root)
    if not infos:
        console.print(f"no cached samples under {escape(str(root))}")
        return
    table = Table(title=f"Decoded-sample cache: {escape(str(root))}", title_justify="left")
    for column, justify in (
        ("namespace", "left"),
        ("stages", "left"),
        ("functions", "left"),
        ("records", "right"),
        ("size", "right"),
        ("accel", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for item in infos:
        stages, functions = _names(item.meta, "stages", item, root), _names(item.meta, "functions", item, root)
        table.add_row(
            item.namespace,
            "+".join(stages),
            escape(", ".join(functions)),
            f"{item.entries:,}",
            format_bytes(item.bytes_on_disk),
            escape(str(item.meta.get("accel_version", ""))),
        )
    console.print(table)
    total = sum(i.bytes_on_disk for i in infos)
    console.print(f"{sum(i.entries for i in infos):,} records, {format_bytes(total)} in {len(infos)} namespaces")


def _names(meta: Any, key: str, item: Any, root: Path) -> list[str]:
    """meta.json's list of names under `key`; a meta.json that is not what the store writes is refused."""
    names = meta.get(key, []) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        from accel.core.errors import CacheError

        raise CacheError(
            f"the cache namespace {item.namespace} under {root} has a corrupt meta.json (not the store's own)",
            f"clear it: accel cache clear --dir {root} --namespace {item.namespace}",
        )
    return names


@cache_app.command("clear")
def clear_command(
    directory: Optional[Path] = DIR_OPTION,
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Clear only this namespace."),
) -> None:
    """Remove cached samples (all, or one namespace)."""
    from accel.core.errors import AccelError
    from accel.optimizing.optimizers._store import clear

    root = _root(directory)
    try:
        removed = clear(root, namespace)
    except OSError as exc:
        raise AccelError(
            f"cannot remove cached records under {root}: {exc.strerror} ({exc.filename})",
            "check the cache folder's permissions, or remove it by hand",
        ) from exc
    console.print(f"removed {removed:,} cached records from {escape(str(root))}")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
