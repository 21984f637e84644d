"""``python -m gateway``: export a model bundle (torch side) or serve verdicts from one (numpy + LiteRT only).

    python -m gateway export outputs/federated/RUN/final.pt --out bundles/v1 [--sparsity 0.5] [--quantization static]
    python -m gateway serve --bundle bundles/v1 --source capture.conn.log [--follow] [--host-sink file:hosts.jsonl]
    python -m gateway verify --bundle bundles/v1
"""

from __future__ import annotations

import argparse
import json
import sys

from gateway.bundle import COMPRESSIONS, compression_of
from gateway.sources import FORMATS


def _size(entry: dict) -> str:
    """A model file's stored size, and its .tflite size when it is compressed."""
    stored = f"{entry['bytes'] / 1024:.0f} KiB"
    if compression_of(entry) == "none":
        return stored
    return f"{stored} ({entry['compression']}; .tflite {entry['tflite_bytes'] / 1024:.0f} KiB)"


def _export(args: argparse.Namespace) -> int:
    from gateway.export import ExportError, ExportOptions, calibration_rows, export_bundle

    try:
        options = ExportOptions(batch_sizes=tuple(args.batch_sizes), quantization=args.quantization,
                                sparsity=args.sparsity, compression=args.compression,
                                capacities=tuple(args.capacities) if args.capacities else None)  # fmt: skip
        rows = calibration_rows(args.checkpoint, args.calibration, args.calibration_size) \
            if args.quantization == "static" else None
        manifest = export_bundle(args.checkpoint, args.out, options, calibration=rows)
    except (ExportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{key} {_size(entry)}" for key, entry in sorted(manifest["models"].items()))
    print(f"bundle {args.out}: model version {manifest['model_version']}; {sizes}; "
          f"sparsity {manifest['pruning']['achieved_sparsity']:.2f}")  # fmt: skip
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gateway.bundle import BundleError
    from gateway.encode import SchemaMismatchError
    from gateway.graph_hosts import GraphHostPolicy
    from gateway.hosts import HostPolicy
    from gateway.serve import serve
    from gateway.sources import SourceError

    out = open(args.out, "a", encoding="utf-8") if args.out else None
    try:
        policy = HostPolicy(window=args.window, min_flows=args.min_flows, isolate_share=args.isolate_share,
                            release_share=args.release_share)  # fmt: skip
        graph_policy = GraphHostPolicy(min_flows=args.min_flows, release_windows=args.release_windows,
                                       reassert=args.window)  # fmt: skip
        report = serve(args.bundle, args.source, fmt=args.format, follow=args.follow, idle_exit=args.idle_exit,
                       batch_size=args.batch, variant=args.variant, out=out, host_sink=args.host_sink or ["stdout"],
                       policy=policy, num_threads=args.threads, graph_policy=graph_policy,
                       graph_lateness=args.graph_lateness)  # fmt: skip
    except (BundleError, SchemaMismatchError, SourceError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if out is not None:
            out.close()
    print("summary: " + json.dumps(report), file=sys.stderr)
    for line in summary_lines(report):
        print(line, file=sys.stderr)
    return 0


def summary_lines(report: dict) -> list[str]:
    """The serve summary in words: flow precision/recall against the source's labels and the host verdicts."""
    lines = []
    scored = report["labelled"]
    if scored:
        def pct(value):
            return "n/a" if value is None else f"{100 * value:.2f}%"

        lines.append(f"flows against the source's labels: precision {pct(scored['precision'])}, recall "
                     f"{pct(scored['recall'])} on {scored['flows']} labelled flows (tp {scored['tp']}, fp "
                     f"{scored['fp']}, fn {scored['fn']}, tn {scored['tn']}); {report['unlabelled']} flows without a "
                     "label (Background) not counted")  # fmt: skip
    hosts = report["hosts"]
    isolated = sorted(set(hosts["isolated"]))
    released = sorted(set(hosts["released"]))
    lines.append(f"hosts isolated: {len(isolated)} ({', '.join(isolated) or 'none'}); released: {len(released)} "
                 f"({', '.join(released) or 'none'})")  # fmt: skip
    return lines


def _verify(args: argparse.Namespace) -> int:
    """Hashes, schema and pipeline (:func:`load_bundle`), then every model unpacked and loaded by the interpreter."""
    from gateway.bundle import BundleError, load_bundle
    from gateway.engine import VerdictModel

    try:
        bundle = load_bundle(args.bundle)
        variants = sorted({entry["variant"] for entry in bundle.manifest["models"].values()})
        model_class = VerdictModel
        if bundle.gateway_input == "host_graphs":
            from gateway.graph_engine import GraphModel

            model_class = GraphModel
        for variant in variants:
            model_class(bundle, variant)
    except (BundleError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"ok: {bundle.path} model version {bundle.model_version}, {len(bundle.manifest['files'])} files verified, "
          f"{len(bundle.manifest['models'])} models load ({', '.join(variants)})")  # fmt: skip
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="checkpoint -> model bundle (needs the export extra)")
    export.add_argument("checkpoint", help="a run's final.pt or best.pt")
    export.add_argument("--out", required=True, help="bundle folder to write")
    export.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    export.add_argument("--quantization", choices=["dynamic", "static"], default="dynamic")
    export.add_argument("--sparsity", type=float, default=0.0, help="global magnitude pruning before conversion")
    export.add_argument("--calibration", help="flow file for static calibration (default: the run's data)")
    export.add_argument("--calibration-size", type=int, default=1024)
    export.add_argument("--compression", choices=COMPRESSIONS, default="xz",
                        help="store the model files xz-compressed (default) or as plain .tflite")
    export.add_argument("--capacities", type=int, nargs="+",
                        help="host-graph bundles: flows (and hosts) per window of each model (default: from the "
                             "run's windowing)")  # fmt: skip
    export.set_defaults(run=_export)
    run = commands.add_parser("serve", help="flow records -> verdicts (numpy + LiteRT only)")
    run.add_argument("--bundle", required=True)
    run.add_argument("--source", required=True,
                     help="UNSW-NB15 CSV (partitioned or raw) or Zeek conn log (tab-separated or CSV export)")
    run.add_argument("--format", default="auto", choices=FORMATS)
    run.add_argument("--follow", action="store_true", help="keep reading a growing file, like tail -f")
    run.add_argument("--idle-exit", type=float, default=0.0, help="following: stop after this many idle seconds")
    run.add_argument("--batch", type=int, default=256)
    run.add_argument("--variant", choices=["fp32", "int8"], help="default: the bundle's default model")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--out", help="append flow verdicts to this file (default: stdout)")
    run.add_argument("--host-sink", action="append",
                     help="stdout (default), file:PATH, sdn:URL or '' for none; repeat it for several sinks, which "
                          "get each host verdict in the order given")  # fmt: skip
    run.add_argument("--window", type=float, default=60.0,
                     help="host window, seconds (host-graph bundles: seconds between re-assertions)")
    run.add_argument("--min-flows", type=int, default=10,
                     help="flows a host must send in the window to be judged (host-graph bundles too)")
    run.add_argument("--release-windows", type=int, default=3,
                     help="host-graph bundles: consecutive judged windows not flagged that release a host")
    run.add_argument("--graph-lateness", type=float, default=None,
                     help="host-graph bundles: seconds a window stays open for late flows (default 60)")
    run.add_argument("--isolate-share", type=float, default=0.8)
    run.add_argument("--release-share", type=float, default=0.2)
    run.set_defaults(run=_serve)
    verify = commands.add_parser("verify", help="check a bundle's files against its manifest")
    verify.add_argument("--bundle", required=True)
    verify.set_defaults(run=_verify)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
