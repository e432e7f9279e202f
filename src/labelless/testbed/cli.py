"""The ``testbed`` subcommand: draw task suites, check a task file; ``labelless.cli`` calls
:func:`add_commands`."""

from __future__ import annotations

import argparse


def cmd_suite(args) -> None:
    from labelless.testbed import ensure_testbed
    from labelless.testbed.calibrate import load_model
    from labelless.testbed.suite import draw_suite, write_suite

    lo, hi = args.zs_range
    tb = ensure_testbed()
    print(f"drawing {args.n} tasks (seed {args.seed}), zero-shot with descriptions in [{lo}, {hi}]% "
          f"on {args.measure} val images")
    tasks = draw_suite(args.seed, args.n, load_model(tb), prefix=args.prefix, zs_range=(lo, hi),
                       n_measure=args.measure)
    paths = write_suite(tasks, args.out, args.seed)
    for t, p in zip(tasks, paths):
        print(f"{p}  mode={t.mode:<8} difficulty={t.difficulty:.2f}  zero-shot val {t.zero_shot_val:.1f}%")


def cmd_check(args) -> None:
    from labelless.testbed import ensure_testbed
    from labelless.testbed.calibrate import load_model
    from labelless.testbed.suite import zero_shot_val
    from labelless.testbed.taskfile import load_task_file, one_attribute_neighbours

    cfg = load_task_file(args.task)
    print(f"{args.task}: valid; {len(cfg.classes)} classes, world seed {cfg.world.seed}, "
          f"splits train/val/test {cfg.n_train}/{cfg.n_val}/{cfg.n_test}")
    for (name, *attrs), nb in zip(cfg.classes, one_attribute_neighbours(cfg.classes).values()):
        print(f"  {name:<16} {' '.join(attrs):<28} neighbours: {', '.join(nb)}")
    if args.zero_shot:
        zs = zero_shot_val(cfg, load_model(ensure_testbed()), args.measure)
        print(f"zero-shot with descriptions, first {min(args.measure, cfg.n_val)} val images: {zs:.1f}%")


def add_commands(sub) -> None:
    t = sub.add_parser("testbed", help="testbed task files: draw a task suite, check a task file")
    tsub = t.add_subparsers(dest="testbed_command", required=True)
    s = tsub.add_parser("suite", help="draw N task files (new classes, world seeds, difficulties)")
    s.add_argument("--seed", type=int, required=True, help="suite seed (a new seed = a new suite)")
    s.add_argument("--n", type=int, default=6, help="number of tasks (modes cycle: texture, shape, "
                   "colour, mixed)")
    s.add_argument("--out", required=True, help="folder for the task files")
    s.add_argument("--prefix", default="task", help="task file name prefix")
    s.add_argument("--zs-range", type=float, nargs=2, default=(25.0, 65.0), metavar=("LOW", "HIGH"),
                   help="accepted zero-shot top-1 (%%) with descriptions on val (default 25 65)")
    s.add_argument("--measure", type=int, default=300, help="val images the zero-shot check renders")
    s.set_defaults(func=cmd_suite)
    c = tsub.add_parser("check", help="validate a task file and show its classes")
    c.add_argument("task", help="a task file (YAML)")
    c.add_argument("--zero-shot", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure zero-shot with descriptions on val images (builds the model)")
    c.add_argument("--measure", type=int, default=300)
    c.set_defaults(func=cmd_check)
