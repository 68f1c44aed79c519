"""The ``pss`` command line: demo, doctor, group, train, eval, predict, runs, report, experiment.

Every command is a thin wrapper over ``pss.api`` / the engine; errors of type ``PssError`` are printed
as one clear line (exit code 2), never as a traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from pss.errors import ConfigError, PssError, explain_os_error
from pss.status import Status
from pss.workspace import Workspace

DEFAULT_WORKSPACE = "pss-workspace"


def _progress_bar(desc: str) -> tuple[Callable[[float, str], None], tqdm]:
    bar = tqdm(total=100, desc=desc, dynamic_ncols=True, bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    def update(fraction: float, message: str) -> None:
        bar.update(max(0, int(round(fraction * 100)) - bar.n))
        bar.set_postfix_str(message[:60], refresh=True)
    return update, bar


def cmd_demo(args: argparse.Namespace) -> int:
    from pss.data.demo import DemoConfig, generate_demo

    config = DemoConfig()
    for field in ("num_source", "num_users", "images_per_user"):
        if getattr(args, field) is not None:
            setattr(config, field, getattr(args, field))
    update, bar = _progress_bar("demo")
    summary = generate_demo(Path(args.out), seed=args.seed, config=config, progress=update)
    bar.close()
    labelled = sum(summary.labelled_per_user.values())
    print(f"wrote {summary.source_images} source images and {len(summary.users)} users "
          f"({sum(summary.images_per_user.values())} images, {labelled} labelled) to {summary.root} "
          f"in {summary.seconds:.1f} s")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from pss.data.validate import check_root, format_problems

    update, bar = _progress_bar("checking")
    problems = check_root(Path(args.root), progress=update)
    bar.close()
    if not problems:
        print(f"{args.root}: no problems found")
        return 0
    print(format_problems(problems))
    print(f"{len(problems)} problem(s) found in {args.root}")
    return 1


def cmd_group(args: argparse.Namespace) -> int:

    from pss.api import data as api
    from pss.grouping import export_cluster_list

    ws = api.open_workspace(Path(args.workspace))
    users = [args.user] if args.user else api.list_users(ws)
    for user in users:
        update, bar = _progress_bar(f"group {user}")
        result = api.compute_grouping(ws, user, k=args.k, seed=args.seed, device=args.device, progress=update)
        bar.close()
        if args.export:
            print(f"wrote {export_cluster_list(result, ws.personal / user)}")
        sizes = result.sizes()
        print(f"{user}: {len(result.names)} images in {result.k} groups (asked {result.k_requested}); "
              f"group sizes min {sizes.min()} / median {int(sorted(sizes)[len(sizes) // 2])} / max {sizes.max()}"
              + (f"; {len(result.skipped)} skipped (no group):" if result.skipped else ""))
        for name in result.skipped:
            print(f"  skipped {name}: {result.skip_reasons.get(name, 'unreadable')}; fix or remove the file and "
                  "group again")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pss.api import runs as api
    from pss.engine.distributed import init_from_env, shutdown

    ws = Workspace(Path(args.workspace))
    # under torchrun: join the process group (one process per GPU, or gloo on CPU); else the single process
    dist, device = init_from_env(args.device)
    if args.resume:
        outcome = api.resume_run(ws, args.resume, device=device, dist=dist)
    else:
        overrides = list(args.set or [])
        for flag, key in (("method", "method.name"), ("user", "data.user"), ("steps", "train.steps"),
                          ("init_from", "train.init_from"), ("context", "model.context.mode")):
            if getattr(args, flag) is not None:
                overrides.append(f"{key}={getattr(args, flag)}")
        config = api.make_config(ws, args.config, overrides)
        outcome = api.train(ws, config, device=device, run_id=args.run_id, dist=dist)
    shutdown(dist)  # after a failure the process just exits: leaving a group whose peer died can block
    if not dist.is_main:  # rank 0 reports for the run
        return 0 if outcome.status == Status.DONE else 1
    print(f"run {outcome.run_id}: {outcome.status} in {outcome.seconds:.0f} s")
    if outcome.report is not None:
        print(f"  FIoU {outcome.report.fiou * 100:.2f}  MIoU(pss) {outcome.report.miou['pss'] * 100:.2f}  "
              f"MIoU(present) {outcome.report.miou['present'] * 100:.2f}  "
              f"({outcome.report.num_images} labelled images)")
    return 0 if outcome.status == Status.DONE else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from pss.api import runs as api

    report = api.evaluate_run(Workspace(Path(args.workspace)), args.run, user=args.user, device=args.device)
    print(api.format_report(report))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pss.api import runs as api

    written = api.predict_images(Workspace(Path(args.workspace)), args.run, [Path(p) for p in args.images],
                                 Path(args.out), device=args.device)
    for path in written:
        print(path)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from pss.api import runs as api

    ws = Workspace(Path(args.workspace))
    if args.delete:
        api.delete_run(ws, args.delete)
        print(f"deleted run {args.delete}")
        return 0
    if args.show:
        print(api.describe_run(ws, args.show))
        return 0
    print(api.runs_table(ws, user=args.user, method=args.method, status=args.status,
                         search=args.search).to_string(index=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pss.api import runs as api

    tables = api.results_tables(Workspace(Path(args.workspace)), methods=args.methods, users=args.users)
    for metric, table in tables.items():
        print(f"\n{metric} (%), latest finished run per method and user; MIoU convention: "
              f"{'pss (21 classes, absent = 0)' if metric.startswith('MIoU') else 'per-image foreground IoU'}")
        print(api.table_to_markdown(table) if args.format == "md" else table.to_csv())
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from pss.experiments import ExperimentOptions, run_experiment

    if args.table == "annotate-curve":
        return _annotate_curve(args)
    if args.table == "weak":  # the user's tags as supervision (issue 17)
        return _weak(args)
    opts = ExperimentOptions(table=args.table, users=args.users, methods=args.methods, steps=args.steps,
                             source_steps=args.source_steps, seeds=args.seeds, one_start=args.one_start,
                             bootstrap=args.bootstrap, start=args.start, preset=args.preset,
                             device=args.device, tag=args.tag or "tables", jobs=args.jobs, backend=args.backend,
                             address=args.address)
    try:
        result = run_experiment(Workspace(Path(args.workspace)), opts)
    except KeyboardInterrupt:
        print("interrupted: queued and running cells were cancelled; run the same command again to resume "
              "(finished cells are reused, stopped ones resumed from their last checkpoint)", file=sys.stderr)
        return 130
    print(f"tables written to {result.out_dir}")
    return 0 if not result.failed else 1


def _weak(args: argparse.Namespace) -> int:
    """``pss experiment weak``: the tags pipelines' Table 1 rows and their pseudo-mask quality (issue 17)."""
    from pss.experiments.weak_quality import WeakOptions, run_weak

    opts = WeakOptions(start=args.start, users=args.users, seeds=args.seeds, steps=args.steps,
                       saliency_steps=args.saliency_steps, cam_steps=args.cam_steps,
                       affinity_steps=args.affinity_steps, cam_plain=not args.no_cam_plain, rows=args.methods,
                       preset=args.preset, device=args.device,
                       tag=args.tag or "weak", jobs=args.jobs, bootstrap=args.bootstrap)
    try:
        result = run_weak(Workspace(Path(args.workspace)), opts)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume (finished cells are reused)", file=sys.stderr)
        return 130
    print(f"tables and mask quality written to {result.out_dir}")
    return 0 if not result.tables.failed else 1


def _annotate_curve(args: argparse.Namespace) -> int:
    from pss.experiments.annotate_curve import COUNTS, CURVE, CurveOptions, run_annotate_curve

    if not args.start:
        raise ConfigError("annotate-curve fine-tunes a finished run: give it with --start RUN (a converged "
                          "context-free No-DA run of the user, e.g. `pss train --method source_only --context none`)")
    opts = CurveOptions(start=args.start, users=args.users, counts=tuple(args.counts or COUNTS),
                        orders=tuple(args.orders), steps=args.steps or 50, seeds=args.seeds, weight=args.weight,
                        method=args.curve_method, preset=args.preset, device=args.device, tag=args.tag or CURVE,
                        jobs=args.jobs)
    result = run_annotate_curve(Workspace(Path(args.workspace)), opts)
    print(f"curve written to {result.out_dir}")
    return 0 if not result.failed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pss", description="Personalized semantic segmentation workbench")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def workspace_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workspace", "-w", default=DEFAULT_WORKSPACE,
                       help=f"workspace folder with data/, runs/, cache/ (default: ./{DEFAULT_WORKSPACE})")

    def device_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")

    from pss.methods import METHODS  # the registry: `pss train --help` lists what can be trained
    from pss.models.context import CONTEXT_MODES

    method_help = "the method (default: the preset's): " + ", ".join(
        name + (f" (starts from a {cls.starts_from} run: --init-from RUN)" if cls.starts_from else "")
        for name, cls in METHODS.items())

    p = sub.add_parser("demo", help="write the embedded demo (VOC + PSS layouts)")
    p.add_argument("--out", required=True, help="output data root (e.g. pss-workspace/data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-source", dest="num_source", type=int)
    p.add_argument("--num-users", dest="num_users", type=int)
    p.add_argument("--images-per-user", dest="images_per_user", type=int)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("doctor", help="report every problem in a data root, VOC root, personal root or user folder")
    p.add_argument("root")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("group", help="k-means groups (+ UMAP view) of each user's images, cached")
    workspace_arg(p)
    device_arg(p)
    p.add_argument("--user", help="one user (default: all)")
    p.add_argument("--k", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", action="store_true", help="also write <user>/train_cluster<K>.txt")
    p.set_defaults(func=cmd_group)

    p = sub.add_parser("train", help="train one run (a method on one user)")
    workspace_arg(p)
    device_arg(p)
    p.add_argument("--config", "-c", default="demo", help="preset name (demo, paper, tiny) or YAML file")
    p.add_argument("--method", choices=list(METHODS), metavar="METHOD", help=method_help)
    p.add_argument("--user")
    p.add_argument("--steps", type=int)
    p.add_argument("--context", choices=list(CONTEXT_MODES))
    p.add_argument("--init-from", dest="init_from", help="run id or checkpoint whose weights start this run")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override, e.g. train.lr=0.01")
    p.add_argument("--run-id", dest="run_id", help="use this run id (the app's job worker pre-creates runs)")
    p.add_argument("--resume", metavar="RUN", help="resume RUN from its latest checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's final model on its user (or another)")
    workspace_arg(p)
    device_arg(p)
    p.add_argument("run")
    p.add_argument("--user")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="predict images with a run's model (palette PNG + entropy PNG)")
    workspace_arg(p)
    device_arg(p)
    p.add_argument("run")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("runs", help="list, show or delete runs")
    workspace_arg(p)
    p.add_argument("--user")
    p.add_argument("--method")
    p.add_argument("--status")
    p.add_argument("--search", help="substring of the run id, user, method, status, device or config (e.g. a tag)")
    p.add_argument("--show", metavar="RUN")
    p.add_argument("--delete", metavar="RUN")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("report", help="per-user FIoU / MIoU tables (rows methods, columns users) like Tables 1-2")
    workspace_arg(p)
    p.add_argument("--methods", nargs="*")
    p.add_argument("--users", nargs="*")
    p.add_argument("--format", choices=["md", "csv"], default="md")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("experiment", help="run the experiment behind a paper table (resumable) and write the table",
                       description="table1 = Tables 1 (FIoU) and 2 (MIoU): every method on every user; table3 = "
                       "context none/global/group; table4 = K in {1, 10, 80, 200}; table5 = personal / mixed "
                       "training sets. Runs start from one shared No-DA model; finished runs are reused and "
                       "interrupted ones resumed. Output: WORKSPACE/experiments/TABLE/. annotate-curve = label "
                       "efficiency on the demo: reveal the hidden masks of 0/5/10/20/40 unlabelled images in "
                       "'annotate next' (uncertainty) or random order, fine-tune --start with "
                       "train.annotated_weight, score on the evaluation images (pss.experiments.annotate_curve).")
    workspace_arg(p)
    device_arg(p)
    p.add_argument("table", choices=["table1", "table3", "table4", "table5", "annotate-curve", "weak"])
    p.add_argument("--users", nargs="+", help="users (default: all)")
    p.add_argument("--methods", nargs="+", metavar="ROW",
                   help="rows to run (table1: source_only adaptseg maxsquare fda fda_ssl advent mrnet_s1 mrnet pss "
                   "pss_s2; table3: none global group; table4: k1 k10 k80 k200; table5: mix_sample mix_all personal)")
    p.add_argument("--steps", type=int, help="steps of every adaptation run (default: a third of the preset's "
                   "train.steps: they fine-tune the shared No-DA model; demo: 100)")
    p.add_argument("--source-steps", dest="source_steps", type=int,
                   help="steps of the shared No-DA runs (default: the preset's train.steps; demo: 300)")
    p.add_argument("--jobs", type=int, help="users trained in parallel processes, each with cpu_count/jobs "
                   "threads (default: 2 on a CPU, 1 on CUDA); with --backend ray and no --address: the CPUs of the "
                   "local Ray (default: all)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (mean ± std over seeds when > 1)")
    p.add_argument("--one-start", dest="one_start", action="store_true",
                   help="every seed starts from the first seed's No-DA model (seeds vary the adaptation runs and "
                   "their controls, not the start; saves one No-DA training per extra seed)")
    p.add_argument("--start", metavar="RUN", help="a finished context-free No-DA run to start every row and seed "
                   "from, instead of training the shared No-DA model (implies --one-start)")
    p.add_argument("--bootstrap", type=int, default=2000,
                   help="paired-bootstrap resamples behind each gain's 95%% interval (default 2000)")
    p.add_argument("--preset", default="demo", help="config preset (demo, paper, tiny) or YAML file")
    p.add_argument("--tag", help="label of this experiment's runs (reuse is per tag; default: tables, or "
                   "annotate-curve)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="where the cells run: local processes (default) or Ray tasks (pip install \"pss[cluster]\"); "
                   "with ray every node must see the workspace at the same path (a shared filesystem)")
    p.add_argument("--address", help="the Ray cluster to submit to, from one of its nodes: HEAD:6379, or auto "
                   "(the one `ray start` started here); default: start a local Ray with --jobs CPUs (default all)")
    curve = p.add_argument_group("annotate-curve")
    curve.add_argument("--counts", type=int, nargs="+", help="numbers of annotated images (default 0 5 10 20 40)")
    curve.add_argument("--orders", nargs="+", choices=["uncertainty", "random"], default=["uncertainty", "random"])
    curve.add_argument("--weight", type=float, default=1.0, help="train.annotated_weight of the annotated cells")
    curve.add_argument("--method", dest="curve_method", default="source_only",
                       help="the method every cell fine-tunes with (default source_only: No-DA continued)")
    # the user's tags as supervision (issue 17)
    weak = p.add_argument_group("weak", "weak = the tags pipelines (EPS, EPS + AffinityNet, OURS-S2 + tags) as "
                                "Table 1 rows and the quality of their pseudo masks (pss.experiments.weak_quality); "
                                "rows: eps_seg eps_affinity pss_s2 pss_s2_tags (and source_only noda_cont)")
    weak.add_argument("--saliency-steps", dest="saliency_steps", type=int, help="steps of the saliency stage")
    weak.add_argument("--cam-steps", dest="cam_steps", type=int, help="steps of the EPS (CAM) stage")
    weak.add_argument("--affinity-steps", dest="affinity_steps", type=int, help="steps of the AffinityNet stage")
    weak.add_argument("--no-cam-plain", dest="no_cam_plain", action="store_true",
                      help="do not train the plain CAM baseline (the mask-quality table's CAM row)")
    p.set_defaults(func=cmd_experiment)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except PssError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full workspace: say what to do, not just "[Errno 1]"
        print(f"error: {explain_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
