"""What a task declares, and where the job finds tasks.

A task (``jobs/tasks/<name>.py``, one class each) says everything the job needs to run it:
the actor stage it runs (and through it the Auto class, i.e. the head, the model must have),
its own options, the defaults it reads from the model, its output schema and what of its
settings goes into the job identity.  jobs/ wires tasks together and never branches on one.

Tasks are found three ways: the modules of ``jobs/tasks`` (discovered, imported on demand),
tasks registered in-process with :func:`register`, and ``--task package.module:ClassName`` for
a task class in any importable module (the user's own code: the job imports that module,
and so must the Ray workers, e.g. through PYTHONPATH or the runtime env's working dir).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Optional

import pyarrow as pa

from autoload.contract import ModelContract
from jobs.options import Option, SpecError

if TYPE_CHECKING:
    from jobs.model import ResolvedModel


class Task:
    """Base of every task; a subclass sets the class attributes and overrides what differs."""

    name: ClassVar[str]
    help: ClassVar[str]
    # The actor stage class (actors/); its ``auto_class`` decides the head the model must have.
    stage: ClassVar[type]
    options: ClassVar[tuple[Option, ...]] = ()
    # Whether --text-pair-column makes sense (pairs of texts in one sequence).
    takes_pairs: ClassVar[bool] = True
    # Whether the task reads --text-column (qa names its own columns: a --text-column would be ignored).
    reads_text_column: ClassVar[bool] = True

    def __init__(self, values: Mapping[str, Any]) -> None:
        unknown = sorted(set(values) - {o.name for o in self.options})
        if unknown:
            raise SpecError(f"--task {self.name} has no option(s) {', '.join(unknown)}")
        self.values = dict(values)  # the options given, parsed; the others take their defaults

    def unfit(self, contract: ModelContract) -> Optional[str]:
        """Why the task can't run on this architecture (checked before anything loads), or None."""
        return None

    def check(self, spec: Any, model: "ResolvedModel") -> None:
        """Refuse (raise :class:`SpecError`) settings this task can't honour on this model,
        before Ray starts: what neither the options' parsers nor ``unfit`` can see alone."""

    def settings(self, model: "ResolvedModel") -> dict[str, Any]:
        """Every option's value for this run: given, else read from the model (override
        ``model_defaults``), else the option's default."""
        defaults = {o.name: o.default for o in self.options}
        defaults.update(self.model_defaults(model))
        return {**defaults, **self.values}

    def model_defaults(self, model: "ResolvedModel") -> dict[str, Any]:
        """Defaults the model decides (e.g. pooling from its sentence-transformers files)."""
        return {}

    def output_schema(self, settings: Mapping[str, Any], model: "ResolvedModel") -> pa.Schema:
        """The columns the stage adds, by name and type."""
        raise NotImplementedError

    def text_columns(self, settings: Mapping[str, Any], model: "ResolvedModel") -> Optional[tuple[str, Optional[str]]]:
        """The (text, pair) input columns the task reads instead of --text-column and
        --text-pair-column (e.g. qa's --question-column / --context-column, in the order the
        model wants them), or None for the job's."""
        return None

    def tokenize_kwargs(self, settings: Mapping[str, Any], model: "ResolvedModel") -> dict[str, Any]:
        """What the task changes in the tokenize stage (e.g. a longer cap for texts it windows)."""
        return {}

    def stage_kwargs(self, settings: Mapping[str, Any], model: "ResolvedModel") -> dict[str, Any]:
        """The stage's own constructor arguments (the model stage's generic ones come from the job)."""
        return dict(settings)

    def identity(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings that decide what the output files hold (part of the job identity)."""
        return {o.name: settings[o.name] for o in self.options if o.identity}


class CausalLMTask(Task):
    """A task that needs a language model trained to produce text (score, generate): an
    autoregressive decoder, or an encoder-decoder whose decoder reads the encoded source (T5)."""

    def unfit(self, contract: ModelContract) -> Optional[str]:
        if contract.causal or contract.encoder_decoder:
            return None
        return (f"it needs a causal language model, and {contract.model_type} is an encoder (its causal-LM head, "
                "where it has one, is not what it was trained as); use a GPT-style model (gpt2, openai-gpt, ctrl) "
                "or an encoder-decoder (t5)")


_REGISTERED: dict[str, type[Task]] = {}


def register(task: type[Task]) -> type[Task]:
    """Make ``task`` available by its name in this process (tests, embedding applications)."""
    _REGISTERED[task.name] = task
    return task


def builtin_names() -> list[str]:
    import jobs.tasks

    # A task's name is its module's with dashes (jobs/tasks/fill_mask.py is --task fill-mask).
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(jobs.tasks.__path__) if not m.name.startswith("_"))


def known_tasks() -> dict[str, type[Task]]:
    """Every task available by name: the built-in ones and those registered in this process."""
    tasks = {name: _builtin(name) for name in builtin_names()}
    tasks.update(_REGISTERED)
    return tasks


def get_task(name: str) -> type[Task]:
    """The task class named ``name`` (a built-in or registered name, or ``module:Class``)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if ":" in name:
        return _from_module(name)
    if name in builtin_names():
        return _builtin(name)
    raise SpecError(f"Unknown task {name!r}. Known tasks: {', '.join(known_tasks())}; or give module:Class "
                    "for a task of your own.")


def _builtin(name: str) -> type[Task]:
    module = importlib.import_module(f"jobs.tasks.{name.replace('-', '_')}")
    task = getattr(module, "TASK", None)
    if not (isinstance(task, type) and issubclass(task, Task)) or task.name != name:
        raise RuntimeError(f"jobs/tasks/{name}.py must define TASK, a Task subclass named {name!r}")
    return task


def _from_module(reference: str) -> type[Task]:
    module_name, _, attribute = reference.partition(":")
    try:
        task = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise SpecError(f"--task {reference}: can't import it ({type(err).__name__}: {err})") from None
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise SpecError(f"--task {reference} is not a jobs.task.Task subclass")
    return task
