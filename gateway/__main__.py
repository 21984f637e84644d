"""``python -m gateway``: export a model bundle (torch side) or serve verdicts from one (numpy + LiteRT only).

    python -m gateway export outputs/federated/RUN/final.pt --out bundles/v1 [--sparsity 0.5] [--quantization static]
    python -m gateway serve --bundle bundles/v1 --source capture.conn.log [--follow] [--host-sink file:hosts.jsonl]
    python -m gateway verify --bundle bundles/v1 [--public-key operator.pub]
    python -m gateway keygen --private operator.key --public operator.pub
    python -m gateway sign --bundle bundles/v1 --key operator.key
    python -m gateway install --from bundles/v1 --root /var/lib/botdefender --public-key operator.pub
    python -m gateway serve --bundle /var/lib/botdefender/current --public-key operator.pub --follow ...
"""

from __future__ import annotations

import argparse
import json
import logging
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
    from gateway.bundle import BundleError
    from gateway.export import ExportError, ExportOptions, calibration_rows, export_bundle

    try:
        options = ExportOptions(batch_sizes=tuple(args.batch_sizes), quantization=args.quantization,
                                sparsity=args.sparsity, compression=args.compression,
                                capacities=tuple(args.capacities) if args.capacities else None,
                                release=args.release)  # fmt: skip
        if args.sign_key:
            from gateway.signing import load_private_key

            load_private_key(args.sign_key)  # a bad key fails before the conversion, not after
        rows = calibration_rows(args.checkpoint, args.calibration, args.calibration_size) \
            if args.quantization == "static" else None
        manifest = export_bundle(args.checkpoint, args.out, options, calibration=rows)
        if args.sign_key:
            from gateway.signing import sign_bundle

            sign_bundle(args.out, args.sign_key)
    except (ExportError, BundleError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{key} {_size(entry)}" for key, entry in sorted(manifest["models"].items()))
    print(f"bundle {args.out}: model version {manifest['model_version']}, release {manifest['release']}; {sizes}; "
          f"sparsity {manifest['pruning']['achieved_sparsity']:.2f}{'; signed' if args.sign_key else ''}")  # fmt: skip
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gateway.bundle import BundleError
    from gateway.encode import SchemaMismatchError
    from gateway.graph_hosts import GraphHostPolicy
    from gateway.hosts import HostPolicy
    from gateway.serve import serve
    from gateway.sources import SourceError

    switch_log = logging.getLogger("gateway.switch")  # switches and refused bundles, one line each on stderr
    if not switch_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        switch_log.addHandler(handler)
        switch_log.setLevel(logging.INFO)
        switch_log.propagate = False
    out = open(args.out, "a", encoding="utf-8") if args.out else None
    try:
        policy = HostPolicy(window=args.window, min_flows=args.min_flows, isolate_share=args.isolate_share,
                            release_share=args.release_share)  # fmt: skip
        graph_policy = GraphHostPolicy(min_flows=args.min_flows, release_windows=args.release_windows,
                                       reassert=args.window)  # fmt: skip
        report = serve(args.bundle, args.source, fmt=args.format, follow=args.follow, idle_exit=args.idle_exit,
                       batch_size=args.batch, variant=args.variant, out=out, host_sink=args.host_sink or ["stdout"],
                       policy=policy, num_threads=args.threads, graph_policy=graph_policy,
                       graph_lateness=args.graph_lateness, public_key=args.public_key,
                       switch_interval=args.switch_interval)  # fmt: skip
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
        if args.public_key:
            from gateway.signing import verify_bundle_signature

            verify_bundle_signature(args.bundle, args.public_key)
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
    print(f"ok: {bundle.path} model version {bundle.model_version}, release {bundle.release}, "
          f"{len(bundle.manifest['files'])} files verified, {len(bundle.manifest['models'])} models load "
          f"({', '.join(variants)}){'; signature verified' if args.public_key else ''}")  # fmt: skip
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from gateway.bundle import BundleError
    from gateway.signing import generate_signing_key

    try:
        private, public = generate_signing_key(args.private, args.public, overwrite=args.force)
    except (BundleError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"signing key {private} (keep it on the operator machine), public key {public} (pin it on the gateways)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from gateway.bundle import BundleError
    from gateway.signing import sign_bundle

    try:
        path = sign_bundle(args.bundle, args.key)
    except (BundleError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"signed: {path}")
    return 0


def _install(args: argparse.Namespace) -> int:
    from gateway.bundle import BundleError
    from gateway.install import install_bundle, pack_bundle

    try:
        result = install_bundle(pack_bundle(args.source), args.root, args.public_key)
    except (BundleError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{result.message}; {args.root}/current -> {result.path}")
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
    export.add_argument("--release", type=int,
                        help="the bundle's release number (default: milliseconds since the epoch now)")
    export.add_argument("--sign-key", help="sign the bundle with this Ed25519 private key (python -m gateway keygen)")
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
    run.add_argument("--public-key", help="pinned Ed25519 public key: serve and switch to signed bundles only")
    run.add_argument("--switch-interval", type=float, default=1.0,
                     help="following: seconds between looks at whether --bundle (a link such as ROOT/current) "
                          "points at a newly installed bundle")  # fmt: skip
    run.set_defaults(run=_serve)
    verify = commands.add_parser("verify", help="check a bundle's files against its manifest")
    verify.add_argument("--bundle", required=True)
    verify.add_argument("--public-key", help="also check the bundle's signature with this public key")
    verify.set_defaults(run=_verify)
    keygen = commands.add_parser("keygen", help="write the operator's Ed25519 key pair for signing bundles")
    keygen.add_argument("--private", required=True, help="private key file to write (mode 0600)")
    keygen.add_argument("--public", required=True, help="public key file to write (copy it to the gateways)")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    keygen.set_defaults(run=_keygen)
    sign = commands.add_parser("sign", help="sign a bundle's manifest (writes manifest.sig)")
    sign.add_argument("--bundle", required=True)
    sign.add_argument("--key", required=True, help="the operator's Ed25519 private key")
    sign.set_defaults(run=_sign)
    install = commands.add_parser("install", help="verify a signed bundle and make it ROOT/current")
    install.add_argument("--from", dest="source", required=True, help="the bundle folder to install")
    install.add_argument("--root", required=True, help="the gateway's install root (releases/, current)")
    install.add_argument("--public-key", required=True, help="the pinned Ed25519 public key")
    install.set_defaults(run=_install)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
