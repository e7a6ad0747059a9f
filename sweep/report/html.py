"""The report page: one self-contained HTML file (plotly.js inlined once, no network to open it)."""

from __future__ import annotations

import html
import statistics
from typing import Any

from sweep.penalties.kinds import PLACEMENTS
from sweep.report.data import (
    CURVE_KEYS,
    CURVE_NAMES,
    ReportData,
    TrialRow,
    snapshot,
)
from sweep.report.diagfigures import (
    block_figure,
    diagnostics_epochs_figure,
    diagnostics_figure,
    sparsity_figure,
)
from sweep.report.figures import (
    curves_figure,
    history_figure,
    importance_figure,
    kinds_figure,
    placement_figure,
    tutorial_figure,
)
from sweep.report.htmlparts import CSS, esc, figure_html, fmt, fmt_seconds, html_table, section_html, when
from sweep.report.leaderboard import leaderboard_rows
from sweep.report.placements import kind_values, placement_effects, searched_placements, unsearched_notes
from sweep.report.tutorial import (
    TUTORIAL_RUNS,
    check_order,
    comparison_table,
    order_sentences,
    reg_loss_table,
    tutorial_results,
    tutorial_rows,
)
from sweep.study.sweeps import UNLIMITED

__all__ = ["render_html"]

def _summary(data: ReportData, storage: str) -> str:
    budget = data.attrs.get("budget") or {}
    trials = data.budget_total
    kv = [
        ("storage", storage),
        ("deadline", when(budget.get("deadline"))),
        ("budget", "until the deadline" if not trials or trials >= UNLIMITED else f"{trials} trials"),
        ("training", (f"{data.spec.training.epochs} epochs on {data.spec.training.dataset}, "
                     f"sampler {data.spec.sampler.name}, pruner {data.spec.pruner.name}")),
    ]
    if data.finalists:
        top = data.finalists[0]
        short = next((r.short for r in data.rows if r.number == top.search_trial), top.label)
        kv.append(("winner", (f"{short}: mean {top.mean:.4f} over {len(top.values)} fresh seeds "
                             f"(95% CI {top.ci_low:.4f} .. {top.ci_high:.4f}); see Finalists")))
    search = data.search[0] if data.search else None
    kv.append(("best trial", f"{search.value:.4f} (trial {search.number}: {search.short})" if search
               else "no completed trial yet"))
    if data.reused:
        kv.append(("deduplication", (f"{len(data.reused)} trial(s) reused an equal config's result, "
                                    f"{sum(r.epochs_saved for r in data.reused)} epochs saved")))
    chips = "".join(f'<span class="st-{s}">{s.lower()}<b>{n}</b></span>' for s, n in data.counts.items())
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in kv)
    return section_html("summary", "Summary", f'<div class="chips">{chips or "no trials yet"}</div>',
                    f'<table class="kv">{rows}</table>')


def _leaderboard(data: ReportData, top: int) -> str:
    rows = leaderboard_rows(data.search, top)
    if not rows:
        return section_html("leaderboard", "Leaderboard", '<p class="note">No completed trials yet.</p>')
    table = html_table(
        ["rank", "trial", "val accuracy", *PLACEMENTS, "epochs", "seconds", "note"],
        [[r.rank, r.number, fmt(r.value), *r.penalties.values(), fmt(r.epochs), fmt_seconds(r.duration_s),
          f"reused trial {r.reused}" if r.reused is not None else ""] for r in rows],
        num={0, 1, 2, 6, 7}, row_class=["best"] + [""] * (len(rows) - 1),
    )
    notes = []
    if len(data.search) > len(rows):
        notes.append(f"{len(data.search) - len(rows)} more completed trial(s) not shown.")
    if len(data.complete) > len(data.search):
        notes.append("Finalist re-runs (fresh seeds) are ranked under Finalists.")
    return section_html("leaderboard", "Leaderboard", table, "".join(f'<p class="note">{esc(n)}</p>' for n in notes))


def _kinds(data: ReportData) -> str:
    rows = []
    for p in searched_placements(data.spec):
        for kind, values in kind_values(data, p).items():
            rows.append([p, kind, len(values), fmt(statistics.median(values)), fmt(max(values))])
    table = (
        html_table(["placement", "kind", "trials", "median val acc", "best val acc"], rows, num={2, 3, 4})
        if rows else ""
    )
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in unsearched_notes(data.spec))
    return section_html("kinds", "Kind comparison", figure_html("kinds", kinds_figure(data)), table, notes)


def _placements(data: ReportData) -> str:
    rows = []
    searched = searched_placements(data.spec) if data.trained else []
    for e in placement_effects(data):
        if e["placement"] not in searched:
            continue
        delta = "" if e["delta"] is None else f"{e['delta']:+.4f}"
        rows.append([e["placement"], e["regularized"],
                     e["unregularized"], fmt(e["median_on"]), fmt(e["median_off"]), delta, e["no_effect"] or ""])
    table = html_table(["placement", "regularized", "unregularized", "median with", "median without",
                    "difference", "reached no layer"], rows, num={1, 2, 3, 4, 5, 6}) if rows else ""
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in unsearched_notes(data.spec))
    return section_html("placements", "Placement effects", table, notes,
                        figure_html("placements", placement_figure(data)))


def _tutorial(data: ReportData) -> str:
    results = tutorial_results(data)
    if results is None:
        return ""
    head, rows = comparison_table(results)
    order = "".join(f"<li>{esc(line)}</li>" for line in order_sentences(check_order(results)))
    reg_head, reg_rows = reg_loss_table(results)
    details = []
    for r in tutorial_rows(data) or []:
        n = len(r.curves.get("val_accuracy", []))
        per_epoch = html_table(["epoch", *(CURVE_NAMES[k] for k in CURVE_KEYS)],
                           [[e + 1, *(fmt(_at(r, k, e)) for k in CURVE_KEYS)] for e in range(n)], num=set(range(6)))
        name = TUTORIAL_RUNS[r.kind("kernel")].name
        details.append(f"<details><summary>{esc(name)} (trial {r.number}, seed {r.seed}): "
                       f"per epoch</summary>{per_epoch}</details>")
    return section_html(
        "tutorial", "Tutorial experiments: none vs L1 vs L2, ours beside the tutorial",
        "<p>The tutorial's finding is the order none &gt; L2 &gt; L1 in validation accuracy (0.816 &gt; 0.595 &gt; "
        "0.333) and regularization losses that fall fast, then level off. Ours: every seed of each experiment "
        "(the search run and the finalists' fresh seeds), the study's objective value.</p>",
        html_table(head, rows, num={1, 2, 4}), f"<ul>{order}</ul>" if order else "",
        "<details><summary>Regularization loss per epoch</summary>"
        f"{html_table(reg_head, reg_rows, num=set(range(len(reg_head))))}</details>", "".join(details),
        figure_html("tutorial", tutorial_figure(data)))


def _sparsity_note(data: ReportData) -> str:
    values = {round(r.sparsity, 4) for r in data.trained if r.sparsity is not None}
    if len(values) != 1:
        return ""
    return (f'<p class="note">Every trial has sparsity {values.pop():.4f}: the penalties did not push kernel '
            "weights below 1e-3 (L1 is the kind that does, with a large enough lambda).</p>")


def _at(r: TrialRow, key: str, epoch: int) -> float | None:
    values = r.curves.get(key) or []
    return values[epoch] if epoch < len(values) else None


def _failures(data: ReportData) -> str:
    rows = data.failures
    if not rows:
        return section_html("failures", "Failures", '<p class="note">No failed trials.</p>')
    table = html_table(["trial", "regularizers", "reason", "epochs", "GPU", "then"],
                   [[r.number, r.short, (r.fail_reason or "(no reason recorded)").splitlines()[0][:300],
                     fmt(len(r.curves.get("val_accuracy", []))), r.gpu,
                     f"re-queued as trial {r.requeued_as}" if r.requeued_as is not None else ""] for r in rows],
                   num={0, 3})
    return section_html("failures", "Failures", table)


def _pruned(data: ReportData) -> str:
    rows = data.pruned
    if not rows:
        return ""
    table = html_table(
        ["trial", "regularizers", "epochs run", "last val accuracy"],
        [
            [
                r.number,
                r.short,
                len(r.curves.get("val_accuracy", [])),
                fmt(r.curves["val_accuracy"][-1] if r.curves.get("val_accuracy") else None),
            ]
            for r in rows
        ],
        num={0, 2, 3},
    )
    return section_html("pruned", "Pruned", f'<p class="note">{len(rows)} pruned trial(s): the pruner stopped them '
                    "early, so they are not ranked in the leaderboard.</p>", table)


#: Below this many completed trials, fANOVA importances mostly reflect which configs happened to run.
FEW_TRIALS = 10


def _importances(data: ReportData, study: Any) -> str:
    n = len([r for r in data.rows if r.state == "COMPLETE" and r.phase != "finalist"])
    note = (f'<p class="note">Caveat: computed from only {n} completed trials; importances from fewer than '
            f"{FEW_TRIALS} are noisy, read them as a hint.</p>" if 0 < n < FEW_TRIALS else "")
    return section_html("importances", "Parameter importances", note,
                        figure_html("importances", importance_figure(study)))


def _dedup(data: ReportData) -> str:
    if not data.reused:
        return ""
    table = html_table(["trial", "reused trial", "epochs saved", "regularizers"],
                   [[r.number, r.dedup_of, r.epochs_saved, r.short] for r in data.reused], num={0, 1, 2})
    saved = sum(r.epochs_saved for r in data.reused)
    return section_html("dedup", "Deduplication",
                    f"<p>{len(data.reused)} trial(s) had the same config and seed as a finished trial and reused its "
                    f"result: {saved} training epochs saved.</p>", table)


def _finalists(data: ReportData) -> str:
    if not data.finalists:
        return ""
    short = {r.number: r.short for r in data.rows}
    verdict = {True: "yes", False: "no (within seed noise)", None: "n/a"}
    table = html_table(
        ["config", "search trial", "search val acc", "seeds", "mean", "95% CI", "worse than best"],
        [
            [
                short.get(f.search_trial, f.label),
                f.search_trial,
                fmt(f.search_value),
                len(f.values),
                fmt(f.mean),
                f"{f.ci_low:.4f} .. {f.ci_high:.4f}",
                "(best)" if i == 0 else verdict[f.worse_than_best],
            ]
            for i, f in enumerate(data.finalists)
        ],
        num={1, 2, 3, 4},
    )
    return section_html("finalists", "Finalists", "<p>The best configs re-run with fresh seeds, ranked by mean "
                    "(the search run is excluded: it was selected for being good).</p>", table)


def render_html(data: ReportData, storage: str, plotly_js: str, top: int = 15) -> str:
    """The whole page.

    Args:
        data: The study's report data.
        storage: The storage URL, already masked.
        plotly_js: The plotly.js bundle, inlined once in the head.
        top: Leaderboard rows.
    """
    study = snapshot(data)
    sections = [
        _summary(data, storage),
        _leaderboard(data, top),
        _kinds(data),
        _placements(data),
        section_html("history", "Optimization history", figure_html("history", history_figure(study))),
        _importances(data, study),
        section_html("curves", "Learning curves of the top trials", figure_html("curves", curves_figure(data))),
        section_html("sparsity", "Sparsity vs accuracy", figure_html("sparsity", sparsity_figure(data)),
                     _sparsity_note(data), figure_html("blocks", block_figure(data))),
        section_html("diagnostics", "Regularizer diagnostics",
                 '<p class="note">Final-epoch kernel norms, sparsity and activation magnitude of each trained '
                 "trial against its accuracy, coloured by kernel kind; then the best trial's blocks over epochs.</p>",
                 figure_html("diagnostics", diagnostics_figure(data)),
                 figure_html("diagnostics-epochs", diagnostics_epochs_figure(data))),
        _tutorial(data),
        _pruned(data),
        _failures(data),
        _dedup(data),
        _finalists(data),
    ]
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in _headings(sections))
    generated = data.generated.strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(data.name)}: regsweep report</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style>'
        f'<script type="text/javascript">{plotly_js}</script></head><body><main>'
        f"<h1>Regularization sweep {esc(data.name)}</h1>"
        f'<p class="meta">{len(data.rows)} trials, report generated {generated}</p><nav>{nav}</nav>'
        f'{"".join(s for s in sections if s)}</main></body></html>'
    )


def _headings(sections: list[str]) -> list[tuple[str, str]]:
    out = []
    for s in sections:
        if s:
            key = s.split('id="', 1)[1].split('"', 1)[0]
            title = html.unescape(s.split("<h2>", 1)[1].split("</h2>", 1)[0])
            out.append((key, title))
    return out
