"""DEPICT (Jabbour et al. 2024): concept permutation importance of a classifier f through a generator g.

Importance_j = L(f(g(c))) − L(f(g(c^j))) over several permutations of concept j's column; check 1
compares f and the concept classifier h on real vs generated images, check 2 asks h whether only
concept j moved. The rule of the synthetic task gives the true importance (the same permutations
applied to the rule as a classifier), and saliency mass (GradCAM by default) on each concept's
objects a pixel-saliency ranking; both are compared with DEPICT's ranking by Spearman correlation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attribution import METHODS
from ..params import ParamsError, check_keys
from ..render.tasks import Presence
from .images import logits, resize
from .metrics import (auroc, concept_mass, mean_where, permutation_importance, rule_scores, spearman,
                      task_metric)
from .permute import concept_indices, draw_permutations, permute_column


@dataclass
class Plan:
    """Which concept columns are permuted how: bool N×K ``concepts`` (task order), int64 N ``labels``,
    ``columns`` (J indices into the K concepts) and int64 J×P×N ``perms``."""

    names: list[str]
    concepts: torch.Tensor
    labels: torch.Tensor
    columns: list[int]
    perms: torch.Tensor

    @classmethod
    def draw(cls, names: Sequence[str], concepts: torch.Tensor, labels: torch.Tensor, permuted: Sequence[str],
             count: int, seed: int) -> "Plan":
        cols = concept_indices(names, permuted)
        return cls(list(names), concepts, labels, cols, draw_permutations(concepts, cols, count, seed, names))

    def targets(self, a: int, p: int) -> torch.Tensor:
        """Bool N×K annotations with column ``columns[a]`` permuted by permutation ``p``."""
        return permute_column(self.concepts, self.columns[a], self.perms[a, p])

    def all_targets(self) -> torch.Tensor:
        """Bool J×P×N×K: :meth:`targets` for every permuted concept and permutation."""
        j, p, n = self.perms.shape
        cols = torch.tensor(self.columns, dtype=torch.int64)[:, None, None]
        out = self.concepts.expand(j, p, *self.concepts.shape).clone()
        out[torch.arange(j)[:, None, None], torch.arange(p)[None, :, None], torch.arange(n), cols] = \
            self.concepts[self.perms, cols]
        return out

    @property
    def permuted_names(self) -> list[str]:
        return [self.names[j] for j in self.columns]

    @property
    def own_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the permuted concepts' own entries in a J×K matrix (row a, column ``columns[a]``)."""
        return torch.arange(len(self.columns)), torch.tensor(self.columns, dtype=torch.int64)


@dataclass
class Importance:
    """Per permuted concept (J): mean and sample std of the drop in L over the P permutations, and the raw L values."""

    mean: torch.Tensor
    std: torch.Tensor
    base: torch.Tensor  # L on unpermuted data, scalar
    permuted: torch.Tensor  # L per permutation, J×P


def importance_from(base: torch.Tensor, permuted: torch.Tensor) -> Importance:
    mean, std = permutation_importance(base, permuted)
    return Importance(mean, std, base, permuted)


def true_importance(task: Presence, plan: Plan) -> Importance:
    """DEPICT importance of the task's rule itself (an oracle classifier) under the plan's permutations."""
    base = auroc(rule_scores(task, plan.concepts), plan.labels.bool())
    return importance_from(base, auroc(rule_scores(task, plan.all_targets()), plan.labels.bool()))


@dataclass
class GeneratorEvaluation:
    """f's importance through one generator, and the two checks (h AUROCs are per concept, K)."""

    importance: Importance
    f_real: torch.Tensor  # L(f(X))
    f_generated: torch.Tensor  # L(f(g(c)))
    h_real: torch.Tensor  # K: AUROC of h on X
    h_generated: torch.Tensor  # K: AUROC of h on g(c)
    h_permuted: torch.Tensor  # J×P×K: AUROC of h on g(c^j) against c^j

    @property
    def check1_f(self) -> torch.Tensor:
        return self.f_real - self.f_generated

    @property
    def check1_h(self) -> torch.Tensor:
        return self.h_real - self.h_generated

    @property
    def check2(self) -> torch.Tensor:
        """J×K: L_k(h(g(c))) − L_k(h(g(c^j))), mean over permutations; ≈ 0 off the permuted concept's own column
        (only j moved) and on it (j moved as the permuted captions asked)."""
        return self.h_generated - self.h_permuted.mean(1)


def evaluate_generator(fs: Mapping[str, tuple[nn.Module, int]], h: tuple[nn.Module, int], real: torch.Tensor,
                       plan: Plan, baseline: torch.Tensor, permuted: Callable[[int], torch.Tensor],
                       batch_size: int = 250) -> dict[str, GeneratorEvaluation]:
    """DEPICT through one generator for each classifier f in ``fs`` (name -> (module, input size)); h is
    (module, input size). ``real`` uint8 N×H×W×3 test images, ``baseline`` uint8 N×R×R×3 = g(c),
    ``permuted(a)`` uint8 P×N×R×R×3 = g(c^j) for j = ``plan.columns[a]``, loaded one concept at a time;
    each model sees the images resized to its input size."""
    y, c = plan.labels, plan.concepts

    def outputs(model: tuple[nn.Module, int], images: torch.Tensor) -> torch.Tensor:  # ...×N×R×R×3 -> ...×N×C
        out = logits(model[0], images.reshape(-1, *images.shape[-3:]), model[1], batch_size)
        return out.reshape(*images.shape[:-3], -1).cpu()

    def f_metrics(images: torch.Tensor) -> dict[str, torch.Tensor]:  # L per leading index of images
        return {name: task_metric(outputs(f, images), y) for name, f in fs.items()}

    def h_auroc(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # -> ...×K
        return auroc(outputs(h, images).transpose(-1, -2), targets.transpose(-1, -2))

    perm_f, perm_h = [], []
    for a in range(len(plan.columns)):
        imgs = permuted(a)
        targets = torch.stack([plan.targets(a, p) for p in range(plan.perms.shape[1])])
        perm_f.append(f_metrics(imgs))
        perm_h.append(h_auroc(imgs, targets))
    f_real, f_gen = f_metrics(real), f_metrics(baseline)
    h_real, h_gen, h_perm = h_auroc(real, c), h_auroc(baseline, c), torch.stack(perm_h)
    return {name: GeneratorEvaluation(
        importance=importance_from(f_gen[name], torch.stack([m[name] for m in perm_f])), f_real=f_real[name],
        f_generated=f_gen[name], h_real=h_real, h_generated=h_gen, h_permuted=h_perm) for name in fs}


def saliency_scores(f: nn.Module, f_size: int, real: torch.Tensor, instance: torch.Tensor, carriers: torch.Tensor,
                    concepts: torch.Tensor, method: str = "gradcam", batch_size: int = 64) -> torch.Tensor:
    """K: mean fraction of f's saliency mass (``method`` from the attribution registry, explaining f's predicted
    class, channels pooled by Σ|·|) on the objects carrying each concept, over the images that have it.
    ``real`` uint8 N×H×W×3, ``instance`` int N×H×W, ``carriers`` bool N×(O+1)×K, ``concepts`` bool N×K."""
    explain = METHODS.get(method)
    device = next(f.parameters()).device
    mass = []
    for a in range(0, len(real), batch_size):
        x = resize(real[a:a + batch_size].to(device), f_size)
        with torch.no_grad():
            pred = f(x).argmax(1)
        maps = explain(f, x, pred, batch_size=batch_size).abs().sum(1, keepdim=True)
        maps = F.interpolate(maps, size=instance.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        mass.append(concept_mass(maps, instance[a:a + batch_size].to(device), carriers[a:a + batch_size]).cpu())
    return mean_where(torch.cat(mass), concepts)


def ranking(names: Sequence[str], scores: torch.Tensor) -> list[str]:
    """Names by decreasing score (stable for ties)."""
    order = sorted(range(len(names)), key=lambda k: -float(scores[k]))
    return [names[k] for k in order]


def json_number(x: torch.Tensor | float) -> float | None:
    v = float(x)
    return None if v != v else round(v, 6)  # NaN (undefined AUROC/correlation) -> null in JSON


def named(names: Sequence[str], values: torch.Tensor) -> dict[str, float | None]:
    return {n: json_number(v) for n, v in zip(names, values)}


@dataclass(frozen=True)
class Checks:
    """Thresholds of ``concepts.checks`` (in L units, AUROC here): an importance is trusted only when check 1's
    |L(f(X)) − L(f(g(c)))| and every concept's |L_k(h(X)) − L_k(h(g(c)))| are at most ``max_gap``, check 2's
    |L_k(h(g(c))) − L_k(h(g(c^j)))| for every concept k other than the permuted j is at most ``max_other``, and the
    same for j itself, scored against the permuted captions (the images show the permutation), at most ``max_own``."""

    max_gap: float = 0.1
    max_other: float = 0.1
    max_own: float = 0.1

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, where: str = "concepts.checks") -> "Checks":
        p = dict(p or {})
        check_keys(p, ["max_gap", "max_other", "max_own"], where)
        out = cls(**{k: float(v) for k, v in p.items()})
        if not (out.max_gap >= 0 and out.max_other >= 0 and out.max_own >= 0):
            raise ParamsError(f"{where}: max_gap, max_other and max_own must be >= 0 (AUROC differences), got "
                             f"{out.max_gap}, {out.max_other}, {out.max_own}")
        return out


def check1_table(names: Sequence[str], r: GeneratorEvaluation) -> dict[str, dict[str, float | None]]:
    """h's check 1 per concept: AUROC on real and on generated (unpermuted) images, and the gap real − generated."""
    return {n: {"real": json_number(a), "generated": json_number(b), "gap": json_number(a - b)}
            for n, a, b in zip(names, r.h_real, r.h_generated)}


def trust(r: GeneratorEvaluation, plan: Plan, checks: Checks) -> dict[str, Any]:
    """Whether DEPICT's importances through this generator mean anything: ``trusted``, the failed checks'
    ``reasons`` (one sentence each, naming the measured gap and the threshold), and the measured ``gaps``
    (largest |value| of check 1 for f and h and of check 2 off and on the permuted concept; None where undefined)."""
    names = plan.names
    h_gap = r.check1_h.abs()
    off = r.check2.abs()
    own = off[plan.own_index]
    off[plan.own_index] = float("nan")
    f_gap = r.check1_f.abs()
    gaps = {"check1_f": json_number(f_gap), "check1_h_max": json_number(_nanmax(h_gap)),
            "check2_max_other": json_number(_nanmax(off)), "check2_max_own": json_number(_nanmax(own))}
    reasons = []
    if f_gap > checks.max_gap:
        reasons.append(f"check 1 (f): AUROC {float(r.f_real):.3f} on real vs {float(r.f_generated):.3f} on generated "
                       f"images, gap {float(f_gap):.3f} > {checks.max_gap:g}")
    bad = [k for k in range(len(names)) if h_gap[k] > checks.max_gap]
    if bad:
        reasons.append(f"check 1 (h): concept AUROC gap > {checks.max_gap:g} on " + ", ".join(
            f"{names[k]} ({float(r.h_real[k]):.3f} real vs {float(r.h_generated[k]):.3f} generated)" for k in bad))
    moved = [(a, k) for a in range(len(plan.columns)) for k in range(len(names)) if off[a, k] > checks.max_other]
    if moved:
        reasons.append(f"check 2: permuting one concept moved h's AUROC of another by > {checks.max_other:g}: " +
                       ", ".join(f"{names[k]} by {float(off[a, k]):.3f} when {names[plan.columns[a]]} was permuted"
                                 for a, k in moved))
    unrealised = [a for a in range(len(plan.columns)) if own[a] > checks.max_own]
    if unrealised:
        reasons.append(f"check 2 (own): the permuted images do not show the permuted concept: h's AUROC of it "
                       f"against the permuted captions moved by > {checks.max_own:g}: " + ", ".join(
                           f"{names[plan.columns[a]]} by {float(own[a]):.3f}" for a in unrealised))
    return {"trusted": not reasons, "reasons": reasons, "gaps": gaps}


def _nanmax(x: torch.Tensor) -> torch.Tensor:
    x = x[x.isfinite()]
    return x.max() if len(x) else torch.tensor(float("nan"))


def report(plan: Plan, truth: Importance, saliency: torch.Tensor, saliency_method: str,
           results: Mapping[str, GeneratorEvaluation], checks: Checks = Checks()) -> dict[str, Any]:
    """JSON-able summary for one classifier f: per generator importance (mean, std, per-permutation values),
    ranking, its Spearman correlation with the true and the saliency ranking, checks 1 (``check1.h_table``: h's
    AUROC per concept on real and generated images) and 2 (``check2.own``: the permuted concept's own column;
    ``max_abs_other``: the largest |value| off it), whether the importances are ``trusted`` under ``checks`` with the
    ``reasons`` and ``gaps`` (see :func:`trust`); and the generators' agreement."""
    names, all_names = plan.permuted_names, plan.names
    sal = saliency[plan.columns]
    out: dict[str, Any] = {
        "true": {"importance": named(names, truth.mean), "ranking": ranking(names, truth.mean)},
        "saliency": {"method": saliency_method, "mass": named(names, sal), "ranking": ranking(names, sal)},
        "checks": asdict(checks),
        "generators": {},
    }
    for g, r in results.items():
        imp = r.importance
        verdict = trust(r, plan, checks)
        out["generators"][g] = {
            **verdict,
            "importance": {n: {"mean": json_number(m), "std": json_number(sd), "values": [json_number(v) for v in d]}
                           for n, m, sd, d in zip(names, imp.mean, imp.std, imp.base - imp.permuted)},
            "ranking": ranking(names, imp.mean),
            "spearman_true": json_number(spearman(imp.mean, truth.mean)),
            "spearman_saliency": json_number(spearman(imp.mean, sal)),
            "auroc_f": {"real": json_number(r.f_real), "generated": json_number(r.f_generated)},
            "check1": {"f": json_number(r.check1_f), "h": named(all_names, r.check1_h),
                       "h_mean": json_number(r.check1_h.nanmean()), "h_table": check1_table(all_names, r)},
            "check2": {"matrix": {n: named(all_names, row) for n, row in zip(names, r.check2)},
                       "max_abs_other": verdict["gaps"]["check2_max_other"],
                       "own": named(names, r.check2[plan.own_index])},
        }
    gens = list(results)
    out["agreement"] = {f"{a}_vs_{b}": json_number(spearman(results[a].importance.mean, results[b].importance.mean))
                        for i, a in enumerate(gens) for b in gens[i + 1:]}
    return out


def summary(reports: Mapping[str, Mapping[str, Any]], h_auroc: Mapping[str, float | None]) -> dict[str, Any]:
    """The scalar metrics of :func:`report`s (model -> report): h's mean test AUROC, and per model and generator
    whether it is ``trusted`` (with the ``reasons`` when not), the rank correlations, checks and their largest gaps,
    and the generators' agreement."""
    known = [v for v in h_auroc.values() if v is not None]
    out: dict[str, Any] = {"h_test_auroc_mean": round(sum(known) / len(known), 6) if known else None}
    for model, rep in reports.items():
        out[model] = {g: {"trusted": r["trusted"], "reasons": r["reasons"],
                          "spearman_true": r["spearman_true"], "spearman_saliency": r["spearman_saliency"],
                          "check1_f": r["check1"]["f"], "check1_h": r["check1"]["h_mean"],
                          "check1_h_max": r["gaps"]["check1_h_max"],
                          "check2_max_abs_other": r["check2"]["max_abs_other"]}
                      for g, r in rep["generators"].items()}
        out[model]["agreement"] = rep["agreement"]
    return out
