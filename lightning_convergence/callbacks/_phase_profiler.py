"""The marks no callback hook gives: a profiler that tells a listener when Lightning's actions
start and stop, and passes every call on to the Trainer's own profiler.

Lightning brackets, with ``trainer.profiler.start/stop``, exactly the moments a callback cannot
see: fetching the next training batch (``[_TrainingEpochLoop].train_dataloader_next``), writing a
checkpoint (``save_checkpoint``), every callback hook (``[Callback]<state_key>.<hook>``), the
manual optimizer step (``optimizer_step``) and the zeroing of gradients before validation
(``[LightningModule]<name>.on_validation_model_zero_grad``). :class:`PhaseProfiler` stands in for
the Trainer's profiler during ``fit`` and forwards every call to it unchanged, so a user's
``profiler="simple"`` still reports; :func:`install` and :func:`uninstall` put it in place and
take it away (the Trainer's profiler is restored even when several are stacked).

Cost: one dict lookup per action (the kind of each action name is cached); under Lightning's
default pass-through profiler nothing more for the actions that mark nothing, and one clock read
for those that matter. Hooks a callback does not implement (Lightning calls every hook of every
callback, mostly the no-ops of ``Callback``) are not marked. No device sync.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from lightning.pytorch.profilers import PassThroughProfiler, Profiler

Action = Literal["fetch", "checkpoint", "callback", "optimizer", "validation"]


def action_kind(name: str) -> Action | None:
    """The kind of one of Lightning's profiler actions, or ``None`` for those that mark nothing.

    Example:
        >>> action_kind("[_TrainingEpochLoop].train_dataloader_next")
        'fetch'
        >>> action_kind("[Callback]TQDMProgressBar.on_train_batch_end")
        'callback'
        >>> action_kind("run_training_batch") is None
        True
    """
    if name.startswith("[Callback]"):
        return "callback"
    if name.endswith("].train_dataloader_next"):
        return "fetch"
    if name == "save_checkpoint":
        return "checkpoint"
    if name == "optimizer_step":  # the manual optimisation loop's (the automatic one is a LightningModule hook)
        return "optimizer"
    if name.startswith("[LightningModule]") and name.endswith(".on_validation_model_zero_grad"):
        return "validation"
    return None


def callback_of(name: str) -> str:
    """``[Callback]<state_key>.<hook>`` -> the callback's state key (its class name, maybe with settings)."""
    return name[len("[Callback]"):].rsplit(".", 1)[0]


class ActionListener(Protocol):
    def times_callback(self, name: str) -> bool:
        """Whether the callback hook of action ``name`` is worth a mark (asked once per name)."""

    def action_started(self, kind: Action, name: str) -> None: ...

    def action_stopped(self, kind: Action, name: str) -> None: ...


class PhaseProfiler(Profiler):
    """Forwards everything to ``inner`` and tells ``listener`` when a marked action starts or stops."""

    def __init__(self, inner: Profiler, listener: ActionListener) -> None:
        super().__init__()
        self.inner = inner
        self.listener = listener
        self._kinds: dict[str, Action | None] = {}
        self._inner_does_nothing = type(inner) is PassThroughProfiler

    def _kind(self, name: str) -> Action | None:
        kind = self._kinds.get(name, "")
        if kind == "":
            kind = action_kind(name)
            if kind == "callback" and not self.listener.times_callback(name):
                kind = None  # a hook the callback does not implement: Lightning calls the no-op anyway
            self._kinds[name] = kind
        return kind  # type: ignore[return-value]

    def start(self, action_name: str) -> None:
        kind = self._kind(action_name)
        if kind is not None:
            self.listener.action_started(kind, action_name)
        self.inner.start(action_name)

    def stop(self, action_name: str) -> None:
        self.inner.stop(action_name)
        kind = self._kind(action_name)
        if kind is not None:
            self.listener.action_stopped(kind, action_name)

    def profile(self, action_name: str) -> _Action:  # type: ignore[override]
        # Lightning enters this about 120 times a step (every hook of every callback). An action
        # that marks nothing, under Lightning's default profiler (which does nothing), costs one
        # dict lookup; the others get a plain context manager, not a generator-based one.
        kind = self._kinds.get(action_name, "")
        if kind is None and self._inner_does_nothing:
            return _UNMARKED
        return _Action(self, action_name)

    def summary(self) -> str:
        return self.inner.summary()

    def describe(self) -> None:
        self.inner.describe()

    def setup(self, stage: str, local_rank: int | None = None, log_dir: str | None = None) -> None:
        self.inner.setup(stage, local_rank, log_dir)

    def teardown(self, stage: str | None) -> None:
        self.inner.teardown(stage)

    def __del__(self) -> None:
        pass  # the inner profiler tears itself down; this stand-in owns nothing

    def __getattr__(self, name: str) -> Any:  # a profiler's own attributes (dirpath, filename, ...)
        if name in {"inner", "listener", "_kinds", "_inner_does_nothing"}:
            raise AttributeError(name)
        return getattr(self.inner, name)


class _Action:
    """``with profiler.profile(name):``: start on entry, stop on exit, even when the body raises."""

    __slots__ = ("_profiler", "_name")

    def __init__(self, profiler: PhaseProfiler, name: str) -> None:
        self._profiler, self._name = profiler, name

    def __enter__(self) -> str:
        self._profiler.start(self._name)
        return self._name

    def __exit__(self, *exc_info: object) -> Literal[False]:
        self._profiler.stop(self._name)
        return False


class _Unmarked:
    """The action needs nothing done: Lightning's profiler is the pass-through one and the
    listener does not mark it."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> Literal[False]:
        return False


_UNMARKED = _Unmarked()


def install(trainer: Any, listener: ActionListener) -> PhaseProfiler | None:
    """Put a :class:`PhaseProfiler` in front of ``trainer.profiler``; ``None`` if it cannot be set."""
    inner = getattr(trainer, "profiler", None)
    if not isinstance(inner, Profiler):
        return None
    proxy = PhaseProfiler(inner, listener)
    try:
        trainer.profiler = proxy
    except AttributeError:
        return None
    return proxy


def uninstall(trainer: Any, proxy: PhaseProfiler | None) -> None:
    """Take ``proxy`` out of the chain of profilers of ``trainer`` (wherever it is in it)."""
    if proxy is None:
        return
    current = getattr(trainer, "profiler", None)
    if current is proxy:
        trainer.profiler = proxy.inner
        return
    while isinstance(current, PhaseProfiler):  # another stand-in installed after ours
        if current.inner is proxy:
            current.inner = proxy.inner
            return
        current = current.inner
