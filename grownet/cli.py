"""grownet's command line: a table of subcommands, each a thin layer over a public function.

Adding a subcommand takes a few lines: a :class:`Command` subclass with ``name``, ``help``,
``add_arguments`` and ``run`` (which calls the public function), appended to ``COMMANDS``.
:func:`main` turns every :class:`~grownet.errors.GrownetError` into one line
``grownet: error: ...`` on stderr and exit status 2 (a traceback only with ``--debug``);
and every OSError (permissions, a full disk) the same way; argparse usage errors exit 2 too,
Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from typing import Any, ClassVar, Mapping, NoReturn, Sequence

from ._version import __version__
from .errors import GrownetError, UsageError
from .progress import Reporter, RichReporter, TicketReporter
from .recipe import Recipe, default_recipe, load_recipe, recipe_keys, recipe_names
from .validate import MAX_INT, check_text, cut

__all__ = [
    "Command",
    "SearchCommand",
    "COMMANDS",
    "RichReporter",
    "main",
    "build_parser",
    "add_recipe_arguments",
    "recipe_overrides",
    "recipe_from_args",
]

logger = logging.getLogger("grownet")

#: Short flags for recipe keys the issue names; every key also has its ``--section.key`` flag.
_ALIASES = {
    "model.seed_arch": "--seed-arch",
    "budget.max_macs": "--max-macs",
    "budget.max_params": "--max-params",
    "budget.time_budget": "--time-budget",
    "budget.max_rounds": "--max-rounds",
}


class Command:
    """One subcommand: ``add_arguments`` declares its flags, ``run`` calls a public function
    and returns the exit status."""

    name: ClassVar[str]
    help: ClassVar[str]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:  # pragma: no cover - interface
        pass

    def run(self, args: argparse.Namespace) -> int:  # pragma: no cover - interface
        raise NotImplementedError


# ---- numeric flags ---------------------------------------------------------------------------


def _integer(low: int | None = None, high: int = MAX_INT) -> Any:
    """An argparse ``type``: a decimal integer in ``[low, high]`` (64-bit by default), refused
    as one short line otherwise (a 5,000-digit number is neither echoed nor converted)."""

    def parse(text: str) -> int:
        kind = "a non-negative integer" if low == 0 else "an integer" if low is None else f"an integer >= {low}"
        value = int(text) if re.fullmatch(r"\s*[-+]?\d{1,40}\s*", text) else None
        if value is None or value > high or (low is not None and value < low) or value < -MAX_INT - 1:
            raise argparse.ArgumentTypeError(f"must be {kind} <= {high}, got {cut(text, 40)!r}")
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def _arm_list(text: str) -> tuple[str, ...]:
    """An argparse ``type``: comma-separated names (checked where they are used)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


# ---- recipe flags -----------------------------------------------------------------------------


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """``--recipe PATH`` and one ``--section.key VALUE`` flag per recipe key (generated from
    the schema, so none is forgotten), plus the short aliases in ``_ALIASES``."""
    parser.add_argument("--recipe", metavar="NAME|PATH",
                        help=f"a bundled recipe ({', '.join(recipe_names())}) or a recipe TOML file "
                             "(default: search picks the bundled recipe for its device; other commands the reference setup)")
    group = parser.add_argument_group("recipe keys (override the recipe; see grownet/recipes/*.toml for their meaning)")
    for spec in recipe_keys():
        flags = [f"--{spec.path}"]
        if spec.path in _ALIASES:
            flags.insert(0, _ALIASES[spec.path])
        metavar = {"int": "N", "float": "X", "bool": "BOOL", "str": "S"}[spec.kind]
        if spec.choices:
            metavar = "{" + ",".join(spec.choices) + "}"
        elif spec.per_stage:
            metavar = f"{metavar}[,{metavar}...]"
        rng = spec.range_text()
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        text = f"{spec.help} (default {default}{'; ' + rng if rng and not spec.choices else ''})"
        group.add_argument(*flags, dest=f"recipe:{spec.path}", metavar=metavar, default=None, help=text.replace("%", "%%"))


def recipe_overrides(args: argparse.Namespace) -> dict[str, str]:
    """``{dotted key: text}`` for every recipe flag given on the command line."""
    prefix = "recipe:"
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe a command line asks for: ``--recipe`` (or the defaults) with every recipe
    flag applied. Raises ConfigError naming the key."""
    recipe = load_recipe(args.recipe) if args.recipe else Recipe()
    return recipe.with_overrides(recipe_overrides(args))


# ---- search -------------------------------------------------------------------------------------


class SearchCommand(Command):
    name = "search"
    help = "grow a compact net on a dataset (the main job); writes a run folder"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dataset", help="cifar10, cifar100, svhn, mnist, fashion-mnist, folder:PATH or npz:PATH (default cifar10; on --resume the run's own)")
        parser.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset (e.g. ../shared/data)")
        parser.add_argument("--out", metavar="DIR", help="run folder (default runs/<dataset>-<time>)")
        parser.add_argument("--seed", type=_integer(0), help="random seed (default 0; a resumed run keeps its own)")
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        mode.add_argument("--force", action="store_true", help="overwrite an existing run folder")
        parser.add_argument("--ddp", nargs="?", const=0, type=_integer(0, 1024), metavar="N",
                            help="data-parallel training (DistributedDataParallel): --ddp N starts N local processes; "
                                 "under torchrun (torchrun --nproc_per_node N -m grownet search ...) it is on by itself")
        add_recipe_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from .distributed import init_distributed, launch, launched_by_torchrun
        from .search import search

        # data-parallel: start N local processes running this command, or join torchrun's group
        if args.ddp is not None and not launched_by_torchrun():
            if args.ddp < 2:
                from .errors import UsageError

                raise UsageError("--ddp: give the number of processes (--ddp N, N >= 2), or start the processes with "
                                 "torchrun --nproc_per_node N -m grownet search ...")
            launch(main, args.ddp, _without_ddp(args.argv))
            return 0
        dist, device = init_distributed(args.device) if launched_by_torchrun() else (None, args.device)
        if dist is not None and not dist.is_main:
            logger.setLevel(logging.WARNING)  # rank 0 reports
        overrides = recipe_overrides(args)
        recipe: Recipe | str | None = args.recipe
        said = f"recipe {recipe} (given with --recipe)" if recipe else "the run's own recipe (resumed)" if args.resume else ""
        if recipe is None and not args.resume:  # a resumed run keeps its own recipe
            from .train import resolve_device

            dev = resolve_device(device)
            recipe, why = default_recipe(dev)
            if "model.seed_arch" in overrides:  # the user's own seed: the default recipe's seed shape is not for it
                overrides = {"model.seed_width": "0", "model.seed_depths": "0", **overrides}
            said = f"recipe {recipe} (no --recipe given; {why})"
        reporter: Reporter | None = None
        if dist is None or dist.is_main:  # rank 0 reports
            if not args.quiet:
                reporter = RichReporter(args.console, recipe=said)  # the plan says it
            elif args.recipe is None and not args.resume:
                reporter = _SayFirst(args, said)
        ended = False
        try:
            status = self._search(search, args, recipe, overrides, reporter, dist, device)
            ended = True
            return status
        finally:
            if dist is not None:
                dist.close(wait=ended)  # after an error another rank may never arrive: no barrier then

    def _search(self, search: Any, args: argparse.Namespace, recipe: Any, overrides: Any, reporter: Any, dist: Any,
                device: str) -> int:
        result = search(
            args.dataset,
            recipe=recipe,
            overrides=overrides,
            out=args.out,
            data_dir=args.data_dir,
            seed=args.seed,
            device=device,
            resume=args.resume,
            force=args.force,
            reporter=reporter,
            command=_command_line(args.argv),
            dist=dist,
        )
        if args.quiet and (dist is None or dist.is_main):
            logger.info("done: %s", result.run_dir)
        return 0


class _SayFirst(Reporter):
    """A search reporter (``--quiet``) that only says ``line`` when the run starts (in the log
    and the run's grownet.log). Said at the start, not before the call, so that a refused start
    stays one line on the console."""

    def __init__(self, args: argparse.Namespace, line: str) -> None:
        self._args, self._line = args, line

    def start(self, **kwargs: Any) -> None:
        _say(self._args, self._line)


def _without_ddp(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--ddp N`` (the started processes find torchrun's variables)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--ddp":
            skip = True
        elif not a.startswith("--ddp="):
            out.append(a)
    return out


#: The subcommands, in ``--help`` order. Other modules' commands are appended here.
COMMANDS: list[type[Command]] = [SearchCommand]


# ---- entry point --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other grownet error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"grownet: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``grownet`` parser with one subparser per entry of :data:`COMMANDS`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="logs only: no progress bars or tables")
    common.add_argument("--debug", action="store_true", help="debug logging; show tracebacks of errors")
    parser = _Parser(prog="grownet", description="Grow compact CNNs with DessiLBI structural sparsity.")
    parser.add_argument("--version", action="version", version=f"grownet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cls in COMMANDS:
        cmd = cls()
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common])
        cmd.add_arguments(p)
        p.set_defaults(handler=cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``grownet`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for arg in argv:  # a path that is not UTF-8 (valid on Linux) is refused before any work
        try:
            check_text(arg, "argument", error=UsageError)
        except UsageError as exc:
            print(f"grownet: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        names = ", ".join(cls.name for cls in COMMANDS)
        print(f"grownet: error: choose a command: {names} (see grownet --help)", file=sys.stderr)
        return 2
    args.argv = argv
    args.console = None if args.quiet else _console()
    handler, old_level = _console_logging(args.console, debug=args.debug)
    try:
        return int(args.handler.run(args) or 0)
    except (GrownetError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"grownet: error: {_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if args.debug:
            traceback.print_exc()
        print(f"grownet: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def _error_text(exc: GrownetError | OSError) -> str:
    """The one line a refusal prints: a GrownetError's own message; for an OSError (the file
    system refused: permissions, a full disk, a file in the way) its path and reason."""
    if isinstance(exc, GrownetError):
        return str(exc)
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}; check the path and its permissions and free space"


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _console_logging(console: Any, *, debug: bool) -> tuple[logging.Handler, int]:
    """A console handler on the ``grownet`` logger for one command: every INFO line when
    there is no rich console (``--quiet``: logs only), warnings otherwise (the progress bars
    and tables show the rest); DEBUG with ``--debug``. Returns the handler and the logger's
    previous level."""
    level = logging.DEBUG if debug else logging.INFO
    if console is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler.setLevel(level)
    else:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, show_time=False)
        handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    handler.addFilter(lambda record: not getattr(record, "file_only", False))  # main() prints errors itself
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler, old_level


def _command_line(argv: Sequence[str]) -> str:
    import shlex

    return " ".join(["grownet", *map(shlex.quote, argv)])


# ---- ticket -------------------------------------------------------------------------------------


class TicketCommand(Command):
    name = "ticket"
    help = "train a net with DessiLBI, prune it to Γ's support (a winning ticket), fine-tune it, compare"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        net = parser.add_mutually_exclusive_group()
        net.add_argument("--arch", metavar="ARCH.json", help="architecture JSON of the net to train")
        net.add_argument("--preset", metavar="NAME", help="a preset of grownet.seeds, e.g. vgg16 or resnet56 "
                         "(default: the recipe's model.seed_arch)")
        parser.add_argument("--dataset", help="cifar10, cifar100, svhn, mnist, fashion-mnist, folder:PATH or npz:PATH (default cifar10; on --resume the run's own)")
        parser.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset (e.g. ../shared/data)")
        parser.add_argument("--epochs", type=_integer(), required=True, metavar="E", help="DessiLBI epochs of the dense net")
        parser.add_argument("--at-epoch", type=_integer(), metavar="K", help="take the ticket at epoch K (default: E)")
        parser.add_argument("--finetune-epochs", type=_integer(), metavar="F",
                            help="fine-tune epochs of the ticket and of the fresh control (default: finetune.epochs)")
        parser.add_argument("--fold", default="mean", choices=("mean", "interior", "none"),
                            help="how removed filters' constants reach 3x3 consumers' BatchNorm: averaged over "
                                 "positions, exact away from the border, or not at all (default mean)")
        parser.add_argument("--out", metavar="DIR", help="output folder (default runs/ticket-<dataset>-<time>)")
        parser.add_argument("--seed", type=_integer(0), default=0, help="random seed (default 0)")
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
        parser.add_argument("--force", action="store_true", help="overwrite an existing output folder")
        add_recipe_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from .search import default_out
        from .ticket import ticket

        out = args.out or default_out(args.dataset).with_name(f"ticket-{default_out(args.dataset).name}")
        result = ticket(
            args.arch or args.preset, epochs=args.epochs, dataset=args.dataset or "cifar10", recipe=args.recipe,
            overrides=recipe_overrides(args), out=out, at_epoch=args.at_epoch, finetune_epochs=args.finetune_epochs,
            fold=args.fold, data_dir=args.data_dir, seed=args.seed, device=args.device, force=args.force,
            reporter=None if args.quiet else TicketReporter(args.console), command=_command_line(args.argv),
        )
        if args.quiet:
            for s in result.table():
                logger.info("%-42s %8.2fM MACs %9d params  val %.4f  test %.4f", s.label, s.macs / 1e6, s.params,
                            s.val_acc or float("nan"), s.test_acc or float("nan"))
            logger.info("done: %s", result.out)
        return 0


COMMANDS.append(TicketCommand)


# ---- report, baseline, compare ------------------------------------------------------------------


def _say(args: argparse.Namespace, text: str) -> None:
    """One result line: on the rich console, or as a log line with --quiet."""
    if args.console is not None:
        args.console.print(text, highlight=False, markup=False)
    else:
        logger.info("%s", text)


class ReportCommand(Command):
    name = "report"
    help = "write RUN_DIR/report.html from the run folder's files (regenerate it any time)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by grownet search")
        parser.add_argument("--out", metavar="FILE.html", help="write the report here instead of RUN_DIR/report.html")
        parser.add_argument("--open", action="store_true", help="open the report in the default web browser")

    def run(self, args: argparse.Namespace) -> int:
        from .report import write_report

        path = write_report(args.run_dir, out=args.out)
        _say(args, f"report: {path}")
        if args.open:
            import webbrowser

            webbrowser.open(path.resolve().as_uri())
        return 0


class BaselineCommand(Command):
    name = "baseline"
    help = ("train a control of a finished run (scratch, uniform or random width at equal MACs, the seed, the "
            "uniform widths on the run's own schedule, or an architecture of your own) into RUN_DIR/controls/")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder written by grownet search")
        parser.add_argument("--control", required=True, metavar="NAME",
                            help="scratch: the final net from scratch; uniform: the seed layout scaled to the final "
                                 "MACs; random: a random allocation at those MACs; seed: the seed net alone; "
                                 "fixed_uniform: the uniform widths trained as the run trained (its rounds, nothing "
                                 "grows, its fine-tune; resumes if interrupted); with --arch: the name of your control "
                                 "(its folder under controls/)")
        parser.add_argument("--arch", metavar="A.json", help="train this architecture JSON as control NAME, exactly as "
                                                             "the built-in controls are trained")
        parser.add_argument("--epochs", type=_integer(), metavar="E",
                            help="epochs (default: the search's total epochs; not for fixed_uniform)")
        parser.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset (default: the run's own)")
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
        parser.add_argument("--force", action="store_true", help="train the control again, replacing its results")
        parser.add_argument("--no-report", action="store_true", help="do not rewrite RUN_DIR/report.html afterwards")

    def run(self, args: argparse.Namespace) -> int:
        from .baseline import run_control

        def progress(row: Any) -> None:
            _say(args, f"control {args.control} epoch {row['epoch']}: loss {row['train_loss']:.4f} "
                       f"val acc {row['val_acc']:.4f} ({row['wall_time']:.0f} s)")

        result = run_control(args.run_dir, args.control, arch=args.arch, epochs=args.epochs, data_dir=args.data_dir,
                             device=args.device, force=args.force, progress=progress if args.console else None)
        if args.console is not None:  # with --quiet, grownet.baseline logs the same line
            _say(args, f"control {result.name}: val acc {result.val_acc:.4f}, test acc {result.test_acc:.4f}, "
                       f"{result.macs / 1e6:.2f}M MACs, {result.wall_time:.0f} s -> {result.path}")
        if not args.no_report:
            from .report import write_report

            _say(args, f"report: {write_report(args.run_dir)}")
        return 0


class CompareCommand(Command):
    name = "compare"
    help = "compare several runs (and their controls) side by side in one HTML page"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders written by grownet search")
        parser.add_argument("--out", required=True, metavar="FILE.html", help="the HTML file to write")
        parser.add_argument("--no-controls", action="store_true", help="show the grown nets only")

    def run(self, args: argparse.Namespace) -> int:
        from .compare import write_compare

        _say(args, f"comparison: {write_compare(args.run_dirs, args.out, controls=not args.no_controls)}")
        return 0


COMMANDS.extend([ReportCommand, BaselineCommand, CompareCommand])


# ---- show, export ---------------------------------------------------------------------------------


class ShowCommand(Command):
    name = "show"
    help = "an architecture as a table (per layer: kind, width, output, MACs, params, shares), without training"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("source", metavar="RUN_DIR|ARCH.json",
                            help="a run folder (its final net, and its seed-to-final widths) or an architecture JSON")

    def run(self, args: argparse.Namespace) -> int:
        from .show import draw_show, show_info, show_tsv

        info = show_info(args.source)
        if args.quiet:  # tab-separated lines on stdout, for scripts
            print("\n".join(show_tsv(info)))
        else:
            from rich.console import Console

            draw_show(info, Console())  # on stdout: the table is the command's result, not progress
        return 0


class ExportCommand(Command):
    name = "export"
    help = "export a run's final net to ONNX or TorchScript (BatchNorm folded), checked against PyTorch on test images"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from .export import FORMATS, TOLERANCE

        parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder written by grownet search")
        parser.add_argument("--format", required=True, choices=tuple(FORMATS), help="onnx (needs the export extra) or torchscript")
        parser.add_argument("--out", metavar="FILE", help="the file to write (default RUN_DIR/model.onnx or "
                                                          "RUN_DIR/model.torchscript.pt); what was checked goes to FILE.json")
        parser.add_argument("--data-dir", metavar="DIR", help="folder holding the run's dataset (default: the run's own)")
        parser.add_argument("--samples", type=int, default=64, metavar="N",
                            help=f"test images the check runs on; refused above {TOLERANCE:g} max abs logit difference (default 64)")
        parser.add_argument("--force", action="store_true", help="replace an existing FILE")

    def run(self, args: argparse.Namespace) -> int:
        from .export import export

        r = export(args.run_dir, format=args.format, out=args.out, data_dir=args.data_dir, samples=args.samples,
                   force=args.force)
        _say(args, f"exported {r.format}: {r.path} (sha256 {r.sha256[:16]}...; max abs logit difference from PyTorch "
                   f"{r.max_abs_diff:.2g} on {r.samples} test images); checked: {r.record}")
        return 0


COMMANDS.extend([ShowCommand, ExportCommand])


# ---- tune ---------------------------------------------------------------------------------------


class TuneCommand(Command):
    name = "tune"
    help = "tune the growing hyperparameters with an optuna study (validation accuracy vs MACs); workers may share it"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from .tune import SEARCHED

        parser.add_argument("--dataset", help="dataset name, e.g. cifar10, or npz:PATH (default: the study's, else cifar10)")
        parser.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset (e.g. ../shared/data)")
        parser.add_argument("--trials", type=_integer(), required=True, metavar="N",
                            help="finished trials the study should hold in all, counted over every worker and resume "
                                 "(0: only rewrite the outputs)")
        parser.add_argument("--storage", metavar="URL",
                            help="optuna storage URL (default sqlite:///OUT/study.db), e.g. postgresql://user@host/db; "
                                 "its password is never printed (libpq also reads it from ~/.pgpass or PGPASSWORD)")
        parser.add_argument("--study-name", metavar="NAME", help="study name (default grownet-<dataset>)")
        parser.add_argument("--out", metavar="DIR", help="this worker's output folder (default runs/tune-<dataset>-<time>; "
                                                            "give it again to resume a study kept in its study.db)")
        parser.add_argument("--seed", type=_integer(0), help="seed of the sampler and of every trial's search (default: the study's, else 0)")
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
        parser.add_argument("--sampler", choices=("tpe", "nsga2", "random"), help="optuna sampler (default: the study's, else tpe)")
        parser.add_argument("--heartbeat", type=_integer(1, 86400), default=30, metavar="S",
                            help="seconds between a running trial's heartbeats; a trial silent for 4x this is retried (default 30)")
        space = parser.add_argument_group("search space (override the recipe's [tune] table: LOW,HIGH or one value to pin)")
        for key, path in SEARCHED.items():
            space.add_argument(f"--tune.{key}", dest=f"tune:{key}", metavar="LOW,HIGH" if key != "deepen" else "BOOL[,BOOL]",
                               help=f"values of {path} to try")
        add_recipe_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from .errors import ConfigError
        from .recipe import parse_value
        from .tune import SEARCHED, mask_url, tune, tune_table

        given = {k[len("tune:"):]: v for k, v in vars(args).items() if k.startswith("tune:") and v is not None}
        space = None
        if given:
            space = dict(tune_table(args.recipe)) if args.recipe else {}
            for key, text in given.items():
                try:
                    values = [parse_value(SEARCHED[key], part) for part in text.split(",")]
                except ConfigError as exc:
                    raise ConfigError(f"--tune.{key}: {str(exc).split(': ', 1)[-1]}") from None
                space[key] = values if len(values) > 1 else values[0]
        argv = [mask_url(a) if "://" in a else a for a in args.argv]
        reporter = _TuneReporter(args) if args.console is not None else None
        result = tune(
            args.dataset, trials=args.trials, recipe=args.recipe, space=space, storage=args.storage,
            study_name=args.study_name, out=args.out, data_dir=args.data_dir, seed=args.seed, device=args.device,
            sampler=args.sampler, overrides=recipe_overrides(args), heartbeat=args.heartbeat, reporter=reporter,
            command=_command_line(argv),
        )
        _say(args, f"study {result.study_name} ({result.storage}): {len(result.trials)} trials, "
                   f"{len(result.pareto)} on the Pareto front")
        for t in sorted(result.pareto, key=lambda t: t.macs or 0):
            _say(args, f"  trial {t.number}: val acc {t.val_acc:.4f}, {t.macs / 1e6:.3f}M MACs, widths {t.widths}")
        _say(args, f"page: {result.paths['html']}  table: {result.paths['csv']}")
        return 0


class _TuneReporter:
    """One line per trial on the console."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def trial_start(self, number: int, params: Mapping[str, Any], *, resumed: bool) -> None:
        text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        _say(self.args, f"trial {number}{' (resumed)' if resumed else ''}: {text}")

    def search_reporter(self, number: int) -> Any:
        return None

    def trial_end(self, row: Any) -> None:
        acc = "-" if row.val_acc is None else f"{row.val_acc:.4f}"
        macs = "-" if row.macs is None else f"{row.macs / 1e6:.3f}M"
        _say(self.args, f"trial {row.number} {row.state.lower()}: val acc {acc}, {macs} MACs")

    def waiting(self, running: int) -> None:
        _say(self.args, f"waiting for {running} trial(s) running on other workers")


COMMANDS.append(TuneCommand)


# ---- study --------------------------------------------------------------------------------------


class StudyCommand(Command):
    name = "study"
    help = ("a study over N seeds (resumable): --kind growth (the grower; scratch, uniform and random controls at its "
            "MACs; the grower with uniform widening; the uniform widths trained on the grower's schedule) or --kind "
            "ticket (dense SGD vs DessiLBI, the early ticket rewound and fine-tuned, controls)")
    #: --kind ticket's options: flag -> run_ticket_study's argument.
    TICKET_FLAGS = {"--epochs": "epochs", "--ticket-at": "ticket_at", "--target": "target",
                    "--finetune-epochs": "finetune_epochs", "--finetune-lr-scale": "finetune_lr_scale",
                    "--relative-to": "relative_to"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--kind", choices=("growth", "ticket"), default="growth", help="which study (default growth)")
        parser.add_argument("--dataset", default="cifar10", help="a grownet dataset name (default cifar10)")
        parser.add_argument("--data-dir", metavar="DIR", help="folder holding the dataset (e.g. ../shared/data)")
        parser.add_argument("--out", required=True, metavar="DIR", help="the study folder; run the same command again to continue it")
        parser.add_argument("--seeds", type=int, default=3, metavar="N", help="number of seeds, 0..N-1 (default 3)")
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
        parser.add_argument("--arms", metavar="A,B", type=_arm_list,
                            help="--kind growth: the arms to run, of grown, scratch, uniform, random, grown_uniform, "
                                 "fixed_uniform (default all; grown always runs; a later call may add arms)")
        ticket = parser.add_argument_group("--kind ticket (grownet.ticket.run_ticket_study; default recipe ticket-study-cpu)")
        ticket.add_argument("--epochs", type=_integer(1), metavar="E", help="epochs of every full-length arm (default finetune.epochs)")
        ticket.add_argument("--ticket-at", type=float, metavar="X", help="ticket epoch as a fraction of E (default 0.15)")
        ticket.add_argument("--target", type=float, metavar="X", help="ticket MACs as a fraction of the dense net's (default 0.5)")
        ticket.add_argument("--finetune-epochs", type=_integer(1), metavar="F", help="the fine-tuned arm's epochs (default E/4)")
        ticket.add_argument("--finetune-lr-scale", type=float, metavar="X", help="the fine-tuned arm's rate factor (default 0.1)")
        ticket.add_argument("--relative-to", choices=("net", "layer"),
                            help="the ticket threshold ranks importance against each layer's mean (default) or the net's")
        add_recipe_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        given = {arg: getattr(args, arg) for arg in self.TICKET_FLAGS.values() if getattr(args, arg) is not None}
        if args.kind == "ticket":
            from .ticket import run_ticket_study

            if args.arms is not None:
                raise UsageError("--arms: applies to --kind growth only")
            result = run_ticket_study(args.dataset, out=args.out, recipe=args.recipe, overrides=recipe_overrides(args),
                                      seeds=args.seeds, data_dir=args.data_dir, device=args.device, **given)
        else:
            if given:
                flag = next(f for f, a in self.TICKET_FLAGS.items() if a in given)
                raise UsageError(f"{flag}: applies to --kind ticket only")
            from .study import run_study

            arms = {} if args.arms is None else {"arms": args.arms}
            result = run_study(args.dataset, out=args.out, recipe=args.recipe, overrides=recipe_overrides(args),
                               seeds=args.seeds, data_dir=args.data_dir, device=args.device, **arms)
        for arm, a in result.summary["arms"].items():
            _say(args, f"{arm}: test acc {100 * a['test_acc']['mean']:.2f} ± {100 * a['test_acc']['std']:.2f} % "
                       f"at {a['macs']['mean'] / 1e6:.2f}M MACs (n={a['n']})")
        _say(args, f"study: {result.path / 'study.html'}")
        return 0


COMMANDS.append(StudyCommand)
