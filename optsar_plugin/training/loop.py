"""The optimisation loop: batches, steps, validation, early stopping, the best epoch.

Data flow of one step::

    sampler tile origin ─> raw optical / SAR / cloud window ─> [simulated clouds] ─> normalise
        ─> [optical zeroed under the cloud mask] ─> flips / rotations ─> model.forward_train ─> model.loss

Every ``plan.steps_per_epoch`` steps the held-out blocks are classified (:func:`validate`)
with the moving average of the weights (:class:`WeightAverage`, ``plan.ema_decay``); the
epoch with the best validation mIoU is kept (ties: the earlier), as that average.  The run stops at the
step budget, after ``plan.patience`` validations without a better mIoU (early stopping;
0 = never), at the time limit (``plan.max_minutes``: the step budget is first lowered to what
the pace so far fits in it, :class:`Clock`), or when cancelled; :attr:`LoopResult.stopped`
says which.  Without validation the last epoch is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .. import normalisation, raster_io
from ..classes import NODATA
from ..errors import Cancelled, InputError
from ..progress import check_cancel
from .augment import dihedral, simulate_clouds
from .metrics import confusion_metrics

CLOUD_PROBABILITY = 0.5
MAX_BAD_STEPS = 5
MIN_IMPROVEMENT = 1e-4  # a validation mIoU must beat the best by this much to reset the patience


@dataclass
class Run:
    """Everything the loop functions need, resolved once by the entry point."""

    torch: Any
    net: Any
    source: Any  # sampler.SceneSource
    labels: Any  # reference.Labels
    split: Any  # sampler.Split
    sampler: Any  # sampler.TileSampler
    cells: List
    stats_o: Dict
    stats_s: Dict
    device: Any
    rng: np.random.Generator
    feedback: Any
    plan: Any  # recipes.Plan
    handling: Optional[str]  # cloud handling: None (no mask) | "keep" | "zero"
    simulate: bool
    unit: float  # reflectance unit of the optical values the cloud simulation sees (1.0, or 10000 for old statistics)
    ignore_sar: bool = False
    precision: str = "fp32"
    class_weights: Optional[List[float]] = None

    @property
    def num_classes(self) -> int:
        return len(self.labels.scheme)

    def autocast(self):
        if self.precision == "bf16":
            return self.torch.autocast("cuda", dtype=self.torch.bfloat16)
        import contextlib

        return contextlib.nullcontext()


class WeightAverage:
    """Exponential moving average of the weights (and a copy of the buffers), as in timm's ModelEma.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the
    average follows the fast early changes.  :meth:`swapped_in` evaluates with it.
    """

    def __init__(self, net, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def update(self, net) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in net.state_dict().items():
            s = self.shadow[k]
            if s.dtype.is_floating_point:
                s.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                s.copy_(v)

    def swapped_in(self, net):
        import contextlib

        @contextlib.contextmanager
        def swap():
            live = {k: v.detach().clone() for k, v in net.state_dict().items()}
            net.load_state_dict(self.shadow)
            try:
                yield
            finally:
                net.load_state_dict(live)

        return swap()


@dataclass
class LoopState:
    """What a run has done so far (also what a resumable state holds)."""

    step: int = 0
    history: List[Dict] = field(default_factory=list)
    best_epoch: Optional[int] = None
    best_miou: float = -1.0
    best_state: Optional[Dict] = None
    best_confusion: Optional[List] = None
    since_best: int = 0
    bad_steps: int = 0
    average: Optional[WeightAverage] = None


@dataclass
class LoopResult:
    history: List[Dict]
    best_epoch: int
    best_confusion: Optional[List]
    stopped: str  # budget | early_stopping | time_limit | cancelled
    reason: str  # one sentence for the log and the result
    steps: int
    seconds_per_epoch: Optional[float]
    resumed_from_step: Optional[int] = None


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def prepare(run: Run, optical: np.ndarray, sar: np.ndarray, cloud: Optional[np.ndarray]):
    """Normalised (optical, SAR) as the network sees them (classify feeds them the same way)."""
    on = normalisation.apply(optical, run.stats_o)
    sn = normalisation.apply(sar, run.stats_s)
    if cloud is not None and run.handling == "zero":
        on[:, cloud] = 0.0
    if run.ignore_sar:
        sn[:] = 0.0
    return on, sn


def training_tile(run: Run):
    """One augmented training tile ``(optical, sar, labels)`` holding at least one training label."""
    t, lab, split = run.plan.tile, run.labels, run.split
    for _ in range(20):
        r0, c0 = run.sampler.sample()
        o, s, cloud = run.source.read(r0, c0, t, t)
        y = lab.index[r0 : r0 + t, c0 : c0 + t].copy()
        y[split.is_val(r0, c0, t, t)] = NODATA
        y[raster_io.all_invalid(o) | raster_io.all_invalid(s)] = NODATA
        if (y != NODATA).any():
            break
    o = normalisation.physical(o, run.stats_o)
    if run.simulate and run.rng.random() < CLOUD_PROBABILITY:
        o, _ = simulate_clouds(o, run.rng, run.unit)
    on = normalisation.standardise(o, run.stats_o)
    if cloud is not None and run.handling == "zero":
        on[:, cloud] = 0.0
    sn = normalisation.apply(s, run.stats_s)
    if run.ignore_sar:
        sn[:] = 0.0
    return dihedral([on, sn, y], int(run.rng.integers(0, 4)), bool(run.rng.random() < 0.5))


def training_batch(run: Run):
    """A batch of ``plan.batch`` training tiles as tensors on the device."""
    tiles = [training_tile(run) for _ in range(run.plan.batch)]
    torch, dev = run.torch, run.device
    return (torch.from_numpy(np.stack([t[0] for t in tiles])).to(dev),
            torch.from_numpy(np.stack([t[1] for t in tiles])).to(dev),
            torch.from_numpy(np.stack([t[2] for t in tiles]).astype(np.int64)).to(dev))


def model_loss(run: Run, outputs, target):
    if run.class_weights is not None:
        return run.net.loss(outputs, target, ignore_index=NODATA, class_weights=run.class_weights)
    return run.net.loss(outputs, target, ignore_index=NODATA)


def train_step(run: Run, optimiser, scheduler, state: LoopState) -> Optional[float]:
    """One optimisation step; returns the loss, or None when it was not finite (step skipped)."""
    optical, sar, target = training_batch(run)
    with run.autocast():
        loss = model_loss(run, run.net.forward_train(optical, sar), target)
    optimiser.zero_grad(set_to_none=True)
    value = None
    if not run.torch.isfinite(loss):
        state.bad_steps += 1
        run.feedback.warning(f"Step {state.step + 1}: the loss is not finite; the step is skipped.")
        if state.bad_steps >= MAX_BAD_STEPS:
            raise InputError(
                f"Training diverged ({state.bad_steps} steps with a non-finite loss). Lower LEARNING_RATE "
                f"(it is {run.plan.lr:g}) or check the input data for extreme values."
            )
    else:
        loss.backward()
        optimiser.step()
        if state.average is not None:
            with run.torch.no_grad():
                state.average.update(run.net)
        value = float(loss.detach())
    scheduler.step()
    state.step += 1
    return value


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def _validation_items(run: Run, cells):
    t = run.plan.tile
    items = []
    for wr, wc, cr, cc, ch, cw in cells:
        o, s, cloud = run.source.read(wr, wc, t, t)
        y = np.full((t, t), NODATA, np.uint8)
        a, b = cr - wr, cc - wc
        y[a : a + ch, b : b + cw] = run.labels.index[cr : cr + ch, cc : cc + cw]
        y[raster_io.all_invalid(o) | raster_io.all_invalid(s)] = NODATA
        on, sn = prepare(run, o, s, cloud)
        items.append((on, sn, y, cloud if cloud is not None else np.zeros((t, t), bool)))
    return items


def validate(run: Run) -> Dict:
    """Classify every held-out cell: OA, mIoU, macro F1, per-class IoU, CE loss (+ clear / under clouds)."""
    torch, K = run.torch, run.num_classes
    cm = np.zeros((K, K), np.int64)
    cm_cloud = np.zeros((K, K), np.int64)
    loss_sum, n_px = 0.0, 0
    run.net.eval()
    try:
        with torch.no_grad():
            for b0 in range(0, len(run.cells), run.plan.batch):
                check_cancel(run.feedback)
                items = _validation_items(run, run.cells[b0 : b0 + run.plan.batch])
                y_np = np.stack([i[2] for i in items])
                with run.autocast():
                    logits = run.net(torch.from_numpy(np.stack([i[0] for i in items])).to(run.device),
                                     torch.from_numpy(np.stack([i[1] for i in items])).to(run.device)).float()
                labelled = y_np != NODATA
                if labelled.any():
                    y_t = torch.from_numpy(y_np.astype(np.int64)).to(run.device)
                    loss_sum += float(torch.nn.functional.cross_entropy(logits, y_t, ignore_index=NODATA,
                                                                        reduction="sum"))
                    n_px += int(labelled.sum())
                pred = logits.argmax(1).cpu().numpy()
                cloudy = np.stack([i[3] for i in items]) & labelled
                cm += _confusion(y_np[labelled], pred[labelled], K)
                cm_cloud += _confusion(y_np[cloudy], pred[cloudy], K)
    finally:
        run.net.train()
    out = confusion_metrics(cm)
    out["loss"] = loss_sum / n_px if n_px else None
    out["cm"] = cm
    if run.source.has_cloud_mask:
        out["miou_cloudy"] = confusion_metrics(cm_cloud)["miou"] if cm_cloud.sum() else None
        out["miou_clear"] = confusion_metrics(cm - cm_cloud)["miou"] if (cm - cm_cloud).sum() else None
    return out


def _confusion(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(truth.astype(np.int64) * k + pred, minlength=k * k).reshape(k, k)


# ------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------
def make_optimiser(run: Run):
    from .recipes import lr_lambda, param_groups

    torch, plan = run.torch, run.plan
    opt = torch.optim.AdamW(param_groups(run.net, plan.weight_decay), lr=plan.lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(plan.max_steps, plan.warmup, plan.schedule, plan.power))
    return opt, sched


def _epoch_row(run: Run, epoch: int, steps: int, seconds: float, losses: List[float], val: Optional[Dict],
               lr: float) -> Dict:
    def v(key):
        return val.get(key) if val else None

    return {"epoch": epoch, "steps": steps, "step": None, "seconds": round(seconds, 2), "lr": lr,
            "train_loss": float(np.mean(losses)) if losses else None, "val_loss": v("loss"), "val_oa": v("oa"),
            "val_miou": v("miou"), "val_macro_f1": v("macro_f1"), "val_miou_clear": v("miou_clear"),
            "val_miou_cloudy": v("miou_cloudy"), "val_iou": v("iou"), "best": False}


def record_epoch(run: Run, state: LoopState, row: Dict, val: Optional[Dict]) -> None:
    """Append ``row``; keep the weights when the validation mIoU is the best so far (or without validation)."""
    score = val["miou"] if val and val["miou"] is not None else None
    better = val is None or (score is not None and score > state.best_miou + MIN_IMPROVEMENT) or state.best_state is None
    if better:
        state.best_miou = score if score is not None else state.best_miou
        state.best_epoch = row["epoch"]
        state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.net.state_dict().items()}
        state.best_confusion = val["cm"].tolist() if val else None
        for r in state.history:
            r["best"] = False
        row["best"] = True
        state.since_best = 0
    else:
        state.since_best += 1
    state.history.append(row)


def _log_epoch(run: Run, row: Dict, val: Optional[Dict]) -> None:
    plan = run.plan
    run.feedback.info(
        f"Epoch {row['epoch']}/{plan.epochs} (step {row['step']}/{plan.max_steps}): training loss {_f(row['train_loss'])}"
        + (f", validation loss {_f(row['val_loss'])}, OA {_f(row['val_oa'])}, mIoU {_f(row['val_miou'])}" if val else "")
        + (f" (clear {_f(row['val_miou_clear'])}, under clouds {_f(row['val_miou_cloudy'])})"
           if val and val.get("miou_cloudy") is not None else "")
        + (" - best so far" if row["best"] else "")
        + f"; {row['seconds']:.1f} s."
    )


def run_epoch(run: Run, optimiser, scheduler, state: LoopState, epoch: int, deadline: Optional[float] = None) -> Dict:
    """Train ``steps_per_epoch`` steps (fewer at the end of the budget, or when the clock passes ``deadline``),
    validate, record; returns the row."""
    plan, t0 = run.plan, time.perf_counter()
    steps = min(plan.steps_per_epoch, plan.max_steps - state.step)
    losses = []
    last = state.history[-1]["val_miou"] if state.history else None
    for i in range(steps):
        check_cancel(run.feedback)
        if deadline is not None and i and time.perf_counter() >= deadline:
            steps = i
            break
        loss = train_step(run, optimiser, scheduler, state)
        if loss is not None:
            losses.append(loss)
        run.feedback.progress(state.step / plan.max_steps,
                              f"Epoch {epoch}/{plan.epochs}, step {i + 1}/{steps}: loss "
                              f"{losses[-1] if losses else float('nan'):.4f}"
                              + (f", last validation mIoU {last:.3f}" if last is not None else ""))
    with state.average.swapped_in(run.net) if state.average is not None else _nothing():
        val = validate(run) if run.cells else None
        row = _epoch_row(run, epoch, steps, time.perf_counter() - t0, losses, val, float(optimiser.param_groups[0]["lr"]))
        row["step"] = state.step
        record_epoch(run, state, row, val)
    _log_epoch(run, row, val)
    return row


def should_stop(run: Run, state: LoopState) -> bool:
    """Early stopping: ``patience`` validations in a row without a better mIoU, once ``plan.stop_after`` steps
    are done (never without validation)."""
    plan = run.plan
    return bool(plan.patience and run.cells and state.step >= plan.stop_after and state.since_best >= plan.patience)


def run_loop(run: Run, state: Optional[LoopState] = None, optimiser=None, scheduler=None,
             on_epoch: Optional[Callable] = None) -> LoopResult:
    """Train until the budget, early stopping or cancellation; load the best weights into ``run.net``.

    ``state``/``optimiser``/``scheduler`` continue a resumed run; ``on_epoch(state, optimiser,
    scheduler)`` is called after every epoch (the resumable state is written there).
    """
    plan = run.plan
    state = state or LoopState()
    run.net.to(run.device).train()
    if plan.ema_decay and state.average is None:
        state.average = WeightAverage(run.net, plan.ema_decay)
    if optimiser is None:
        optimiser, scheduler = make_optimiser(run)
    clock = Clock(plan.max_minutes, len(state.history))
    stopped = reason = None
    try:
        epoch = len(state.history) + 1
        while epoch <= plan.epochs and not should_stop(run, state):
            run_epoch(run, optimiser, scheduler, state, epoch, clock.deadline)
            if on_epoch is not None:
                on_epoch(state, optimiser, scheduler)
            if clock.over():
                stopped, reason = "time_limit", f"the time limit ({plan.max_minutes:g} min) was reached"
                break
            clock.fit(run, state, scheduler)
            epoch += 1
        if stopped is None:
            stopped, reason = "budget", f"the step budget ({plan.max_steps} step{'s' if plan.max_steps != 1 else ''}) was reached"
        if should_stop(run, state) and state.step < plan.max_steps:
            stopped = "early_stopping"
            reason = (f"early stopping: the validation mIoU did not improve for {plan.patience} validations "
                      f"({state.since_best * plan.steps_per_epoch} steps) after epoch {state.best_epoch}")
    except Cancelled:
        if state.best_state is None:
            raise
        stopped, reason = "cancelled", f"cancelled during epoch {len(state.history) + 1}"
        run.feedback.warning(f"Training cancelled during epoch {len(state.history) + 1}; writing the best epoch so "
                             f"far ({state.best_epoch}).")
    run.feedback.info(f"Training stopped after {state.step} steps: {reason}; the best epoch is {state.best_epoch}.")
    run.net.load_state_dict(state.best_state)
    run.net.to("cpu").eval()
    seconds = [r["seconds"] for r in state.history]
    return LoopResult(state.history, state.best_epoch, state.best_confusion, stopped, reason, state.step,
                      round(float(np.mean(seconds)), 2) if seconds else None)


class Clock:
    """The loop's time limit (``plan.max_minutes``, 0: none), counted from the start of this call."""

    def __init__(self, minutes: float, done_epochs: int):
        self.start = time.perf_counter()
        self.deadline = self.start + 60.0 * minutes if minutes else None
        self.first = done_epochs  # epochs of an earlier, resumed part do not count towards the pace

    def over(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def fit(self, run: Run, state: LoopState, scheduler) -> None:
        """Lower the step budget, and fit the schedule to it, when the pace so far would pass the limit."""
        from .recipes import fit_to_time, lr_lambda

        if self.deadline is None:
            return
        plan, rows = run.plan, state.history[self.first :]
        pace = float(np.mean([r["seconds"] for r in rows])) if rows else 0.0
        before = plan.max_steps
        total = fit_to_time(plan, len(state.history), state.step, time.perf_counter() - self.start, pace)
        if total is None:
            return
        fitted = lr_lambda(total, plan.warmup, plan.schedule, plan.power)
        scheduler.lr_lambdas = [fitted] * len(scheduler.lr_lambdas)
        run.feedback.info(f"At {pace:.1f} s per validation period, the time limit ({plan.max_minutes:g} min) holds "
                          f"{total} steps: the step budget is lowered from {before} and the learning-rate schedule "
                          "fitted to it.")


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
