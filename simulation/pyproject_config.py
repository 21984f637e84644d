"""``pyproject.toml``'s ``[tool.flwr.app.config]``: the Flower run config of the default Hydra composition.

``python -m simulation.pyproject_config`` rewrites the table (the last one in the file); ``--check`` exits 1 when
the file differs (the tests run the same comparison). So ``flwr run .`` starts exactly the experiment that
``python -m simulation`` starts, with ``out-dir`` empty (the ServerApp then makes its own folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from conf.schema import to_run_config

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
TABLE = "[tool.flwr.app.config]"
HEADER = ("# Run config of `flwr run` (override with --run-config \"k=v ...\"). Generated from conf/schema.py and the\n"
          "# default Hydra composition by `python -m simulation.pyproject_config`; a test checks it. Edit those, not this.\n")


def default_run_config() -> dict:
    """The run config ``python -m simulation`` would pass with no overrides, ``out-dir`` left empty."""
    from hydra import compose, initialize_config_dir

    from simulation.config import specs

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("federated", overrides=["out_dir="])
    spec, _ = specs(cfg)
    return to_run_config(spec)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a TOML basic string: JSON's escaping is valid TOML


def render(values: dict) -> str:
    return HEADER + TABLE + "\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())


def current_table(text: str) -> dict:
    return tomllib.loads(text).get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})


def flat(table: dict, prefix: str = "") -> dict:
    """TOML's nested tables (dotted keys) back to flat dotted keys, as Flower flattens them."""
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        out.update(flat(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def write(path: Path = PYPROJECT) -> None:
    text = path.read_text(encoding="utf-8")
    start = text.index(TABLE)
    head = text[:start]
    if head.rstrip().endswith(HEADER.rstrip()):
        head = head.rstrip()[: -len(HEADER.rstrip())]
    path.write_text(head.rstrip() + "\n\n" + render(default_run_config()), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if pyproject.toml differs, change nothing")
    args = parser.parse_args()
    if args.check:
        expected, found = default_run_config(), flat(current_table(PYPROJECT.read_text(encoding="utf-8")))
        if expected != found:
            diff = sorted(set(expected.items()) ^ set(found.items()), key=str)
            print(f"pyproject.toml's {TABLE} differs from the schema's defaults: {diff[:6]}", file=sys.stderr)
            raise SystemExit(1)
        print("pyproject.toml matches the schema's defaults")
        return
    write()
    print(f"wrote {TABLE} of {PYPROJECT.name}")


if __name__ == "__main__":
    main()
